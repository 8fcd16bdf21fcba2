"""Screenshots: the window with its native OpenGL 3D view painted in, written as PNG atomically."""
from __future__ import annotations

from pathlib import Path

from PyQt6 import QtCore, QtGui, QtWidgets

from mapping.atomic import atomic_path


def write_png(image: QtGui.QImage, path: str | Path) -> Path:
    """Atomically write ``image`` as PNG; the file must read back at the image's size before it replaces
    ``path`` (``mapping.atomic``)."""
    def check(tmp: Path) -> None:
        if QtGui.QImageReader(str(tmp)).size() != image.size():
            raise OSError(5, "the written PNG does not read back")

    with atomic_path(path, check) as tmp:
        if not image.save(str(tmp), "PNG"):
            raise OSError(5, "Qt could not write the PNG")
    return Path(path)


def window_image(window: QtWidgets.QWidget, view_widget: QtWidgets.QWidget, view: QtGui.QImage) -> QtGui.QImage:
    """``window`` as shown, with the 3D view's frame ``view`` drawn where ``view_widget`` is (a native OpenGL
    window is not part of a widget grab)."""
    image = window.grab().toImage()
    painter = QtGui.QPainter(image)
    painter.drawImage(QtCore.QRect(view_widget.mapTo(window, QtCore.QPoint(0, 0)), view_widget.size()), view)
    painter.end()
    return image


def save_screenshots(window: QtWidgets.QWidget, map_view, path: Path) -> list[Path]:
    """The whole window to ``path`` and the 3D view beside it (``<stem>_map.png``); OSError on failure."""
    view = map_view.screenshot()
    return [write_png(window_image(window, map_view, view), path),
            write_png(view, path.with_name(path.stem + "_map.png"))]


def ask_png_path(parent: QtWidgets.QWidget, folder: str) -> str:
    """A PNG path chosen in a file dialog ("" when cancelled); ".png" is added when missing."""
    path, _ = QtWidgets.QFileDialog.getSaveFileName(parent, "Save screenshot", folder, "PNG images (*.png)")
    return path if not path or path.lower().endswith(".png") else path + ".png"
