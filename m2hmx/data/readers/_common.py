"""File helpers that turn library failures into one-line ``DatasetError``s, and a base source class."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from m2hmx.data.errors import DatasetError
from m2hmx.data.frame import Frame

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


FOV_GUESS = "a guess from a 60 deg horizontal field of view (no calibration)"


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


def read_folder_imu(folder: Path):
    """The IMU of a dataset folder: ``folder/imu0/data.csv`` in EuRoC's layout (``mapping.imu.read_euroc_csv``;
    the extrinsic from ``cam0/sensor.yaml``) when the folder has one, else None. Bad data raises DatasetError
    naming the file and line."""
    from mapping.imu import ImuFileError, read_euroc_csv

    path = Path(folder) / "imu0" / "data.csv"
    if not path.is_file():
        return None
    try:
        return read_euroc_csv(path)
    except ImuFileError as e:
        raise DatasetError(e.location, e.problem) from None


class IndexedSource:
    """Base for finite sources with random access: subclasses implement ``__len__`` and ``_read(i)``.

    A source with an IMU sets ``imu`` (``mapping.imu.ImuSamples`` of the whole recording, on the frames' clock) and
    ``imu_path`` (named in errors); each frame then carries the samples since the previous frame (``Frame.imu``).
    Subclasses whose frame times are known without decoding override ``_time``. ``intrinsics_from`` says where
    the frames' K comes from; ``set_intrinsics`` replaces it for every frame (a user's ``--intrinsics``)."""

    name: str = "source"
    label_space = None
    imu = None
    imu_path = None
    intrinsics_from: str = "the dataset's calibration"
    _intrinsics: np.ndarray | None = None

    def set_intrinsics(self, fx: float, fy: float, cx: float, cy: float, origin: str = "--intrinsics") -> None:
        """Every frame gets K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (pixels of the recorded images)."""
        self._intrinsics = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float64)
        self.intrinsics_from = origin

    def _frame(self, i: int) -> Frame:
        frame = self._read(i)
        if self._intrinsics is not None:
            frame.K = self._intrinsics.copy()
        return frame

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def num_frames(self) -> int:
        return len(self)

    def _read(self, i: int) -> Frame:
        raise NotImplementedError

    def _time(self, i: int) -> float:
        """Frame ``i``'s timestamp (this default decodes the frame)."""
        return self._read(i).timestamp

    def __getitem__(self, i: int) -> Frame:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(i)
        i %= n
        frame = self._frame(i)
        if self.imu is not None:
            self._attach_imu(frame, i, self._time(i - 1) if i else -math.inf)
        return frame

    def __iter__(self):
        prev = -math.inf
        for i in range(len(self)):
            frame = self._frame(i)
            if self.imu is not None:
                self._attach_imu(frame, i, prev)
            prev = frame.timestamp
            yield frame

    def _attach_imu(self, frame: Frame, i: int, prev: float) -> None:
        """``frame.imu`` = the samples with prev < t <= frame time; after the first frame that interval must lie
        inside the IMU stream (a stream that starts late or ends early is missing samples)."""
        from mapping.imu import MAX_GAP_S

        t = self.imu.t
        if i and (not len(t) or t[0] > prev + MAX_GAP_S or t[-1] < frame.timestamp - MAX_GAP_S):
            span = f"{t[0]:.3f}-{t[-1]:.3f} s" if len(t) else "no samples"
            raise DatasetError(self.imu_path, f"IMU samples missing: frame {i} at {frame.timestamp:.3f} s needs "
                                              f"samples from {prev:.3f} s, the IMU stream covers {span}")
        frame.imu = self.imu.between(prev, frame.timestamp)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
