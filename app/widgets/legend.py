"""Class legend: the label space's official colours, classes present in the current frame emphasised."""
from __future__ import annotations

from PyQt6 import QtCore, QtWidgets

from m2hmx.labels import LabelSpace


MAX_HEIGHT = 260  # px: a longer legend (nyu40's 40 classes) scrolls instead of squeezing the image panels
MAX_COLUMNS = 3


class ClassLegend(QtWidgets.QScrollArea):
    """The label space's classes in up to ``MAX_COLUMNS`` columns; its minimum height shows every row (up to
    ``MAX_HEIGHT``), so the window's layout cannot cut the last rows off."""

    def __init__(self, label_space: LabelSpace | None = None, columns: int = MAX_COLUMNS, parent=None):
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._columns = columns
        self.entries: list[QtWidgets.QLabel] = []  # one label per class, in the label space's order
        self._present: frozenset[int] = frozenset()
        self.label_space: LabelSpace | None = None
        self.set_label_space(label_space)

    def set_label_space(self, label_space: LabelSpace | None) -> None:
        self.label_space = label_space
        body = QtWidgets.QWidget()
        grid = QtWidgets.QGridLayout(body)
        grid.setContentsMargins(2, 2, 2, 2)
        grid.setSpacing(1)
        self.entries = []
        if label_space is not None:
            for i, (name, rgb) in enumerate(zip(label_space.names, label_space.colors)):
                entry = QtWidgets.QLabel()
                entry.setTextFormat(QtCore.Qt.TextFormat.RichText)
                entry.setProperty("swatch", "#%02x%02x%02x" % tuple(int(c) for c in rgb))
                entry.setProperty("name", name)
                grid.addWidget(entry, i // self._columns, i % self._columns)
                self.entries.append(entry)
        grid.setRowStretch(grid.rowCount(), 1)
        self.setWidget(body)
        self._present = frozenset()
        self._render(force=True)  # the entries' text sets their height
        self.setMinimumHeight(min(MAX_HEIGHT, body.sizeHint().height() + 2 * self.frameWidth()))

    def set_present(self, class_ids) -> None:
        """Emphasise the classes seen in the current frame (cheap: redraws only when the set changes)."""
        present = frozenset(int(i) for i in class_ids)
        if present != self._present:
            self._present = present
            self._render()

    def present(self) -> frozenset[int]:
        return self._present

    def _render(self, force: bool = False) -> None:
        for i, entry in enumerate(self.entries):
            on = i in self._present
            colour = "#000000" if on else "#8a8a8a"
            weight = "bold" if on else "normal"
            swatch = f'<span style="background:{entry.property("swatch")}">&nbsp;&nbsp;&nbsp;&nbsp;</span>'
            name = f'<span style="color:{colour}; font-weight:{weight}">{i} {entry.property("name")}</span>'
            entry.setText(f"{swatch}&nbsp;{name}")
