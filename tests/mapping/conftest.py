"""Shared small synthetic sequences for the mapping tests (rendered once per session)."""
import pytest

from m2hmx.data.synthetic import SyntheticSource


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
