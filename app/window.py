"""The viewer's main window: draws the session (``app.session``: statistics, trajectories, the map, the run
state) and routes input to it and to the run's stages (``app.stages``).

The GUI thread only draws: a 15 ms timer takes the newest composed frame from the perception thread and
the mapping process's messages. Loading (source, network) happens in a thread so the window shows at once.
"""
from __future__ import annotations

import time
from pathlib import Path

from PyQt6 import QtCore, QtGui, QtWidgets

from app.session import RunState, ViewerOptions, ViewerSession, load, up_transform
from app.stages import Stages
from app.widgets.controls import build_controls, show_help
from app.widgets.map_view import MapView
from app.widgets.panels import ImagePanels, main_layout
from app.widgets.png import ask_png_path, save_screenshots
from app.widgets.stats import StatsPanel

VIEW_REFRESH_S = 0.25  # the camera frustum in the 3D view moves at most 4 times a second
STATS_REFRESH_S = 0.25


class Loader(QtCore.QThread):
    """Opens the source and loads the network off the GUI thread (``app.session.load``)."""

    loaded = QtCore.pyqtSignal(object, object, str, str)  # source, predictor, source error, model error

    def __init__(self, options: ViewerOptions, parent=None):
        super().__init__(parent)
        self.options = options

    def run(self) -> None:
        self.loaded.emit(*load(self.options))


class MainWindow(QtWidgets.QMainWindow):
    run_finished = QtCore.pyqtSignal()  # scripted run: everything done (screenshot/export written)

    def __init__(self, options: ViewerOptions):
        super().__init__()
        self.options = options
        self.session = ViewerSession(options)
        self.stages = Stages()
        self.last_result = None
        self._last_stats = self._last_view_refresh = 0.0
        self._camera_pose = None
        self.setWindowTitle("m2hmx viewer")
        self._build_ui()
        self.actions_by_key, self.mode_label = build_controls(self, {
            "play": self.toggle_play, "step": self.step, "restart": self.restart, "reset_map": self.reset_map,
            "restart_mapping": self.restart_mapping, "color_mode": self.toggle_color_mode,
            "depth_mode": self.toggle_depth_mode, "screenshot": lambda: self.save_screenshots(),
            "screenshot_as": self.screenshot_as, "export": lambda: self.export_map(), "export_as": self.export_as,
            "help": lambda: show_help(self), "quit": self.close})
        self._update_mode_label()
        self.timer = QtCore.QTimer(self)
        self.timer.setInterval(15)
        self.timer.timeout.connect(self._tick)
        self.loader = Loader(options, self)
        self.loader.loaded.connect(self._on_loaded)
        self.status("loading " + options.source.describe() + " ...")
        self.loader.start()

    def _build_ui(self) -> None:
        self.panels = ImagePanels(self.options.max_depth)
        self.map_view = MapView()
        self.map_view.setMinimumSize(420, 320)
        self.stats = StatsPanel()
        self.setCentralWidget(main_layout(self.panels, self.stats, self.map_view))
        self.error_label = QtWidgets.QLabel("")
        self.error_label.setStyleSheet("color: #ff5050; font-weight: bold;")
        self.statusBar().addPermanentWidget(self.error_label, 1)
        self.resize(1560, 960)

    # ------------------------------------------------------------------------------------------ messages
    def status(self, text: str, timeout_ms: int = 0) -> None:
        self.statusBar().showMessage(text, timeout_ms)

    def show_error(self, text: str, failure: bool = False) -> None:
        """A clear message in the window (and on stderr); the app stays up. A ``failure`` of the run makes the
        viewer exit with code 1."""
        self.session.error(text, failure)
        self.error_label.setText(text)
        self.error_label.setToolTip("\n".join(list(self.session.errors)[-10:]))

    def fail(self, text: str) -> None:
        self.show_error(text, failure=True)

    def say(self, text: str, timeout_ms: int = 8000) -> None:
        """A result the user asked for (a file written): in the status bar and on stdout."""
        self.session.say(text)
        self.status(text, timeout_ms)

    def _update_mode_label(self) -> None:
        capture = self.stages.capture
        self.mode_label.setText(self.session.mode_text(None if capture is None else capture.paused,
                                                       self.map_view.color_mode, self.stages.source is not None))

    # ------------------------------------------------------------------------------------------ start
    def _on_loaded(self, source, predictor, source_error: str, model_error: str) -> None:
        opts, session = self.options, self.session
        if model_error:
            self.fail(model_error)
        elif opts.checkpoint_note:
            self.show_error(opts.checkpoint_note)
        if source is None:
            self.fail(source_error)
            self.status("no source: " + source_error)
            self.panels.rgb.show_message("no source")
            self._update_mode_label()
            self._after_final_snapshot()  # --screenshot shows the error; --export says there is no map
            return
        for warning in session.start(predictor, source.label_space):  # a label-space mismatch, Rerun off
            self.show_error(warning)
        self.panels.legend.set_label_space(session.label_space)
        self.map_view.warm_up_labels(list(session.label_space.names))
        self._start_mapping()
        self.stages.start(source, opts.size, opts.max_frames, dict(
            predictor=predictor, label_space=session.label_space, depth_mode=session.depth_mode,
            depth_lut=(self.panels.depth.lut, self.panels.depth.max_depth), failed=self.show_error), self,
            capture_failed=lambda message: self.fail(message + " (the map so far is kept)"),
            source_finished=lambda n: self.status(f"source finished after {n} frames", 5000))
        self.timer.start()
        self._update_mode_label()
        text, assumed = session.describe_run(source)
        self.say(f"{text}; {assumed}", 0) if assumed else self.status(text)

    def _start_mapping(self) -> None:
        error = self.stages.start_mapping(self.session.label_space, self.session.mapping_config(),
                                          self.options.snapshot_every_s)
        if error:
            self.show_error(error)

    # ------------------------------------------------------------------------------------------ controls
    def toggle_play(self) -> None:
        self._drive_capture(lambda capture: capture.set_paused(not capture.paused))

    def step(self) -> None:
        self._drive_capture(lambda capture: capture.step())  # one frame, paused

    def _drive_capture(self, act) -> None:
        if self.stages.capture is not None:
            act(self.stages.capture)
            self.actions_by_key["play"].setChecked(not self.stages.capture.paused)
            self._update_mode_label()

    def restart(self) -> None:
        if not self.stages.restart(self):
            return
        self._reset_map_state()
        self.session.state = RunState.RUNNING
        self.status("restarted from the first frame")

    def restart_mapping(self) -> None:
        """A new mapping process and a new map after the old process died. The old process's last map is first
        written (every format it holds) to ``<output-dir>/map-<time>-before-restart``, so it is not lost."""
        if self.session.label_space is None or self.stages.mapping_alive():
            return
        if self.session.last_map is not None:
            self.export_map(Path(self.options.output_dir) / f"map-{_stamp()}-before-restart")
        self.session.mapping_restarted()
        self._start_mapping()
        self.actions_by_key["restart_mapping"].setEnabled(False)
        self._reset_map_state()
        self.say("mapping started again with a new map")

    def reset_map(self) -> None:
        self._reset_map_state()
        self.status("map reset")

    def _reset_map_state(self, config=None) -> None:
        if self.stages.mapper is not None:
            self.stages.mapper.reset(config)
        self.map_view.clear_map()
        self.session.reset_map()

    def toggle_color_mode(self) -> None:
        self.map_view.set_color_mode("rgb" if self.map_view.color_mode == "class" else "class")
        self._update_mode_label()

    def toggle_depth_mode(self) -> None:
        has_depth = self.last_result is None or self.last_result.depth_sensor is not None
        why_not = self.session.toggle_depth(has_depth)
        if why_not:
            self.status(why_not, 4000)
            return
        self.stages.set_depth_mode(self.session.depth_mode)
        self._reset_map_state(self.session.mapping_config())
        self._update_mode_label()
        self.status(f"depth into the map: {self.session.depth_mode}; the map was reset", 4000)

    # ------------------------------------------------------------------------------------------ outputs
    def save_screenshots(self, path: str | Path | None = None) -> list[Path]:
        """The whole window to ``path`` (PNG) and the 3D view beside it (``<stem>_map.png``)."""
        path = Path(path) if path else Path(self.options.output_dir) / f"screenshot-{_stamp()}.png"
        try:
            written = save_screenshots(self, self.map_view, path)
        except OSError as exc:
            self.fail(f"screenshot failed: {exc}")
            return []
        self.say("screenshots written: " + ", ".join(str(p) for p in written), 6000)
        return written

    def screenshot_as(self) -> None:
        if path := ask_png_path(self, self.options.output_dir):
            self.save_screenshots(path)

    def export_as(self) -> None:
        if folder := QtWidgets.QFileDialog.getExistingDirectory(self, "Export map into", self.options.output_dir):
            self.export_map(folder)

    def export_map(self, out_dir: str | Path | None = None) -> None:
        """Every format of the mapping bridge's export, written by the mapping process; if that process is
        gone, the last map it sent (whole mesh, trajectory, scene graph) is written from here instead."""
        out_dir = str(out_dir or Path(self.options.output_dir) / f"map-{_stamp()}")
        if self.stages.mapping_alive():
            self.session.pending_export = out_dir
            self.stages.mapper.command("export", out_dir)
            self.status(f"exporting the map to {out_dir} ...")
            return
        paths, text = self.session.export_last_map(out_dir)
        (self.say if paths else self.fail)(text)
        self._export_done(paths)

    def _export_done(self, paths: list) -> None:
        if self.session.export_done(paths):
            self._finished()

    # ------------------------------------------------------------------------------------------ ticks
    def _tick(self) -> None:
        stages, session = self.stages, self.session
        result = stages.display_slot.get()
        if result is not None and stages.capture is not None and result.generation == stages.capture.generation:
            self._show_result(result)
        if stages.mapper is not None:
            for kind, payload in stages.mapper.poll():
                self._on_mapping_message(kind, payload)
            if not stages.mapper.alive() and not stages.mapper.stopped and not session.mapping_dead:
                self._on_mapping_died()
        now = time.monotonic()
        if self._camera_pose is not None and self.last_result is not None and \
                now - self._last_view_refresh > VIEW_REFRESH_S:
            self._last_view_refresh = now
            self.map_view.set_camera(self._camera_pose, self.last_result.K, self.last_result.rgb.shape[:2])
            self._camera_pose = None
        if now - self._last_stats > STATS_REFRESH_S:
            self._last_stats = now
            self._update_stats()
        if session.state is RunState.RUNNING and stages.is_idle(session.mapping_idle):
            self._begin_finish()

    def _on_mapping_died(self) -> None:
        size = self.session.mapping_died()
        self.actions_by_key["restart_mapping"].setEnabled(True)
        self.fail(f"the mapping process died (exit code {self.stages.mapper.process.exitcode}); the last map "
                  f"({size}) is kept and exportable; press M to start mapping again")
        self.stages.start_capture()
        if self.session.pending_export is not None:
            self.export_map(self.session.pending_export)
        self._on_final_snapshot()

    def _show_result(self, r) -> None:
        self.last_result = r
        self.session.on_result(r, time.monotonic())
        if self.panels.show_result(r, self.session) and self.map_view.color_mode == "class":
            self.toggle_color_mode()  # no classes to colour the map by
        if warning := self.session.nothing_to_map(r, self.stages.mapper is not None):
            self.show_error(warning)

    def _on_mapping_message(self, kind: str, payload) -> None:
        if kind == "step":
            if self.session.on_step(payload, time.monotonic()):
                self.map_view.set_world_to_display(up_transform(payload["pose"]))
            self._camera_pose = payload["pose"]  # drawn at most every VIEW_REFRESH_S (each 3D redraw costs)
        elif kind == "snapshot":
            self.map_view.show_update(payload, self.session.on_map(payload))
            self._on_final_snapshot()
        elif kind == "ready":
            self.stages.start_capture()
        elif kind == "idle":
            self.session.mapping_idle = True
        elif kind == "error":
            self.show_error(payload)
            self._on_final_snapshot()
        elif kind == "exported":
            self.say(f"exported {len(payload)} files to {self.session.pending_export}")
            self._export_done(payload)
        elif kind == "export_failed":
            self.fail(payload)
            self._export_done([])

    def _update_stats(self) -> None:
        source = self.stages.source.name if self.stages.source is not None else "-"
        self.stats.set_rows(self.session.stats(source, *self.stages.dropped()))

    # ------------------------------------------------------------------------------------------ finish
    def _begin_finish(self) -> None:
        """The source is done and every stage idle: final map snapshot, then --screenshot / --export, then
        ``run_finished`` (and quit with --quit-when-done)."""
        if self.stages.mapping_alive():
            self.session.state = RunState.SNAPSHOT  # _on_final_snapshot continues when it (or an error) arrives
            self.stages.mapper.command("snapshot")
        else:
            self._after_final_snapshot()

    def _on_final_snapshot(self) -> None:
        if self.session.snapshot_arrived():
            QtCore.QTimer.singleShot(200, self._after_final_snapshot)  # let the map be drawn first

    def _after_final_snapshot(self) -> None:
        self._update_stats()
        self.repaint()
        if self.options.screenshot:
            self.save_screenshots(self.options.screenshot)
        if self.options.export:
            self.session.state = RunState.EXPORT
            self.export_map(self.options.export)
        else:
            self.session.state = RunState.DONE
            self._finished()

    def _finished(self) -> None:
        self.run_finished.emit()
        if self.options.quit_when_done:
            QtCore.QTimer.singleShot(0, self.close)

    def shutdown(self) -> None:
        """Stop threads and the mapping process (idempotent)."""
        self.timer.stop()
        self.stages.shutdown(self.loader)
        self.session.close()

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        self.shutdown()
        super().closeEvent(event)


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")
