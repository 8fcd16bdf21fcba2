"""The mapping process: a ``MappingBridge`` in its own process (no Qt, no torch).

Open3D's TSDF, odometry and ray-casting calls hold the GIL for 20-150 ms each, so in a thread of the GUI
process they would freeze the window; in a process started with the "spawn" context they cannot.

Queues: ``frames`` has room for one ``PerceptionFrame`` (for live sources the sender replaces a stale
one and counts it as dropped); ``commands`` carries ("reset" | "snapshot" | "export" | "stop", arg)
and is never dropped; ``results`` carries ("ready" | "step" | "snapshot" | "error" | "exported" |
"export_failed" | "idle" | "stopped", (generation, payload)) back. Every ``snapshot_every_s`` seconds of mapping (longer
when extraction is slow), on request, and when it catches up, the process sends a ``MapUpdate``: the
mesh when it is small, else a decimated point sample, plus trajectory and objects, so the GUI never
extracts or receives the whole map per frame. Each update also carries what an export needs (the whole mesh when
the GUI's copy is a point sample, and the scene graph with places and rooms), so the map the GUI holds when this
process dies exports whole (``mapping.export.export_map_update``). A frame that fails (a bad frame, an Open3D error) is
reported and skipped: the map built so far stays, exportable.
"""
from __future__ import annotations

import os
import queue
import time
from dataclasses import dataclass, field

import numpy as np

from app.messages import one_line

# What the GUI draws is bounded: with software OpenGL (Mesa llvmpipe, e.g. under Xvfb) a 100k-triangle mesh
# takes ~70 ms to draw and 50k points ~40 ms, 20k points ~15 ms (measured), and drawing blocks the GUI thread.
MAX_MESH_TRIANGLES = 40_000  # more than this: send a point sample of the mesh's vertices instead
MAX_POINTS = 30_000
NICE = 5  # lower CPU priority than the GUI process (2 cores: the GUI must not wait behind Open3D)
# Wait at least 6x the last snapshot's cost before the next (<= 14 % of the time). With 3x, snapshots took 30-45 %
# of the mapping process, the viewer's slowest stage, and 18 % more of its CPU a frame (benchmarks/RESULTS.md,
# "Viewer: where the time goes").
SNAPSHOT_COST_FACTOR = 6.0
# Idle this long (nothing to map: the source paused, ended or is slower than mapping) before a snapshot out of
# turn. The gaps between a file source's frames are shorter (one perception step, 50-200 ms): a snapshot in each
# of them would stall the next frame's hand-off for the whole extraction.
IDLE_SNAPSHOT_S = 0.4


@dataclass
class MapUpdate:
    vertices: np.ndarray  # (V,3) float32 world
    triangles: np.ndarray | None  # (T,3) int32, None = points only
    class_colors: np.ndarray  # (V,3) uint8
    rgb_colors: np.ndarray  # (V,3) uint8
    timestamps: np.ndarray  # (N,)
    poses: np.ndarray  # (N,4,4) camera-to-world
    tracking_ok: np.ndarray  # (N,) bool
    objects: list = field(default_factory=list)  # (label, aabb_min, aabb_max)
    total_vertices: int = 0
    total_triangles: int = 0
    extract_ms: float = 0.0
    frames: int = 0
    loop_lines: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, 3), np.float32))  # accepted loops
    # For an export after this process dies: the whole mesh (vertices, triangles, class colours, RGB colours) when
    # the fields above hold a point sample of it, and the scene graph (objects, places, rooms) as exported.
    whole_mesh: tuple | None = None
    graph: object = None  # mapping.scene_graph.SceneGraph

    @property
    def positions(self) -> np.ndarray:
        return self.poses[:, :3, 3]


def object_boxes(objects) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Scene-graph ObjectNodes -> (label, aabb_min, aabb_max)."""
    boxes = []
    for obj in objects:
        boxes.append((str(obj.name), np.asarray(obj.bbox_min, np.float64), np.asarray(obj.bbox_max, np.float64)))
    return boxes


def step_payload(step, bridge, total_ms: float) -> dict:
    """The "step" message for one mapped frame (``MappingBridge.process``'s ``StepResult``)."""
    return {"index": step.index, "timestamp": step.timestamp, "pose": step.pose, "ok": step.tracking_ok,
            "message": step.message, "timings_ms": step.timings_ms, "odometry": bridge.odometry_summary(),
            "total_ms": total_ms}


def make_update(snap, frames: int, extract_ms: float, graph=None) -> MapUpdate:
    """A bounded-size view of a ``MapSnapshot`` for the GUI (drawn), plus the whole mesh and ``graph`` (kept for
    an export; a pickled 360k-triangle mesh is 10 MB, loaded in 12-40 ms)."""
    v, t = snap.vertices, snap.triangles
    whole = None
    if len(t) <= MAX_MESH_TRIANGLES:
        keep, tris = slice(None), t.astype(np.int32)
    else:
        keep = np.linspace(0, len(v) - 1, MAX_POINTS).astype(np.int64)
        tris = None
        whole = (v, np.asarray(t, np.int32), snap.class_colors, snap.rgb_colors)
    return MapUpdate(
        vertices=np.asarray(v[keep], np.float32), triangles=tris, class_colors=snap.class_colors[keep],
        rgb_colors=snap.rgb_colors[keep], timestamps=np.asarray(snap.timestamps),
        poses=np.asarray(snap.trajectory).reshape(-1, 4, 4), tracking_ok=np.asarray(snap.tracking_ok),
        objects=object_boxes(snap.objects), total_vertices=len(v), total_triangles=len(t),
        extract_ms=extract_ms, frames=frames, loop_lines=np.asarray(snap.loop_lines, np.float32),
        whole_mesh=whole, graph=graph)


def mapping_main(label_space, config, frames, commands, results, snapshot_every_s: float = 1.0) -> None:
    """Process entry point (spawn context): runs until a "stop" command.

    Frames arrive as (map generation, starts-the-map flag, PerceptionFrame); "reset" carries
    (generation, config or None).
    A frame of an older generation (sent before a reset) is skipped; one of a newer generation waits
    for its reset (the two queues do not keep each other's order). Every message back carries the
    generation so the GUI can ignore results of a map it has reset."""
    try:
        os.nice(NICE)  # the window and perception are interactive; mapping catches up
    except OSError:
        pass
    _MappingLoop(label_space, config, results, snapshot_every_s).run(frames, commands)


class _MappingLoop:
    """``mapping_main``'s state: the bridge of the current map, its generation, and when to send snapshots."""

    def __init__(self, label_space, config, results, snapshot_every_s: float):
        from mapping.bridge import MappingBridge

        self.label_space, self.config, self.results = label_space, config, results
        self.bridge = MappingBridge(label_space, config)
        self.generation = 0
        self.snapshot_every_s = self.interval = snapshot_every_s
        self.last_snapshot = time.monotonic()
        self.dirty = False  # frames processed since the last snapshot
        self.idle_sent = True
        self.idle_since: float | None = None  # when the frame queue was last found empty after a frame

    def send(self, kind: str, payload) -> None:
        self.results.put((kind, (self.generation, payload)))

    def send_snapshot(self) -> None:
        t0 = time.perf_counter()
        snap = self.bridge.snapshot()
        graph = self.bridge.scene_graph(snap)  # 0.7 s beside the snapshot's 6 s for a 360k-triangle room (load 14)
        cost = time.perf_counter() - t0
        self.send("snapshot", make_update(snap, self.bridge.frames, 1000 * cost, graph))
        self.last_snapshot, self.dirty = time.monotonic(), False
        # extraction is whole-map (0.3-2 s for a room): keep it to a small share of the mapping time
        self.interval = max(self.snapshot_every_s, SNAPSHOT_COST_FACTOR * cost)

    def run_command(self, cmd, arg) -> bool:
        """False on "stop"."""
        from mapping.bridge import MappingBridge

        if cmd == "stop":
            return False
        try:
            if cmd == "reset":
                self.generation, new_config = arg
                self.config = new_config or self.config  # a new config, e.g. another depth source
                self.bridge = MappingBridge(self.label_space, self.config)
                self.dirty = False
                self.send_snapshot()
            elif cmd == "snapshot":
                self.send_snapshot()
            elif cmd == "export":
                try:
                    self.send("exported", [str(p) for p in self.bridge.export(arg)])
                except Exception as exc:  # a full disk, a read-only folder: the window must hear of it
                    self.send("export_failed", f"export to {arg} failed: {one_line(exc)}")
        except Exception as exc:  # report, keep the map
            self.send("error", f"mapping: {cmd} failed: {one_line(exc)}")
        return True

    def on_idle(self) -> None:
        now = time.monotonic()
        if self.idle_since is None:
            self.idle_since = now
        if self.dirty and (now - self.last_snapshot >= self.interval or now - self.idle_since >= IDLE_SNAPSHOT_S):
            try:
                self.send_snapshot()  # caught up: show the latest map now
            except Exception as exc:
                self.dirty = False
                self.send("error", f"mapping: snapshot failed: {one_line(exc)}")
        if not self.idle_sent:
            self.send("idle", self.bridge.frames)
            self.idle_sent = True

    def process(self, frame) -> None:
        self.idle_sent, self.idle_since = False, None
        try:
            t0 = time.perf_counter()
            step = self.bridge.process(frame)
            self.send("step", step_payload(step, self.bridge, 1000 * (time.perf_counter() - t0)))
            self.dirty = True
            if time.monotonic() - self.last_snapshot >= self.interval:
                self.send_snapshot()
        except Exception as exc:  # a bad frame: report it, keep the map and go on
            self.send("error", f"mapping: frame at t={frame.timestamp:.3f} s failed: {one_line(exc)}")

    def run(self, frames, commands) -> None:
        self.send("ready", None)
        while True:
            try:
                cmd, arg = commands.get_nowait()
            except queue.Empty:
                cmd = None
            if cmd is not None:
                if not self.run_command(cmd, arg):
                    break
                continue
            try:
                frame_generation, _, frame = frames.get(timeout=0.05)
            except queue.Empty:
                self.on_idle()
                continue
            stop = False
            while frame_generation > self.generation and not stop:  # its reset is still on the way
                cmd, arg = commands.get()
                stop = not self.run_command(cmd, arg)
            if stop:
                break
            if frame_generation >= self.generation:  # else sent before a reset
                self.process(frame)
        self.send("stopped", self.bridge.frames)
