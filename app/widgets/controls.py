"""The viewer's keyboard shortcuts, menus and toolbar: one table (``SHORTCUTS``) that the Help menu lists."""
from __future__ import annotations

from PyQt6 import QtCore, QtGui, QtWidgets

SHORTCUTS = (  # (action key, keys, description): the Help menu lists these
    ("play", ("Space",), "play / pause"),
    ("step", ("N", "Right"), "step one frame (pauses)"),
    ("restart", ("R",), "restart the source from its first frame (resets the map)"),
    ("reset_map", ("Ctrl+R",), "reset the map (keep playing)"),
    ("restart_mapping", ("M",), "start mapping again after the mapping process died (a new map; the last one "
                                "stays exportable)"),
    ("color_mode", ("C",), "3D map colours: class / RGB"),
    ("depth_mode", ("D",), "depth into the map: predicted / sensor (resets the map)"),
    ("screenshot", ("S",), "screenshot: window and 3D view PNGs into the output folder"),
    ("screenshot_as", ("Ctrl+S",), "screenshot to a chosen file"),
    ("export", ("E",), "export the map (every format) into the output folder"),
    ("export_as", ("Ctrl+E",), "export the map to a chosen folder"),
    ("help", ("F1",), "this list"),
    ("quit", ("Ctrl+Q", "Q"), "quit"),
)
MENUS = {
    "&File": ("screenshot", "screenshot_as", "export", "export_as", None, "quit"),
    "&Playback": ("play", "step", "restart", None, "reset_map", "restart_mapping"),
    "&View": ("color_mode", "depth_mode"),
    "&Help": ("help",),
}
TOOLBAR = (("play", "Play/Pause"), ("step", "Step"), ("restart", "Restart"), ("reset_map", "Reset map"),
           ("color_mode", "Colours"), ("depth_mode", "Depth"), ("screenshot", "Screenshot"), ("export", "Export"))


def build_controls(window: QtWidgets.QMainWindow, handlers: dict) -> tuple[dict[str, QtGui.QAction], QtWidgets.QLabel]:
    """An action per ``SHORTCUTS`` row connected to ``handlers[key]``, the menus, and the toolbar with a label
    for the run's mode at its end: (actions by key, that label)."""
    actions: dict[str, QtGui.QAction] = {}
    for key, keys, text in SHORTCUTS:
        action = QtGui.QAction(text[0].upper() + text[1:], window)
        action.setShortcuts([QtGui.QKeySequence(k) for k in keys])
        action.setShortcutContext(QtCore.Qt.ShortcutContext.WindowShortcut)
        action.triggered.connect(handlers[key])
        window.addAction(action)
        actions[key] = action
    actions["play"].setCheckable(True)
    actions["play"].setChecked(True)
    actions["restart_mapping"].setEnabled(False)  # until the mapping process dies
    for title, keys in MENUS.items():
        menu = window.menuBar().addMenu(title)
        for key in keys:
            menu.addSeparator() if key is None else menu.addAction(actions[key])
    toolbar = window.addToolBar("controls")
    toolbar.setMovable(False)
    for key, label in TOOLBAR:
        button = toolbar.addAction(label)
        button.triggered.connect(actions[key].trigger)
        button.setToolTip(actions[key].text() + " (" + actions[key].shortcut().toString() + ")")
    mode_label = QtWidgets.QLabel()
    toolbar.addSeparator()
    toolbar.addWidget(mode_label)
    return actions, mode_label


def show_help(parent: QtWidgets.QWidget) -> None:
    rows = "".join(f"<tr><td><b>{' / '.join(keys)}</b></td><td>{text}</td></tr>" for _, keys, text in SHORTCUTS)
    QtWidgets.QMessageBox.information(parent, "Keyboard shortcuts", f"<table cellpadding=3>{rows}</table>"
                                      "<p>3D view: left-drag orbits, wheel zooms, middle-drag pans.</p>")
