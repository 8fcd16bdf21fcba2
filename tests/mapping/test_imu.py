"""The IMU record, its files and its preintegration (mapping.imu): bad data gives one clear line; EuRoC files round
trip; preintegrating the generator's noise-free IMU reproduces the path's relative poses."""
import math

import gtsam
import numpy as np
import pytest

from m2hmx.data.synthetic import FPS, make_path, make_scene
from mapping.imu import (D435I, ImuFileError, ImuNoise, ImuSamples, preintegrate, preintegration_params,
                         read_euroc_csv, read_euroc_noise, write_euroc_csv)
from mapping.interface import InterfaceError, PerceptionFrame


def _samples(n=40, rate=200.0, **over):
    t = np.arange(n) / rate
    args = dict(t=t, gyro=np.tile([0.01, -0.02, 0.3], (n, 1)), accel=np.tile([0.1, -9.81, 0.2], (n, 1)))
    args.update(over)
    return ImuSamples(**args)


def _one_line(exc) -> str:
    text = str(exc.value)
    assert "\n" not in text and "Traceback" not in text
    return text


@pytest.mark.parametrize("edit, words", [
    (lambda a: a["t"].__setitem__(7, a["t"][6]), "IMU sample 7: time 0.030000000 s is not after"),
    (lambda a: a["t"].__setitem__(9, 0.0), "IMU sample 9: time 0.000000000 s is not after"),
    (lambda a: a["gyro"].__setitem__((12, 1), np.nan), "IMU sample 12: time, gyro or accel is NaN"),
    (lambda a: a["accel"].__setitem__((3, 0), np.inf), "IMU sample 3: time, gyro or accel is NaN"),
    (lambda a: a["gyro"].__setitem__((5, 2), math.degrees(1.0) * 2), "IMU sample 5: |gyro| = 114.6 rad/s"),
    (lambda a: a["accel"].__setitem__((8, 1), -9810.0), "IMU sample 8: |accel| = 9810.0 m/s^2"),
])
def test_bad_samples_name_the_sample_in_one_line(edit, words):
    args = dict(t=np.arange(40) / 200.0, gyro=np.zeros((40, 3)), accel=np.tile([0, 0, 9.81], (40, 1)))
    edit(args)
    with pytest.raises(InterfaceError) as exc:
        ImuSamples(**args)
    assert _one_line(exc).startswith(words)


@pytest.mark.parametrize("over, words", [
    (dict(gyro=np.zeros((39, 3))), "IMU gyro must be (40, 3) for 40 times, got (39, 3)"),
    (dict(accel=np.zeros((40, 2))), "IMU accel must be (40, 3)"),
    (dict(t=np.zeros((40, 2))), "IMU times must be a 1-D array"),
    (dict(body_T_cam=np.eye(3)), "IMU body_T_cam must be a finite 4x4 matrix"),
    (dict(body_T_cam=np.diag([1.0, 1, -1, 1])), "IMU body_T_cam is not a rigid transform"),
])
def test_bad_shapes_and_extrinsics(over, words):
    with pytest.raises(InterfaceError) as exc:
        _samples(**over)
    assert _one_line(exc).startswith(words)


def test_record_helpers():
    s = _samples(40)
    assert len(s) == 40 and len(ImuSamples.empty()) == 0
    part = s.between(0.05, 0.1)  # t0 < t <= t1
    assert part.t[0] == pytest.approx(0.055) and part.t[-1] == pytest.approx(0.1) and len(part) == 10
    joined = s.between(-1, 0.05).concat(s.between(0.05, 1.0))
    assert np.array_equal(joined.t, s.t) and np.array_equal(joined.accel, s.accel)
    with pytest.raises(InterfaceError, match="IMU sample 11: time .* is not after"):
        s.between(-1, 0.05).concat(s.between(0.02, 1.0))  # overlapping pieces
    with pytest.raises(InterfaceError, match="different body_T_cam"):
        s.concat(ImuSamples.empty(body_T_cam=np.diag([1.0, -1, -1, 1])))
    with pytest.raises(ValueError):
        s.t[0] = 5.0  # read-only arrays: the record cannot change after validation


def test_perception_frame_carries_imu_up_to_its_time():
    h, w = 6, 8
    img = dict(rgb=np.zeros((h, w, 3), np.uint8), depth=np.ones((h, w), np.float32), labels=np.zeros((h, w), np.uint8),
               K=np.array([[10.0, 0, 4], [0, 10, 3], [0, 0, 1]]))
    s = _samples(40)  # up to 0.195 s
    assert PerceptionFrame(timestamp=0.195, imu=s, **img).imu is s
    assert PerceptionFrame(timestamp=0.1945, imu=s, **img).imu is s  # within the 1 ms tolerance
    assert PerceptionFrame(timestamp=0.0, imu=ImuSamples.empty(), **img).imu is not None
    assert PerceptionFrame(timestamp=0.0, **img).imu is None
    with pytest.raises(InterfaceError) as exc:
        PerceptionFrame(timestamp=0.19, imu=s, **img)
    assert "IMU sample at 0.195000 s is after the frame's timestamp 0.190000 s" in _one_line(exc)
    with pytest.raises(InterfaceError, match="imu must be mapping.imu.ImuSamples or None, got ndarray"):
        PerceptionFrame(timestamp=1.0, imu=np.zeros((3, 7)), **img)


def test_euroc_files_round_trip(tmp_path):
    T = np.eye(4)
    T[:3, :3] = gtsam.Rot3.RzRyRx(0.1, -0.2, 1.5).matrix()
    T[:3, 3] = [0.02, -0.005, 0.011]
    rng = np.random.default_rng(0)
    s = ImuSamples((2500 + np.arange(500)) / 200.0, rng.normal(0, 1, (500, 3)), rng.normal(0, 5, (500, 3)), T)
    path = tmp_path / "seq" / "imu0" / "data.csv"
    write_euroc_csv(path, s, D435I)
    lines = path.read_text().splitlines()
    assert lines[0].startswith("#timestamp [ns],w_RS_S_x [rad s^-1]") and lines[1].startswith("12500000000,")
    back = read_euroc_csv(path)
    for name in ("t", "gyro", "accel", "body_T_cam"):
        assert np.array_equal(getattr(back, name), getattr(s, name)), name
    assert read_euroc_noise(path.parent) == D435I
    assert (tmp_path / "seq" / "cam0" / "sensor.yaml").read_text().count("T_BS") == 2  # comment + key
    assert not list(path.parent.glob(".*tmp*"))  # atomic writes leave nothing behind
    # without cam0/sensor.yaml the IMU sits at the camera
    (tmp_path / "seq" / "cam0" / "sensor.yaml").unlink()
    assert np.array_equal(read_euroc_csv(path).body_T_cam, np.eye(4))


GOOD = "#timestamp [ns],wx,wy,wz,ax,ay,az\n" + "".join(
    f"{k * 5_000_000},0.01,0.02,0.03,0.1,-9.8,0.2\n" for k in range(10))


@pytest.mark.parametrize("edit, line, words", [
    (lambda L: L.__setitem__(4, "10000000,0.01,0.02,0.03,0.1,-9.8,0.2"), 5, "time 0.010000000 s is not after"),
    (lambda L: L.__setitem__(6, L[6].replace("0.02", "nan")), 7, "time, gyro or accel is NaN"),
    (lambda L: L.__setitem__(3, L[3].replace("-9.8", "-980.0")), 4, "|accel| = 980.0 m/s^2 is beyond"),
    (lambda L: L.__setitem__(8, L[8].replace("0.03", "40.0")), 9, "|gyro| = 40.0 rad/s is beyond"),
    (lambda L: L.__setitem__(5, "20000000,0.01,0.02,0.03,0.1,-9.8"), 6, "expected 7 comma-separated numbers"),
    (lambda L: L.__setitem__(2, "5000000;0.01;0.02;0.03;0.1;-9.8;0.2"), 3, "expected 7 comma-separated numbers"),
    (lambda L: L.__setitem__(7, "abc,0.01,0.02,0.03,0.1,-9.8,0.2"), 8, "got 'abc,0.01"),
    (lambda L: L.__delitem__(slice(3, 30)), 4, "0.140 s since the previous sample (over 0.1 s): samples missing"),
])
def test_bad_csv_lines_name_file_and_line(tmp_path, edit, line, words):
    lines = GOOD.splitlines()
    lines += [f"{k * 5_000_000},0.01,0.02,0.03,0.1,-9.8,0.2" for k in range(10, 40)]
    edit(lines)
    path = tmp_path / "imu0" / "data.csv"
    path.parent.mkdir()
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ImuFileError) as exc:
        read_euroc_csv(path)
    text = _one_line(exc)
    assert text.startswith(f"{path}:{line}: ") and words in text, text


def test_missing_file_and_bad_extrinsic(tmp_path):
    with pytest.raises(ImuFileError, match=r"data.csv: file not found"):
        read_euroc_csv(tmp_path / "imu0" / "data.csv")
    (tmp_path / "imu0").mkdir()
    (tmp_path / "imu0" / "data.csv").write_text(GOOD)
    (tmp_path / "cam0").mkdir()
    (tmp_path / "cam0" / "sensor.yaml").write_text("T_BS:\n  data: [1, 2, 3]\n")
    with pytest.raises(ImuFileError) as exc:
        read_euroc_csv(tmp_path / "imu0" / "data.csv")
    assert _one_line(exc) == f"{tmp_path / 'cam0' / 'sensor.yaml'}: no readable T_BS (rows: 4, cols: 4, data: 16 numbers)"


def test_noise_figures_and_params():
    assert D435I.gyro_noise_density == pytest.approx(2.443e-4, rel=1e-3)  # 0.014 deg/s/sqrt(Hz)
    assert D435I.accel_noise_density == pytest.approx(1.471e-3, rel=1e-3)  # 150 ug/sqrt(Hz)
    doubled = D435I.scaled(2.0)
    assert isinstance(doubled, ImuNoise) and doubled.accel_bias_walk == 2 * D435I.accel_bias_walk
    assert doubled.rate_hz == D435I.rate_hz
    p = preintegration_params(D435I)
    assert np.allclose(p.n_gravity, [0, 0, -9.81])
    assert np.allclose(p.getGyroscopeCovariance(), D435I.gyro_noise_density ** 2 * np.eye(3))
    assert np.allclose(p.getBiasAccCovariance(), D435I.accel_bias_walk ** 2 * np.eye(3))


def _body_pose(path, t, body_T_cam):
    return path.poses(np.array([t]))[0] @ np.linalg.inv(body_T_cam)


@pytest.mark.parametrize("seed", [0, 200000])
@pytest.mark.parametrize("offset", [False, True])
def test_imu_round_trip(seed, offset):
    """Preintegrating the generated noise-free IMU over 1 s (30 frames) from the true state with zero bias predicts
    the path's pose 1 s later within 1 mm and 0.05 deg, for every such window of a 300-frame walk; also with the IMU
    off the camera (lever arm and rotated axes)."""
    body_T_cam = np.eye(4)
    if offset:  # roughly a D435i's IMU beside its colour camera, axes turned
        body_T_cam[:3, :3] = gtsam.Rot3.RzRyRx(0.05, -0.03, math.pi / 2).matrix()
        body_T_cam[:3, 3] = [0.02, -0.005, 0.011]
    path = make_path(make_scene(seed), 300, seed)
    imu = path.imu(noise=None, body_T_cam=body_T_cam)
    assert imu.t[1] == pytest.approx(0.005) and imu.t[-1] == pytest.approx(299 / FPS, abs=0.005)
    params = preintegration_params(D435I)
    errors = []
    for i0 in range(0, 300 - 30, 15):
        t0, t1 = i0 / FPS, (i0 + 30) / FPS
        h = 1e-5
        v0 = (_body_pose(path, t0 + h, body_T_cam)[:3, 3] - _body_pose(path, t0 - h, body_T_cam)[:3, 3]) / (2 * h)
        state = gtsam.NavState(gtsam.Pose3(_body_pose(path, t0, body_T_cam)), v0)
        pim = preintegrate(imu, t0, t1, params, gtsam.imuBias.ConstantBias())
        assert pim.deltaTij() == pytest.approx(1.0)
        predicted = pim.predict(state, gtsam.imuBias.ConstantBias()).pose()
        err = gtsam.Pose3(_body_pose(path, t1, body_T_cam)).between(predicted)
        errors.append((np.linalg.norm(err.translation()), math.degrees(np.linalg.norm(gtsam.Rot3.Logmap(err.rotation())))))
    errors = np.array(errors)
    assert errors[:, 0].max() < 1e-3 and errors[:, 1].max() < 0.05, errors.max(0)
    # the check can fail: a wrong initial velocity of 1 cm/s moves the prediction by 1 cm
    state = gtsam.NavState(state.pose(), state.velocity() + [0.01, 0, 0])
    assert np.linalg.norm(pim.predict(state, gtsam.imuBias.ConstantBias()).pose().translation()
                          - predicted.translation()) > 5e-3


def test_preintegrate_partial_intervals_and_empty():
    s = _samples(40, gyro=np.tile([0.0, 0.0, 0.5], (40, 1)), accel=np.tile([0.0, 0.0, 9.81], (40, 1)))
    params = preintegration_params(D435I)
    pim = preintegrate(s, 0.0123, 0.1234, params)  # starts and ends between samples
    assert pim.deltaTij() == pytest.approx(0.1111)
    assert np.allclose(gtsam.Rot3.Logmap(pim.deltaRij()), [0, 0, 0.5 * 0.1111])
    assert np.allclose(pim.deltaPij(), [0, 0, 0.5 * 9.81 * 0.1111 ** 2])
    assert preintegrate(s, 0.1, 0.1, params).deltaTij() == 0
    with pytest.raises(InterfaceError, match="no IMU samples to preintegrate from 0.000000 s to 1.000000 s"):
        preintegrate(ImuSamples.empty(), 0.0, 1.0, params)
