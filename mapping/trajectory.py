"""Trajectories: TUM files, Hydra's CSV, and the trajectory errors (ATE, RPE).

Poses are camera-to-world 4x4 matrices; timestamps are seconds. The ATE follows the TUM benchmark and
``evo_ape tum GT EST -a``: associate timestamps (nearest, within ``max_diff``), align the estimate to
the ground truth with Umeyama's closed form (S. Umeyama, "Least-squares estimation of transformation
parameters between two point patterns", PAMI 1991; SE(3), or Sim(3) in ``ate_with_scale`` as
``evo_ape -as``), then take the RMSE of the translational differences. The RPE is the TUM benchmark's drift
measure (Sturm et al., "A Benchmark for the Evaluation of RGB-D SLAM Systems", IROS 2012): the error of the
estimated motion over ``delta_s`` seconds, whatever the alignment.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from mapping import MappingError
from mapping.atomic import AtomicBatch, atomic_write_text


class TrajectoryError(MappingError, ValueError):
    """A trajectory file or array that cannot be used (one-line message)."""


def poses_to_tum_rows(timestamps: np.ndarray, poses: np.ndarray) -> np.ndarray:
    """(N,) seconds + (N,4,4) -> (N,8) rows ``t tx ty tz qx qy qz qw``."""
    poses = np.asarray(poses, np.float64).reshape(-1, 4, 4)
    quat = Rotation.from_matrix(poses[:, :3, :3]).as_quat()  # scipy order: x, y, z, w
    return np.column_stack([np.asarray(timestamps, np.float64), poses[:, :3, 3], quat])


def tum_rows_to_poses(rows: np.ndarray) -> np.ndarray:
    poses = np.tile(np.eye(4), (len(rows), 1, 1))
    poses[:, :3, :3] = Rotation.from_quat(rows[:, 4:8]).as_matrix()
    poses[:, :3, 3] = rows[:, 1:4]
    return poses


def read_tum(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a TUM trajectory (``t tx ty tz qx qy qz qw``, '#' comments) -> (timestamps (N,), poses (N,4,4))."""
    path = Path(path)
    if not path.is_file():
        raise TrajectoryError(f"{path}: trajectory file not found")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.replace(",", " ").split()
        if len(fields) != 8:
            raise TrajectoryError(f"{path}:{lineno}: expected 8 fields 't tx ty tz qx qy qz qw', got {len(fields)}")
        try:
            rows.append([float(f) for f in fields])
        except ValueError:
            raise TrajectoryError(f"{path}:{lineno}: non-numeric field in '{line}'") from None
    if not rows:
        raise TrajectoryError(f"{path}: no poses in trajectory file")
    rows = np.array(rows)
    return rows[:, 0], tum_rows_to_poses(rows)


def write_tum(path: str | Path, timestamps: np.ndarray, poses: np.ndarray, batch: AtomicBatch | None = None) -> Path:
    rows = poses_to_tum_rows(timestamps, poses)
    lines = ["# timestamp tx ty tz qx qy qz qw"]
    lines += [f"{r[0]:.6f} " + " ".join(f"{v:.9f}" for v in r[1:]) for r in rows]
    text = "\n".join(lines) + "\n"
    return batch.write_text(path, text) if batch is not None else atomic_write_text(path, text)


def write_hydra_csv(path: str | Path, timestamps: np.ndarray, poses: np.ndarray,
                    batch: AtomicBatch | None = None) -> Path:
    """Hydra's ``trajectory.csv``: ``timestamp_ns,tx,ty,tz,qw,qx,qy,qz``."""
    rows = poses_to_tum_rows(timestamps, poses)
    lines = ["timestamp_ns,tx,ty,tz,qw,qx,qy,qz"]
    for r in rows:
        t_ns = int(round(r[0] * 1e9))
        tx, ty, tz, qx, qy, qz, qw = r[1:]
        lines.append(f"{t_ns},{tx:.9f},{ty:.9f},{tz:.9f},{qw:.9f},{qx:.9f},{qy:.9f},{qz:.9f}")
    text = "\n".join(lines) + "\n"
    return batch.write_text(path, text) if batch is not None else atomic_write_text(path, text)


def read_hydra_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    path = Path(path)
    try:
        data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    except (OSError, ValueError) as exc:
        raise TrajectoryError(f"{path}: cannot read Hydra trajectory CSV ({exc})") from None
    if data.shape[1] != 8:
        raise TrajectoryError(f"{path}: expected 8 columns timestamp_ns,tx,ty,tz,qw,qx,qy,qz")
    rows = np.column_stack([data[:, 0] * 1e-9, data[:, 1:4], data[:, 5:8], data[:, 4]])
    return rows[:, 0], tum_rows_to_poses(rows)


def associate(t_ref: np.ndarray, t_est: np.ndarray, max_diff: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i_ref, i_est) matching each estimate to its nearest reference stamp within ``max_diff``,
    each reference used once (evo's association)."""
    t_ref, t_est = np.asarray(t_ref, np.float64), np.asarray(t_est, np.float64)
    order = np.argsort(t_ref)
    sorted_ref = t_ref[order]
    pos = np.clip(np.searchsorted(sorted_ref, t_est), 1, max(len(t_ref) - 1, 1))
    left = np.clip(pos - 1, 0, len(t_ref) - 1)
    right = np.clip(pos, 0, len(t_ref) - 1)
    pick = np.where(np.abs(sorted_ref[left] - t_est) <= np.abs(sorted_ref[right] - t_est), left, right)
    diff = np.abs(sorted_ref[pick] - t_est)
    i_est = np.flatnonzero(diff <= max_diff)
    i_ref = order[pick[i_est]]
    _, first = np.unique(i_ref, return_index=True)  # one estimate per reference pose
    return i_ref[first], i_est[first]


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """R, t, s minimising ||dst - (s R src + t)||^2 for (N,3) point sets."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2, 2] = -1
    rot = u @ sign @ vt
    scale = float(np.trace(np.diag(d) @ sign) / xs.var(0).sum()) if with_scale else 1.0
    return rot, mu_d - scale * rot @ mu_s, scale


def _associated(gt: tuple[np.ndarray, np.ndarray], est: tuple[np.ndarray, np.ndarray],
                max_diff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(timestamps, gt poses, estimated poses) of the associated pairs, in time order."""
    (t_gt, p_gt), (t_est, p_est) = gt, est
    i_gt, i_est = associate(t_gt, t_est, max_diff)
    if len(i_gt) < 3:
        raise TrajectoryError(f"only {len(i_gt)} poses associate within {max_diff} s: cannot align trajectories")
    order = np.argsort(np.asarray(t_gt)[i_gt], kind="stable")
    i_gt, i_est = i_gt[order], i_est[order]
    return np.asarray(t_gt)[i_gt], np.asarray(p_gt)[i_gt], np.asarray(p_est)[i_est]


def ate_rmse(gt: tuple[np.ndarray, np.ndarray], est: tuple[np.ndarray, np.ndarray], max_diff: float = 0.01) -> float:
    """ATE RMSE (m) of ``est`` against ``gt``, each a (timestamps, poses (N,4,4)) pair; SE(3) alignment."""
    return _ate(gt, est, max_diff, False)[0]


def ate_with_scale(gt: tuple[np.ndarray, np.ndarray], est: tuple[np.ndarray, np.ndarray],
                   max_diff: float = 0.01) -> tuple[float, float]:
    """(ATE RMSE (m) after a Sim(3) alignment, the scale that alignment applies to ``est``)."""
    return _ate(gt, est, max_diff, True)


def _ate(gt, est, max_diff: float, with_scale: bool) -> tuple[float, float]:
    _, p_gt, p_est = _associated(gt, est, max_diff)
    a, b = p_est[:, :3, 3], p_gt[:, :3, 3]
    rot, trans, scale = umeyama(a, b, with_scale)
    err = b - (scale * a @ rot.T + trans)
    return float(np.sqrt((err ** 2).sum(1).mean())), scale


def rpe_rmse(gt: tuple[np.ndarray, np.ndarray], est: tuple[np.ndarray, np.ndarray], delta_s: float = 1.0,
             max_diff: float = 0.01) -> tuple[float, float]:
    """RPE over ``delta_s`` seconds: RMSE of the translational (m) and rotational (deg) error of the estimated
    motion ``inv(P_i) P_j`` against the true one, over every associated pose i and the first j at least
    ``delta_s`` later."""
    t, q, p = _associated(gt, est, max_diff)
    j = np.searchsorted(t, t + delta_s - 1e-9)
    i = np.flatnonzero(j < len(t))
    if len(i) == 0:
        raise TrajectoryError(f"the trajectories span less than {delta_s} s: no relative pose error")
    j = j[i]
    err = np.linalg.inv(np.linalg.inv(q[i]) @ q[j]) @ (np.linalg.inv(p[i]) @ p[j])
    trans = np.linalg.norm(err[:, :3, 3], axis=1)
    rot = np.degrees(Rotation.from_matrix(err[:, :3, :3]).magnitude())
    return float(np.sqrt((trans ** 2).mean())), float(np.sqrt((rot ** 2).mean()))
