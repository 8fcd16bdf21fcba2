"""Live logging of a run to Rerun (``--rerun``, ``--rerun-connect ADDR``, ``--rerun-save FILE.rrd``).

Layout, as Rerun's own RGB-D examples arrange it (entity paths are fixed; tests read them back):

- ``world``: ViewCoordinates with the map's up axis; ``/`` holds the AnnotationContext of the label space
  (class names and official colours) that segmentation images and boxes refer to;
- ``world/camera``: Transform3D, the estimated camera-to-world pose, per frame;
- ``world/camera/image``: Pinhole (K, resolution, OpenCV axes RDF), so images below it are drawn in the
  camera frustum and depth images are back-projected into 3D: ``rgb`` (Image), ``depth`` (predicted depth,
  DepthImage in metres), ``sensor_depth`` (the source's own depth), ``segmentation`` (SegmentationImage);
- ``images/normals``, ``images/edges``: 2D images;
- ``world/trajectory`` and ``world/ground_truth``: LineStrips3D; ``world/mesh``: Mesh3D in class colours;
  ``world/objects``: Boxes3D with class labels; all refreshed at the snapshot rate;
- ``stats/fps``, ``stats/latency_ms``, ``stats/ate_m``, ``stats/tracking_ok``: Scalars.

Timelines: ``frame`` (the frame index) and ``time`` (the frame's timestamp, seconds). Needs ``rerun-sdk``
(the ``rerun`` extra).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from m2hmx.data.transforms import normals_to_rgb

MISSING = "rerun-sdk is not installed: pip install 'm2hmx[rerun]'"
DEFAULT_PORT = 9876  # Rerun's default gRPC port


def require_rerun():
    try:
        import rerun  # noqa: F401
    except ImportError:
        raise RuntimeError(MISSING) from None


def check_rrd_target(path: str | Path) -> Path:
    """Fail before the run starts when ``path`` cannot be written."""
    require_rerun()
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--rerun-save {path}: is a folder (give a file name, e.g. run.rrd)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--rerun-save {path}: cannot create {path.parent} ({exc.strerror})") from None
    if not os.access(path.parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"--rerun-save {path}: not writable")
    return path


def grpc_url(addr: str) -> str:
    """``HOST:PORT`` or ``HOST`` -> Rerun's proxy URL; a full ``rerun+http://`` URL is kept."""
    if "://" in addr:
        return addr
    host, _, port = addr.partition(":")
    return f"rerun+http://{host or '127.0.0.1'}:{port or DEFAULT_PORT}/proxy"


def check_spawn() -> None:
    """``--rerun`` starts a viewer window: fail before the run when there is no display for it."""
    import sys

    require_rerun()
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise RuntimeError("--rerun starts a Rerun viewer, which needs a display ($DISPLAY is not set): use "
                           "--rerun-save FILE.rrd, or --rerun-connect HOST:PORT to a viewer elsewhere")


def check_target(spawn: bool, connect: str | None, save: str | None) -> None:
    """The commands' ``--rerun`` / ``--rerun-connect`` / ``--rerun-save``: fail before the run starts when the
    chosen one cannot work (no rerun-sdk, no display to spawn a viewer on, an unwritable .rrd)."""
    if save:
        check_rrd_target(save)
    elif connect:
        require_rerun()
    elif spawn:
        check_spawn()


def _viewer_on_path() -> None:
    """``spawn`` looks for the ``rerun`` viewer on PATH; a venv's ``bin/`` (where rerun-sdk installs it) is not
    on PATH when ``.venv/bin/m2hmx-map`` runs without activating the venv, so put it there."""
    import shutil
    import sys

    venv_bin = Path(sys.executable).parent
    if shutil.which("rerun") is None and (venv_bin / "rerun").exists():
        os.environ["PATH"] = str(venv_bin) + os.pathsep + os.environ.get("PATH", "")


def blueprint():
    """The default layout: the 3D map beside the image views and the stats plots."""
    import rerun.blueprint as rrb

    def image(entity: str, name: str):
        return rrb.Spatial2DView(origin="/world/camera/image", contents=f"$origin/{entity}", name=name)

    return rrb.Blueprint(
        rrb.Horizontal(
            rrb.Spatial3DView(origin="/world", name="map"),
            rrb.Vertical(
                rrb.Horizontal(image("rgb", "RGB"), image("segmentation", "segmentation")),
                rrb.Horizontal(image("depth", "predicted depth"), image("sensor_depth", "sensor depth")),
                rrb.Horizontal(rrb.Spatial2DView(origin="/images/normals", name="normals"),
                               rrb.Spatial2DView(origin="/images/edges", name="edges")),
                rrb.Horizontal(rrb.TimeSeriesView(origin="/stats", contents=["$origin/fps", "$origin/tracking_ok"],
                                                  name="frames/s, tracking ok"),
                               rrb.TimeSeriesView(origin="/stats/latency_ms", name="latency (ms)"),
                               rrb.TimeSeriesView(origin="/stats/ate_m", name="ATE (m)")),
            ),
            column_shares=[3, 2],
        ),
        rrb.TimePanel(timeline="time", play_state="following"),  # live: show the newest frame
        collapse_panels=True,
    )


def _view_coordinates(rr, first_pose: np.ndarray):
    """The world axis nearest to the first camera's up (-y, OpenCV) as the 3D view's up."""
    cam_up = -np.asarray(first_pose)[:3, 1]
    axis = int(np.argmax(np.abs(cam_up)))
    sign = "UP" if cam_up[axis] > 0 else "DOWN"
    return getattr(rr.ViewCoordinates, f"RIGHT_HAND_{'XYZ'[axis]}_{sign}")


class RerunLogger:
    """One recording; ``save`` writes an .rrd (atomically, at ``close``), ``connect`` streams to a viewer
    at that address, neither spawns a local viewer."""

    def __init__(self, label_space, *, save: str | Path | None = None, connect: str | None = None,
                 app_id: str = "m2hmx"):
        require_rerun()
        import rerun as rr

        self.rr = rr
        self.rec = rr.RecordingStream(app_id)
        self.save_path = None
        if save is not None:
            self.save_path = check_rrd_target(save)
            self._tmp = self.save_path.with_name(f".{self.save_path.name}.partial")
            self.rec.save(str(self._tmp), default_blueprint=blueprint())
        elif connect is not None:
            self.rec.connect_grpc(grpc_url(connect), default_blueprint=blueprint())
        else:
            check_spawn()
            _viewer_on_path()
            self.rec.spawn(default_blueprint=blueprint())
        ids = list(range(label_space.num_classes))
        self.rec.log("/", rr.AnnotationContext([
            rr.AnnotationInfo(id=i, label=name, color=tuple(int(c) for c in color))
            for i, name, color in zip(ids, label_space.names, label_space.colors)]), static=True)
        self._world_set = False
        self._pinhole_key = None
        self.closed = False

    def _time(self, index: int, timestamp: float) -> None:
        self.rec.set_time("frame", sequence=int(index))
        self.rec.set_time("time", duration=float(timestamp))

    def log_images(self, index: int, timestamp: float, rgb: np.ndarray, K: np.ndarray, *, depth=None,
                   sensor_depth=None, labels=None, normals=None, edges=None) -> None:
        """One frame's images. ``normals``: (H,W,3) unit vectors or an RGB uint8 image; ``edges``: a
        probability in [0,1] or uint8."""
        rr = self.rr
        self._time(index, timestamp)
        h, w = rgb.shape[:2]
        key = (h, w, tuple(np.round(np.asarray(K), 6).ravel()))
        if key != self._pinhole_key:
            self._pinhole_key = key
            self.rec.log("world/camera/image", rr.Pinhole(image_from_camera=np.asarray(K, np.float32),
                                                          resolution=[w, h], camera_xyz=rr.ViewCoordinates.RDF),
                         static=True)
        self.rec.log("world/camera/image/rgb", rr.Image(rgb))
        if depth is not None:
            self.rec.log("world/camera/image/depth", rr.DepthImage(np.asarray(depth, np.float32), meter=1.0))
        if sensor_depth is not None:
            self.rec.log("world/camera/image/sensor_depth",
                         rr.DepthImage(np.asarray(sensor_depth, np.float32), meter=1.0))
        if labels is not None:
            self.rec.log("world/camera/image/segmentation", rr.SegmentationImage(np.asarray(labels, np.uint8)))
        if normals is not None:
            img = normals if normals.dtype == np.uint8 else normals_to_rgb(normals)
            self.rec.log("images/normals", rr.Image(img))
        if edges is not None:
            img = edges if edges.dtype == np.uint8 else (np.asarray(edges, np.float32) * 255).clip(0, 255)
            self.rec.log("images/edges", rr.Image(np.asarray(img, np.uint8)))

    def log_pose(self, index: int, timestamp: float, pose: np.ndarray, tracking_ok: bool) -> None:
        rr = self.rr
        self._time(index, timestamp)
        pose = np.asarray(pose, np.float64)
        if not self._world_set:
            self._world_set = True
            self.rec.log("world", _view_coordinates(rr, pose), static=True)
        self.rec.log("world/camera", rr.Transform3D(translation=pose[:3, 3], mat3x3=pose[:3, :3]))
        self.rec.log("stats/tracking_ok", rr.Scalars(1.0 if tracking_ok else 0.0))

    def log_scalars(self, index: int, timestamp: float, **values) -> None:
        """``stats/<name>`` for every value that is not None (fps, latency_ms, ate_m)."""
        self._time(index, timestamp)
        for name, value in values.items():
            if value is not None and np.isfinite(value):
                self.rec.log(f"stats/{name}", self.rr.Scalars(float(value)))

    def log_map(self, index: int, timestamp: float, vertices, triangles, colors, objects=(),
                trajectory=None, ground_truth=None) -> None:
        """The map at the snapshot rate: mesh (or points when ``triangles`` is None), object boxes as
        (label, aabb_min, aabb_max), estimated and ground-truth camera positions (N,3)."""
        rr = self.rr
        self._time(index, timestamp)
        if len(vertices):
            if triangles is not None and len(triangles):
                self.rec.log("world/mesh", rr.Mesh3D(vertex_positions=np.asarray(vertices, np.float32),
                                                     triangle_indices=np.asarray(triangles, np.uint32),
                                                     vertex_colors=np.asarray(colors, np.uint8)))
            else:
                self.rec.log("world/mesh", rr.Points3D(np.asarray(vertices, np.float32),
                                                       colors=np.asarray(colors, np.uint8), radii=0.01))
        objects = list(objects)
        if objects:
            mins = np.array([o[1] for o in objects], np.float32)
            sizes = np.array([o[2] for o in objects], np.float32) - mins
            self.rec.log("world/objects", rr.Boxes3D(mins=mins, sizes=sizes, labels=[str(o[0]) for o in objects],
                                                     show_labels=True))
        else:
            self.rec.log("world/objects", rr.Clear(recursive=False))
        for path, points, color in (("world/trajectory", trajectory, (255, 140, 0)),
                                    ("world/ground_truth", ground_truth, (40, 200, 60))):
            if points is not None and len(points) >= 2:
                self.rec.log(path, rr.LineStrips3D([np.asarray(points, np.float32)], colors=[color], radii=0.01))

    def close(self) -> Path | None:
        """Flush; an .rrd is moved into place. Returns the .rrd path (None when streaming)."""
        if self.closed:
            return self.save_path
        self.closed = True
        self.rec.flush()
        self.rec.disconnect()
        if self.save_path is not None:
            os.replace(self._tmp, self.save_path)
        return self.save_path


class MapRunLogger:
    """``m2hmx-map``'s observer: each mapped frame to Rerun (and the map every ``snapshot_every_s`` of mapping
    time, waiting at least 3x the last snapshot's cost, as the viewer's mapping process does), and to a
    ROS 2 bag writer when given."""

    def __init__(self, bridge, rerun: RerunLogger | None = None, bag=None, snapshot_every_s: float = 1.0):
        import time

        self.bridge, self.rerun, self.bag = bridge, rerun, bag
        self.snapshot_every_s = snapshot_every_s
        self._clock = time.perf_counter
        self._last_done = self._last_snapshot = self._clock()
        self._interval = snapshot_every_s
        self.gt: list[tuple[float, np.ndarray]] = []
        self.last = None  # (index, timestamp) of the last logged frame
        self.ate = None

    def __call__(self, frame, prediction, pf, step) -> None:
        if self.bag is not None:
            self.bag.add(frame, pf, step)
        if self.rerun is None:
            return
        now = self._clock()
        if frame.pose is not None:
            self.gt.append((frame.timestamp, np.asarray(frame.pose)))
        i, t = frame.index, step.timestamp
        self.last = (i, t)
        r = self.rerun
        pred = prediction
        r.log_images(i, t, frame.rgb, frame.K, depth=None if pred is None else pred.depth, sensor_depth=frame.depth,
                     labels=pred.labels if pred is not None else frame.labels,
                     normals=(pred.normals if pred is not None else frame.normals),
                     edges=(pred.edges if pred is not None else frame.edges))
        r.log_pose(i, t, step.pose, step.tracking_ok)
        dt = now - self._last_done
        r.log_scalars(i, t, fps=1.0 / dt if dt > 0 else None, latency_ms=1000 * dt)
        self._last_done = now
        if now - self._last_snapshot >= self._interval:
            self.log_snapshot()

    def log_snapshot(self, snapshot=None) -> None:
        """The map now (or ``snapshot`` when the caller has one) with trajectory, ground truth and ATE."""
        if self.rerun is None or self.last is None:
            return
        from app.mapping_process import object_boxes
        from mapping.trajectory import TrajectoryError, ate_rmse

        t0 = self._clock()
        snap = snapshot if snapshot is not None else self.bridge.snapshot()
        cost = self._clock() - t0
        gt_pos = None
        if len(self.gt) >= 3:
            gt_t = np.array([g[0] for g in self.gt])
            gt_p = np.array([g[1] for g in self.gt])
            gt_pos = gt_p[:, :3, 3]
            try:
                self.ate = ate_rmse((gt_t, gt_p), self.bridge.trajectory(), max_diff=0.02)
            except TrajectoryError:
                pass
        i, t = self.last
        self.rerun.log_map(i, t, snap.vertices, snap.triangles, snap.class_colors, object_boxes(snap.objects),
                           trajectory=snap.trajectory[:, :3, 3] if len(snap.trajectory) else None,
                           ground_truth=gt_pos)
        self.rerun.log_scalars(i, t, ate_m=self.ate)
        self._last_snapshot = self._clock()
        self._last_done += self._last_snapshot - t0  # the snapshot's time is not the next frame's latency
        self._interval = max(self.snapshot_every_s, 3.0 * cost)
