"""File helpers that turn library failures into one-line ``DatasetError``s, and a base source class."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from m2hmx.data.errors import DatasetError
from m2hmx.data.frame import Frame

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def default_intrinsics_fov(height: int, width: int, hfov_deg: float = 60.0) -> np.ndarray:
    """A guessed K for cameras without calibration: 60 deg horizontal FOV, centred principal point."""
    f = 0.5 * width / math.tan(math.radians(hfov_deg) / 2)
    return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]], np.float64)


def read_image(path: Path, unchanged: bool = False) -> np.ndarray:
    """Decode an image file (colour as RGB uint8, or as stored with ``unchanged``), or raise DatasetError."""
    import cv2

    path = Path(path)
    try:
        data = np.fromfile(path, np.uint8)
    except FileNotFoundError:
        raise DatasetError(path, "file not found") from None
    except OSError as e:
        raise DatasetError(path, f"cannot read ({e.strerror})") from None
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED if unchanged else cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise DatasetError(path, "cannot decode image (corrupt or not an image file)")
    if not unchanged:
        img = np.ascontiguousarray(img[:, :, ::-1])
    return img


def read_depth_png(path: Path, scale: float, invalid: int | None = None) -> np.ndarray:
    """uint16 depth PNG -> float32 metres (value / scale, 0 and ``invalid`` -> 0)."""
    raw = read_image(path, unchanged=True)
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise DatasetError(path, f"expected a single-channel uint16 depth image, got {raw.dtype} {raw.shape}")
    depth = raw.astype(np.float32) / scale
    if invalid is not None:
        depth[raw == invalid] = 0
    return depth


def read_matrix(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A whitespace-separated text matrix of the given shape (float64), or raise DatasetError."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DatasetError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(path, f"cannot read ({e})") from None
    try:
        vals = np.array([float(x) for x in text.split()], np.float64)
    except ValueError:
        raise DatasetError(path, "not a text matrix of numbers") from None
    if vals.size != shape[0] * shape[1]:
        raise DatasetError(path, f"expected {shape[0]}x{shape[1]} numbers, found {vals.size}")
    return vals.reshape(shape)


def pose_valid(pose: np.ndarray | None) -> bool:
    return pose is not None and bool(np.all(np.isfinite(pose)))


def numbered_files(folder: Path, exts: tuple[str, ...]) -> dict[int, Path]:
    """{N: path} for files named ``N.ext`` (no zero padding required) in ``folder``."""
    out: dict[int, Path] = {}
    for p in folder.iterdir():
        if p.suffix.lower() in exts and re.fullmatch(r"\d+", p.stem):
            out[int(p.stem)] = p
    return out


def register_color(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize colour to the depth image's size (INTER_AREA when shrinking)."""
    import cv2

    if rgb.shape[:2] == (height, width):
        return rgb
    shrink = rgb.shape[0] > height
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


class IndexedSource:
    """Base for finite sources with random access: subclasses implement ``__len__`` and ``_read(i)``."""

    name: str = "source"
    label_space = None

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def num_frames(self) -> int:
        return len(self)

    def _read(self, i: int) -> Frame:
        raise NotImplementedError

    def __getitem__(self, i: int) -> Frame:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(i)
        return self._read(i % n)

    def __iter__(self):
        for i in range(len(self)):
            yield self._read(i)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
