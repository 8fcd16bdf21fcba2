"""Viewer sources (no Qt): resizing keeps geometry consistent, soak looping, clear errors for bad sources."""
import numpy as np
import pytest

from app.sources import (BackAndForth, CameraSource, MotionBuffer, SourceError, SourceSpec, open_viewer_source,
                         resize_frame)
from m2hmx.data.synthetic import SyntheticSource


@pytest.fixture(scope="module")
def scene():
    return SyntheticSource(seed=0, frames=5, height=120, width=160)


def test_resize_frame_scales_intrinsics_and_keeps_ground_truth_exact(scene):
    frame = scene[0]
    small = resize_frame(frame, (60, 80))
    assert small.rgb.shape == (60, 80, 3) and small.depth.shape == small.labels.shape == (60, 80)
    # a 3D point projects to the same relative image position before and after
    X = np.array([0.3, -0.2, 2.0])
    uv_big = (frame.K @ X)[:2] / X[2]
    uv_small = (small.K @ X)[:2] / X[2]
    np.testing.assert_allclose((uv_small + 0.5) * 2, uv_big + 0.5, atol=1e-9)
    assert set(np.unique(small.labels)) <= set(np.unique(frame.labels))  # nearest: no blended class ids
    assert resize_frame(frame, (120, 160)) is frame
    assert small.imu is frame.imu and len(frame.imu) == 1  # the IMU samples travel with the frame


def test_back_and_forth_turns_without_jumps_and_keeps_time_running(scene):
    loop = BackAndForth(scene, total=13)
    frames = list(loop)
    assert len(frames) == 13 and len(loop) == 13
    poses = np.array([f.pose for f in frames])
    np.testing.assert_allclose(poses[4], scene.poses[4])  # forward to the last frame ...
    np.testing.assert_allclose(poses[5], scene.poses[3])  # ... then back, no jump to the start
    np.testing.assert_allclose(poses[8], scene.poses[0])
    np.testing.assert_allclose(poses[9], scene.poses[1])
    t = np.array([f.timestamp for f in frames])
    assert np.all(np.diff(t) > 0)
    assert all(f.imu is None for f in frames)  # played backwards, the recorded motion no longer fits


def test_motion_buffer_unites_gyro_and_accel_on_the_gyro_times():
    """A D435i's streams as its callback delivers them: gyro at 200 Hz, accel at 250 Hz, out of step."""
    buf = MotionBuffer(np.eye(4))
    for k in range(40):
        buf.add("gyro", 10 + k / 200, (0.1 * k, 0, 0))
    for k in range(45):
        buf.add("accel", 10.001 + k / 250, (0, 9.81, 1.0 + k))  # accel z = 1 + 250 (t - 10.001)
    first = buf.take(10.05)
    assert first.t[0] == pytest.approx(10.005)  # the gyro sample before the first accel one is not interpolable
    assert first.t[-1] == pytest.approx(10.05) and np.allclose(first.gyro[:, 0], 0.1 * np.arange(1, 11))
    np.testing.assert_allclose(first.accel[:, 2], 1 + 250 * (first.t - 10.001), atol=1e-9)
    rest = buf.take(20.0)  # up to the newest accel sample (10.177 s): later gyro samples wait
    assert rest.t[0] == pytest.approx(10.055) and rest.t[-1] == pytest.approx(10.175)
    np.testing.assert_allclose(rest.accel[:, 2], 1 + 250 * (rest.t - 10.001), atol=1e-9)
    assert len(buf.take(20.0)) == 0
    buf.add("accel", 10.3, (0, 9.81, 0))
    assert buf.take(20.0).t[0] == pytest.approx(10.18)  # nothing handed out twice, nothing lost


def test_unopenable_camera_raises_a_one_line_error():
    with pytest.raises(SourceError, match="camera 99 could not be opened"):
        CameraSource(99)


def test_missing_files_name_the_file(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(SourceError, match="nope.mp4"):
        open_viewer_source(SourceSpec("video", str(missing)))
    with pytest.raises(SourceError, match="dataset.*nope_dir|nope_dir"):
        open_viewer_source(SourceSpec("dataset", str(tmp_path / "nope_dir")))


def _has_realsense() -> bool:
    try:
        import pyrealsense2  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(_has_realsense(), reason="pyrealsense2 is installed")
def test_realsense_without_the_extra_says_how_to_install():
    with pytest.raises(SourceError, match=r"pip install 'm2hmx\[realsense\]'"):
        open_viewer_source(SourceSpec("realsense"))


def test_demo_source_has_ground_truth_at_the_requested_size():
    src = open_viewer_source(SourceSpec("demo", demo_frames=3), size=(60, 80))
    frame = next(iter(src))
    assert frame.rgb.shape == (60, 80, 3) and frame.depth is not None and frame.pose is not None
    assert src.live is False and len(src) == 3
