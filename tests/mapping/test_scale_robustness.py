"""Predicted depth is not a sensor: exact depth with a 3% per-frame scale error and 1% pixel noise."""
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


def _run(source, frames, wobble: float, align: bool) -> float:
    rng = np.random.default_rng(1)
    bridge = MappingBridge(source.label_space, MappingConfig(depth_mode="pred" if align else "sensor"))
    for i, f in enumerate(frames):
        depth = f.depth * np.float32(1 + rng.normal(0, wobble)) if wobble else f.depth.copy()
        if wobble:
            depth *= (1 + rng.normal(0, 0.01, depth.shape)).astype(np.float32)
            depth[f.depth == 0] = 0
        bridge.process(PerceptionFrame(f.timestamp, f.rgb, depth.astype(np.float32), f.labels, f.K,
                                       pose_prior=f.pose if i == 0 else None))
    gt = np.array([f.timestamp for f in frames]), np.array([f.pose for f in frames])
    return ate_rmse(gt, bridge.trajectory())


def test_scale_alignment_removes_most_of_a_per_frame_scale_error(sequence):
    """Measured on this room over 8 noise draws: exact depth 0.23 cm; with the scale error, unaligned 10-14 cm
    and aligned 0.37-1.07 cm (1.6-4.6x exact). This draw gives 0.37 or 0.66 cm from run to run: one frame's
    joint pose + scale fit has two near-equal minima, and which one it takes depends on Open3D's
    non-deterministic tracking result; the scale then carries the choice to later frames."""
    source, frames = sequence
    exact = _run(source, frames, 0.0, align=False)
    unaligned = _run(source, frames, 0.03, align=False)
    aligned = _run(source, frames, 0.03, align=True)
    assert exact < 0.01
    assert aligned < unaligned / 10, (aligned, unaligned)
    assert aligned <= 4 * exact, (aligned, exact)
