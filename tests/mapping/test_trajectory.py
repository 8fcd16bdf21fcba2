import numpy as np
from scipy.spatial.transform import Rotation

from mapping.trajectory import ate_rmse, read_hydra_csv, read_tum, write_hydra_csv, write_tum


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
