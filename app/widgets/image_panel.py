"""An image panel (pyqtgraph ImageItem in a locked-aspect view) and its depth variant with a fixed colour bar."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6 import QtWidgets

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)


class ImagePanel(QtWidgets.QWidget):
    """A titled image view. ``set_image`` takes (H,W,3) uint8 RGB or (H,W) values; ``show_message`` blanks it."""

    def __init__(self, title: str, parent=None):
        super().__init__(parent)
        self._title = QtWidgets.QLabel(title)
        self._title.setStyleSheet("font-weight: bold; padding: 1px 4px;")
        self._plot = pg.GraphicsLayoutWidget()
        self._plot.setBackground("k")
        self._plot.ci.setContentsMargins(0, 0, 0, 0)
        self.view = self._plot.addViewBox(row=0, col=0, lockAspect=True, invertY=True, enableMouse=False)
        self.image = pg.ImageItem()
        self.view.addItem(self.image)
        self._message = pg.TextItem("", color="w", anchor=(0.5, 0.5))
        self.view.addItem(self._message)
        self._message.hide()
        self._shape: tuple[int, int] | None = None
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self._title)
        layout.addWidget(self._plot, 1)
        self.setMinimumSize(160, 130)

    def set_title(self, title: str) -> None:
        self._title.setText(title)

    def title(self) -> str:
        return self._title.text()

    def set_image(self, img: np.ndarray, **kwargs) -> None:
        self._message.hide()
        self.image.setImage(img, autoLevels=False, **kwargs)
        if self._shape != img.shape[:2]:  # refit only when the size changes: no jitter per frame
            self._shape = img.shape[:2]
            self.view.setRange(xRange=(0, img.shape[1]), yRange=(0, img.shape[0]), padding=0)

    def show_message(self, text: str) -> None:
        """Blank the image and show ``text`` in its place (e.g. "no normals head")."""
        self.image.clear()
        self._message.setText(text)
        h, w = self._shape or (240, 320)
        self._message.setPos(w / 2, h / 2)
        self._message.show()
        if self._shape is None:
            self.view.setRange(xRange=(0, w), yRange=(0, h), padding=0)

    def has_image(self) -> bool:
        return self.image.image is not None


class DepthPanel(ImagePanel):
    """Metric depth with a fixed colour range [0, max_depth] and a colour bar in metres (no per-frame
    rescaling flicker). Images arrive already coloured (``colorize_depth`` with ``self.lut``, done off the
    GUI thread)."""

    def __init__(self, title: str, max_depth: float = 6.0, colormap: str = "turbo", parent=None):
        super().__init__(title, parent)
        self.max_depth = float(max_depth)
        cmap = pg.colormap.get(colormap, source="matplotlib")
        self.lut = cmap.getLookupTable(0.0, 1.0, 256, alpha=False).astype(np.uint8)  # (256, 3)
        self.bar = pg.ColorBarItem(values=(0.0, self.max_depth), colorMap=cmap, label="depth [m]",
                                   interactive=False, width=14, colorMapMenu=False)
        self._plot.addItem(self.bar, row=0, col=1)

    def set_depth(self, depth: np.ndarray) -> None:
        """(H,W) float32 metres (coloured here), or an (H,W,3) image from ``colorize_depth``."""
        rgb = depth if depth.ndim == 3 else colorize_depth(depth, self.lut, self.max_depth)
        self.set_image(rgb, levels=(0, 255))


def colorize_depth(depth: np.ndarray, lut: np.ndarray, max_depth: float) -> np.ndarray:
    """Metres -> (H,W,3) uint8 through ``lut`` over the fixed range [0, max_depth]; invalid (0) is black."""
    idx = np.clip(depth * (255.0 / max_depth), 0, 255).astype(np.uint8)
    rgb = lut[idx]
    rgb[depth <= 0] = 0
    return rgb
