"""Shared fixtures: the real recordings in ../shared/data (skipped when absent) and Qt's platform."""
import os
from pathlib import Path

import pytest

import m2hmx  # noqa: F401  (sets OMP_WAIT_POLICY before any test imports torch)


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    """Pick Qt's platform once pytest-xvfb (whose pytest_configure starts Xvfb and sets DISPLAY) has run:
    conftest import time is too early. With a display: xcb (the 3D view needs a real OpenGL context);
    without one: offscreen (image widgets work, OpenGL widgets do not: tests needing them skip)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb" if os.environ.get("DISPLAY") else "offscreen")


ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout; tests that need it skip on a user's fresh clone."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real recordings not present at {SHARED_DATA} (only beside the project's own checkout)")
    return SHARED_DATA
