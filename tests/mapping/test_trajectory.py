import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mapping.trajectory import (TrajectoryError, ate_rmse, ate_with_scale, read_hydra_csv, read_tum, rpe_rmse,
                               write_hydra_csv, write_tum)


def test_ate_tum_reference_value(shared_data):
    d = shared_data / "tum-trajectories"
    ate = ate_rmse(read_tum(d / "freiburg1_xyz-groundtruth.txt"), read_tum(d / "freiburg1_xyz-rgbdslam.txt"))
    assert abs(ate - 0.0135) < 1e-4


def test_ate_is_invariant_to_a_rigid_transform_and_sees_noise():
    rng = np.random.default_rng(0)
    t = np.arange(50) / 30.0
    poses = np.tile(np.eye(4), (50, 1, 1))
    poses[:, :3, 3] = np.cumsum(rng.normal(0, 0.02, (50, 3)), 0)
    poses[:, :3, :3] = Rotation.from_rotvec(rng.normal(0, 0.3, (50, 3))).as_matrix()
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("xyz", [10, 20, 30], degrees=True).as_matrix()
    T[:3, 3] = [1, 2, 3]
    moved = T @ poses
    assert ate_rmse((t, poses), (t, moved)) < 1e-9
    noisy = moved.copy()
    noisy[:, :3, 3] += rng.normal(0, 0.01, (50, 3))
    assert 0.012 < ate_rmse((t, poses), (t, noisy)) < 0.02


def _walk(n=90, rate=30.0, seed=2):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, :3, 3] = np.cumsum(rng.normal(0, 0.02, (n, 3)), 0)
    poses[:, :3, :3] = Rotation.from_rotvec(rng.normal(0, 0.3, (n, 3))).as_matrix()
    return t, poses


def test_sim3_ate_undoes_a_scaled_trajectory_and_reports_the_scale():
    t, poses = _walk()
    est = poses.copy()
    est[:, :3, 3] *= 1.25  # a map 25 % too large, then moved rigidly
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("z", 40, degrees=True).as_matrix()
    T[:3, 3] = [0.5, -1, 2]
    est = T @ est
    assert ate_rmse((t, poses), (t, est)) > 0.02
    ate, scale = ate_with_scale((t, poses), (t, est))
    assert ate < 1e-9 and abs(scale - 0.8) < 1e-9


def test_rpe_is_the_drift_of_the_estimated_motion_over_one_second():
    t = np.arange(91) / 30.0  # 3 s at 30 Hz; a yawing camera moving 0.5 m/s along x
    poses = np.tile(np.eye(4), (91, 1, 1))
    poses[:, 0, 3] = 0.5 * t
    poses[:, :3, :3] = Rotation.from_euler("z", 10 * t[:, None], degrees=True).as_matrix()
    longer = poses.copy()
    longer[:, :3, 3] *= 1.1  # 10 % too much translation: 5 cm over each second, no rotation error
    trans, rot = rpe_rmse((t, poses), (t, longer), delta_s=1.0)
    assert abs(trans - 0.05) < 1e-9 and rot < 1e-6
    turning = poses.copy()
    turning[:, :3, :3] = turning[:, :3, :3] @ Rotation.from_euler("z", 2 * t[:, None], degrees=True).as_matrix()
    assert abs(rpe_rmse((t, poses), (t, turning), delta_s=1.0)[1] - 2.0) < 1e-6  # 2 deg/s of gyro drift
    assert np.allclose(rpe_rmse((t, poses), (t, poses)), 0.0, atol=1e-9)
    with pytest.raises(TrajectoryError, match="less than 5"):
        rpe_rmse((t, poses), (t, poses), delta_s=5.0)


def test_tum_and_hydra_csv_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    t = 1.0 + np.arange(10) * 0.1
    poses = np.tile(np.eye(4), (10, 1, 1))
    poses[:, :3, :3] = Rotation.from_rotvec(rng.normal(0, 1, (10, 3))).as_matrix()
    poses[:, :3, 3] = rng.normal(0, 1, (10, 3))
    write_tum(tmp_path / "t.tum", t, poses)
    write_hydra_csv(tmp_path / "t.csv", t, poses)
    for tt, pp in (read_tum(tmp_path / "t.tum"), read_hydra_csv(tmp_path / "t.csv")):
        assert np.allclose(tt, t, atol=1e-6) and np.allclose(pp, poses, atol=1e-6)
    header = (tmp_path / "t.csv").read_text().splitlines()[0]
    assert header == "timestamp_ns,tx,ty,tz,qw,qx,qy,qz"
