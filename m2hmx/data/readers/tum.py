"""TUM RGB-D sequence folders: ``rgb.txt``, ``depth.txt``, optional ``groundtruth.txt``.

RGB, depth and ground truth are associated by nearest timestamp within 0.02 s (as the benchmark's
``associate.py`` does); depth PNGs are uint16 with 5000 = 1 m. Intrinsics come from the folder name
(``freiburg1`` / ``fr1``, ``freiburg2`` / ``fr2``, ``freiburg3`` / ``fr3``), the calibrated values the
benchmark publishes; a ``camera.yaml`` (fx, fy, cx, cy) beside the data overrides them; other names get the
benchmark's default 525, 525, 319.5, 239.5, with a warning. Intrinsics given to the reader (a user's
``--intrinsics``) override all of these.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from m2hmx.data.errors import DatasetError
from m2hmx.data.frame import Frame
from m2hmx.data.readers._common import IndexedSource, read_depth_png, read_folder_imu, read_image

MAX_DT = 0.02
DEPTH_SCALE = 5000.0
# fx, fy, cx, cy from the TUM RGB-D benchmark's camera calibration page
TUM_INTRINSICS = {
    "fr1": (517.3, 516.5, 318.6, 255.3),
    "fr2": (520.9, 521.0, 325.1, 249.7),
    "fr3": (535.4, 539.2, 320.1, 247.6),
    None: (525.0, 525.0, 319.5, 239.5),
}


def read_tum_list(path: Path, min_fields: int, numeric: int = 1) -> list[list[str]]:
    """Non-comment lines of a TUM list file, split on whitespace; the first ``numeric`` fields must be finite
    numbers, and with 8 numeric fields (a pose: t tx ty tz qx qy qz qw) the quaternion must not be zero."""
    try:
        lines = Path(path).read_bytes().decode("utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetError(path, "file not found") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(path, f"not a text file (byte {exc.start} is not UTF-8)") from None
    rows = []
    for num, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < min_fields:
            raise DatasetError(path, f"line {num}: expected {min_fields} fields, found {len(parts)}")
        try:
            float(parts[0])
        except ValueError:
            raise DatasetError(path, f"line {num}: timestamp '{parts[0]}' is not a number") from None
        for k, field in enumerate(parts[:numeric]):
            try:
                value = float(field)
            except ValueError:
                raise DatasetError(path, f"line {num}: field {k + 1} '{field}' is not a number") from None
            if not np.isfinite(value):
                raise DatasetError(path, f"line {num}: field {k + 1} is {field}, not a finite number")
        if numeric >= 8 and np.linalg.norm([float(v) for v in parts[4:8]]) < 1e-6:
            raise DatasetError(path, f"line {num}: the quaternion (qx qy qz qw) is zero, not a rotation")
        rows.append(parts)
    return rows


def associate(a: np.ndarray, b: np.ndarray, max_dt: float = MAX_DT) -> list[tuple[int, int]]:
    """Greedy one-to-one nearest-timestamp matches between sorted-or-not arrays ``a`` and ``b``.

    Candidate pairs with |ta - tb| < max_dt are taken in order of increasing time difference, each
    index used at most once (the rule of TUM's associate.py); returned sorted by ``a``'s index.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) == 0 or len(b) == 0:
        return []
    order = np.argsort(b)
    bs = b[order]
    cands = []
    for i, t in enumerate(a):
        j = np.searchsorted(bs, t)
        for jj in range(max(j - 2, 0), min(j + 2, len(bs))):
            dt = abs(bs[jj] - t)
            if dt < max_dt:
                cands.append((dt, i, int(order[jj])))
    cands.sort()
    used_a, used_b, out = set(), set(), []
    for _, i, j in cands:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            out.append((i, j))
    return sorted(out)


def tum_pose(tx, ty, tz, qx, qy, qz, qw) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat([qx, qy, qz, qw]).as_matrix()
    T[:3, 3] = (tx, ty, tz)
    return T


def tum_camera(folder_name: str) -> str | None:
    m = re.search(r"(?:freiburg|fr)([123])", folder_name.lower())
    return f"fr{m.group(1)}" if m else None


def tum_intrinsics(folder: Path) -> tuple[tuple[float, float, float, float], str]:
    """(fx, fy, cx, cy), where they came from: ``camera.yaml`` beside the data (keys fx, fy, cx, cy) when present,
    else by the folder name's fr1/fr2/fr3, else the benchmark's default, with a warning that says so."""
    import warnings

    path = folder / "camera.yaml"
    if path.is_file():
        import yaml

        try:
            cam = yaml.safe_load(path.read_text())
            values = tuple(float(cam[k]) for k in ("fx", "fy", "cx", "cy"))
        except (yaml.YAMLError, OSError, UnicodeDecodeError, TypeError, KeyError, ValueError):
            raise DatasetError(path, "expected a YAML mapping with numbers fx, fy, cx, cy") from None
        if not all(np.isfinite(values)) or min(values[:2]) <= 0:
            raise DatasetError(path, f"implausible intrinsics fx, fy, cx, cy = {values}")
        return values, str(path)
    camera = tum_camera(folder.name)
    if camera is None:
        warnings.warn(f"{folder}: the name says neither fr1, fr2 nor fr3: assuming the TUM benchmark's default "
                      f"intrinsics fx, fy, cx, cy = {TUM_INTRINSICS[None]}; put a camera.yaml (fx, fy, cx, cy) "
                      "beside the data or pass --intrinsics to set them", stacklevel=3)
        return TUM_INTRINSICS[None], "the TUM benchmark's default (the folder name says neither fr1, fr2 nor fr3)"
    return TUM_INTRINSICS[camera], f"the folder name ({camera}: the TUM benchmark's calibration)"


class TUMSequence(IndexedSource):
    """Associated RGB-D frames (with ground-truth poses when ``groundtruth.txt`` exists)."""

    def __init__(self, folder, intrinsics: tuple[float, float, float, float] | None = None):
        self.folder = folder = Path(folder)
        if not folder.is_dir():
            raise DatasetError(folder, "TUM RGB-D folder not found")
        self.name = folder.name
        rgb = read_tum_list(folder / "rgb.txt", 2)
        dep = read_tum_list(folder / "depth.txt", 2)
        t_rgb = np.array([float(r[0]) for r in rgb])
        t_dep = np.array([float(r[0]) for r in dep])
        pairs = associate(t_rgb, t_dep)
        if not pairs:
            raise DatasetError(folder, f"no rgb.txt / depth.txt timestamps match within {MAX_DT} s")
        gt_path = folder / "groundtruth.txt"
        gt_match = {}
        if gt_path.is_file():
            gt = read_tum_list(gt_path, 8, numeric=8)
            t_gt = np.array([float(r[0]) for r in gt])
            for i, j in associate(t_rgb[[p[0] for p in pairs]], t_gt):
                gt_match[i] = tum_pose(*(float(x) for x in gt[j][1:8]))
        self._items = [(t_rgb[i], folder / rgb[i][1], folder / dep[j][1], gt_match.get(k))
                       for k, (i, j) in enumerate(pairs)]
        (fx, fy, cx, cy), self.intrinsics_from = (intrinsics, "--intrinsics") if intrinsics else tum_intrinsics(folder)
        self.K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float64)
        self.imu, self.imu_path = read_folder_imu(folder), folder / "imu0" / "data.csv"

    def __len__(self) -> int:
        return len(self._items)

    def _time(self, i: int) -> float:
        return float(self._items[i][0])

    def _read(self, i: int) -> Frame:
        t, rgb_path, depth_path, pose = self._items[i]
        rgb = read_image(rgb_path)
        depth = read_depth_png(depth_path, DEPTH_SCALE)
        if depth.shape != rgb.shape[:2]:
            raise DatasetError(depth_path, f"depth is {depth.shape[1]}x{depth.shape[0]} but colour is {rgb.shape[1]}x{rgb.shape[0]}")
        return Frame(rgb=rgb, K=self.K.copy(), timestamp=float(t), index=i, depth=depth,
                     pose=None if pose is None else pose.copy())
