"""Predicted depth is not a sensor: exact depth with a 3% per-frame scale error and 1% pixel noise, and
with a per-frame tilt of the depth field (a shape error, as a network's depth has)."""
import numpy as np
import pytest

from m2hmx.data.synthetic import SyntheticSource
from mapping.bridge import MappingBridge, MappingConfig
from mapping.interface import PerceptionFrame
from mapping.trajectory import ate_rmse


@pytest.fixture(scope="module")
def sequence():
    source = SyntheticSource(seed=2, frames=40, height=240, width=320)
    return source, list(source)


def _run(source, frames, wobble: float, align: bool, odometry: str = "point_to_plane",
         tilt: float = 0.0) -> tuple[float, int]:
    """ATE (m) and tracking failures. Each frame's depth is scaled by 1 + N(0, wobble), tilted by
    1 + a x + b y (normalised image coordinates, a, b ~ N(0, tilt)) and given 1 % pixel noise."""
    rng = np.random.default_rng(1)
    config = MappingConfig(depth_mode="pred" if align else "sensor", odometry=odometry)
    bridge = MappingBridge(source.label_space, config)
    for i, f in enumerate(frames):
        depth = f.depth.copy()
        if wobble:
            h, w = depth.shape
            v, u = np.mgrid[0:h, 0:w]
            a, b = rng.normal(0, tilt, 2) if tilt else (0.0, 0.0)
            field = 1 + a * (u - f.K[0, 2]) / f.K[0, 0] + b * (v - f.K[1, 2]) / f.K[1, 1]
            depth *= np.float32(1 + rng.normal(0, wobble)) * field.astype(np.float32)
            depth *= (1 + rng.normal(0, 0.01, depth.shape)).astype(np.float32)
            depth[f.depth == 0] = 0
        bridge.process(PerceptionFrame(f.timestamp, f.rgb, depth.astype(np.float32), f.labels, f.K,
                                       pose_prior=f.pose if i == 0 else None))
    gt = np.array([f.timestamp for f in frames]), np.array([f.pose for f in frames])
    return ate_rmse(gt, bridge.trajectory()), bridge.failures


def test_scale_alignment_removes_most_of_a_per_frame_scale_error(sequence):
    """Measured on this room over 8 noise draws: exact depth 0.23 cm; with the scale error, unaligned 10-14 cm
    and aligned 0.37-1.07 cm (1.6-4.6x exact). This draw gives 0.37 or 0.66 cm from run to run: one frame's
    joint pose + scale fit has two near-equal minima, and which one it takes depends on Open3D's
    non-deterministic tracking result; the scale then carries the choice to later frames."""
    source, frames = sequence
    exact, _ = _run(source, frames, 0.0, align=False)
    unaligned, _ = _run(source, frames, 0.03, align=False)
    aligned, _ = _run(source, frames, 0.03, align=True)
    assert exact < 0.01
    assert aligned < unaligned / 10, (aligned, unaligned)
    assert aligned <= 4 * exact, (aligned, exact)


def test_predicted_depth_tracks_with_hybrid_odometry_through_shape_errors(sequence):
    """With 5 % tilts, point-to-plane tracking slides on the tilted surfaces while the hybrid (photometric +
    geometric) fit that takes the frames the sparse odometry loses on predicted depth keeps tracking. This draw,
    12 runs: point-to-plane 13.6-14.7 cm with 36 of 40 frames failed, hybrid 5.5-10.0 cm with none (10.15 cm in one CI run; without the
    tilt 0.64-0.69 cm). Open3D's tracking is not deterministic: the ATE bound leaves room for that spread."""
    assert MappingConfig(depth_mode="pred").odometry_method == "vio"
    assert MappingConfig(depth_mode="pred").dense_method == "hybrid"  # takes the frames the sparse odometry loses
    assert MappingConfig(depth_mode="gt").odometry_method == "point_to_plane"
    source, frames = sequence
    geometric, geometric_failures = _run(source, frames, 0.03, align=True, tilt=0.05)
    hybrid, hybrid_failures = _run(source, frames, 0.03, align=True, odometry="hybrid", tilt=0.05)
    assert hybrid_failures <= 2 and geometric_failures > 10, (hybrid_failures, geometric_failures)
    assert hybrid < 0.85 * geometric, (hybrid, geometric)


def test_unknown_odometry_method_is_a_clear_error():
    with pytest.raises(ValueError, match="odometry must be one of point_to_plane, hybrid, intensity"):
        MappingConfig(odometry="icp")
