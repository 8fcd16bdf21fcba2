"""mapping.metrics: trajectory scores against an independent truth (a known transform of the ground truth)."""
import numpy as np
from scipy.spatial.transform import Rotation

from mapping.metrics import align_ground_truth, trajectory_metrics


def _walk(n: int, dt: float = 1 / 30) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(n) * dt
    poses = np.stack([np.eye(4)] * n)
    poses[:, :3, :3] = Rotation.from_euler("z", np.linspace(0, 1.0, n)[:, None]).as_matrix()
    poses[:, :3, 3] = np.stack([np.cos(t), np.sin(t), 0.1 * t], 1)
    return t, poses


def _moved(poses: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """``poses`` seen from another world frame (rotated 40 deg, shifted), their positions times ``scale``."""
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = Rotation.from_euler("xyz", [0.1, -0.2, 0.7]).as_matrix(), [1.0, -2.0, 0.5]
    out = T @ poses
    out[:, :3, 3] *= scale
    return out


def test_ate_is_zero_after_alignment_and_sim3_finds_the_scale():
    t, gt = _walk(60)  # 2 s: an RPE over 1 s exists
    rigid = trajectory_metrics((t, gt), (t, _moved(gt)))
    assert rigid["ate_rmse_m"] < 1e-9 and rigid["rpe_1s_trans_m"] < 1e-9 and rigid["rpe_1s_rot_deg"] < 1e-6
    scaled = trajectory_metrics((t, gt), (t, _moved(gt, 1.25)))
    assert scaled["ate_rmse_m"] > 0.01 and scaled["ate_sim3_rmse_m"] < 1e-9
    assert abs(scaled["ate_sim3_scale"] * 1.25 - 1) < 1e-9  # the scale that takes the estimate back to the truth


def test_short_or_unmatched_trajectories_leave_scores_empty():
    t, gt = _walk(15)  # 0.5 s: no RPE over 1 s
    short = trajectory_metrics((t, gt), (t, gt))
    assert short["ate_rmse_m"] < 1e-9 and short["rpe_1s_trans_m"] is None
    apart = trajectory_metrics((t, gt), (t + 100.0, gt))  # no timestamps in common
    assert apart["ate_rmse_m"] is None and "ate_error" in apart


def test_live_alignment_maps_the_truth_into_the_estimate_and_skips_bad_values():
    t, gt = _walk(20)
    est = _moved(gt)
    rng = np.random.default_rng(0)
    est[:, :3, 3] += rng.normal(0, 0.01, (20, 3))
    gt_bad = gt.copy()
    gt_bad[5, :3, 3] = np.nan  # a bad ground-truth value: left out of the fit
    positions, ate = align_ground_truth(t, gt_bad, t, est)
    assert 0.005 < ate < 0.03  # about the added noise (1 cm per axis)
    good = np.isfinite(positions).all(1)
    assert good.sum() == 19 and np.abs(positions[good] - est[good, :3, 3]).max() < 0.06
    assert align_ground_truth(t[:2], gt[:2], t[:2], est[:2]) is None
