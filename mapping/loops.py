"""Loop closure for the mapping bridge: place recognition -> depth check -> pose graph -> corrected poses -> a rebuilt
map.

The bridge hands every keyframe to ``LoopCloser.add_keyframe`` and every frame's pose to ``record_frame``. Poses
the bridge works in are "map" poses: after a correction the tracker continues in the corrected frame. The loop
closer keeps each pose in the odometry frame it had before any correction (map pose moved back by the correction
that was in force), so the pose graph's odometry edges stay the odometry's own. A loop edge accepted by the
robust optimiser triggers a rebuild of the TSDF and class evidence from the stored keyframes at their corrected
poses (``mapping.keyframe_store``); frames between keyframes move with the keyframe before them.

The rebuild is staged, so that a correction costs a bounded time whatever the number of keyframes: at once, the
``rebuild_now`` keyframes nearest the camera (the part of the map the tracker needs next), then ``rebuild_per_frame``
more after each frame the bridge processes, nearest first, until every keyframe is back in. A TSDF's weighted
average does not depend on the order of integration, so the finished map is the full rebuild's (plus the frames
integrated meanwhile). This is BundleFusion's re-integration spread over frames (Dai et al., TOG 2017, which
re-integrates a budget of frames per input frame); ``benchmarks/bench_loops.py cost`` measures both stages.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from mapping.keyframe_store import KeyframeStore
from mapping import loop_refine
from mapping.places import PlaceConfig, PlaceRecognizer
from mapping.pose_graph import LoopEdge, PoseGraph, PoseGraphConfig, interpolate_frames


@dataclass(frozen=True)
class LoopConfig:
    places: PlaceConfig = field(default_factory=PlaceConfig)
    graph: PoseGraphConfig = field(default_factory=PoseGraphConfig)
    rebuild_now: int = 30  # keyframes re-integrated when a correction is accepted (nearest the camera first)
    rebuild_per_frame: int = 10  # keyframes re-integrated after each later frame until all are back in
    # The depth check (``mapping.loop_refine``: ICP on the two keyframes' depth) refines and vets PnP's edge when
    # the depth is measured. On the model's depth it does harm: two predictions of one view disagree in scale and
    # shape by more than PnP errs (benchmarks/RESULTS.md, "Revisit walks that look into the room"), so for
    # predicted depth PnP's edge goes to the optimiser as it is (``for_depth``).
    depth_check: bool = True

    @classmethod
    def for_depth(cls, depth_mode: str) -> "LoopConfig":
        """The loop closer's settings for a ``MappingConfig.depth_mode``: no depth check on predicted depth."""
        return cls(depth_check=depth_mode != "pred")


@dataclass
class Correction:
    edge: LoopEdge
    seconds: float  # optimisation + the rebuild's first stage
    keyframes: int
    later_seconds: float = 0.0  # the rebuild's later stages, in total
    later_frames: int = 0  # frames until the rebuild was complete


@dataclass
class _Rebuild:
    tracker: object  # mapping.tracking.Tracker
    semantics: object  # mapping.fusion.SemanticVoxels
    order: list  # keyframe indices still to integrate, next first
    poses: list  # their optimised poses at the correction, per keyframe index


class LoopCloser:
    def __init__(self, K: np.ndarray, size: tuple[int, int], config: LoopConfig | None = None):
        self.config = config or LoopConfig()
        self.places = PlaceRecognizer(K, size, self.config.places)
        self.graph = PoseGraph(self.config.graph)
        self.store = KeyframeStore()
        self.correction = np.eye(4)  # map pose = correction @ odometry pose, for the latest keyframe
        self._frames: list[np.ndarray] = []  # per frame: odometry pose
        self._anchor: list[int] = []  # per frame: latest keyframe at or before it (-1 before the first)
        self.built: list[np.ndarray] = []  # per keyframe: the pose the current map has it integrated at
        self.corrections: list[Correction] = []
        self.rejected = 0  # verified loops the robust optimiser switched off
        self._rebuild: _Rebuild | None = None  # a staged rebuild still under way

    def to_odometry(self, map_pose: np.ndarray) -> np.ndarray:
        return np.linalg.inv(self.correction) @ np.asarray(map_pose, np.float64)

    def record_frame(self, map_pose: np.ndarray) -> None:
        self._frames.append(self.to_odometry(map_pose))
        self._anchor.append(len(self.graph) - 1)

    def add_keyframe(self, timestamp: float, rgb: np.ndarray, depth: np.ndarray, labels: np.ndarray,
                     confidence: np.ndarray | None, K: np.ndarray, map_pose: np.ndarray) -> LoopEdge | None:
        """Store a keyframe (call before ``record_frame`` of the same frame); returns a loop edge that the
        optimiser accepted (the caller then rebuilds its map with ``rebuild``), else None."""
        index = self.graph.add_keyframe(self.to_odometry(map_pose))
        self.built.append(np.array(map_pose, np.float64))
        self.store.add(timestamp, rgb, depth, labels, confidence, K)
        kf = self.places.describe(index, rgb, depth)
        edge = self.places.query(kf, depth)
        self.places.add(kf)
        if edge is not None and self.config.depth_check:
            edge = self.confirm(edge)
        if edge is None:
            return None
        self.graph.add_loop(edge)
        self.graph.optimize()
        if not self.graph.accepted[-1]:
            self.rejected += 1
            return None
        self.correction = self.graph.correction(index)
        return edge

    def confirm(self, edge: LoopEdge) -> LoopEdge | None:
        """A verified loop edge checked and refined on the two stored keyframes' depth (``mapping.loop_refine``),
        or None when the depth does not confirm it."""
        a, b = self.store.keyframes[edge.i], self.store.keyframes[edge.j]
        pose = loop_refine.confirm(edge.i_T_j, a.depth(), a.K, b.depth(), b.K)
        return None if pose is None else replace(edge, i_T_j=pose)

    def displacement(self) -> float:
        """Largest move (m) of a keyframe between the map as built and the optimised poses: translation plus
        the rotation's arc at 1 m (the typical distance of what a keyframe sees)."""
        worst = 0.0
        for opt, built in zip(self.graph.optimized, self.built):
            d = np.linalg.inv(built) @ opt
            angle = np.arccos(np.clip((np.trace(d[:3, :3]) - 1) / 2, -1, 1))
            worst = max(worst, float(np.linalg.norm(opt[:3, 3] - built[:3, 3]) + angle))
        return worst

    def rebuild(self, config, num_classes: int, voxel_size: float, K: np.ndarray, size: tuple[int, int]):
        """(tracker, semantics): a new map at the optimised poses, holding the ``rebuild_now`` keyframes nearest
        the latest one; ``continue_rebuild`` adds the rest (``KeyframeStore.integrate``)."""
        poses = [p.copy() for p in self.graph.optimized]
        tracker, semantics = self.store.new_map(poses[-1], config, num_classes, voxel_size, K=K, size=size)
        self._rebuild = _Rebuild(tracker, semantics, nearest_first(poses), poses)
        self._integrate(self.config.rebuild_now)
        self.built = [p.copy() for p in poses]
        return tracker, semantics

    @property
    def rebuilding(self) -> bool:
        return self._rebuild is not None

    def continue_rebuild(self, count: int | None = None) -> None:
        """After a frame: integrate the next ``count`` (default ``rebuild_per_frame``) keyframes of a staged
        rebuild, if one is under way."""
        if self._rebuild is None:
            return
        t0 = time.perf_counter()
        self._integrate(self.config.rebuild_per_frame if count is None else count)
        if self.corrections:
            self.corrections[-1].later_seconds += time.perf_counter() - t0
            self.corrections[-1].later_frames += 1

    def finish_rebuild(self) -> None:
        """Complete a staged rebuild now (before an export)."""
        if self._rebuild is not None:
            self.continue_rebuild(len(self._rebuild.order))

    def _integrate(self, count: int) -> None:
        job = self._rebuild
        take, job.order = job.order[:count], job.order[count:]
        self.store.integrate(job.tracker, job.semantics, take, [job.poses[i] for i in take])
        if not job.order:
            self._rebuild = None

    def trajectory(self) -> np.ndarray:
        """(N,4,4) every recorded frame's pose after the latest optimisation."""
        if not self._frames:
            return np.zeros((0, 4, 4))
        return interpolate_frames(np.array(self._frames), np.array(self._anchor), self.graph)

    def loop_lines(self) -> np.ndarray:
        """(L,2,3) the two keyframe positions of each accepted loop, at their optimised poses."""
        lines = [[self.graph.optimized[e.i][:3, 3], self.graph.optimized[e.j][:3, 3]]
                 for e, ok in zip(self.graph.loops, self.graph.accepted) if ok]
        return np.array(lines, np.float64).reshape(-1, 2, 3)

    def note(self, edge: LoopEdge, seconds: float) -> None:
        self.corrections.append(Correction(edge, seconds, len(self.graph)))

    @staticmethod
    def clock() -> float:
        return time.perf_counter()


def nearest_first(poses: list[np.ndarray]) -> list[int]:
    """Keyframe indices ordered by closeness to the last pose: distance plus the viewing-direction angle's arc
    at 1 m (the typical distance of what a keyframe sees), so the views that overlap the camera's come first."""
    last = poses[-1]
    cost = [np.linalg.norm(p[:3, 3] - last[:3, 3]) + np.arccos(np.clip(p[:3, 2] @ last[:3, 2], -1.0, 1.0))
            for p in poses]
    return [int(i) for i in np.argsort(cost, kind="stable")]
