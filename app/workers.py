"""The viewer's workers: capture and perception threads (QThread; torch releases the GIL while it computes)
and the client side of the mapping process (``app.mapping_process``, spawn context).

Hand-offs hold one item, so latency stays bounded whatever stage is slowest. Live cameras: a stale frame
is replaced by the newest and counted as dropped (capture -> perception -> mapping). File sources
(datasets, videos, the generated scene) have no clock to keep up with: each stage waits for the next
to take its frame, so every frame is shown and mapped. The GUI always shows the newest result.
"""
from __future__ import annotations

import multiprocessing as mp
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np
from PyQt6 import QtCore

from app.messages import one_line
from app.sources import resize_frame
from app.widgets.image_panel import colorize_depth
from m2hmx.data import Frame
from m2hmx.data.transforms import normals_to_rgb

STEP_FAILURES_BEFORE_STOP = 3  # consecutive perception failures that stop the perception thread
READ_WAIT_S = 5.0  # the longest a file source's capture waits for the mapper before reading the next frame


class LatestSlot:
    """A one-item hand-off between threads: ``put`` replaces an unconsumed item (counted in ``dropped``; a new
    item with an ``absorb`` method takes over what the dropped one must not lose) or, with ``block=True``, waits
    until the consumer took it."""

    def __init__(self):
        self._item = None
        self._cond = threading.Condition()
        self.dropped = 0

    def put(self, item, block: bool = False, stop: threading.Event | None = None) -> bool:
        with self._cond:
            if block:
                while self._item is not None:
                    if stop is not None and stop.is_set():
                        return False
                    self._cond.wait(0.05)
            elif self._item is not None:
                self.dropped += 1
                if hasattr(item, "absorb"):
                    item.absorb(self._item)
            self._item = item
            self._cond.notify_all()
        return True

    def wait_empty(self, stop: threading.Event | None = None) -> None:
        """Block until the slot is empty (or ``stop`` is set)."""
        with self._cond:
            while self._item is not None and not (stop is not None and stop.is_set()):
                self._cond.wait(0.05)

    def get(self, timeout: float = 0.0):
        """The newest item (None if there is none within ``timeout`` seconds)."""
        with self._cond:
            if self._item is None and timeout > 0:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            self._cond.notify_all()
            return item

    def clear(self) -> None:
        with self._cond:
            self._item = None
            self._cond.notify_all()

    def empty(self) -> bool:
        with self._cond:
            return self._item is None


@dataclass
class Captured:
    frame: Frame
    captured_at: float  # time.monotonic() when the frame became available
    generation: int  # bumped by restart: results of an older run are ignored

    def absorb(self, dropped: "Captured") -> None:
        """Take over the IMU samples of a frame dropped before perception saw it."""
        from mapping.imu import carry_over

        if dropped.generation == self.generation:
            self.frame.imu = carry_over(dropped.frame.imu, self.frame.imu)


# --------------------------------------------------------------------------------------------- capture

class CaptureThread(QtCore.QThread):
    """Reads the source into ``out_slot``; play/pause/step/restart; stops after ``max_frames``."""

    failed = QtCore.pyqtSignal(str)
    finished_source = QtCore.pyqtSignal(int)  # frames delivered in this run

    def __init__(self, source, out_slot: LatestSlot, size: tuple[int, int] | None, max_frames: int | None = None,
                 parent=None, downstream_ready=None):
        super().__init__(parent)
        self.source, self.out_slot, self.size, self.max_frames = source, out_slot, size, max_frames
        # file sources: read the next frame only when this says the stages after perception can take one
        self.downstream_ready = downstream_ready
        self.live = bool(getattr(source, "live", False))
        self._stop = threading.Event()
        self._lock = threading.Condition()
        self._paused = False
        self._steps = 0
        self._restart = False
        self.generation = 0
        self.delivered = 0
        self.done = False  # the source ended, failed or max_frames was reached
        self.cpu_s = 0.0  # this thread's CPU time reading and resizing frames (benchmarks/bench_app.py)

    # --- controls (GUI thread)
    def set_paused(self, paused: bool) -> None:
        with self._lock:
            self._paused = paused
            self._lock.notify_all()

    @property
    def paused(self) -> bool:
        return self._paused

    def step(self) -> None:
        """Deliver one more frame while paused."""
        with self._lock:
            self._paused = True
            self._steps += 1
            self._lock.notify_all()

    def restart(self) -> None:
        with self._lock:
            self._restart = True
            self.done = False
            self._lock.notify_all()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()

    # --- thread
    def _wait_for_work(self) -> bool:
        """Block while paused (without steps) or done; True when a frame should be read."""
        with self._lock:
            while not self._stop.is_set() and not self._restart and (self.done or (self._paused and not self._steps)):
                self._lock.wait(0.1)
            return not self._stop.is_set()

    def run(self) -> None:
        iterator = iter(self.source)
        while True:
            if not self.live:  # before the pause check: a frame read after a pause is not wanted
                self._wait_until_wanted()
            if not self._wait_for_work():
                break
            with self._lock:
                if self._restart:
                    self._restart, self.done = False, False
                    self.generation += 1
                    self.delivered = 0
                    if not self.live or getattr(self.source, "num_frames", None) is not None:  # --realtime
                        iterator = iter(self.source)
                    self.out_slot.clear()
                    continue
                if self._steps:
                    self._steps -= 1
            if self.max_frames is not None and self.delivered >= self.max_frames:
                self._finish()
                continue
            started = time.thread_time()
            try:
                frame = next(iterator)
            except StopIteration:
                self._finish()
                continue
            except Exception as exc:  # unplugged camera, corrupt file: report, keep the app and the map
                self.done = True
                self.failed.emit(f"{getattr(self.source, 'name', 'source')} stopped: {one_line(exc)}")
                continue
            if self.size is not None:
                frame = resize_frame(frame, self.size)
            self.cpu_s += time.thread_time() - started
            item = Captured(frame, time.monotonic(), self.generation)
            if self.out_slot.put(item, block=not self.live, stop=self._stop):
                self.delivered += 1

    def _wait_until_wanted(self) -> None:
        """A file source's frame is read when perception has taken the last one and the mapper has taken every
        frame handed to it: read earlier, it would wait (its latency counting) behind a busy mapper, up to a
        whole map snapshot, while nothing is gained (the slowest stage sets the rate either way). At most
        ``READ_WAIT_S`` for the mapper."""
        self.out_slot.wait_empty(self._stop)
        deadline = time.monotonic() + READ_WAIT_S
        while (self.downstream_ready is not None and not self.downstream_ready() and not self._stop.is_set()
               and time.monotonic() < deadline):
            time.sleep(0.005)

    def _finish(self) -> None:
        self.done = True
        self.finished_source.emit(self.delivered)


# --------------------------------------------------------------------------------------------- perception

@dataclass
class PerceptionResult:
    """Everything the panels show for one frame (composed off the GUI thread)."""

    index: int
    timestamp: float
    captured_at: float
    generation: int
    rgb: np.ndarray
    K: np.ndarray
    depth_pred: np.ndarray | None = None  # metres
    depth_sensor: np.ndarray | None = None
    depth_pred_rgb: np.ndarray | None = None  # coloured on the fixed range, for the panels
    depth_sensor_rgb: np.ndarray | None = None
    seg_overlay: np.ndarray | None = None
    labels: np.ndarray | None = None  # class ids behind seg_overlay
    seg_source: str = ""  # "prediction" | "ground truth" | ""
    present: tuple = ()
    normals_rgb: np.ndarray | None = None
    normals_source: str = ""
    edges: np.ndarray | None = None  # uint8 0..255 (probability or {0,1} ground truth)
    edges_source: str = ""
    gt_pose: np.ndarray | None = None
    predict_ms: float = 0.0
    sent_to_mapping: bool = False


def overlay_labels(rgb: np.ndarray, labels: np.ndarray, label_space, alpha: float = 0.55) -> np.ndarray:
    """Class colours blended over the image; unlabelled pixels keep the image. Fixed point (alpha in 256ths,
    at most 1 level from the float blend) through per-id tables: 5x faster than the float blend with masks."""
    k, n = int(round(alpha * 256)), label_space.num_classes
    colour = np.zeros((256, 3), np.uint16)
    colour[:n] = np.asarray(label_space.colors, np.uint16) * k
    keep = np.full(256, 256, np.uint16)  # weight of the image: all of it where the id is not a class
    keep[:n] = 256 - k
    return ((rgb * keep[labels][..., None] + colour[labels]) >> 8).astype(np.uint8)


class PerceptionThread(QtCore.QThread):
    """Predicts on the newest captured frame, composes the panels' images into ``out_slot`` and sends the
    frame to the mapping process. Without a predictor it shows (and maps) the source's own ground truth."""

    failed = QtCore.pyqtSignal(str)

    def __init__(self, in_slot: LatestSlot, out_slot: LatestSlot, predictor, label_space, mapper=None,
                 depth_mode: str = "pred", live: bool = True, depth_lut=None, parent=None):
        super().__init__(parent)
        self.depth_lut = depth_lut  # (lut (256,3) uint8, max depth m) for the depth panels, or None
        self.live = live  # live sources: a frame the mapper has not taken yet is replaced (dropped)
        self.in_slot, self.out_slot, self.predictor = in_slot, out_slot, predictor
        self.label_space, self.mapper = label_space, mapper
        self.depth_mode = depth_mode  # VIEWER_DEPTH_MODES: the depth that goes into the map (frame_depth_mode)
        self._stop = threading.Event()
        self.busy = False
        self.processed = 0
        self.cpu_s = 0.0  # this thread's CPU time composing results (benchmarks/bench_app.py)

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            item = self.in_slot.get(timeout=0.05)
            if item is None:
                continue
            self.busy = True
            try:
                started = time.thread_time()
                result, pred = self.compose(item)
                self.cpu_s += time.thread_time() - started
                self.out_slot.put(result)  # on screen before the hand-off to mapping, where file sources wait
                if result.sent_to_mapping:
                    self._send_to_mapping(item.frame, pred)
                self.processed += 1
                failures = 0
            except Exception as exc:
                failures += 1
                message = f"perception failed on frame {item.frame.index}: {one_line(exc)}"
                if failures >= STEP_FAILURES_BEFORE_STOP:
                    self.failed.emit(message + " (perception stopped; the map is kept)")
                    self.busy = False
                    return
                self.failed.emit(message)
            finally:
                self.busy = False

    def compose(self, item: Captured) -> tuple[PerceptionResult, object]:
        """(the panels' images for ``item``, the network's prediction or None)."""
        frame = item.frame
        t0 = time.perf_counter()
        pred = self.predictor.predict(frame.rgb) if self.predictor is not None else None
        predict_ms = 1000 * (time.perf_counter() - t0)
        ls = self.label_space
        res = PerceptionResult(index=frame.index, timestamp=frame.timestamp, captured_at=item.captured_at,
                               generation=item.generation, rgb=frame.rgb, K=frame.K, depth_sensor=frame.depth,
                               gt_pose=frame.pose, predict_ms=predict_ms)
        if pred is not None:
            res.depth_pred = pred.depth
            labels, res.seg_source = pred.labels, "prediction"
            if pred.normals is not None:
                res.normals_rgb, res.normals_source = normals_to_rgb(pred.normals), "prediction"
            if pred.edges is not None:
                res.edges, res.edges_source = (pred.edges * 255).astype(np.uint8), "prediction"
        else:
            labels = frame.labels
            res.seg_source = "ground truth" if labels is not None else ""
            if frame.normals is not None:
                res.normals_rgb, res.normals_source = normals_to_rgb(frame.normals), "ground truth"
            if frame.edges is not None:
                res.edges, res.edges_source = frame.edges * np.uint8(255), "ground truth"
        if self.depth_lut is not None:  # colouring here keeps the GUI thread free
            lut, top = self.depth_lut
            if res.depth_pred is not None:
                res.depth_pred_rgb = colorize_depth(res.depth_pred, lut, top)
            if res.depth_sensor is not None:
                res.depth_sensor_rgb = colorize_depth(res.depth_sensor, lut, top)
        if labels is not None:
            res.labels = labels
            res.seg_overlay = overlay_labels(frame.rgb, labels, ls)
            counts = np.bincount(labels.ravel(), minlength=256)[: ls.num_classes]
            res.present = tuple(int(i) for i in np.flatnonzero(counts))
        res.sent_to_mapping = self.mapper is not None and (pred is not None or frame.depth is not None)
        return res, pred

    def _send_to_mapping(self, frame: Frame, pred) -> None:
        """Hand the frame (with a prediction or a depth) to the mapping process. The first frame of each map
        carries its ground-truth pose when the source has one (anchoring the map in the source's world frame, as
        ``m2hmx-map`` does)."""
        from app.pipeline import to_perception_frame
        from app.session import frame_depth_mode

        mode = frame_depth_mode(self.depth_mode, pred is not None, frame.depth is not None)
        num_classes = self.label_space.num_classes

        def make(anchor: bool):
            return to_perception_frame(frame, pred, mode, num_classes, pose_prior=anchor and frame.pose is not None)

        self.mapper.submit(make, wait=not self.live, stop=self._stop)


# --------------------------------------------------------------------------------------------- mapping

class FrameHandoff:
    """A one-frame hand-over to a consumer that may lag (the mapping process). ``submit`` may be called from any
    thread; a frame still waiting is replaced (counted in ``dropped``; its IMU samples go with the new one).
    ``generation`` numbers the map the frames belong to; the first frame of a map is its anchor."""

    def __init__(self, frames):
        self.frames = frames  # a queue of at most one (generation, anchor, PerceptionFrame)
        self._lock = threading.Lock()
        self.generation = 0
        self._anchor_pending = True  # the next frame starts a map
        self.submitted = 0
        self.dropped = 0
        self.waited_s = 0.0  # time ``submit`` waited for the consumer to take the previous frame
        self.stopped = False

    def alive(self) -> bool:
        """Whether the consumer is still there to take frames."""
        return True

    def submit(self, make_frame, wait: bool = False, stop: threading.Event | None = None) -> None:
        """Hand over ``make_frame(anchor)`` (a PerceptionFrame; ``anchor``: it starts the map). A frame still
        waiting is dropped and counted (if it was to start the map, the new one does instead); with
        ``wait`` (file sources: every frame should be mapped) wait for the mapper to take it instead."""
        if wait:
            started = time.perf_counter()
            while self.alive() and not (stop is not None and stop.is_set()):
                with self._lock:
                    if not self.frames.full():
                        break
                time.sleep(0.005)
            self.waited_s += time.perf_counter() - started
        if self.stopped or not self.alive():
            return
        with self._lock:
            anchor, stale = self._anchor_pending, None
            if self.frames.full():
                try:
                    generation, was_anchor, stale = self.frames.get_nowait()
                    anchor = anchor or was_anchor
                    stale = stale if generation == self.generation else None
                    self.dropped += 1
                except queue.Empty:
                    pass  # the mapper took it meanwhile
            try:
                frame = make_frame(anchor)
                if stale is not None:  # the dropped frame's IMU samples go with this one
                    from mapping.imu import carry_over

                    frame.imu = carry_over(stale.imu, frame.imu)
                self.frames.put_nowait((self.generation, anchor, frame))
            except queue.Full:  # the feeder has not flushed the old one yet: count it as this one dropped
                self.dropped += 1
                return
            self._anchor_pending = False
            self.submitted += 1

    def can_take(self) -> bool:
        """Nothing handed over is still waiting for the mapper (or it is gone)."""
        return self.stopped or not self.alive() or self.frames.empty()


class MappingClient(FrameHandoff):
    """Starts and talks to the mapping process, handing it frames (``FrameHandoff``).

    ``reset`` starts a new map; messages of older maps are dropped by ``poll``."""

    def __init__(self, label_space, config, snapshot_every_s: float = 1.0):
        from app.mapping_process import mapping_main

        ctx = mp.get_context("spawn")
        super().__init__(ctx.Queue(maxsize=1))
        self.commands = ctx.Queue()
        self.results = ctx.Queue()
        self.config = config
        self.process = ctx.Process(target=mapping_main, name="m2hmx-mapping", daemon=True,
                                   args=(label_space, config, self.frames, self.commands, self.results,
                                         snapshot_every_s))
        self.process.start()

    def reset(self, config=None) -> None:
        """Start a new map (with ``config`` when given, e.g. another depth source)."""
        with self._lock:
            self.generation += 1
            try:
                self.frames.get_nowait()
            except queue.Empty:
                pass
            self._anchor_pending = True
            self.command("reset", (self.generation, config))

    def command(self, name: str, arg=None) -> None:
        if self.process.is_alive():
            self.commands.put((name, arg))

    def poll(self) -> list[tuple[str, object]]:
        """(kind, payload) of the messages of the current map the process sent since the last call."""
        out = []
        while True:
            try:
                kind, (generation, payload) = self.results.get_nowait()
            except (queue.Empty, EOFError, OSError):
                return out
            if generation == self.generation or kind in ("stopped", "exported", "export_failed"):
                out.append((kind, payload))

    def alive(self) -> bool:
        return self.process.is_alive()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the process to stop; kill it if it does not within ``timeout`` seconds."""
        if self.stopped:
            return
        self.stopped = True
        if self.process.is_alive():
            self.commands.put(("stop", None))
            deadline = time.monotonic() + timeout
            while self.process.is_alive() and time.monotonic() < deadline:
                self.poll()  # keep the result pipe drained so the process can flush and exit
                self.process.join(0.05)
            if self.process.is_alive():
                self.process.terminate()
                self.process.join(2.0)
        for q in (self.frames, self.commands, self.results):
            q.cancel_join_thread()
            q.close()
