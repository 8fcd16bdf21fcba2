"""The 3D view frames the map: its box spans most of the view along the view's tighter side, in a tall view (the
viewer's layout) and a wide one, and nothing of it is cut off."""
import numpy as np
import pytest


def _ndc(view, pts: np.ndarray) -> np.ndarray:
    """Normalised device coordinates of ``pts`` through the view's own camera (pyqtgraph's matrices)."""
    w, h = view.gl.width(), view.gl.height()
    proj = view.gl.projectionMatrix((0, 0, w, h), (0, 0, w, h)) * view.gl.viewMatrix()
    m = np.array(proj.data(), np.float64).reshape(4, 4).T
    clip = np.c_[pts, np.ones(len(pts))] @ m.T
    return clip[:, :2] / clip[:, 3:]


@pytest.mark.parametrize("size", [(420, 860), (900, 500)])
def test_map_fills_the_view(size, qtbot, gl_display):
    from app.widgets.map_view import MapView

    view = MapView()
    qtbot.addWidget(view)
    view.resize(*size)
    view.show()
    qtbot.waitUntil(lambda: view.gl.width() > 0 and abs(view.gl.width() - size[0]) < 40, timeout=10_000)
    rng = np.random.default_rng(0)
    room = rng.uniform([0, 0, 0], [6.0, 4.0, 2.5], (5000, 3))  # a 6 x 4 x 2.5 m room's surface, roughly
    view.set_map(room, np.zeros((5000, 3), np.uint8), np.zeros((5000, 3), np.uint8))
    lo, hi = np.percentile(room, 1, axis=0), np.percentile(room, 99, axis=0)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    ndc = _ndc(view, corners)
    span = ndc.max(axis=0) - ndc.min(axis=0)  # of 2 (the whole view) on each axis
    assert np.abs(ndc).max() <= 1.0  # nothing cut off (the 1.1 x diagonal framing reached 1.39 in a wide view)
    assert span.max() / 2 >= 0.75, span
