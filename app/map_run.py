"""A headless mapping run as a library call: ``map_sequence(...) -> MapRun``, whose ``metrics()`` are what
``m2hmx-map`` writes to ``metrics.json`` (``app.map_cli`` only parses arguments and prints)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.pipeline import run_mapping


@dataclass
class MapRun:
    """One mapped sequence: the bridge holding the map, and what the run saw."""

    dataset: str
    bridge: object  # mapping.bridge.MappingBridge
    frames: int
    failures: int
    gt: tuple | None  # (timestamps, poses) of the mapped frames' ground truth (3 or more), else None
    error: str | None  # the frame error (or Ctrl+C) that stopped the run; the map up to it is kept
    interrupted: bool
    wall_s: float
    truth_objects: list | None = None  # (class id, box min, box max) of a generated room's visible objects
    export_s: float | None = None
    intrinsics: str = ""  # which intrinsics were assumed and why, when the source could not know its own
    realtime: dict | None = None  # --realtime: frames skipped, latency p50 / p95 (ms)
    _snapshot: object = field(default=None, repr=False)

    def snapshot(self):
        """The final map (``MapSnapshot``), extracted once."""
        if self._snapshot is None:
            if self.bridge.loops is not None:
                self.bridge.loops.finish_rebuild()  # a staged map rebuild after the last loop closure
            self._snapshot = self.bridge.snapshot()
        return self._snapshot

    def export(self, out: str | Path) -> list[Path]:
        """Every export file of the map into ``out`` (all or none, ``MappingBridge.export``)."""
        t0 = time.perf_counter()
        written = self.bridge.export(Path(out), self.snapshot())
        self.export_s = time.perf_counter() - t0
        return written

    def metrics(self) -> dict:
        """The run's numbers: frames, failures, odometry, scale, per-stage milliseconds, ATE (SE(3), Sim(3)),
        RPE over 1 s, loop closures and, on generated rooms, the scene graph's objects scored against the room's."""
        from mapping.metrics import TRAJECTORY_KEYS, trajectory_metrics
        from mapping.scene_graph import score_objects

        bridge, config = self.bridge, self.bridge.config
        n = max(self.frames, 1)
        metrics = {
            "dataset": self.dataset, "intrinsics": self.intrinsics or None, "depth": config.depth_mode, "gt_poses": config.use_pose_prior,
            "frames": self.frames, "tracking_failures": self.failures, "dense_fallback_frames": bridge.dense_fallbacks,
            "retrack_failures": bridge.retrack_failures, "odometry_summary": bridge.odometry_summary(),
            "voxel_size_m": bridge.voxel_size,
            "odometry": None if config.use_pose_prior else bridge.odometry_mode,
            "odometry_note": bridge.odometry_note, "keyframes": bridge.keyframe_count,
            "scale_alignment": config.scale_alignment, "map_scale": bridge.map_scale,
            "mean_ms": {k: 1000 * v / n for k, v in bridge.timing_totals.items()},
            "wall_s": self.wall_s, "export_s": self.export_s, "error": self.error, **dict.fromkeys(TRAJECTORY_KEYS),
        }
        if bridge.loops is not None:
            metrics["loops"] = {"accepted": len(bridge.loops.corrections), "rejected": bridge.loops.rejected,
                                "keyframes": len(bridge.loops.graph), "seconds": bridge.loop_seconds,
                                "correction_s": [c.seconds for c in bridge.loops.corrections],
                                "correction_later_s": [c.later_seconds for c in bridge.loops.corrections]}
        if self.gt is not None and self.frames >= 3:
            metrics.update(trajectory_metrics(self.gt, bridge.trajectory(), max_diff=0.02))
        if self.realtime is not None:
            metrics["realtime"] = self.realtime
        if self.truth_objects is not None:
            metrics["objects"] = score_objects(self.snapshot().objects, self.truth_objects)
        return metrics


def load_predictor(checkpoint: str | None, tasks: tuple[str, ...] | None = None, device: str = "cpu"):
    """The network of ``checkpoint`` (default: the bundled model); FileNotFoundError naming a missing file."""
    from m2hmx.config import bundled_checkpoint
    from m2hmx.predictor import Predictor

    path = Path(checkpoint) if checkpoint else bundled_checkpoint()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return Predictor.from_checkpoint(str(path), device, tasks=tasks)


def map_sequence(dataset: str, config, predictor=None, max_frames: int | None = None, stride: int = 1,
                 progress: bool = True, observe=None, intrinsics: tuple[float, float, float, float] | None = None,
                 realtime: bool = False) -> MapRun:
    """Map the source ``dataset`` (``m2hmx.data.sources.open_source``) with ``config`` (a ``MappingConfig``;
    ``use_pose_prior`` maps at the ground-truth poses) and ``predictor`` (needed for depth mode "pred"; its
    labels are used when given); ``intrinsics`` (fx, fy, cx, cy) for a recording that cannot know its own; ``realtime`` plays the recording at its clock, dropping frames
    like a live camera (``app.sources.RealtimePlayback``). ``observe(bridge, label_space)`` may return an ``on_frame`` callback
    (``run_mapping``). A frame error ends the run early with the map so far kept (``MapRun.error``)."""
    from m2hmx.data.sources import describe_intrinsics, open_source
    from m2hmx.labels import choose_label_space
    from mapping.bridge import MappingBridge

    source = open_source(dataset, intrinsics=intrinsics)
    assumed = describe_intrinsics(source)
    if realtime:
        from app.sources import RealtimePlayback

        source = RealtimePlayback(source)
    try:
        label_space, _ = choose_label_space(None, getattr(predictor, "label_space", None), source.label_space)
        bridge = MappingBridge(label_space, config)
        on_frame = observe(bridge, label_space) if observe is not None else None
        if realtime:
            on_frame = _latency_observer(source, on_frame)
        t0 = time.perf_counter()
        run = run_mapping(source, bridge, predictor, config.depth_mode, max_frames, progress, stride=stride,
                          gt_poses=config.use_pose_prior, on_frame=on_frame)
        wall = time.perf_counter() - t0
    finally:
        source.close()
    truth = None
    if hasattr(source, "visible_objects") and run["gt"] is not None:  # generated rooms know their objects
        truth = [(o.class_id, o.aabb_min, o.aabb_max) for o in source.visible_objects(run["gt"][1])]
    paced = None
    if realtime:
        lat = 1000 * np.array(on_frame.latencies) if on_frame.latencies else np.full(1, np.nan)
        paced = {"skipped_frames": source.skipped, "latency_ms_p50": float(np.median(lat)),
                 "latency_ms_p95": float(np.percentile(lat, 95))}
    return MapRun(dataset, bridge, run["frames"], run["failures"], run["gt"], run["error"], run["interrupted"],
                  wall, truth, intrinsics=assumed, realtime=paced)


def _latency_observer(source, observer):
    """``observer`` (or nothing) plus each mapped frame's latency: from its due time on the recording's clock to
    the end of its mapping step (``latencies``, seconds)."""
    def on_frame(frame, prediction, pf, step):
        on_frame.latencies.append(time.monotonic() - source.due[frame.index])
        if observer is not None:
            observer(frame, prediction, pf, step)
    on_frame.latencies = []
    return on_frame
