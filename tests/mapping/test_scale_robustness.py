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


def test_scale_alignment_keeps_ate_within_twice_exact(sequence):
    source, frames = sequence
    exact = _run(source, frames, 0.0, align=False)
    aligned = _run(source, frames, 0.03, align=True)
    assert exact < 0.01
    assert aligned <= 2 * exact, (aligned, exact)
