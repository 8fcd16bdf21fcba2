"""The 3D map: pyqtgraph.opengl view of the fused map (mesh or points), trajectories, camera frustum and
scene-graph objects as labelled boxes. Mouse: left-drag orbits, wheel zooms, middle/ctrl-drag pans.

Everything is drawn in the map's world frame after ``set_world_to_display`` (a rotation that puts the
map's up axis on the view's z axis: the mapping backend's world frame is OpenCV-like, y down).

The 3D view is a native OpenGL window (``QOpenGLWindow``) inside a container widget, not a
``QOpenGLWidget``: a ``QOpenGLWidget`` makes Qt composite the whole main window through OpenGL on every
repaint of any panel, which on a machine without a GPU (Mesa's software rasterizer) blocked the GUI
thread for 50-150 ms about ten times a second (``benchmarks/bench_app.py``).
"""
from __future__ import annotations

import numpy as np
import pyqtgraph.opengl as gl
from pyqtgraph.opengl.GLViewWidget import GLViewMixin
from PyQt6 import QtCore, QtGui, QtOpenGL, QtWidgets

EST_COLOR = (1.0, 0.55, 0.0, 1.0)  # estimated trajectory: orange
GT_COLOR = (0.1, 0.9, 0.3, 1.0)  # ground truth: green
FRUSTUM_COLOR = (1.0, 1.0, 0.2, 1.0)
BOX_COLOR = (0.9, 0.9, 0.9, 0.9)
LOOP_COLOR = (1.0, 0.2, 0.8, 1.0)  # loop closures: magenta lines between the two keyframes
BACKGROUND = (25, 25, 30, 255)
FIT_FILL = 0.9  # the map spans this much of the 3D view along its tighter side when framed

# 12 box edges over the 8 corners indexed by bits (x, y, z)
_BOX_EDGES = np.array([(0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7)])
_CORNER_BITS = np.array([[(i >> 0) & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], np.float64)


def frustum_lines(pose: np.ndarray, K: np.ndarray, size: tuple[int, int], depth: float = 0.3) -> np.ndarray:
    """Line-segment endpoints (16, 3) of a camera frustum (apex + image-plane rectangle at ``depth`` m)."""
    h, w = size
    corners_px = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    rays = np.column_stack([(corners_px[:, 0] - K[0, 2]) / K[0, 0], (corners_px[:, 1] - K[1, 2]) / K[1, 1],
                            np.ones(4)]) * depth
    pts = rays @ pose[:3, :3].T + pose[:3, 3]
    apex = pose[:3, 3]
    segs = []
    for i in range(4):
        segs += [apex, pts[i], pts[i], pts[(i + 1) % 4]]
    return np.array(segs)


def box_lines(aabb_min: np.ndarray, aabb_max: np.ndarray) -> np.ndarray:
    """Line-segment endpoints (24, 3) of an axis-aligned box."""
    lo, hi = np.asarray(aabb_min, np.float64), np.asarray(aabb_max, np.float64)
    corners = lo + _CORNER_BITS * (hi - lo)
    return corners[_BOX_EDGES.reshape(-1)]


class GLMapWindow(GLViewMixin, QtOpenGL.QOpenGLWindow):
    """pyqtgraph's 3D view (items, camera, mouse orbit / zoom / pan) on a native OpenGL window."""

    def __init__(self):
        super().__init__()
        self.user_moved = False  # once the user orbits or zooms, the view stays where they put it
        # Clicking into the view must not take the keyboard focus from the main window, whose shortcuts
        # (Space, N, C, ...) a focused native child window would not pass on.
        self.setFlag(QtCore.Qt.WindowType.WindowDoesNotAcceptFocus)

    def devicePixelRatioF(self) -> float:  # QWidget's name, used by GLViewMixin
        return self.devicePixelRatio()

    def rect(self) -> QtCore.QRect:  # used by GLTextItem
        return QtCore.QRect(0, 0, self.width(), self.height())

    def mousePressEvent(self, ev):
        self.user_moved = True
        super().mousePressEvent(ev)

    def wheelEvent(self, ev):
        self.user_moved = True
        super().wheelEvent(ev)


class MapView(QtWidgets.QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.gl = GLMapWindow()
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QtWidgets.QWidget.createWindowContainer(self.gl, self))
        self.gl.setBackgroundColor(BACKGROUND[:3])
        self.gl.setCameraPosition(distance=8.0, elevation=35, azimuth=-60)
        self._grid = gl.GLGridItem()
        self._grid.setSize(20, 20)
        self._grid.setSpacing(1, 1)
        self._grid.setColor((80, 80, 90, 120))
        self.gl.addItem(self._grid)
        self._transform = np.eye(4)
        self._mesh = gl.GLMeshItem(smooth=False, drawEdges=False, shader=None, glOptions="opaque")
        self._mesh.hide()
        self.gl.addItem(self._mesh)
        # The first draw of points, of a mesh and of each label text costs 5-40 ms with software OpenGL
        # (shader compiles, text layout and glyphs): done at start-up, invisibly (background colour), not
        # when the first map arrives mid-run. Removed with the first map.
        self._warmup = [
            gl.GLScatterPlotItem(pos=np.zeros((1, 3)), size=1.0, color=np.array(BACKGROUND) / 255.0, pxMode=True),
            gl.GLMeshItem(vertexes=np.zeros((3, 3), np.float32), faces=np.array([[0, 1, 2]], np.int32),
                          vertexColors=np.ones((3, 4), np.float32), smooth=False, drawEdges=False, shader=None)]
        for item in self._warmup:
            self.gl.addItem(item)
        self._points = gl.GLScatterPlotItem(pos=np.zeros((1, 3)), size=3.0, pxMode=True)
        self._points.setGLOptions("opaque")
        self._points.hide()
        self.gl.addItem(self._points)
        self._est = gl.GLLinePlotItem(color=EST_COLOR, width=2.0, antialias=False)
        self._gt = gl.GLLinePlotItem(color=GT_COLOR, width=2.0, antialias=False)
        self._frustum = gl.GLLinePlotItem(color=FRUSTUM_COLOR, width=1.5, mode="lines", antialias=False)
        self._boxes = gl.GLLinePlotItem(color=BOX_COLOR, width=1.0, mode="lines", antialias=False)
        self._loops = gl.GLLinePlotItem(color=LOOP_COLOR, width=2.0, mode="lines", antialias=False)
        for item in (self._est, self._gt, self._frustum, self._boxes, self._loops):
            item.setGLOptions("opaque")
            item.hide()
            self.gl.addItem(item)
        self._labels: list[gl.GLTextItem] = []
        self._geometry: dict | None = None
        self.color_mode = "class"  # or "rgb"
        self._fitted_diag = 0.0  # extent the view was last fitted to; 0 = never
        self.num_points = 0

    def warm_up_labels(self, names: list[str]) -> None:
        """Draw each object label (class name) once before the first map (see the warm-up above)."""
        for name in names:
            item = gl.GLTextItem(pos=np.zeros(3), text=name, color=BACKGROUND)
            self._warmup.append(item)
            self.gl.addItem(item)

    # ---- frame conventions
    def set_world_to_display(self, transform: np.ndarray) -> None:
        self._transform = np.asarray(transform, np.float64)

    def _tf(self, pts: np.ndarray) -> np.ndarray:
        pts = np.asarray(pts, np.float64).reshape(-1, 3)
        return (pts @ self._transform[:3, :3].T + self._transform[:3, 3]).astype(np.float32)

    # ---- map geometry
    def set_map(self, vertices: np.ndarray, class_colors: np.ndarray, rgb_colors: np.ndarray,
                triangles: np.ndarray | None = None) -> None:
        """Replace the shown map (a snapshot: mesh when ``triangles`` is given, else points)."""
        self._geometry = {"vertices": self._tf(vertices), "triangles": triangles,
                          "class": np.asarray(class_colors), "rgb": np.asarray(rgb_colors)}
        self.num_points = len(vertices)
        self._draw_geometry()
        if not self.gl.user_moved and len(vertices) > 100:
            self._fit(self._geometry["vertices"])

    def show_update(self, update, ground_truth: np.ndarray | None = None) -> None:
        """A map update from the mapping process (``app.mapping_process.MapUpdate``): mesh (kept when the update
        has none), trajectory (and the ground truth's, in the map's frame), objects and loop closures."""
        if len(update.vertices):
            self.set_map(update.vertices, update.class_colors, update.rgb_colors, update.triangles)
        self.set_trajectory(update.positions if len(update.positions) else None, ground_truth)
        self.set_objects(update.objects)
        self.set_loops(update.loop_lines)

    def set_color_mode(self, mode: str) -> None:
        if mode not in ("class", "rgb"):
            raise ValueError(f"colour mode must be 'class' or 'rgb', got {mode!r}")
        self.color_mode = mode
        self._draw_geometry()

    def _draw_geometry(self) -> None:
        g = self._geometry
        if g is None or len(g["vertices"]) == 0:
            self._points.hide()
            self._mesh.hide()
            return
        for item in self._warmup:
            self.gl.removeItem(item)
        self._warmup = []
        rgba = np.empty((len(g["vertices"]), 4), np.float32)
        rgba[:, :3] = g[self.color_mode][:, :3] / 255.0
        rgba[:, 3] = 1.0
        if g["triangles"] is not None and len(g["triangles"]):
            self._points.hide()
            self._mesh.setMeshData(vertexes=g["vertices"], faces=np.asarray(g["triangles"], np.int32),
                                   vertexColors=rgba)
            self._mesh.show()
        else:
            self._mesh.hide()
            self._points.setData(pos=g["vertices"], color=rgba)
            self._points.show()

    def clear_map(self) -> None:
        self._geometry = None
        self.num_points = 0
        self._draw_geometry()
        for item in (self._est, self._gt, self._frustum, self._boxes, self._loops):
            item.hide()
        self.set_objects([])
        self._fitted_diag = 0.0

    def _fit(self, pts: np.ndarray) -> None:
        """Frame the map, while it grows by more than a fifth (not on every snapshot: no jitter)."""
        lo, hi = np.percentile(pts, 1, axis=0), np.percentile(pts, 99, axis=0)
        diag = float(np.linalg.norm(hi - lo))
        if diag < 1.2 * self._fitted_diag:
            return
        center = (lo + hi) / 2
        self.gl.setCameraPosition(pos=QtGui.QVector3D(*center.tolist()))
        self.gl.setCameraPosition(distance=self.fit_distance(lo, hi))
        self._grid.resetTransform()
        self._grid.translate(float(center[0]), float(center[1]), float(lo[2]))
        self._fitted_diag = diag

    def fit_distance(self, lo: np.ndarray, hi: np.ndarray, fill: float = FIT_FILL) -> float:
        """The camera distance at which the box ``lo``-``hi`` (display frame), seen from the view's current
        centre, azimuth and elevation, spans ``fill`` of the view along its tighter side and fits along the
        other. The distance 1.1 x diagonal used before assumed the horizontal field of view was the tighter one: a
        6 x 4 x 2.5 m box spanned 0.81 of a tall view's width, but in a wide view it was cut off at the top and
        bottom (corners at 1.39 of the half-height); here the box's 8 corners go through the view's own camera."""
        view = self.gl.viewMatrix()  # rotation about the centre, then back by the current distance
        m = np.array(view.data(), np.float64).reshape(4, 4).T
        corners = np.array([[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        q = corners @ m.T
        q[:, 2] += self.gl.opts["distance"]  # camera frame with the camera at the centre, looking down -z
        w, h = max(self.gl.width(), 1), max(self.gl.height(), 1)
        tan_x = np.tan(np.radians(self.gl.opts["fov"]) / 2)  # pyqtgraph's fov is horizontal
        tan_y = tan_x * h / w
        need = np.maximum(np.abs(q[:, 0]) / (fill * tan_x), np.abs(q[:, 1]) / (fill * tan_y)) + q[:, 2]
        return float(max(1.5, need.max()))

    # ---- trajectories, camera, objects
    def set_trajectory(self, positions: np.ndarray | None, ground_truth: np.ndarray | None = None) -> None:
        for item, pts in ((self._est, positions), (self._gt, ground_truth)):
            if pts is None or len(pts) < 2:
                item.hide()
            else:
                item.setData(pos=self._tf(pts))
                item.show()

    def set_loops(self, lines: np.ndarray) -> None:
        """Loop closures as (L,2,3) world segments between the two keyframes of each."""
        if lines is None or len(lines) == 0:
            self._loops.hide()
            return
        self._loops.setData(pos=self._tf(np.asarray(lines, np.float64).reshape(-1, 3)))
        self._loops.show()

    def set_camera(self, pose: np.ndarray | None, K: np.ndarray | None = None, size=(240, 320)) -> None:
        if pose is None or K is None:
            self._frustum.hide()
            return
        self._frustum.setData(pos=self._tf(frustum_lines(pose, K, size)))
        self._frustum.show()

    def set_objects(self, objects: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
        """Scene-graph objects as (label, aabb_min, aabb_max) in world coordinates."""
        for label in self._labels:
            self.gl.removeItem(label)
        self._labels = []
        if not objects:
            self._boxes.hide()
            return
        segs = []
        for name, lo, hi in objects:
            corners = self._tf(box_lines(lo, hi))
            segs.append(corners)
            top = corners.max(axis=0)
            mid = corners.mean(axis=0)
            text = gl.GLTextItem(pos=np.array([mid[0], mid[1], top[2] + 0.05]), text=name,
                                 color=(255, 255, 255, 255))
            self.gl.addItem(text)
            self._labels.append(text)
        self._boxes.setData(pos=np.concatenate(segs))
        self._boxes.show()

    def object_labels(self) -> list[str]:
        return [item.text for item in self._labels]

    def screenshot(self) -> QtGui.QImage:
        """The 3D view as rendered (framebuffer grab)."""
        return self.gl.grabFramebuffer()
