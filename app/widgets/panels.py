"""The viewer's layout: image panels (RGB, predicted and sensor depth, segmentation, normals, edges) and the class
legend, and how one perception result is drawn into them."""
from __future__ import annotations

from PyQt6 import QtCore, QtWidgets

from app.widgets.image_panel import DepthPanel, ImagePanel
from app.widgets.legend import ClassLegend


class ImagePanels(QtWidgets.QWidget):
    """Six panels in a 2x3 grid; ``legend`` is placed by the window."""

    def __init__(self, max_depth: float, parent=None):
        super().__init__(parent)
        self.rgb, self.seg = ImagePanel("RGB"), ImagePanel("segmentation")
        self.depth = DepthPanel("depth (predicted)", max_depth)
        self.sensor = DepthPanel("depth (sensor)", max_depth)
        self.normals, self.edges = ImagePanel("normals"), ImagePanel("edges")
        self.legend = ClassLegend()
        self.legend.setMinimumWidth(170)
        grid = QtWidgets.QGridLayout(self)
        grid.setContentsMargins(2, 2, 2, 2)
        grid.setSpacing(4)
        for i, panel in enumerate((self.rgb, self.depth, self.sensor, self.seg, self.normals, self.edges)):
            grid.addWidget(panel, i // 3, i % 3)

    def all(self) -> tuple[ImagePanel, ...]:
        return self.rgb, self.depth, self.sensor, self.seg, self.normals, self.edges

    def show_result(self, r, session) -> bool:
        """Draw ``r`` (a ``PerceptionResult``); titles say which depth goes into the map (``session``) and what is
        ground truth. True when there is no segmentation to colour the map by."""
        self.rgb.set_image(r.rgb)
        self.rgb.set_title(f"RGB  (frame {r.index}, t = {r.timestamp:.2f} s)")
        into = {session.depth_mode: ", into map)"}
        for panel, depth, coloured, name, missing in (
                (self.depth, r.depth_pred, r.depth_pred_rgb, "pred", "no network: no predicted depth"),
                (self.sensor, r.depth_sensor, r.depth_sensor_rgb, "sensor", "this source has no depth")):
            if depth is not None:
                panel.set_depth(coloured if coloured is not None else depth)
                panel.set_title(("depth (predicted" if name == "pred" else "depth (sensor") + into.get(name, ")"))
            elif not panel.has_image():
                panel.show_message(missing)
        no_classes = False
        if r.seg_overlay is not None:
            self.seg.set_image(r.seg_overlay)
            self.seg.set_title("segmentation" + (" (GROUND TRUTH, no network)" if r.seg_source == "ground truth"
                                                 else f" (predicted, {session.label_space.name})"))
            self.legend.set_present(r.present)
        elif not self.seg.has_image():
            self.seg.show_message("no segmentation")
            no_classes = True
        for panel, image, src, name in ((self.normals, r.normals_rgb, r.normals_source, "normals"),
                                        (self.edges, r.edges, r.edges_source, "edges")):
            if image is not None:
                panel.set_image(image, levels=(0, 255))
                panel.set_title(name + (" (GROUND TRUTH)" if src == "ground truth" else " (predicted)"))
            elif not panel.has_image():
                message = session.missing_panel_reason(name)
                panel.show_message(message)
                if message.endswith("off (--tasks)"):
                    panel.set_title(f"{name} (off)")
        return no_classes


def main_layout(panels: ImagePanels, stats: QtWidgets.QWidget, map_view: QtWidgets.QWidget) -> QtWidgets.QWidget:
    """The window's content: the image panels above the legend and statistics, the 3D map on the right."""
    left = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
    left.addWidget(panels)
    bottom = QtWidgets.QWidget()
    row = QtWidgets.QHBoxLayout(bottom)
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(_boxed("Classes", panels.legend), 1)
    row.addWidget(stats, 1)
    left.addWidget(bottom)
    left.setStretchFactor(0, 3)
    left.setStretchFactor(1, 1)
    split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
    split.addWidget(left)
    split.addWidget(_boxed("3D map (drag: orbit, wheel: zoom, middle-drag: pan)", map_view))
    split.setStretchFactor(0, 3)
    split.setStretchFactor(1, 2)
    return split


def _boxed(title: str, widget: QtWidgets.QWidget) -> QtWidgets.QGroupBox:
    box = QtWidgets.QGroupBox(title)
    layout = QtWidgets.QVBoxLayout(box)
    layout.setContentsMargins(2, 2, 2, 2)
    layout.addWidget(widget)
    return box
