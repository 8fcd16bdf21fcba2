"""Sparse keyframe visual(-inertial) odometry (mapping.odometry, mapping.inertial) on generated rooms: real
OpenCV, real GTSAM, real renders and their generated IMU."""
import cv2
import gtsam
import numpy as np
import pytest

from m2hmx.data.synthetic import SyntheticSource
from mapping.bridge import MappingBridge, MappingConfig
from mapping.imu import D435I
from mapping.inertial import ImuFusion
from mapping.interface import PerceptionFrame
from mapping.odometry import OdometryConfig, SparseOdometry, depth_sigma_for
from mapping.trajectory import ate_rmse


@pytest.fixture(scope="module")
def room():
    """Room 1000, 60 frames (2 s) at 240x320, with its generated IMU."""
    source = SyntheticSource(seed=1000, frames=60, height=240, width=320)
    return source, list(source)


def _sparse(frames, imu: bool, depths=None, depth_mode: str = "gt") -> float:
    cv2.setRNGSeed(0)  # PnP-RANSAC draws from OpenCV's global generator
    f0 = frames[0]
    odo = SparseOdometry(f0.K, f0.size, f0.pose, OdometryConfig(), depth_sigma_for(depth_mode),
                         ImuFusion(D435I) if imu else None)
    poses = []
    for i, f in enumerate(frames):
        step = odo.step(f.timestamp, f.rgb, f.depth if depths is None else depths[i], None, f.imu if imu else None)
        poses.append(step.pose)
    assert odo.failures == 0
    t = np.array([f.timestamp for f in frames])
    return ate_rmse((t, np.array([f.pose for f in frames])), (t, np.array(poses)))


def test_visual_odometry_on_exact_depth_is_within_a_centimetre(room):
    """Measured 0.44 cm (14 keyframes of 60 frames)."""
    _, frames = room
    assert _sparse(frames, imu=False) <= 0.01


def test_visual_inertial_odometry_is_at_least_as_good_as_visual_only(room):
    """Measured 0.35 cm with the generated D435i-grade IMU against 0.44 cm without."""
    _, frames = room
    vo, vio = _sparse(frames, imu=False), _sparse(frames, imu=True)
    assert vio <= vo, (vio, vo)


class _IllPosedOnce:
    """A real ISAM2 whose next update raises as GTSAM does on an ill-posed system (IndeterminateLinearSystem)."""

    def __init__(self, isam):
        self.isam, self.raised = isam, False

    def update(self, *args):
        if not self.raised:
            self.raised = True
            raise RuntimeError("Indeterminate linear system detected while working near variable x3")
        return self.isam.update(*args)

    def __getattr__(self, name):
        return getattr(self.isam, name)


def test_an_ill_posed_smoother_update_starts_a_new_smoother_and_tracking_goes_on(room):
    """Room 100003's bare walls once made ISAM2 throw mid-run, which ended m2hmx-map: now the odometry starts a new
    smoother at that keyframe (new landmarks, a new IMU chain) and keeps tracking."""
    _, frames = room
    cv2.setRNGSeed(0)
    f0 = frames[0]
    odo = SparseOdometry(f0.K, f0.size, f0.pose, OdometryConfig(), depth_sigma_for("gt"), ImuFusion(D435I))
    poses, t = [], np.array([f.timestamp for f in frames])
    for i, f in enumerate(frames):
        if i == 10:
            odo.isam = _IllPosedOnce(odo.isam)
        poses.append(odo.step(f.timestamp, f.rgb, f.depth, None, f.imu).pose)
    assert odo.isam.__class__.__name__ == "ISAM2" and odo.smoother_resets == 1 and odo.failures == 0
    assert ate_rmse((t, np.array([f.pose for f in frames])), (t, np.array(poses))) <= 0.02


def _bridge_ate(source, frames, depths, odometry: str) -> float:
    bridge = MappingBridge(source.label_space, MappingConfig(depth_mode="pred", odometry=odometry))
    for i, f in enumerate(frames):
        bridge.process(PerceptionFrame(f.timestamp, f.rgb, depths[i], f.labels, f.K,
                                       pose_prior=f.pose if i == 0 else None))
    gt = np.array([f.timestamp for f in frames]), np.array([f.pose for f in frames])
    return ate_rmse(gt, bridge.trajectory())


def test_smoothly_warped_depth_moves_sparse_odometry_less_than_the_dense_tracker(room):
    """Each frame's depth times 1 + a x + b y + c (x^2 + y^2) (normalised image coordinates; a, b, c ~ N(0, 0.05)):
    the smooth shape error a network's depth has (without its per-frame scale error, which the benchmark's
    noisy-depth row covers). Both run the predicted-depth path (scale alignment on); the dense tracker is its
    hybrid frame-to-model fit. Measured over 40 frames: sparse vo 0.65 cm exact, 0.46 cm warped; dense hybrid
    0.66 cm exact, 22.7 cm warped (shift ratio 0.009)."""
    source, frames = room
    frames = frames[:40]
    rng = np.random.default_rng(3)
    warped = []
    for f in frames:
        h, w = f.depth.shape
        v, u = np.mgrid[0:h, 0:w]
        x, y = (u - f.K[0, 2]) / f.K[0, 0], (v - f.K[1, 2]) / f.K[1, 1]
        a, b, c = rng.normal(0, 0.05, 3)
        warped.append((f.depth * (1 + a * x + b * y + c * (x ** 2 + y ** 2))).astype(np.float32))
    exact = [f.depth for f in frames]
    sparse_shift = abs(_bridge_ate(source, frames, warped, "vo") - _bridge_ate(source, frames, exact, "vo"))
    dense_shift = abs(_bridge_ate(source, frames, warped, "hybrid") - _bridge_ate(source, frames, exact, "hybrid"))
    assert dense_shift > 0.05 and sparse_shift < 0.1 * dense_shift, (sparse_shift, dense_shift)


def test_vio_without_imu_falls_back_to_visual_only_and_says_so(room):
    source, frames = room
    bridge = MappingBridge(source.label_space, MappingConfig(depth_mode="pred", odometry="vio"))
    for i, f in enumerate(frames[:3]):
        step = bridge.process(PerceptionFrame(f.timestamp, f.rgb, f.depth, f.labels, f.K, imu=None,
                                              pose_prior=f.pose if i == 0 else None))
        assert step.tracking_ok
    assert bridge.odometry_mode == "vo"
    assert bridge.odometry_note == "no IMU in this source: visual-only odometry (vo)"
    assert bridge.odometry_summary().startswith("vo: ") and bridge.odometry_summary().endswith(
        "(no IMU in this source: visual-only odometry (vo))")
    with_imu = MappingBridge(source.label_space, MappingConfig(depth_mode="pred", odometry="vio"))
    f = frames[0]
    with_imu.process(PerceptionFrame(f.timestamp, f.rgb, f.depth, f.labels, f.K, imu=f.imu, pose_prior=f.pose))
    assert with_imu.odometry_mode == "vio" and with_imu.odometry_note == ""


def test_lost_tracking_is_reported_and_relocalised_against_the_keyframe(room):
    """Three black frames: each is a reported failure with the pose held; the next real frame is tracked again
    from the last keyframe's image. Measured: back within 3 mm of the truth from the first frame after."""
    _, frames = room
    cv2.setRNGSeed(0)
    f0 = frames[0]
    odo = SparseOdometry(f0.K, f0.size, f0.pose, OdometryConfig(), depth_sigma_for("gt"))
    steps = []
    for i, f in enumerate(frames[:30]):
        steps.append(odo.step(f.timestamp, np.zeros_like(f.rgb) if 20 <= i < 23 else f.rgb, f.depth))
    assert [s.ok for s in steps[20:23]] == [False] * 3 and all(s.ok for s in steps[23:])
    assert all(s.message.startswith("sparse tracking lost") for s in steps[20:23])
    assert np.allclose(steps[21].pose, steps[20].pose) and odo.failures == 3
    errors = [np.linalg.norm(s.pose[:3, 3] - f.pose[:3, 3]) for s, f in zip(steps[23:], frames[23:30])]
    assert max(errors) < 0.01, errors


def test_frames_the_sparse_odometry_loses_are_tracked_by_the_dense_tracker(room):
    """Twelve black frames (no corners; the depth still holds the room's planes) on the predicted-depth path: the
    sparse odometry loses each, the dense hybrid tracker takes its pose against the map, and the sparse odometry
    does not start anew on a black frame (no strong corners) but relocalises against its last keyframe (frame 14's
    image) at the first real frame. Holding the last pose instead (before this fallback) put room 100003's bare wall
    2.2 m off (here, held: 14.4 cm by frame 26). Open3D's multi-threaded reductions make the dense poses vary from
    run to run (1e-7 at frame 15, growing over the blind frames). Measured over 24 runs (2026-12-03): 12 frames by
    the dense tracker, no failure, position error at most 3.5-5.1 cm over the black frames, ATE 1.4-2.5 cm over 40
    frames (when the odometry restarted on the black frames and then at the dense pose at frame 29: 15 dense frames,
    ATE 1.3-4.2 cm over 45 runs; the relocalisation across 13 frames is less exact than carrying on from the dense
    pose here). The bounds sit above that spread and below holding the pose."""
    source, frames = room
    frames = frames[:40]
    cv2.setRNGSeed(0)
    bridge = MappingBridge(source.label_space, MappingConfig(depth_mode="pred", odometry="vo"))
    steps = []
    for i, f in enumerate(frames):
        rgb = np.zeros_like(f.rgb) if 15 <= i < 27 else f.rgb
        steps.append(bridge.process(PerceptionFrame(f.timestamp, rgb, f.depth, f.labels, f.K,
                                                    pose_prior=f.pose if i == 0 else None)))
    lost = [s.dense_fallback for s in steps]
    assert lost[15:27] == [True] * 12 and not any(lost[:15]) and 12 <= bridge.dense_fallbacks <= 16
    assert bridge.failures == 0 and all(s.tracking_ok for s in steps)
    assert "pose from the dense hybrid tracker" in steps[20].message
    assert bridge.retrack_failures == sum(s.retrack_failed for s in steps)  # the re-track after the scale fit
    errors = [np.linalg.norm(s.pose[:3, 3] - f.pose[:3, 3]) for s, f in zip(steps[15:27], frames[15:27])]
    assert max(errors) < 0.09, errors
    gt = np.array([f.timestamp for f in frames]), np.array([f.pose for f in frames])
    assert ate_rmse(gt, bridge.trajectory()) < 0.045


def _run(frames, cfg: OdometryConfig, imu: bool, rgb=None):
    """The odometry alone over ``frames`` (``rgb(i, frame)`` may replace a frame's image); returns (odometry, steps)."""
    cv2.setRNGSeed(0)
    f0 = frames[0]
    odo = SparseOdometry(f0.K, f0.size, f0.pose, cfg, depth_sigma_for("gt"), ImuFusion(D435I) if imu else None)
    steps = [odo.step(f.timestamp, f.rgb if rgb is None else rgb(i, f), f.depth, None, f.imu if imu else None)
             for i, f in enumerate(frames)]
    return odo, steps


def test_the_imu_carries_the_pose_through_lost_frames(room):
    """Six black frames (nothing to track) in room 1000, after the IMU chain has started (gravity found over the first
    0.5 s, then the next keyframe): with the IMU the pose moves on with the IMU's prediction from the last keyframe
    instead of being held. Measured (the same in repeated runs): largest position error over the black frames
    0.79 cm carried by the IMU against 7.1 cm held (vo), and tracking resumes afterwards."""
    _, frames = room
    black = lambda i, f: np.zeros_like(f.rgb) if 36 <= i < 42 else f.rgb  # noqa: E731
    _, steps = _run(frames[:55], OdometryConfig(), imu=True, rgb=black)
    _, held = _run(frames[:55], OdometryConfig(), imu=False, rgb=black)
    assert not any(s.ok for s in steps[36:42]) and all(s.ok for s in steps[42:])
    assert all("pose carried by the IMU" in s.message for s in steps[36:42])
    def err(run):
        return max(np.linalg.norm(s.pose[:3, 3] - f.pose[:3, 3]) for s, f in zip(run[36:42], frames[36:42]))

    assert err(steps) < 0.5 * err(held), (err(steps), err(held))


def test_a_sparse_pose_far_from_the_prediction_is_refused(room):
    """Frame 40's image shifted 50 px sideways (a view the tracks still follow, but a motion the IMU did not
    measure): its PnP pose is refused as a lost frame, the IMU carries the pose, and tracking goes on with the real
    frames. Measured: refused at 27.9 cm / 6.4 deg from the IMU's prediction (the gate: 20 cm / 5 deg); the carried
    pose 0.8 cm off. A 30 px shift passes the gate (11 cm / 4.5 deg) and its pose, 15 cm off, loses frames 41-45."""
    _, frames = room
    shift = lambda i, f: np.roll(f.rgb, 50, axis=1) if i == 40 else f.rgb  # noqa: E731
    odo, steps = _run(frames[:50], OdometryConfig(), imu=True, rgb=shift)
    assert not steps[40].ok and steps[40].message.startswith("sparse pose refused") and all(s.ok for s in steps[41:])
    assert "pose carried by the IMU" in steps[40].message
    assert np.linalg.norm(steps[40].pose[:3, 3] - frames[40].pose[:3, 3]) < 0.03


def test_no_restart_on_a_bare_wall(room):
    """Twelve frames of a bare wall (flat grey with pixel noise: Shi-Tomasi's relative threshold still finds 200+
    'corners' in it, as on room 100003's walls): the lost odometry does not start anew there (no new keyframe),
    and says why."""
    _, frames = room
    noise = np.random.default_rng(0)
    wall = lambda i, f: np.clip(128 + noise.normal(0, 2, f.rgb.shape), 0, 255).astype(np.uint8) \
        if 20 <= i < 32 else f.rgb  # noqa: E731
    odo, steps = _run(frames[:32], OdometryConfig(), imu=False, rgb=wall)
    before = odo.keyframes
    assert not any(s.ok or s.keyframe for s in steps[20:32])
    assert all("no restart" in s.message for s in steps[24:32]), [s.message for s in steps[20:32]]
    opened, _ = _run(frames[:32], OdometryConfig(restart_min_corners=0), imu=False, rgb=wall)
    assert opened.keyframes > before  # the same frames without the check: it restarts on the noise


def test_the_smoother_window_bounds_the_graph(room):
    """With a window of 5 keyframes the smoother holds at most 5 keyframe poses however long the run (each new
    window starts from the last keyframe's marginal and the live landmarks), and the walk stays within a centimetre.
    Measured: ATE 0.28 cm (the same in repeated runs)."""
    _, frames = room
    odo, steps = _run(frames, OdometryConfig(smoother_window=5), imu=True)
    keys = [gtsam.Symbol(k) for k in odo.isam.calculateEstimate().keys()]
    poses = [s for s in keys if chr(s.chr()) == "x"]
    assert odo.keyframes > 10 and len(poses) <= 5 and odo.failures == 0, (odo.keyframes, len(poses))
    t = np.array([f.timestamp for f in frames])
    ate = ate_rmse((t, np.array([f.pose for f in frames])), (t, np.array([s.pose for s in steps])))
    assert ate <= 0.01
