"""Viewer test helpers: window construction, waits, PNG checks. The window's 3D view needs a real OpenGL
context (Xvfb via pytest-xvfb); without a display these tests skip."""
import os

import numpy as np
import pytest
from PyQt6 import QtCore

from app.sources import SourceSpec
from app.session import ViewerOptions

# Several windows (one per test) create several GL contexts; pyqtgraph caches compiled shaders, which
# are only valid in another context when contexts share resources. The viewer sets the same (one window).
QtCore.QCoreApplication.setAttribute(QtCore.Qt.ApplicationAttribute.AA_ShareOpenGLContexts)

SMALL = (120, 160)  # processing size for tests: fast; Open3D odometry fails at 96x128 (too small a pyramid)


@pytest.fixture
def gl_display():
    if os.environ.get("QT_QPA_PLATFORM") == "offscreen" or not os.environ.get("DISPLAY"):
        pytest.skip("the 3D view needs an X display with OpenGL (install Xvfb: pytest-xvfb starts it)")


@pytest.fixture
def demo_options(tmp_path):
    """ViewerOptions for the generated scene at a small size, no network; keywords override."""

    def make(**kw) -> ViewerOptions:
        defaults = dict(source=SourceSpec("demo", demo_seed=0, demo_frames=40), checkpoint=None, size=SMALL,
                        output_dir=str(tmp_path / "out"), snapshot_every_s=0.5)
        defaults.update(kw)
        return ViewerOptions(**defaults)

    return make


@pytest.fixture
def make_window(qtbot, gl_display):
    from app.window import MainWindow

    def make(options: ViewerOptions) -> MainWindow:
        window = MainWindow(options)
        qtbot.addWidget(window)
        window.resize(1000, 640)
        window.show()
        return window

    return make


@pytest.fixture
def png_pixels():
    return read_png


def read_png(path) -> np.ndarray:
    """(H, W, 3) uint8 pixels of a PNG, read with Qt."""
    from PyQt6 import QtGui

    image = QtGui.QImage(str(path))
    assert not image.isNull(), f"{path} is not a readable PNG"
    image = image.convertToFormat(QtGui.QImage.Format.Format_RGB888)
    ptr = image.constBits()
    ptr.setsize(image.sizeInBytes())
    rows = np.frombuffer(ptr, np.uint8).reshape(image.height(), image.bytesPerLine())
    return rows[:, : image.width() * 3].reshape(image.height(), image.width(), 3).copy()


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory):
    """The demo architecture with random weights: exercises the real Predictor path (outputs meaningless)."""
    import torch

    from m2hmx.checkpoint import save_checkpoint
    from m2hmx.model import build_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "random-demo.safetensors"
    save_checkpoint(path, build_model("m2hmx-demo"))
    return path
