"""Microsoft 7-Scenes sequences: ``frame-%06d.color.jpg|png``, ``.depth.png`` (uint16 mm; 0 and 65535
invalid), ``.pose.txt`` (4x4 camera-to-world). ``camera-intrinsics.txt`` (3x3) when present, else the
dataset's published 585, 585, 320, 240. No timestamps: frame index / 30 Hz. A scene folder holding
``seq-XX/`` subfolders reads all its sequences in order.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from m2hmx.data.errors import DatasetError
from m2hmx.data.frame import Frame
from m2hmx.data.readers._common import (IndexedSource, pose_valid, read_depth_png, read_folder_imu, read_image,
                                        read_matrix)

FPS = 30.0
DEFAULT_K = np.array([[585.0, 0, 320.0], [0, 585.0, 240.0], [0, 0, 1]])
_FRAME = re.compile(r"frame-(\d+)\.color\.(jpg|png)$")


def is_7scenes(folder: Path) -> bool:
    folder = Path(folder)
    return any(_FRAME.match(p.name) for p in folder.glob("frame-*.color.*")) or any(folder.glob("seq-*/frame-*.color.*"))


class SevenScenes(IndexedSource):
    """Frames of a 7-Scenes sequence (or of all ``seq-*`` sequences of a scene)."""

    def __init__(self, folder):
        self.folder = folder = Path(folder)
        if not folder.is_dir():
            raise DatasetError(folder, "7-Scenes folder not found")
        self.name = folder.name
        seqs = sorted(p for p in folder.glob("seq-*") if p.is_dir()) or [folder]
        self._items = []
        for seq in seqs:
            for p in sorted(seq.glob("frame-*.color.*")):
                m = _FRAME.match(p.name)
                if m:
                    stem = seq / f"frame-{m.group(1)}"
                    self._items.append((int(m.group(1)), p, Path(f"{stem}.depth.png"), Path(f"{stem}.pose.txt")))
        if not self._items:
            raise DatasetError(folder, "no frame-XXXXXX.color.jpg files")
        missing = [d for _, _, d, _ in self._items if not d.is_file()]
        if missing:
            raise DatasetError(folder, f"{len(self._items)} colour images but {len(self._items) - len(missing)} depth images (first missing: {missing[0].name})")
        kpath = folder / "camera-intrinsics.txt"
        self.K = read_matrix(kpath, (3, 3)) if kpath.is_file() else DEFAULT_K.copy()
        self.intrinsics_from = str(kpath) if kpath.is_file() else "7-Scenes' published calibration"
        self.imu, self.imu_path = read_folder_imu(folder), folder / "imu0" / "data.csv"

    def __len__(self) -> int:
        return len(self._items)

    def _time(self, i: int) -> float:
        return i / FPS

    def _read(self, i: int) -> Frame:
        _n, cpath, dpath, ppath = self._items[i]
        rgb = read_image(cpath)
        depth = read_depth_png(dpath, 1000.0, invalid=65535)
        pose = read_matrix(ppath, (4, 4)) if ppath.is_file() else None
        if not pose_valid(pose):
            pose = None
        return Frame(rgb=rgb, K=self.K.copy(), timestamp=i / FPS, index=i, depth=depth, pose=pose)
