"""Shared small synthetic sequences for the mapping tests (rendered once per session)."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from m2hmx.data.synthetic import SyntheticSource


def drifted(poses, yaw_deg: float, translation_scale: float) -> np.ndarray:
    """Odometry with a constant per-step bias: ``yaw_deg`` of yaw and translation times ``translation_scale``."""
    bias = np.eye(4)
    bias[:3, :3] = Rotation.from_euler("y", yaw_deg, degrees=True).as_matrix()
    out = [poses[0]]
    for a, b in zip(poses[:-1], poses[1:]):
        rel = np.linalg.inv(a) @ b
        rel[:3, 3] *= translation_scale
        out.append(out[-1] @ rel @ bias)
    return np.array(out)


@pytest.fixture(scope="session")
def small_sequence():
    """40 frames, 240x320, seed 0 (a furnished room; a view well-conditioned for depth tracking)."""
    source = SyntheticSource(seed=0, frames=40, height=240, width=320)
    return source, list(source)


@pytest.fixture(scope="session")
def tiny_sequence():
    """60 frames, 120x160, seed 0."""
    source = SyntheticSource(seed=0, frames=60, height=120, width=160)
    return source, list(source)
