"""The viewer's main window: image panels, 3D map, statistics, controls, and the run's lifecycle.

The GUI thread only draws: a 15 ms timer takes the newest composed frame from the perception thread and
the mapping process's messages. Loading (source, network) happens in a thread so the window shows at once.
"""
from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PyQt6 import QtCore, QtGui, QtWidgets

from app.mapping_process import export_update
from app.sources import SourceSpec, open_viewer_source
from app.widgets.image_panel import DepthPanel, ImagePanel
from app.widgets.legend import ClassLegend
from app.widgets.map_view import MapView
from app.widgets.stats import StatsPanel
from app.workers import CaptureThread, LatestSlot, MappingClient, PerceptionThread, one_line, plain
from mapping.atomic import atomic_path
from mapping.trajectory import associate, umeyama

SHORTCUTS = (  # (action key, keys, description): the Help menu lists these
    ("play", ("Space",), "play / pause"),
    ("step", ("N", "Right"), "step one frame (pauses)"),
    ("restart", ("R",), "restart the source from its first frame (resets the map)"),
    ("reset_map", ("Ctrl+R",), "reset the map (keep playing)"),
    ("restart_mapping", ("M",), "start mapping again after the mapping process died (a new map; the last one "
                                "stays exportable)"),
    ("color_mode", ("C",), "3D map colours: class / RGB"),
    ("depth_source", ("D",), "depth into the map: predicted / sensor (resets the map)"),
    ("screenshot", ("S",), "screenshot: window and 3D view PNGs into the output folder"),
    ("screenshot_as", ("Ctrl+S",), "screenshot to a chosen file"),
    ("export", ("E",), "export the map (every format) into the output folder"),
    ("export_as", ("Ctrl+E",), "export the map to a chosen folder"),
    ("help", ("F1",), "this list"),
    ("quit", ("Ctrl+Q", "Q"), "quit"),
)


VIEW_REFRESH_S = 0.25  # the camera frustum in the 3D view moves at most 4 times a second


@dataclass
class ViewerOptions:
    source: SourceSpec
    checkpoint: str | None = None  # None: no network (sensor depth, ground-truth labels)
    checkpoint_note: str = ""  # why there is no network, for the status bar
    device: str = "cpu"
    labelspace: str | None = None
    depth_source: str = "pred"  # "pred" | "sensor"
    depth_scale: float = 1.0
    output_dir: str = "m2hmx-output"
    size: tuple[int, int] | None = (240, 320)
    max_frames: int | None = None
    screenshot: str | None = None
    export: str | None = None
    quit_when_done: bool = False
    max_depth: float = 6.0  # fixed depth colour range (m)
    snapshot_every_s: float = 1.0
    loop_frames: int | None = None  # soak runs: cycle the source back and forth for this many frames
    torch_threads: int = 1
    odometry: str | None = None  # MappingConfig.odometry: None = by depth source
    rerun: tuple[str, str | None] | None = None  # ("spawn" | "connect" | "save", address or .rrd path)
    tasks: tuple[str, ...] | None = None  # network outputs (--tasks); None: all of the model's
    loop_closure: bool = False  # MappingConfig.loop_closure


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


def up_transform(first_pose: np.ndarray) -> np.ndarray:
    """A rotation for the 3D view: the world axis nearest to the first camera's up (-y, OpenCV) becomes the
    view's z (datasets' worlds have an axis-aligned up: z for ScanNet and the generated rooms, -y for a
    map started at a camera), the camera's forward direction the view's +y."""
    cam_up = -first_pose[:3, 1]
    axis = int(np.argmax(np.abs(cam_up)))
    up = np.zeros(3)
    up[axis] = np.sign(cam_up[axis])
    fwd = first_pose[:3, 2] - up * np.dot(first_pose[:3, 2], up)
    fwd /= max(np.linalg.norm(fwd), 1e-9)
    right = np.cross(fwd, up)
    T = np.eye(4)
    T[:3, :3] = np.stack([right, fwd, up])
    return T


class Loader(QtCore.QThread):
    """Opens the source and loads the network off the GUI thread."""

    loaded = QtCore.pyqtSignal(object, object, str, str)  # source, predictor, source error, model error

    def __init__(self, options: ViewerOptions, parent=None):
        super().__init__(parent)
        self.options = options

    def run(self) -> None:
        source = predictor = None
        source_error = model_error = ""
        opts = self.options
        try:
            source = open_viewer_source(opts.source, opts.size)
            if opts.loop_frames:
                from app.sources import BackAndForth

                source = BackAndForth(source, opts.loop_frames)
        except Exception as exc:
            source_error = one_line(exc)  # names the source (camera index, file) already
        if opts.checkpoint:
            try:
                import torch

                from m2hmx.predictor import Predictor

                torch.set_num_threads(opts.torch_threads)
                predictor = Predictor.from_checkpoint(opts.checkpoint, opts.device, tasks=opts.tasks)
                if opts.depth_scale != 1.0:
                    predictor = ScaledPredictor(predictor, opts.depth_scale)
            except Exception as exc:
                model_error = f"cannot load the model {opts.checkpoint}: {one_line(exc)}"
        self.loaded.emit(source, predictor, source_error, model_error)


class ScaledPredictor:
    """A predictor whose metric depth is multiplied by ``scale`` (``--depth-scale``: a camera whose focal
    length differs from the training data's gives depth off by a constant factor)."""

    def __init__(self, predictor, scale: float):
        self._predictor, self.scale = predictor, float(scale)
        self.label_space, self.tasks = predictor.label_space, predictor.tasks
        self.model_tasks = predictor.model_tasks

    def predict(self, rgb):
        pred = self._predictor.predict(rgb)
        pred.depth = pred.depth * np.float32(self.scale)
        return pred


class MainWindow(QtWidgets.QMainWindow):
    run_finished = QtCore.pyqtSignal()  # scripted run: everything done (screenshot/export written)

    def __init__(self, options: ViewerOptions):
        super().__init__()
        self.options = options
        self.setWindowTitle("m2hmx viewer")
        self.source = self.predictor = self.label_space = None
        self.capture: CaptureThread | None = None
        self.perception: PerceptionThread | None = None
        self.mapper: MappingClient | None = None
        self.capture_slot, self.display_slot = LatestSlot(), LatestSlot()
        self.depth_source = options.depth_source
        self.errors: deque[str] = deque(maxlen=100)
        self.frames_shown = 0
        self.last_result = None
        self.last_map = None  # the newest MapUpdate: kept (and exportable) if the mapping process dies
        self.mapping_dead_reported = False
        self.run_failed = False  # a source, model, mapping-process, export or screenshot failure: exit code 1
        self.dead_maps: list = []  # the last MapUpdate of each mapping process that died (exportable)
        self._old_mappers: list = []  # clients of dead mapping processes, closed at shutdown
        self._told_nothing_to_map = False
        self.exported_paths: list[str] = []
        self._pending_export: str | None = None
        self._finish_state = None  # scripted run: None -> "snapshot" -> "export" -> "done"
        self.rerun = None  # app.rerun_log.RerunLogger with --rerun*
        self._rerun_index: dict[float, int] = {}  # timestamp -> source frame index, for mapping steps
        self._reset_stats()
        self._build_ui()
        self._build_actions()
        self.timer = QtCore.QTimer(self)
        self.timer.setInterval(15)
        self.timer.timeout.connect(self._tick)
        self.loader = Loader(options, self)
        self.loader.loaded.connect(self._on_loaded)
        self.status("loading " + options.source.describe() + " ...")
        self.loader.start()

    # ------------------------------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        self.rgb_panel = ImagePanel("RGB")
        self.depth_panel = DepthPanel("depth (predicted)", self.options.max_depth)
        self.seg_panel = ImagePanel("segmentation")
        self.normals_panel = ImagePanel("normals")
        self.edges_panel = ImagePanel("edges")
        self.sensor_panel = DepthPanel("depth (sensor)", self.options.max_depth)
        self.legend = ClassLegend()
        self.legend.setMinimumWidth(170)
        self.map_view = MapView()
        self.map_view.setMinimumSize(420, 320)
        self.stats = StatsPanel()

        images = QtWidgets.QWidget()
        grid = QtWidgets.QGridLayout(images)
        grid.setContentsMargins(2, 2, 2, 2)
        grid.setSpacing(4)
        for i, panel in enumerate((self.rgb_panel, self.depth_panel, self.sensor_panel, self.seg_panel,
                                   self.normals_panel, self.edges_panel)):
            grid.addWidget(panel, i // 3, i % 3)
        left = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        left.addWidget(images)
        bottom = QtWidgets.QWidget()
        bl = QtWidgets.QHBoxLayout(bottom)
        bl.setContentsMargins(0, 0, 0, 0)
        legend_box = QtWidgets.QGroupBox("Classes")
        lb = QtWidgets.QVBoxLayout(legend_box)
        lb.setContentsMargins(2, 2, 2, 2)
        lb.addWidget(self.legend)
        bl.addWidget(legend_box, 1)
        bl.addWidget(self.stats, 1)
        left.addWidget(bottom)
        left.setStretchFactor(0, 3)
        left.setStretchFactor(1, 1)
        map_box = QtWidgets.QGroupBox("3D map (drag: orbit, wheel: zoom, middle-drag: pan)")
        ml = QtWidgets.QVBoxLayout(map_box)
        ml.setContentsMargins(2, 2, 2, 2)
        ml.addWidget(self.map_view)
        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(map_box)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        self.setCentralWidget(split)
        self.error_label = QtWidgets.QLabel("")
        self.error_label.setStyleSheet("color: #ff5050; font-weight: bold;")
        self.statusBar().addPermanentWidget(self.error_label, 1)
        self.resize(1560, 960)

    def _build_actions(self) -> None:
        self.actions_by_key: dict[str, QtGui.QAction] = {}
        handlers = {
            "play": self.toggle_play, "step": self.step, "restart": self.restart, "reset_map": self.reset_map,
            "restart_mapping": self.restart_mapping,
            "color_mode": self.toggle_color_mode, "depth_source": self.toggle_depth_source,
            "screenshot": lambda: self.save_screenshots(), "screenshot_as": self.screenshot_as,
            "export": lambda: self.export_map(), "export_as": self.export_as, "help": self.show_help,
            "quit": self.close,
        }
        for key, keys, text in SHORTCUTS:
            action = QtGui.QAction(text[0].upper() + text[1:], self)
            action.setShortcuts([QtGui.QKeySequence(k) for k in keys])
            action.setShortcutContext(QtCore.Qt.ShortcutContext.WindowShortcut)
            action.triggered.connect(handlers[key])
            self.addAction(action)
            self.actions_by_key[key] = action
        a = self.actions_by_key
        a["play"].setCheckable(True)
        a["play"].setChecked(True)
        a["restart_mapping"].setEnabled(False)  # until the mapping process dies
        menus = {
            "&File": ("screenshot", "screenshot_as", "export", "export_as", None, "quit"),
            "&Playback": ("play", "step", "restart", None, "reset_map", "restart_mapping"),
            "&View": ("color_mode", "depth_source"),
            "&Help": ("help",),
        }
        for title, keys in menus.items():
            menu = self.menuBar().addMenu(title)
            for key in keys:
                menu.addSeparator() if key is None else menu.addAction(a[key])
        toolbar = self.addToolBar("controls")
        toolbar.setMovable(False)
        for key, label in (("play", "Play/Pause"), ("step", "Step"), ("restart", "Restart"),
                           ("reset_map", "Reset map"), ("color_mode", "Colours"), ("depth_source", "Depth"),
                           ("screenshot", "Screenshot"), ("export", "Export")):
            button = toolbar.addAction(label)
            button.triggered.connect(a[key].trigger)
            button.setToolTip(a[key].text() + " (" + a[key].shortcut().toString() + ")")
        self.mode_label = QtWidgets.QLabel()
        toolbar.addSeparator()
        toolbar.addWidget(self.mode_label)
        self._update_mode_label()

    def status(self, text: str, timeout_ms: int = 0) -> None:
        self.statusBar().showMessage(text, timeout_ms)

    def show_error(self, text: str) -> None:
        """A clear message in the window (and on stderr); the app stays up."""
        try:
            print(f"m2hmx-viewer: {text}", file=sys.stderr, flush=True)
        except (OSError, ValueError):  # stderr closed: the window still shows it
            pass
        self.errors.append(text)
        self.error_label.setText(text)
        self.error_label.setToolTip("\n".join(list(self.errors)[-10:]))

    def fail(self, text: str) -> None:
        """``show_error`` for a failure of the run: the viewer then exits with code 1."""
        self.run_failed = True
        self.show_error(text)

    def say(self, text: str, timeout_ms: int = 8000) -> None:
        """A result the user asked for (a file written): in the status bar and on stdout."""
        try:
            print(f"m2hmx-viewer: {text}", flush=True)
        except (OSError, ValueError):  # stdout closed (a pipe whose reader went away): the status bar still says it
            pass
        self.status(text, timeout_ms)

    def _update_mode_label(self) -> None:
        depth = "predicted" if self.depth_source == "pred" else "sensor"
        if self.predictor is None and self.source is not None:
            depth = "sensor (no model)"
        paused = self.capture is not None and self.capture.paused
        state = "NO SOURCE" if self.capture is None and self.run_failed else ("PAUSED" if paused else "playing")
        self.mode_label.setText(f"  {state}  |  map colours: {self.map_view.color_mode}"
                                f"  |  depth into map: {depth}  ")

    # ------------------------------------------------------------------------------------------ start
    def _on_loaded(self, source, predictor, source_error: str, model_error: str) -> None:
        opts = self.options
        if model_error:
            self.fail(model_error)
        elif opts.checkpoint_note:
            self.show_error(opts.checkpoint_note)
        if source is None:
            self.fail(source_error)
            self.status("no source: " + source_error)
            self.rgb_panel.show_message("no source")
            self._update_mode_label()
            self._after_final_snapshot()  # --screenshot shows the error; --export says there is no map
            return
        self.source, self.predictor = source, predictor
        from m2hmx.labels import load_label_space

        model_space = getattr(predictor, "label_space", None)
        self.label_space = (load_label_space(opts.labelspace) if opts.labelspace else None) or model_space \
            or source.label_space or load_label_space("scannet20")
        if model_space is not None and self.label_space.num_classes != model_space.num_classes:
            self.show_error(f"label space {self.label_space.name} has {self.label_space.num_classes} classes, the "
                            f"model {model_space.num_classes}: using the model's ({model_space.name})")
            self.label_space = model_space
        self.legend.set_label_space(self.label_space)
        self.map_view.warm_up_labels(list(self.label_space.names))
        if predictor is None:
            self.depth_source = "sensor"
        if opts.rerun is not None:
            self._start_rerun()
        self._start_mapping()
        self.capture = CaptureThread(source, self.capture_slot, opts.size, opts.max_frames, self)
        self.capture.failed.connect(self._on_capture_failed)
        self.capture.finished_source.connect(self._on_source_finished)
        self.perception = self._new_perception()
        self.perception.start()
        self.timer.start()
        if self.mapper is None:
            self.capture.start()
        # else: capture starts on the mapping process's "ready" (Open3D takes seconds to import; frames read
        # meanwhile would all be dropped but one, and tracking would start with a large jump)
        self._update_mode_label()
        what = "network " + Path(opts.checkpoint).name if predictor is not None else "no network"
        assumed = getattr(source, "intrinsics_note", "")  # which intrinsics, from where: said on stdout too
        text = f"{source.name}: {what}, label space {self.label_space.name}"
        self.say(f"{text}; {assumed}", 0) if assumed else self.status(text)

    def _start_rerun(self) -> None:
        from app.rerun_log import RerunLogger

        how, where = self.options.rerun
        try:
            self.rerun = RerunLogger(self.label_space, save=where if how == "save" else None,
                                     connect=where if how == "connect" else None)
        except Exception as exc:
            self.show_error(f"Rerun logging is off: {one_line(exc)}")

    def _new_perception(self) -> PerceptionThread:
        thread = PerceptionThread(self.capture_slot, self.display_slot, self.predictor, self.label_space,
                                  self.mapper, self.depth_source, bool(getattr(self.source, "live", False)),
                                  (self.depth_panel.lut, self.depth_panel.max_depth), self)
        thread.failed.connect(self.show_error)
        return thread

    def _mapping_config(self):
        from mapping.bridge import MappingConfig

        odometry, loops = self.options.odometry, self.options.loop_closure
        if self.predictor is None:
            return MappingConfig(depth_mode="gt", odometry=odometry, loop_closure=loops)
        return MappingConfig(depth_mode="pred" if self.depth_source == "pred" else "sensor", odometry=odometry,
                             loop_closure=loops)

    def _start_mapping(self) -> None:
        try:
            self.mapper = MappingClient(self.label_space, self._mapping_config(), self.options.snapshot_every_s)
        except Exception as exc:
            self.show_error(f"mapping process could not start: {one_line(exc)}")
            self.mapper = None

    # ------------------------------------------------------------------------------------------ controls
    def toggle_play(self) -> None:
        if self.capture is None:
            return
        self.capture.set_paused(not self.capture.paused)
        self.actions_by_key["play"].setChecked(not self.capture.paused)
        self._update_mode_label()

    def step(self) -> None:
        if self.capture is not None:
            self.capture.step()
            self.actions_by_key["play"].setChecked(False)
            self._update_mode_label()

    def restart(self) -> None:
        if self.capture is None:
            return
        self.capture.restart()
        self.display_slot.clear()
        if self.perception is not None and not self.perception.isRunning():
            self.perception = self._new_perception()
            self.perception.start()
        self._reset_map_state()
        self._finish_state = None
        self.status("restarted from the first frame")

    def restart_mapping(self) -> None:
        """A new mapping process and a new map after the old process died. The old process's last map is first
        written (every format it holds) to ``<output-dir>/map-<time>-before-restart``, so it is not lost."""
        if self.label_space is None or (self.mapper is not None and self.mapper.alive()):
            return
        if self.last_map is not None:
            self.export_map(Path(self.options.output_dir) / f"map-{self._stamp()}-before-restart")
        if self.mapper is not None:
            self.mapper.stopped = True  # its queues stay open: the perception thread may be handing it a frame
            self._old_mappers.append(self.mapper)
        if self.last_map is not None:
            self.dead_maps.append(self.last_map)
        self._start_mapping()
        if self.perception is not None:
            self.perception.mapper = self.mapper
        self.mapping_dead_reported = False
        self.actions_by_key["restart_mapping"].setEnabled(False)
        self._reset_map_state()
        self.tracking_text = "-"
        self.say("mapping started again with a new map")

    def reset_map(self) -> None:
        self._reset_map_state()
        self.status("map reset")

    def _reset_map_state(self, config=None) -> None:
        if self.mapper is not None:
            self.mapper.reset(config)
        self.map_view.clear_map()
        self.last_map = None
        self._world_set = False
        self.est_t, self.est_poses, self.gt_t, self.gt_poses = [], [], [], []
        self.ate = None

    def toggle_color_mode(self) -> None:
        self.map_view.set_color_mode("rgb" if self.map_view.color_mode == "class" else "class")
        self._update_mode_label()

    def toggle_depth_source(self) -> None:
        if self.predictor is None:
            self.status("no network loaded: the map uses the sensor depth", 4000)
            return
        if self.last_result is not None and self.last_result.depth_sensor is None:
            self.status("this source has no sensor depth", 4000)
            return
        self.depth_source = "sensor" if self.depth_source == "pred" else "pred"
        if self.perception is not None:
            self.perception.depth_source = self.depth_source
        self._reset_map_state(self._mapping_config())
        self._update_mode_label()
        self.status(f"depth into the map: {self.depth_source}; the map was reset", 4000)

    def show_help(self) -> None:
        rows = "".join(f"<tr><td><b>{' / '.join(keys)}</b></td><td>{text}</td></tr>" for _, keys, text in SHORTCUTS)
        QtWidgets.QMessageBox.information(self, "Keyboard shortcuts", f"<table cellpadding=3>{rows}</table>"
                                          "<p>3D view: left-drag orbits, wheel zooms, middle-drag pans.</p>")

    # ------------------------------------------------------------------------------------------ outputs
    def _stamp(self) -> str:
        return time.strftime("%Y%m%d-%H%M%S")

    def save_screenshots(self, path: str | Path | None = None) -> list[Path]:
        """The whole window to ``path`` (PNG) and the 3D view beside it (``<stem>_map.png``)."""
        path = Path(path) if path else Path(self.options.output_dir) / f"screenshot-{self._stamp()}.png"
        try:
            view = self.map_view.screenshot()
            written = [write_png(self.window_image(view), path),
                       write_png(view, path.with_name(path.stem + "_map.png"))]
        except OSError as exc:
            self.fail(f"screenshot failed: {exc}")
            return []
        self.say("screenshots written: " + ", ".join(str(p) for p in written), 6000)
        return written

    def window_image(self, view: QtGui.QImage) -> QtGui.QImage:
        """The whole window as shown, with the 3D view's frame ``view`` drawn where the view is (a native
        OpenGL window is not part of a widget grab)."""
        image = self.grab().toImage()
        painter = QtGui.QPainter(image)
        painter.drawImage(QtCore.QRect(self.map_view.mapTo(self, QtCore.QPoint(0, 0)), self.map_view.size()), view)
        painter.end()
        return image

    def screenshot_as(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save screenshot", self.options.output_dir,
                                                        "PNG images (*.png)")
        if path:
            self.save_screenshots(path if path.lower().endswith(".png") else path + ".png")

    def export_as(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Export map into", self.options.output_dir)
        if folder:
            self.export_map(folder)

    def export_map(self, out_dir: str | Path | None = None) -> None:
        """Every format of the mapping bridge's export, written by the mapping process; if that process is
        gone, the last map it sent (whole mesh, trajectory, scene graph: ``export_update``) is written from here."""
        out_dir = str(out_dir or Path(self.options.output_dir) / f"map-{self._stamp()}")
        if self.mapper is not None and self.mapper.alive():
            self._pending_export = out_dir
            self.mapper.command("export", out_dir)
            self.status(f"exporting the map to {out_dir} ...")
            return
        last = self.last_map if self.last_map is not None or not self.dead_maps else self.dead_maps[-1]
        if last is None:
            self.fail(f"export to {out_dir} failed: there is no map to export")
            self._export_done([])
            return
        try:
            paths = export_update(last, out_dir, self.label_space)
            self.say(f"mapping process gone: exported the last map it sent ({len(paths)} files) to {out_dir}")
        except Exception as exc:
            self.fail(f"export to {out_dir} failed: {one_line(exc)}")
            paths = []
        self._export_done(paths)

    def _export_done(self, paths: list) -> None:
        self.exported_paths = [str(p) for p in paths]
        self._pending_export = None
        if self._finish_state == "export":
            self._finish_state = "done"
            self._finished()

    # ------------------------------------------------------------------------------------------ ticks
    def _reset_stats(self) -> None:
        self.latencies = deque(maxlen=300)
        self.perception_times = deque(maxlen=60)
        self.mapping_times = deque(maxlen=60)
        self.est_t, self.est_poses, self.gt_t, self.gt_poses = [], [], [], []
        self.ate = None
        self.tracking_text = "-"
        self.odometry_text = "-"
        self.mapping_idle = True
        self._world_set = False
        self._last_stats = 0.0
        self._camera_pose = None
        self._last_view_refresh = 0.0

    def _tick(self) -> None:
        result = self.display_slot.get()
        if result is not None and self.capture is not None and result.generation == self.capture.generation:
            self._show_result(result)
        if self.mapper is not None:
            for kind, payload in self.mapper.poll():
                self._on_mapping_message(kind, payload)
            if not self.mapper.alive() and not self.mapper.stopped and not self.mapping_dead_reported:
                self.mapping_dead_reported = True
                self.mapping_idle = True
                self.tracking_text = "stopped: the mapping process died"
                n = 0 if self.last_map is None else self.last_map.total_vertices
                self.actions_by_key["restart_mapping"].setEnabled(True)
                self.fail(f"the mapping process died (exit code {self.mapper.process.exitcode}); the last map "
                          f"({n} vertices) is kept and exportable; press M to start mapping again")
                if self.capture is not None and not self.capture.isRunning():
                    self.capture.start()
                if self._pending_export is not None:
                    self.export_map(self._pending_export)
                self._on_final_snapshot()
        now = time.monotonic()
        if self._camera_pose is not None and self.last_result is not None and \
                now - self._last_view_refresh > VIEW_REFRESH_S:
            self._last_view_refresh = now
            self.map_view.set_camera(self._camera_pose, self.last_result.K, self.last_result.rgb.shape[:2])
            self._camera_pose = None
        if now - self._last_stats > 0.25:
            self._last_stats = now
            self._update_stats()
        self._check_finished()

    def _show_result(self, r) -> None:
        self.last_result = r
        self.frames_shown += 1
        now = time.monotonic()
        self.latencies.append(1000 * (now - r.captured_at))
        self.perception_times.append(now)
        self.rgb_panel.set_image(r.rgb)
        self.rgb_panel.set_title(f"RGB  (frame {r.index}, t = {r.timestamp:.2f} s)")
        if r.depth_pred is not None:
            self.depth_panel.set_depth(r.depth_pred_rgb if r.depth_pred_rgb is not None else r.depth_pred)
            self.depth_panel.set_title("depth (predicted" + (", into map)" if self.depth_source == "pred" else ")"))
        elif not self.depth_panel.has_image():
            self.depth_panel.show_message("no network: no predicted depth")
        if r.depth_sensor is not None:
            self.sensor_panel.set_depth(r.depth_sensor_rgb if r.depth_sensor_rgb is not None else r.depth_sensor)
            self.sensor_panel.set_title("depth (sensor" + (", into map)" if self.depth_source == "sensor" else ")"))
        elif not self.sensor_panel.has_image():
            self.sensor_panel.show_message("this source has no depth")
        if r.seg_overlay is not None:
            self.seg_panel.set_image(r.seg_overlay)
            self.seg_panel.set_title("segmentation" + (" (GROUND TRUTH, no network)" if r.seg_source == "ground truth"
                                                       else f" (predicted, {self.label_space.name})"))
            self.legend.set_present(r.present)
        elif not self.seg_panel.has_image():
            self.seg_panel.show_message("no segmentation")
            if self.map_view.color_mode == "class":  # no classes to colour the map by
                self.toggle_color_mode()
        for panel, image, src, name in ((self.normals_panel, r.normals_rgb, r.normals_source, "normals"),
                                        (self.edges_panel, r.edges, r.edges_source, "edges")):
            if image is not None:
                panel.set_image(image, levels=(0, 255))
                panel.set_title(name + (" (GROUND TRUTH)" if src == "ground truth" else " (predicted)"))
            elif not panel.has_image():
                message = self._no_panel_image(name)
                panel.show_message(message)
                if message.endswith("off (--tasks)"):
                    panel.set_title(f"{name} (off)")
        if self.mapper is not None and not r.sent_to_mapping and not self._told_nothing_to_map:
            self._told_nothing_to_map = True
            self.show_error("nothing to map: this source has no depth and there is no network")
        if r.gt_pose is not None and r.sent_to_mapping:
            self.gt_t.append(r.timestamp)
            self.gt_poses.append(r.gt_pose)
        if self.rerun is not None:
            self.rerun.log_images(r.index, r.timestamp, r.rgb, r.K, depth=r.depth_pred, sensor_depth=r.depth_sensor,
                                  labels=r.labels, normals=r.normals_rgb, edges=r.edges)
            self.rerun.log_scalars(r.index, r.timestamp, latency_ms=self.latencies[-1],
                                   fps=self._rate(self.perception_times) or None)
            self._rerun_index[r.timestamp] = r.index
            if len(self._rerun_index) > 1000:
                self._rerun_index.pop(next(iter(self._rerun_index)))

    def _no_panel_image(self, name: str) -> str:
        """Why the normals or edges panel has no image."""
        if self.predictor is None:
            return f"no {name}"
        task = "edge" if name == "edges" else name
        if task in self.predictor.model_tasks and task not in self.predictor.tasks:
            return f"{name}: off (--tasks)"
        return f"the model has no {name} head"

    def _on_mapping_message(self, kind: str, payload) -> None:
        if kind == "step":
            self.mapping_idle = False
            self.mapping_times.append(time.monotonic())
            self.est_t.append(payload["timestamp"])
            self.est_poses.append(payload["pose"])
            self.tracking_text = "ok" if payload["ok"] else "LOST: " + plain(payload["message"])
            self.odometry_text = payload.get("odometry", "-")
            if not self._world_set:
                self.map_view.set_world_to_display(up_transform(payload["pose"]))
                self._world_set = True
            self._camera_pose = payload["pose"]  # drawn at most every VIEW_REFRESH_S (each 3D redraw costs)
            if self.rerun is not None:
                i = self._rerun_index.get(payload["timestamp"], payload["index"])
                self.rerun.log_pose(i, payload["timestamp"], payload["pose"], payload["ok"])
        elif kind == "snapshot":
            self._show_map(payload)
            self._on_final_snapshot()
        elif kind == "ready":
            if self.capture is not None and not self.capture.isRunning():
                self.capture.start()
        elif kind == "idle":
            self.mapping_idle = True
        elif kind == "error":
            self.show_error(payload)
            self._on_final_snapshot()
        elif kind == "exported":
            self.say(f"exported {len(payload)} files to {self._pending_export}")
            self._export_done(payload)
        elif kind == "export_failed":
            self.fail(payload)
            self._export_done([])

    def _show_map(self, update) -> None:
        self.last_map = update
        if len(update.vertices):
            self.map_view.set_map(update.vertices, update.class_colors, update.rgb_colors, update.triangles)
        gt_positions = self._aligned_ground_truth()
        self.map_view.set_trajectory(update.positions if len(update.positions) else None, gt_positions)
        self.map_view.set_objects(update.objects)
        if self.rerun is not None and len(update.timestamps):
            t = float(update.timestamps[-1])
            i = self._rerun_index.get(t, update.frames - 1)
            self.rerun.log_map(i, t, update.vertices, update.triangles, update.class_colors, update.objects,
                               trajectory=update.positions, ground_truth=gt_positions)
            self.rerun.log_scalars(i, t, ate_m=self.ate)
        self.map_view.set_loops(update.loop_lines)

    def _aligned_ground_truth(self) -> np.ndarray | None:
        """Ground-truth camera centres in the map's frame (SE(3) Umeyama over associated poses); sets ATE."""
        if len(self.gt_t) < 3 or len(self.est_t) < 3:
            return None
        gt_t, gt_p = np.array(self.gt_t), np.array(self.gt_poses)
        est_t, est_p = np.array(self.est_t), np.array(self.est_poses)
        i_gt, i_est = associate(gt_t, est_t, max_diff=1e-3)
        if len(i_gt) < 3:
            return None
        a, b = gt_p[i_gt, :3, 3], est_p[i_est, :3, 3]
        finite = np.isfinite(a).all(1) & np.isfinite(b).all(1)  # a bad ground-truth value must not stop the view
        if finite.sum() < 3:
            return None
        a, b = a[finite], b[finite]
        try:
            rot, trans, _ = umeyama(a, b)
        except np.linalg.LinAlgError:
            return None
        err = b - (a @ rot.T + trans)
        self.ate = float(np.sqrt((err ** 2).sum(1).mean()))
        return gt_p[:, :3, 3] @ rot.T + trans

    @staticmethod
    def _rate(times) -> float:
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 2 and times[-1] > times[0] else 0.0

    def _update_stats(self) -> None:
        s = self.stats
        rate = self._rate

        s.set("source", self.source.name if self.source is not None else "-")
        s.set("frames", str(self.frames_shown))
        s.set("perception_fps", f"{rate(self.perception_times):.1f}")
        s.set("mapping_fps", f"{rate(self.mapping_times):.1f}" if self.mapper is not None else "off")
        if self.latencies:
            p50, p95 = np.percentile(np.array(self.latencies), [50, 95])
            s.set("latency", f"{p50:.0f} / {p95:.0f}")
        drops = self.capture_slot.dropped + self.display_slot.dropped
        s.set("dropped", f"{drops} / {self.mapper.dropped if self.mapper else 0}")
        s.set("tracking", self.tracking_text)
        s.set("odometry", self.odometry_text)
        if self.last_map is not None:
            m = self.last_map
            s.set("map_size", f"{m.total_vertices:,} vertices, {m.total_triangles:,} triangles, "
                              f"{len(m.objects)} objects")
        if self.last_map is not None:
            s.set("loops", str(len(self.last_map.loop_lines)) if self.options.loop_closure else "off")
        s.set("ate", f"{100 * self.ate:.1f} cm over {len(self.est_t)} poses" if self.ate is not None
              else ("no ground truth" if not self.gt_t else "-"))

    # ------------------------------------------------------------------------------------------ finish
    def _on_capture_failed(self, message: str) -> None:
        self.fail(message + " (the map so far is kept)")

    def _on_source_finished(self, count: int) -> None:
        self.status(f"source finished after {count} frames", 5000)

    def is_idle(self) -> bool:
        """Every frame captured so far has been shown and mapped (or dropped)."""
        if self.capture is None or not self.capture.done:
            return False
        if not self.capture_slot.empty() or not self.display_slot.empty():
            return False
        if self.perception is not None and self.perception.isRunning() and self.perception.busy:
            return False
        if self.mapper is not None and self.mapper.alive():
            return self.mapping_idle and self.mapper.frames.empty()
        return True

    def _check_finished(self) -> None:
        """Once the source is done and every stage idle: final map snapshot, then --screenshot / --export,
        then ``run_finished`` (and quit with --quit-when-done)."""
        if self._finish_state is not None:
            return
        if not self.is_idle():
            return
        if self.mapper is not None and self.mapper.alive():
            self._finish_state = "snapshot"  # _on_final_snapshot continues when it (or an error) arrives
            self.mapper.command("snapshot")
        else:
            self._after_final_snapshot()

    def _on_final_snapshot(self) -> None:
        if self._finish_state == "snapshot":
            self._finish_state = "drawing"
            QtCore.QTimer.singleShot(200, self._after_final_snapshot)  # let the map be drawn first

    def _after_final_snapshot(self) -> None:
        opts = self.options
        self._update_stats()
        self.repaint()
        if opts.screenshot:
            self.save_screenshots(opts.screenshot)
        if opts.export:
            self._finish_state = "export"
            self.export_map(opts.export)
        else:
            self._finish_state = "done"
            self._finished()

    def _finished(self) -> None:
        self.run_finished.emit()
        if self.options.quit_when_done:
            QtCore.QTimer.singleShot(0, self.close)

    def shutdown(self) -> None:
        """Stop threads and the mapping process (idempotent)."""
        self.timer.stop()
        for thread in (self.capture, self.perception):
            if thread is not None:
                thread.stop()
        for thread in (self.capture, self.perception, self.loader):
            if thread is not None:
                thread.wait(5000)
        if self.mapper is not None:
            self.mapper.stop()
        for mapper in self._old_mappers:  # marked stopped only to keep the perception thread off them
            mapper.stopped = False
            mapper.stop()
        self._old_mappers = []
        if self.rerun is not None:
            try:
                self.rerun.close()
            except Exception:
                pass
        if self.source is not None:
            try:
                self.source.close()
            except Exception:
                pass

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        self.shutdown()
        super().closeEvent(event)

