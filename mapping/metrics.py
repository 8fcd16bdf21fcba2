"""Trajectory scores against ground truth, shared by ``m2hmx-map`` (``app.map_run``), the viewer's live ATE
(``app.session``) and the benchmarks: ATE RMSE after an SE(3) and a Sim(3) Umeyama alignment, RPE over 1 s
(Sturm et al., IROS 2012, the TUM RGB-D benchmark's definitions; ``mapping.trajectory``)."""
from __future__ import annotations

import numpy as np

from mapping.trajectory import TrajectoryError, associate, ate_rmse, ate_with_scale, rpe_rmse, umeyama

TRAJECTORY_KEYS = ("ate_rmse_m", "ate_sim3_rmse_m", "ate_sim3_scale", "rpe_1s_trans_m", "rpe_1s_rot_deg")


def trajectory_metrics(gt: tuple[np.ndarray, np.ndarray], est: tuple[np.ndarray, np.ndarray],
                       max_diff: float = 0.02) -> dict:
    """``TRAJECTORY_KEYS`` for (timestamps, poses) pairs; a score that cannot be computed stays None (an ATE that
    fails says why under ``ate_error``; under a second of poses there is no RPE over 1 s)."""
    out: dict = dict.fromkeys(TRAJECTORY_KEYS)
    try:
        out["ate_rmse_m"] = ate_rmse(gt, est, max_diff=max_diff)
        out["ate_sim3_rmse_m"], out["ate_sim3_scale"] = ate_with_scale(gt, est, max_diff=max_diff)
    except (TrajectoryError, np.linalg.LinAlgError) as exc:
        out["ate_error"] = str(exc)
    try:
        out["rpe_1s_trans_m"], out["rpe_1s_rot_deg"] = rpe_rmse(gt, est, delta_s=1.0, max_diff=max_diff)
    except (TrajectoryError, np.linalg.LinAlgError):
        pass
    return out


def align_ground_truth(gt_t, gt_poses, est_t, est_poses, max_diff: float = 1e-3):
    """(every ground-truth camera centre in the estimate's frame, ATE RMSE in metres) after an SE(3) Umeyama
    fit over the associated poses, or None with fewer than 3 finite pairs (a bad ground-truth value must not
    stop a live view)."""
    if len(gt_t) < 3 or len(est_t) < 3:
        return None
    gt_p, est_p = np.asarray(gt_poses), np.asarray(est_poses)
    i_gt, i_est = associate(np.asarray(gt_t), np.asarray(est_t), max_diff=max_diff)
    if len(i_gt) < 3:
        return None
    a, b = gt_p[i_gt, :3, 3], est_p[i_est, :3, 3]
    finite = np.isfinite(a).all(1) & np.isfinite(b).all(1)
    if finite.sum() < 3:
        return None
    a, b = a[finite], b[finite]
    try:
        rot, trans, _ = umeyama(a, b)
    except np.linalg.LinAlgError:
        return None
    err = b - (a @ rot.T + trans)
    return gt_p[:, :3, 3] @ rot.T + trans, float(np.sqrt((err ** 2).sum(1).mean()))
