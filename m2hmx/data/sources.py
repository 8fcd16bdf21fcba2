"""The FrameSource protocol and ``open_source``, which turns a path or shorthand into a source.

Specs ``open_source`` understands (first match wins):

- ``synthetic`` or ``synthetic:SEED`` -> a rendered synthetic walkthrough (300 frames, 240x320);
  ``synthetic:SEED?revisit`` -> a 450-frame walk that comes back to where it started;
- an existing path: ``*.sens`` (ScanNet), ``*.bag`` (RealSense, needs pyrealsense2), ``*.mat`` (NYUv2
  labelled), a video file, or a folder:
  TUM RGB-D (``rgb.txt`` + ``depth.txt``), ScanNet export (``color/`` + ``depth/``), 7-Scenes
  (``frame-XXXXXX.color.jpg`` or ``seq-XX/``), a folder holding one ``sceneXXXX_YY.sens``, a ROS 2 bag
  (a folder with ``metadata.yaml``), or images;
- ``scannet/sceneXXXX[_YY]`` or ``sceneXXXX[_YY]`` -> ``<data_root or $M2HMX_DATA_ROOT>/scannet/sceneXXXX_YY``
  (or ``<root>/scans/sceneXXXX_YY``), an export folder or a folder with the scene's ``.sens``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator, Protocol, runtime_checkable

from m2hmx.data.errors import DatasetError
from m2hmx.data.frame import Frame

REVISIT_FRAMES = 450  # a revisit walk's length (issue 21: revisit paths of about 450 frames)


@runtime_checkable
class FrameSource(Protocol):
    """An iterable of ``Frame``s. Finite sources have ``__len__``; live ones have ``num_frames = None``."""

    name: str
    label_space: object  # LabelSpace | None

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


_SCENE = re.compile(r"^(?:scannet/|scans/)?(scene\d{4})(_\d{2})?$")


def _open_folder(folder: Path, label_tsv=None, intrinsics=None):
    from m2hmx.data.readers.rosbag import is_rosbag
    from m2hmx.data.readers.sevenscenes import SevenScenes, is_7scenes

    if is_rosbag(folder):
        from m2hmx.data.readers.rosbag import RosbagSource

        return RosbagSource(folder)
    if (folder / "rgb.txt").is_file() and (folder / "depth.txt").is_file():
        from m2hmx.data.readers.tum import TUMSequence

        return TUMSequence(folder, intrinsics)  # given intrinsics: no warning about the folder's name
    if (folder / "color").is_dir() or (folder / "depth").is_dir():
        from m2hmx.data.readers.scannet import ScanNetExport

        return ScanNetExport(folder, label_tsv=label_tsv)
    if is_7scenes(folder):
        return SevenScenes(folder)
    sens = sorted(folder.glob("*.sens"))
    if len(sens) == 1:
        from m2hmx.data.readers.sens import SensFile

        return SensFile(sens[0])
    if len(sens) > 1:
        raise DatasetError(folder, f"{len(sens)} .sens files here; name one of them")
    from m2hmx.data.readers._common import IMAGE_EXTS

    if any(p.suffix.lower() in IMAGE_EXTS for p in folder.iterdir()):
        from m2hmx.data.readers.video import ImageFolder

        return ImageFolder(folder)
    raise DatasetError(folder, "not a recognised dataset folder (TUM RGB-D, ScanNet export, 7-Scenes, .sens, ROS 2 bag, "
                               "images)")


def _open_file(path: Path):
    suffix = path.suffix.lower()
    if suffix == ".sens":
        from m2hmx.data.readers.sens import SensFile

        return SensFile(path)
    if suffix == ".bag":
        from m2hmx.data.readers.realsense import RealSenseBag

        return RealSenseBag(path)
    if suffix == ".mat":
        from m2hmx.data.readers.nyu import NYUv2Labeled

        return NYUv2Labeled(path)
    from m2hmx.data.readers.video import VIDEO_EXTS, VideoFile

    if suffix in VIDEO_EXTS:
        return VideoFile(path)
    raise DatasetError(path, f"unsupported file type '{suffix}' (.sens, .bag, .mat, {', '.join(VIDEO_EXTS)})")


def resolve_scene(spec: str, data_root: str | None = None) -> Path | None:
    """``scannet/scene0011`` -> the existing ``<root>/{scannet,scans}/scene0011_00`` folder, else None."""
    m = _SCENE.match(spec.strip("/"))
    if not m:
        return None
    root = data_root or os.environ.get("M2HMX_DATA_ROOT")
    if not root:
        raise DatasetError(spec, "ScanNet scene shorthand needs a data root (--data-root or $M2HMX_DATA_ROOT)")
    scene = m.group(1) + (m.group(2) or "_00")
    candidates = [Path(root) / "scannet" / scene, Path(root) / "scans" / scene, Path(root) / "scannet" / "scans" / scene]
    for c in candidates:
        if c.is_dir():
            return c
    raise DatasetError(candidates[0], f"ScanNet scene not found (also looked in {candidates[1].parent})")


def open_source(spec: str, data_root: str | None = None, label_tsv: str | None = None,
                intrinsics: tuple[float, float, float, float] | None = None):
    """Open a FrameSource from a path or shorthand (see the module docstring); raises DatasetError.
    ``intrinsics`` (fx, fy, cx, cy in the recorded images' pixels) replace a recording's own for every frame; a
    generated room or a ROS 2 / RealSense bag (whose calibration is recorded with it) refuses them."""
    source = _open(str(spec), data_root, label_tsv, intrinsics)
    if intrinsics is not None and getattr(source, "intrinsics_from", "") != "--intrinsics":
        from m2hmx.data.readers._common import IndexedSource

        if not isinstance(source, IndexedSource):
            source.close()
            raise DatasetError(spec, "--intrinsics: this source records its own calibration; the flag is for "
                                     "folders, videos, image sequences and files without one")
        source.set_intrinsics(*intrinsics)
    return source


def describe_intrinsics(source) -> str:
    """'fx, fy, cx, cy = ... (from WHERE)' for a recording's frames, or '' for a source that does not say where
    its intrinsics come from (a generated room's camera is exact; cameras and bags carry their calibration)."""
    import numpy as np

    if not getattr(source, "intrinsics_from", None):
        return ""
    K = getattr(source, "_intrinsics", None)
    if K is None:
        K = getattr(source, "K", None)
    if K is None and hasattr(source, "__getitem__"):
        try:
            K = source[0].K
        except (DatasetError, IndexError):
            return ""
    if K is None:
        return ""
    K = np.asarray(K)
    values = ", ".join(f"{v:g}" for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))
    return f"intrinsics fx, fy, cx, cy = {values} (from {source.intrinsics_from})"


def _open(spec: str, data_root, label_tsv, intrinsics):
    if spec == "synthetic" or spec.startswith("synthetic:"):
        from m2hmx.data.synthetic import SyntheticSource

        seed, _, option = (spec.partition(":")[2] or "0").partition("?")
        if not seed.isdigit():
            raise DatasetError(spec, "synthetic seed must be a non-negative integer (synthetic:SEED)")
        if option not in ("", "revisit"):
            raise DatasetError(spec, f"unknown synthetic option '{option}' (synthetic:SEED?revisit)")
        if option == "revisit":
            return SyntheticSource(seed=int(seed), frames=REVISIT_FRAMES, revisit=True)
        return SyntheticSource(seed=int(seed))
    path = Path(spec).expanduser()
    if not path.exists() and data_root and (Path(data_root) / spec).exists():
        path = Path(data_root) / spec
    if path.is_file():
        return _open_file(path)
    if path.is_dir():
        return _open_folder(path, label_tsv, intrinsics)
    scene = resolve_scene(spec, data_root)
    if scene is not None:
        return _open_folder(scene, label_tsv, intrinsics)
    raise DatasetError(path, "no such file or folder")
