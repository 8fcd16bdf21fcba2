"""The viewer's model, without Qt: what a run is (options, loading), what it knows (statistics, trajectories,
live ATE, the last map, errors), its run state, its label space and its depth-mode policy. ``app.window``
draws it and routes input to it (a model/view split, as napari's ``ViewerModel`` and ``QtViewer``)."""
from __future__ import annotations

import sys
from collections import deque
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from app.sources import SourceSpec, open_viewer_source
from app.messages import one_line, plain
from mapping.interface import VIEWER_DEPTH_MODES


@dataclass
class ViewerOptions:
    source: SourceSpec
    checkpoint: str | None = None  # None: no network (sensor depth, ground-truth labels)
    checkpoint_note: str = ""  # why there is no network, for the status bar
    device: str = "cpu"
    labelspace: str | None = None
    depth: str = "pred"  # VIEWER_DEPTH_MODES: the depth into the map while there is a network
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
    odometry: str | None = None  # MappingConfig.odometry: None = by depth mode
    rerun: tuple[str, str | None] | None = None  # ("spawn" | "connect" | "save", address or .rrd path)
    tasks: tuple[str, ...] | None = None  # network outputs (--tasks); None: all of the model's
    loop_closure: bool = False  # MappingConfig.loop_closure


class RunState(Enum):
    """Where a run is on its way to ``run_finished`` (--screenshot, --export, --quit-when-done)."""

    RUNNING = "running"  # the source plays, is paused or has not ended yet
    SNAPSHOT = "snapshot"  # every stage is idle: waiting for the mapping process's final map
    DRAWING = "drawing"  # the final map arrived: the window draws it before the screenshot
    EXPORT = "export"  # --export asked of the mapping process: waiting for its answer
    DONE = "done"  # run_finished was emitted


def load(options: ViewerOptions):
    """(source, predictor, source error, model error): the source opened and the network loaded, each failure
    as one line (a missing source ends the run; a missing network leaves the sensor depth)."""
    source = predictor = None
    source_error = model_error = ""
    try:
        source = open_viewer_source(options.source, options.size)
        if options.loop_frames:
            from app.sources import BackAndForth

            source = BackAndForth(source, options.loop_frames)
    except Exception as exc:
        source_error = one_line(exc)  # names the source (camera index, file) already
    if options.checkpoint:
        try:
            import torch

            from m2hmx.predictor import Predictor, ScaledPredictor

            torch.set_num_threads(options.torch_threads)
            predictor = Predictor.from_checkpoint(options.checkpoint, options.device, tasks=options.tasks)
            if options.depth_scale != 1.0:
                predictor = ScaledPredictor(predictor, options.depth_scale)
        except Exception as exc:
            model_error = f"cannot load the model {options.checkpoint}: {one_line(exc)}"
    return source, predictor, source_error, model_error


def frame_depth_mode(chosen: str, has_prediction: bool, has_sensor_depth: bool) -> str:
    """The depth mode of one frame sent to mapping: without a network the source's own depth as ground truth
    ("gt"); the prediction when the sensor depth was chosen but this frame has none."""
    if not has_prediction:
        return "gt"
    if chosen == "sensor" and not has_sensor_depth:
        return "pred"
    return chosen


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


def rate(times) -> float:
    """Events per second over the timestamps ``times`` (0 with fewer than 3)."""
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 2 and times[-1] > times[0] else 0.0


class ViewerSession:
    """One viewer run's state. The window calls ``on_result`` / ``on_step`` / ``on_map`` as perception results
    and mapping messages arrive, and reads ``stats()``, ``ate``, ``last_map`` and ``state``."""

    def __init__(self, options: ViewerOptions):
        self.options = options
        self.depth_mode = options.depth
        self.label_space = None
        self.predictor = None  # the loaded network (None: sensor depth and ground-truth labels)
        self.errors: deque[str] = deque(maxlen=100)
        self.run_failed = False  # a source, model, mapping-process, export or screenshot failure: exit code 1
        self.state = RunState.RUNNING
        self.last_map = None  # the newest MapUpdate: kept (and exportable) if the mapping process dies
        self.dead_maps: list = []  # the last MapUpdate of each mapping process that died (exportable)
        self.exported_paths: list[str] = []
        self.pending_export: str | None = None
        self.rerun = None  # app.rerun_log.RerunLogger with --rerun*
        self._rerun_index: dict[float, int] = {}  # timestamp -> source frame index, for mapping steps
        self.frames_shown = 0
        self.latencies: deque[float] = deque(maxlen=300)
        self.perception_times: deque[float] = deque(maxlen=60)
        self.mapping_times: deque[float] = deque(maxlen=60)
        self.tracking_text = self.odometry_text = "-"
        self.mapping_idle = True
        self.mapping_dead = False  # the mapping process died and that was reported (until a restart)
        self._told_nothing_to_map = False
        self.reset_map()

    # ------------------------------------------------------------------------------------------ messages
    def error(self, text: str, failure: bool = False) -> None:
        """Record ``text`` (and print it to stderr); a ``failure`` makes the viewer exit with code 1."""
        self.run_failed = self.run_failed or failure
        try:
            print(f"m2hmx-viewer: {text}", file=sys.stderr, flush=True)
        except (OSError, ValueError):  # stderr closed: the window still shows it
            pass
        self.errors.append(text)

    @staticmethod
    def say(text: str) -> None:
        """A result the user asked for (a file written), on stdout."""
        try:
            print(f"m2hmx-viewer: {text}", flush=True)
        except (OSError, ValueError):  # stdout closed (a pipe whose reader went away): the window still says it
            pass

    # ------------------------------------------------------------------------------------------ start
    def start(self, predictor, source_label_space) -> list[str]:
        """Take the loaded network; choose the label space (``m2hmx.labels.choose_label_space``); start Rerun
        logging when asked. Returns the warnings to show. Without a network the map gets the sensor depth."""
        from m2hmx.labels import choose_label_space

        self.predictor = predictor
        self.label_space, warning = choose_label_space(self.options.labelspace,
                                                       getattr(predictor, "label_space", None), source_label_space)
        if predictor is None:
            self.depth_mode = "sensor"
        warnings = [warning] if warning else []
        if self.options.rerun is not None:
            from app.rerun_log import RerunLogger

            how, where = self.options.rerun
            try:
                self.rerun = RerunLogger(self.label_space, save=where if how == "save" else None,
                                         connect=where if how == "connect" else None)
            except Exception as exc:
                warnings.append(f"Rerun logging is off: {one_line(exc)}")
        return warnings

    def describe_run(self, source) -> tuple[str, str]:
        """Once started: the status line (source, network, label space) and the source's note on its intrinsics
        ("" if none; the window says it on stdout too)."""
        what = "network " + Path(self.options.checkpoint).name if self.predictor is not None else "no network"
        return f"{source.name}: {what}, label space {self.label_space.name}", getattr(source, "intrinsics_note", "")

    def mode_text(self, paused: bool | None, color_mode: str, have_source: bool) -> str:
        """The mode line: playing / PAUSED (``paused`` None: no capture; NO SOURCE after a failure), the map's colours
        and the depth into the map."""
        state = "NO SOURCE" if paused is None and self.run_failed else ("PAUSED" if paused else "playing")
        return f"  {state}  |  map colours: {color_mode}  |  depth into map: {self.depth_text(have_source)}  "

    # ------------------------------------------------------------------------------------------ depth
    def mapping_config(self):
        """The mapping process's ``MappingConfig`` for the current depth mode ("gt" without a network)."""
        from mapping.bridge import MappingConfig

        mode = self.depth_mode if self.predictor is not None else "gt"
        return MappingConfig(depth_mode=mode, odometry=self.options.odometry, loop_closure=self.options.loop_closure)

    def toggle_depth(self, source_has_depth: bool) -> str:
        """Switch the depth into the map between ``VIEWER_DEPTH_MODES``; returns why it cannot ("" when it
        switched: the map must then be reset with ``mapping_config()``)."""
        if self.predictor is None:
            return "no network loaded: the map uses the sensor depth"
        if not source_has_depth:
            return "this source has no sensor depth"
        self.depth_mode = VIEWER_DEPTH_MODES[1 - VIEWER_DEPTH_MODES.index(self.depth_mode)]
        return ""

    def depth_text(self, have_source: bool) -> str:
        if self.predictor is None and have_source:
            return "sensor (no model)"
        return "predicted" if self.depth_mode == "pred" else "sensor"

    def missing_panel_reason(self, name: str) -> str:
        """Why the normals or edges panel has no image."""
        if self.predictor is None:
            return f"no {name}"
        task = "edge" if name == "edges" else name
        if task in self.predictor.model_tasks and task not in self.predictor.tasks:
            return f"{name}: off (--tasks)"
        return f"the model has no {name} head"

    # ------------------------------------------------------------------------------------------ events
    def on_result(self, r, now: float) -> None:
        """A perception result is shown: counts, latency, the ground-truth pose, Rerun."""
        self.frames_shown += 1
        self.latencies.append(1000 * (now - r.captured_at))
        self.perception_times.append(now)
        if r.gt_pose is not None and r.sent_to_mapping:
            self.gt_t.append(r.timestamp)
            self.gt_poses.append(r.gt_pose)
        if self.rerun is not None:
            self.rerun.log_images(r.index, r.timestamp, r.rgb, r.K, depth=r.depth_pred, sensor_depth=r.depth_sensor,
                                  labels=r.labels, normals=r.normals_rgb, edges=r.edges)
            self.rerun.log_scalars(r.index, r.timestamp, latency_ms=self.latencies[-1],
                                   fps=rate(self.perception_times) or None)
            self._rerun_index[r.timestamp] = r.index
            if len(self._rerun_index) > 1000:
                self._rerun_index.pop(next(iter(self._rerun_index)))

    def nothing_to_map(self, r, mapping_on: bool) -> str:
        """Once per run, the warning for a shown frame that went to no map (no depth and no network); else ""."""
        if not mapping_on or r.sent_to_mapping or self._told_nothing_to_map:
            return ""
        self._told_nothing_to_map = True
        return "nothing to map: this source has no depth and there is no network"

    def on_step(self, step: dict, now: float) -> bool:
        """A mapped frame (the mapping process's "step"); True for the first of a map (the view's up is set)."""
        self.mapping_idle = False
        self.mapping_times.append(now)
        self.est_t.append(step["timestamp"])
        self.est_poses.append(step["pose"])
        self.tracking_text = "ok" if step["ok"] else "LOST: " + plain(step["message"])
        self.odometry_text = step.get("odometry", "-")
        if self.rerun is not None:
            i = self._rerun_index.get(step["timestamp"], step["index"])
            self.rerun.log_pose(i, step["timestamp"], step["pose"], step["ok"])
        first, self._world_set = not self._world_set, True
        return first

    def on_map(self, update) -> np.ndarray | None:
        """A map snapshot arrived: keep it, update the live ATE; the ground-truth camera centres in the map's
        frame (or None)."""
        from mapping.metrics import align_ground_truth

        self.last_map = update
        aligned = align_ground_truth(self.gt_t, self.gt_poses, self.est_t, self.est_poses)
        gt_positions = None
        if aligned is not None:
            gt_positions, self.ate = aligned
        if self.rerun is not None and len(update.timestamps):
            t = float(update.timestamps[-1])
            i = self._rerun_index.get(t, update.frames - 1)
            self.rerun.log_map(i, t, update.vertices, update.triangles, update.class_colors, update.objects,
                               trajectory=update.positions, ground_truth=gt_positions)
            self.rerun.log_scalars(i, t, ate_m=self.ate)
        return gt_positions

    def reset_map(self) -> None:
        """Forget the map and both trajectories (a new map starts)."""
        self.last_map = None
        self._world_set = False
        self.est_t, self.est_poses, self.gt_t, self.gt_poses = [], [], [], []
        self.ate = None

    def mapping_died(self) -> str:
        """The mapping process died: the size of its last map, for the message (that map stays exportable)."""
        self.mapping_idle = self.mapping_dead = True
        self.tracking_text = "stopped: the mapping process died"
        return f"{0 if self.last_map is None else self.last_map.total_vertices} vertices"

    def mapping_restarted(self) -> None:
        self.mapping_dead = False
        if self.last_map is not None:
            self.dead_maps.append(self.last_map)
        self.reset_map()
        self.tracking_text = "-"

    def map_to_export(self):
        """The newest map the window holds: the current one, else the last of a dead process (None: none)."""
        return self.last_map if self.last_map is not None or not self.dead_maps else self.dead_maps[-1]

    def export_last_map(self, out_dir: str) -> tuple[list, str]:
        """Write the newest map the window holds (``map_to_export``; the mapping process is gone) with
        ``mapping.export.export_map_update``: (paths written, what to say), no paths on failure."""
        from mapping.export import export_map_update

        last = self.map_to_export()
        if last is None:
            return [], f"export to {out_dir} failed: there is no map to export"
        try:
            paths = export_map_update(last, out_dir, self.label_space)
        except Exception as exc:
            return [], f"export to {out_dir} failed: {one_line(exc)}"
        return paths, f"mapping process gone: exported the last map it sent ({len(paths)} files) to {out_dir}"

    # ------------------------------------------------------------------------------------------ finishing
    def snapshot_arrived(self) -> bool:
        """The final map arrived (or will not): True when the window should draw it and then finish."""
        if self.state is RunState.SNAPSHOT:
            self.state = RunState.DRAWING
            return True
        return False

    def export_done(self, paths) -> bool:
        """An export ended (``paths`` written, none on failure); True when that finishes the run."""
        self.exported_paths = [str(p) for p in paths]
        self.pending_export = None
        if self.state is RunState.EXPORT:
            self.state = RunState.DONE
            return True
        return False

    # ------------------------------------------------------------------------------------------ stats
    def stats(self, source_name: str, drops: int, map_drops: int | None) -> dict[str, str]:
        """The statistics panel's rows (``app.widgets.stats.ROWS`` keys); ``map_drops`` None: mapping is off."""
        rows = {"source": source_name, "frames": str(self.frames_shown),
                "perception_fps": f"{rate(self.perception_times):.1f}",
                "mapping_fps": f"{rate(self.mapping_times):.1f}" if map_drops is not None else "off",
                "dropped": f"{drops} / {map_drops or 0}", "tracking": self.tracking_text,
                "odometry": self.odometry_text}
        if self.latencies:
            p50, p95 = np.percentile(np.array(self.latencies), [50, 95])
            rows["latency"] = f"{p50:.0f} / {p95:.0f}"
        if self.last_map is not None:
            m = self.last_map
            rows["map_size"] = (f"{m.total_vertices:,} vertices, {m.total_triangles:,} triangles, "
                                f"{len(m.objects)} objects")
            rows["loops"] = str(len(m.loop_lines)) if self.options.loop_closure else "off"
        rows["ate"] = (f"{100 * self.ate:.1f} cm over {len(self.est_t)} poses" if self.ate is not None
                       else ("no ground truth" if not self.gt_t else "-"))
        return rows

    def close(self) -> None:
        if self.rerun is not None:
            try:
                self.rerun.close()
            except Exception:
                pass
