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
process dies exports whole (``export_update``). A frame that fails (a bad frame, an Open3D error) is
reported and skipped: the map built so far stays, exportable.
"""
from __future__ import annotations

import os
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# What the GUI draws is bounded: with software OpenGL (Mesa llvmpipe, e.g. under Xvfb) a 100k-triangle mesh
# takes ~70 ms to draw and 50k points ~40 ms, 20k points ~15 ms (measured), and drawing blocks the GUI thread.
MAX_MESH_TRIANGLES = 40_000  # more than this: send a point sample of the mesh's vertices instead
MAX_POINTS = 30_000
NICE = 5  # lower CPU priority than the GUI process (2 cores: the GUI must not wait behind Open3D)
SNAPSHOT_COST_FACTOR = 3.0  # wait at least 3x the last snapshot's cost before the next (<= 25% of the time)


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


def export_update(update: MapUpdate, out_dir: str | Path, label_space) -> list[Path]:
    """Write a ``MapUpdate`` (the GUI's copy of the map, when the mapping process is gone) as the process would
    have, all or none (``mapping.atomic``): the whole mesh as PLY (class and RGB colours) and GLB, the trajectory
    (TUM and Hydra CSV), the scene graph and the label space. Differences from ``MappingBridge.export``:
    ``points.ply`` holds the mesh's vertices, not the TSDF's surface points (the same surface: 182,753 against
    182,822 points for generated room 0 after 300 frames), there is no ``pose_graph.g2o``, and the map is the
    one of the last update (up to one snapshot interval old). An update without a scene graph (sent by an
    older process) gets one of its object boxes only."""
    from mapping.atomic import AtomicBatch
    from mapping.bridge import EXPORT_FILES, LOOP_EXPORT_FILES
    from mapping.export import write_label_space, write_mesh, write_point_cloud
    from mapping.scene_graph import ObjectNode, SceneGraph
    from mapping.trajectory import write_hydra_csv, write_tum

    out = Path(out_dir)
    v, t, class_colors, rgb = update.whole_mesh or (update.vertices, update.triangles, update.class_colors,
                                                     update.rgb_colors)
    graph = update.graph
    if graph is None:
        names = list(label_space.names)
        objects = [ObjectNode(i, names.index(name) if name in names else 255, name,
                              ((np.asarray(lo) + hi) / 2).tolist(), np.asarray(lo).tolist(), np.asarray(hi).tolist(),
                              0) for i, (name, lo, hi) in enumerate(update.objects)]
        graph = SceneGraph(objects=[o for o in objects if o.class_id != 255])
    with AtomicBatch() as batch:
        if t is not None and len(t):
            write_mesh(out / "mesh.ply", v, t, class_colors, batch)
            write_mesh(out / "mesh_rgb.ply", v, t, rgb, batch)
            write_mesh(out / "mesh.glb", v, t, class_colors, batch)
        if len(v):
            write_point_cloud(out / "points.ply", v, rgb, batch)
        if len(update.timestamps):
            write_tum(out / "trajectory.tum", update.timestamps, update.poses, batch)
            write_hydra_csv(out / "trajectory.csv", update.timestamps, update.poses, batch)
        graph.write(out, label_space, batch)
        write_label_space(out / "labelspace.yaml", out / "labelspace_colors.csv", label_space, batch)
        written = batch.commit()
    for name in (*EXPORT_FILES, *LOOP_EXPORT_FILES):
        if out / name not in written:
            (out / name).unlink(missing_ok=True)  # a previous export's file this map has no content for
    return written


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    if type(exc).__module__.split(".")[0] == "mapping" and text:  # the project's errors name file and cause
        return text[-1]
    return f"{type(exc).__name__}: {text[-1] if text else ''}"


def mapping_main(label_space, config, frames, commands, results, snapshot_every_s: float = 1.0) -> None:
    """Process entry point (spawn context): runs until a "stop" command.

    Frames arrive as (map generation, starts-the-map flag, PerceptionFrame); "reset" carries
    (generation, config or None).
    A frame of an older generation (sent before a reset) is skipped; one of a newer generation waits
    for its reset (the two queues do not keep each other's order). Every message back carries the
    generation so the GUI can ignore results of a map it has reset."""
    from mapping.bridge import MappingBridge

    try:
        os.nice(NICE)  # the window and perception are interactive; mapping catches up
    except OSError:
        pass
    bridge = MappingBridge(label_space, config)
    generation = 0
    results.put(("ready", (generation, None)))
    last_snapshot = time.monotonic()
    interval = snapshot_every_s
    dirty = False  # frames processed since the last snapshot
    idle_sent = True

    def send_snapshot() -> None:
        nonlocal last_snapshot, dirty, interval
        t0 = time.perf_counter()
        snap = bridge.snapshot()
        graph = bridge.scene_graph(snap)  # 0.7 s beside the snapshot's 6 s for a 360k-triangle room (load 14)
        cost = time.perf_counter() - t0
        results.put(("snapshot", (generation, make_update(snap, bridge.frames, 1000 * cost, graph))))
        last_snapshot, dirty = time.monotonic(), False
        # extraction is whole-map (0.3-2 s for a room): keep it under a quarter of the mapping time
        interval = max(snapshot_every_s, SNAPSHOT_COST_FACTOR * cost)

    def run_command(cmd, arg) -> bool:
        """False on "stop"."""
        nonlocal bridge, config, generation, dirty
        if cmd == "stop":
            return False
        try:
            if cmd == "reset":
                generation, new_config = arg
                config = new_config or config  # a new config, e.g. another depth source
                bridge = MappingBridge(label_space, config)
                dirty = False
                send_snapshot()
            elif cmd == "snapshot":
                send_snapshot()
            elif cmd == "export":
                try:
                    results.put(("exported", (generation, [str(p) for p in bridge.export(arg)])))
                except Exception as exc:  # a full disk, a read-only folder: the window must hear of it
                    results.put(("export_failed", (generation, f"export to {arg} failed: {_one_line(exc)}")))
        except Exception as exc:  # report, keep the map
            results.put(("error", (generation, f"mapping: {cmd} failed: {_one_line(exc)}")))
        return True

    while True:
        try:
            cmd, arg = commands.get_nowait()
        except queue.Empty:
            cmd = None
        if cmd is not None:
            if not run_command(cmd, arg):
                break
            continue
        try:
            frame_generation, _, frame = frames.get(timeout=0.05)
        except queue.Empty:
            if dirty and time.monotonic() - last_snapshot > 0.25:
                try:
                    send_snapshot()  # caught up: show the latest map now
                except Exception as exc:
                    dirty = False
                    results.put(("error", (generation, f"mapping: snapshot failed: {_one_line(exc)}")))
            if not idle_sent:
                results.put(("idle", (generation, bridge.frames)))
                idle_sent = True
            continue
        stop = False
        while frame_generation > generation and not stop:  # its reset is still on the way
            cmd, arg = commands.get()
            stop = not run_command(cmd, arg)
        if stop:
            break
        if frame_generation < generation:
            continue  # sent before a reset
        idle_sent = False
        try:
            t0 = time.perf_counter()
            step = bridge.process(frame)
            results.put(("step", (generation, {
                "index": step.index, "timestamp": step.timestamp, "pose": step.pose, "ok": step.tracking_ok,
                "message": step.message, "timings_ms": step.timings_ms, "odometry": bridge.odometry_summary(),
                "total_ms": 1000 * (time.perf_counter() - t0)})))
            dirty = True
            if time.monotonic() - last_snapshot >= interval:
                send_snapshot()
        except Exception as exc:  # a bad frame: report it, keep the map and go on
            results.put(("error", (generation, f"mapping: frame at t={frame.timestamp:.3f} s failed: "
                                               f"{_one_line(exc)}")))
    results.put(("stopped", (generation, bridge.frames)))
