"""ScanNet export folders (the layout ScanNet's SensReader writes, plus this project's label/ and normal/).

``color/N.jpg|png``, ``depth/N.png`` (uint16 mm), ``pose/N.txt`` (4x4 camera-to-world),
``intrinsic/intrinsic_depth.txt`` (4x4). Colour is registered to the depth size (ScanNet: 1296x968
colour, 640x480 depth) with INTER_AREA and K = intrinsic_depth. Labels: ``label/N.png`` holds train
ids of the label space named in ``scene.json`` (scannet20 when absent); a real ScanNet ``label-filt/``
export holds raw ScanNet ids, mapped raw -> nyu40 (``scannetv2-labels.combined.tsv``, column
``nyu40id``) -> ScanNet-20 when the tsv path is given, else ignored. Frames whose pose is -inf are
skipped with a warning.
"""
from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np

from m2hmx.data.errors import DatasetError
from m2hmx.data.frame import Frame
from m2hmx.data.readers._common import (IndexedSource, numbered_files, pose_valid, read_depth_png,
                                        read_folder_imu, read_image, read_matrix, register_color)
from m2hmx.data.transforms import decode_normals, semantic_edges
from m2hmx.labels import load_label_space

FPS = 30.0


def raw_to_nyu40_lut(tsv_path) -> np.ndarray:
    """LUT raw ScanNet id -> nyu40 id (0 unlabelled) from ``scannetv2-labels.combined.tsv``."""
    tsv_path = Path(tsv_path)
    try:
        with open(tsv_path, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        pairs = [(int(r["id"]), int(r["nyu40id"])) for r in rows]
    except FileNotFoundError:
        raise DatasetError(tsv_path, "file not found") from None
    except (KeyError, ValueError, TypeError):
        raise DatasetError(tsv_path, "not a ScanNet label tsv (needs integer columns 'id' and 'nyu40id')") from None
    lut = np.zeros(max(i for i, _ in pairs) + 1, np.uint8)
    for i, n in pairs:
        lut[i] = n
    return lut


class ScanNetExport(IndexedSource):
    """Frames of one exported ScanNet scene folder."""

    def __init__(self, folder, label_tsv=None):
        self.folder = folder = Path(folder)
        if not folder.is_dir():
            raise DatasetError(folder, "ScanNet export folder not found")
        for sub in ("color", "depth", "pose"):
            if not (folder / sub).is_dir():
                raise DatasetError(folder / sub, "missing folder (a ScanNet export has color/, depth/, pose/, intrinsic/)")
        self.name = folder.name
        colors = numbered_files(folder / "color", (".jpg", ".jpeg", ".png"))
        depths = numbered_files(folder / "depth", (".png",))
        if len(colors) != len(depths):
            raise DatasetError(folder, f"{len(colors)} colour images in color/ but {len(depths)} depth images in depth/")
        if not depths:
            raise DatasetError(folder / "depth", "no frames (expected depth/0.png, depth/1.png, ...)")
        missing = sorted(set(depths) - set(colors))
        if missing:
            raise DatasetError(folder / "color", f"no colour image for depth/{missing[0]}.png")
        self._colors, self._depths = colors, depths

        kpath = folder / "intrinsic" / "intrinsic_depth.txt"
        self.K = read_matrix(kpath, (4, 4))[:3, :3]
        self.intrinsics_from = str(kpath)

        self.label_space = None
        self._label_dir, self._label_lut = None, None
        if (folder / "label").is_dir():
            meta = folder / "scene.json"
            space = "scannet20"
            if meta.is_file():
                try:
                    space = json.loads(meta.read_text()).get("label_space", space)
                except json.JSONDecodeError:
                    raise DatasetError(meta, "not valid JSON") from None
            self.label_space = load_label_space(space)
            self._label_dir = folder / "label"
        elif (folder / "label-filt").is_dir() and label_tsv is not None:
            self.label_space = load_label_space("scannet20")
            self._label_dir = folder / "label-filt"
            self._label_lut = self.label_space.from_nyu40(raw_to_nyu40_lut(label_tsv))
        self._normal_dir = folder / "normal" if (folder / "normal").is_dir() else None

        ids, poses, skipped = [], [], 0
        for n in sorted(depths):
            pose = read_matrix(folder / "pose" / f"{n}.txt", (4, 4))
            if pose_valid(pose):
                ids.append(n)
                poses.append(pose)
            else:
                skipped += 1
        if skipped:
            warnings.warn(f"{folder}: skipped {skipped} frame(s) with an invalid (-inf) pose", stacklevel=2)
        if not ids:
            raise DatasetError(folder / "pose", "no frame has a valid pose")
        self.frame_ids, self.poses = ids, np.array(poses)
        self.imu, self.imu_path = read_folder_imu(folder), folder / "imu0" / "data.csv"

    def __len__(self) -> int:
        return len(self.frame_ids)

    def _time(self, i: int) -> float:
        return self.frame_ids[i] / FPS

    def _read(self, i: int) -> Frame:
        n = self.frame_ids[i]
        depth = read_depth_png(self._depths[n], 1000.0)
        h, w = depth.shape
        rgb = register_color(read_image(self._colors[n]), h, w)
        labels = normals = edges = None
        if self._label_dir is not None:
            path = self._label_dir / f"{n}.png"
            raw = read_image(path, unchanged=True)
            if raw.ndim != 2:
                raise DatasetError(path, f"expected a single-channel label image, got shape {raw.shape}")
            if self._label_lut is not None:
                lut = self._label_lut
                labels = np.where(raw < len(lut), lut[np.minimum(raw, len(lut) - 1)], 255).astype(np.uint8)
            else:
                labels = raw.astype(np.uint8)
            if labels.shape != (h, w):
                import cv2

                labels = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
            edges = semantic_edges(labels)
        if self._normal_dir is not None:
            path = self._normal_dir / f"{n}.png"
            enc = read_image(path, unchanged=True)
            if enc.dtype != np.uint16 or enc.shape != (h, w, 3):
                raise DatasetError(path, f"expected a 3-channel uint16 normal image of {w}x{h}, got {enc.dtype} {enc.shape}")
            normals = decode_normals(enc[:, :, ::-1])
        return Frame(rgb=rgb, K=self.K.copy(), timestamp=n / FPS, index=n, depth=depth, labels=labels,
                     pose=self.poses[i].copy(), normals=normals, edges=edges)
