"""Shared fixtures: the real recordings in ../shared/data (skipped when absent) and Qt's platform."""
import os
from pathlib import Path

import pytest

# Qt widgets that need no OpenGL run offscreen; pytest-xvfb provides a display for the 3D view.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen" if not os.environ.get("DISPLAY") else "xcb")

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout; tests that need it skip on a user's fresh clone."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real recordings not present at {SHARED_DATA} (only beside the project's own checkout)")
    return SHARED_DATA
