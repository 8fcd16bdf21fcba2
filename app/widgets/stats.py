"""The statistics panel: rates, latency percentiles, dropped frames, map size, live ATE."""
from __future__ import annotations

from PyQt6 import QtWidgets

ROWS = (
    ("source", "source"),
    ("frames", "frames shown"),
    ("perception_fps", "perception [frames/s]"),
    ("mapping_fps", "mapping [frames/s]"),
    ("latency", "latency p50 / p95 [ms]"),
    ("dropped", "dropped (capture / mapping)"),
    ("tracking", "tracking"),
    ("odometry", "odometry"),
    ("map_size", "map size"),
    ("ate", "ATE RMSE (live)"),
    ("loops", "loop closures"),
)


class StatsPanel(QtWidgets.QGroupBox):
    def __init__(self, parent=None):
        super().__init__("Statistics", parent)
        form = QtWidgets.QFormLayout(self)
        form.setContentsMargins(6, 4, 6, 4)
        form.setVerticalSpacing(2)
        self._values: dict[str, QtWidgets.QLabel] = {}
        for key, label in ROWS:
            value = QtWidgets.QLabel("-")
            value.setTextInteractionFlags(value.textInteractionFlags())
            form.addRow(label, value)
            self._values[key] = value

    def set(self, key: str, text: str) -> None:
        label = self._values[key]
        if label.text() != text:
            label.setText(text)

    def set_rows(self, rows: dict[str, str]) -> None:
        for key, text in rows.items():
            self.set(key, text)

    def value(self, key: str) -> str:
        return self._values[key].text()
