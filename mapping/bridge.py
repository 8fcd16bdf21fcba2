"""The Mono-Hydra bridge: perception frames in, metric-semantic map, trajectory and scene graph out.

``MappingBridge.process`` runs per frame as stages: prior (a pose prior, or the sparse odometry) -> track (dense
frame-to-model, after scale-aligning predicted depth to the map's ray-cast) -> refine (joint pose-and-scale fit,
re-track) -> integrate (TSDF, class evidence, keyframes, loop closure, ray-cast for the next frame), timed per stage
(``STAGES``, ``mapping.timing``). Failed tracking keeps the map and holds the last good pose. Settings:
``mapping.config.MappingConfig``. No torch, no Qt.

With the sparse odometry (``vio``/``vo``) the pose comes from
``mapping.odometry`` instead, and a frame it loses (no trackable corners) is tracked by the dense
method (``MappingConfig.dense_method``) against the map, whose pose the sparse odometry then carries on from.

Confidence: the TSDF update of Open3D takes no per-pixel weights, so pixels whose network confidence
is below ``min_confidence`` are masked out of integration (depth set to 0); the semantic update weighs
every label by its confidence (see ``mapping.fusion``).

Scale (``align_scale``, on for predicted depth): the map keeps the first frame's scale and every later
depth map is brought onto it in two steps. (1) Before tracking, the median ratio to the depth ray-cast
from the map at the predicted pose removes most of the error, so frame-to-model tracking converges.
(2) After tracking, a joint 7-DoF (pose + scale) point-to-plane fit against the previous aligned depth
map (``tracking.refine_pose_and_scale``) sets the exact factor, and the frame is tracked again with it.
Step 2 is needed because a scale error looks like motion along the view axis: estimated separately,
part of it stays in the pose and the map's scale drifts. The previous depth map is the reference
rather than the ray-cast because the TSDF ray-cast carries a small voxel-level offset that a joint fit
would read as scale. ``map_scale`` reports the geometric mean of the applied factors.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mapping.config import MappingConfig
from mapping.export import EXPORT_FILES, LOOP_EXPORT_FILES, write_map_files
from mapping.fusion import SemanticVoxels
from mapping.interface import InterfaceError, PerceptionFrame
from mapping.odometry import SparseOdometry, depth_sigma_for
from mapping.timing import StageTimes
from mapping.pose_refine import pose_gap
from mapping.tracking import Tracker, TrackingFailure, refine_pose_and_scale, scale_ratio

__all__ = ["EXPORT_FILES", "LOOP_EXPORT_FILES", "STAGES", "Keyframe", "MapSnapshot", "MappingBridge", "MappingConfig",
           "StepResult"]

STAGES = ("odometry", "align", "track", "integrate", "semantics", "raycast")


@dataclass
class StepResult:
    index: int
    timestamp: float
    pose: np.ndarray  # camera-to-world 4x4
    tracking_ok: bool
    message: str
    timings_ms: dict
    scale: float = 1.0  # factor applied to this frame's depth (1 without alignment)
    tracked: int = 0  # sparse odometry: feature tracks used for this frame's pose
    keyframe: bool = False  # sparse odometry: this frame became a keyframe
    dense_fallback: bool = False  # sparse odometry lost this frame; its pose is the dense tracker's
    retrack_failed: bool = False  # the re-track after the scale refinement failed; the first track's pose is kept


@dataclass
class MapSnapshot:
    vertices: np.ndarray  # (V,3) float64
    triangles: np.ndarray  # (T,3) int32
    class_colors: np.ndarray  # (V,3) uint8 label-space colours (grey where unknown)
    rgb_colors: np.ndarray  # (V,3) uint8
    vertex_classes: np.ndarray  # (V,) uint8, 255 = unknown
    timestamps: np.ndarray  # (N,)
    trajectory: np.ndarray  # (N,4,4)
    tracking_ok: np.ndarray  # (N,) bool
    objects: list = field(default_factory=list)  # mapping.scene_graph.ObjectNode
    loop_lines: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, 3)))  # (L,2,3) accepted loop closures


@dataclass
class Keyframe:
    """A downsampled depth view kept to tell observed free space from unknown space (places)."""

    depth: np.ndarray
    K: np.ndarray
    pose: np.ndarray
    loop_index: int = -1  # its keyframe in the loop closer's pose graph (-1: none)

    @classmethod
    def downsampled(cls, depth: np.ndarray, K: np.ndarray, pose: np.ndarray, width: int) -> Keyframe:
        """A keyframe from a depth map taken every ``step``-th pixel (about ``width`` columns), K to match."""
        step = max(1, depth.shape[1] // width)
        Ks = K.copy()
        Ks[:2] /= step
        Ks[:2, 2] = (K[:2, 2] - (step - 1) / 2.0) / step
        return cls(depth[step // 2::step, step // 2::step].copy(), Ks, np.array(pose))


@dataclass
class _Located:
    """One frame's way through the prior, track and refine stages."""

    pose: np.ndarray  # camera-to-world, map units
    ok: bool = True
    message: str = ""
    scale: float = 1.0  # the factor applied to the frame's depth
    input_set: bool = False  # the tracker already holds this frame's (final) depth
    keyframe: bool = False  # sparse odometry: the frame became a keyframe
    fallback: bool = False  # sparse odometry lost the frame; the pose is the dense tracker's
    retrack_failed: bool = False  # the re-track after the scale refinement failed


class MappingBridge:
    def __init__(self, label_space, config: MappingConfig | None = None):
        self.label_space = label_space
        self.config = config or MappingConfig()
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        self._tracker: Tracker | None = None
        self._odometry: SparseOdometry | None = None
        self.odometry_mode: str | None = None  # the odometry in use ("vio", "vo", or a dense method)
        self.odometry_note = ""  # e.g. why vio fell back to vo
        self.tracked_features = 0
        self._semantics: SemanticVoxels | None = None
        self._timestamps: list[float] = []
        self._poses: list[np.ndarray] = []  # map units
        self._ok: list[bool] = []
        self._log_scales: list[float] = []
        self._last_pose: np.ndarray | None = None
        self._prev_depth: np.ndarray | None = None
        self._velocity = np.eye(4)  # last good frame-to-frame motion (constant-velocity prediction)
        self._render_pose = np.eye(4)  # where the current ray-cast was rendered
        self.keyframes: list[Keyframe] = []
        self.loops = None  # mapping.loops.LoopCloser when config.loop_closure
        self.failures = 0
        self.dense_fallbacks = 0  # frames the sparse odometry lost and the dense tracker took
        self.retrack_failures = 0  # frames whose re-track after the scale refinement failed (first pose kept)
        self.loop_seconds = 0.0  # place recognition, optimisation and map rebuilds, in total
        self.timing_totals = {s: 0.0 for s in STAGES}
        self.frames = 0

    @property
    def voxel_size(self) -> float | None:
        return None if self._tracker is None else self._tracker.voxel_size

    @property
    def map_scale(self) -> float:
        """Geometric mean of the depth-scale factors applied so far (1 without alignment)."""
        if not self.config.scale_alignment or not self._log_scales:
            return 1.0
        return float(np.exp(np.mean(self._log_scales)))

    # ------------------------------------------------------------------ per frame
    def process(self, frame: PerceptionFrame) -> StepResult:
        """One frame through the stages: prior (pose prior or sparse odometry) -> track (dense, frame-to-model, at
        the constant-velocity prediction) -> refine (joint pose-and-scale fit) -> integrate (TSDF, semantics,
        keyframes, loop closure, the ray-cast for the next frame). A failed frame keeps the map and holds the pose."""
        _check_frame(frame, self.config, self._tracker)
        times = StageTimes(STAGES)
        if self._tracker is None:
            self._start_map(frame)
        depth = frame.depth.copy()
        depth[(depth < self.config.depth_min) | (depth > self.config.depth_max)] = 0
        if frame.confidence is not None:
            depth[frame.confidence < self.config.min_confidence] = 0
        if self.odometry_mode is None:
            self._start_odometry(frame)
        at = self._locate(frame, depth, times)
        if at.ok and (depth > 0).sum() < self.config.min_depth_pixels:
            at.ok, at.message = False, "no valid depth in this frame"
        if at.ok:
            at.pose = self._integrate(frame, depth, at, times)
        else:
            self.failures += 1
        return self._record(frame, at, times)

    def _start_map(self, frame: PerceptionFrame) -> None:
        start = frame.pose_prior if frame.pose_prior is not None else np.eye(4)
        self._tracker = Tracker(frame.K, frame.size, start, self.config)
        self._semantics = SemanticVoxels(self._tracker.voxel_size, self.label_space.num_classes)
        self._last_pose = np.asarray(start, np.float64)
        if self.config.loop_closure:  # with pose priors too: they are then odometry, and loops correct them
            from mapping.loops import LoopCloser, LoopConfig

            self.loops = LoopCloser(frame.K, frame.size, LoopConfig.for_depth(self.config.depth_mode))

    def _locate(self, frame: PerceptionFrame, depth: np.ndarray, times: StageTimes) -> _Located:
        """Prior -> track -> refine: this frame's pose in the map; ``depth`` is brought onto the map's scale in place
        when scale alignment is on."""
        cfg = self.config
        if cfg.sparse_odometry:
            at = self._sparse_prior(frame, depth, times)
            if not at.ok and self._tracker.integrated_frames:
                at = self._dense_fallback(frame, depth, at, times)
            return at
        if cfg.use_pose_prior:
            pose = frame.pose_prior if self.loops is None else self.loops.correction @ frame.pose_prior
            at = _Located(pose)
            if cfg.scale_alignment and self._tracker.integrated_frames:
                with times("align"):
                    self._tracker.synthesize(pose)
                    at.scale = _apply_ratio(depth, self._tracker.rendered_depth(), 1.0, cfg.scale_ratio_range)
            return at
        if self._tracker.integrated_frames == 0:
            return _Located(self._last_pose)
        return self._track(frame, depth, times)

    def _sparse_prior(self, frame: PerceptionFrame, depth: np.ndarray, times: StageTimes) -> _Located:
        """The sparse odometry's pose (moved into the loop-corrected map); with scale alignment the depth is brought
        onto the landmarks' scale."""
        with times("odometry"):
            step = self._odometry.step(frame.timestamp, frame.rgb, depth, frame.confidence, frame.imu)
            self.tracked_features = step.tracked
            scale = 1.0
            low, high = self.config.scale_ratio_range
            if (step.ok and self.config.scale_alignment and step.depth_ratio is not None
                    and low < step.depth_ratio < high):
                scale = step.depth_ratio
                depth *= np.float32(scale)
        pose = step.pose if self.loops is None else self.loops.correction @ step.pose
        return _Located(pose, step.ok, step.message, scale, keyframe=step.keyframe)

    def _dense_fallback(self, frame: PerceptionFrame, depth: np.ndarray, lost: _Located,
                        times: StageTimes) -> _Located:
        """A frame the sparse odometry lost (a bare wall has no corners to track, but its planes still fix the pose):
        the dense tracker takes it against the map, and the sparse odometry carries on from that pose (its
        relocalisation and restarts start there). A dense pose far from the prediction is refused; a frame with no
        dense pose keeps the sparse odometry's (held, or carried by the IMU)."""
        cfg = self.config
        self._render_pose = self._last_pose @ self._velocity
        self._tracker.synthesize(self._render_pose)
        at = replace(self._track(frame, depth, times), keyframe=lost.keyframe)
        step_m, step_deg = pose_gap(self._render_pose, at.pose)
        if at.ok and (step_m > cfg.fallback_max_step_m or step_deg > cfg.fallback_max_step_deg):
            at.ok = False
            at.message = f"dense pose refused ({100 * step_m:.0f} cm, {step_deg:.0f} deg from the prediction)"
        if not at.ok:
            at.pose, at.message = lost.pose, f"{lost.message}; {at.message}"
            return at
        self.dense_fallbacks += 1
        at.fallback = True
        self._odometry.relocate(at.pose if self.loops is None else np.linalg.inv(self.loops.correction) @ at.pose)
        at.message = f"{lost.message}; pose from the dense {cfg.dense_method} tracker"
        return at

    def _track(self, frame: PerceptionFrame, depth: np.ndarray, times: StageTimes) -> _Located:
        """Frame-to-model tracking against the ray-cast in ``self._tracker`` (rendered at ``self._render_pose``), then
        the scale refinement; with scale alignment, ``depth`` is first brought onto the ray-cast's scale in place
        (see module docstring). The tracker holds ``depth`` as its input afterwards."""
        cfg, tracker = self.config, self._tracker
        scale = 1.0
        if cfg.scale_alignment:
            with times("align"):  # at the prediction
                scale = _apply_ratio(depth, tracker.rendered_depth(), scale, cfg.scale_ratio_range)
        with times("track"):
            tracker.set_input(depth, frame.rgb)
            try:
                delta, _ = tracker.track()
            except TrackingFailure as exc:
                self._velocity = np.eye(4)
                return _Located(self._last_pose, False, str(exc), scale, input_set=True)
        at = _Located(self._render_pose @ delta, scale=scale, input_set=True)
        if cfg.scale_alignment and self._prev_depth is not None:
            self._refine(frame, depth, at, times)
        return at

    def _refine(self, frame: PerceptionFrame, depth: np.ndarray, at: _Located, times: StageTimes) -> None:
        """The scale from a joint pose + scale fit against the previous (aligned) depth map, then a re-track with the
        corrected depth (see module docstring). A failed re-track is counted and reported; the first pose stands."""
        with times("align"):
            refined = refine_pose_and_scale(depth, self._prev_depth, frame.K,
                                            init=np.linalg.inv(self._last_pose) @ at.pose)
        low, high = self.config.scale_refine_range
        if refined is None or not low < refined[1] < high:
            return
        depth *= np.float32(refined[1])
        at.scale *= refined[1]
        with times("track"):
            self._tracker.set_input(depth, frame.rgb)
            try:
                delta, _ = self._tracker.track()
                at.pose = self._render_pose @ delta
            except TrackingFailure:
                self.retrack_failures += 1
                at.retrack_failed = True

    def _integrate(self, frame: PerceptionFrame, depth: np.ndarray, at: _Located, times: StageTimes) -> np.ndarray:
        """TSDF and class evidence at the frame's pose, a free-space (and loop-closure) keyframe on schedule, the
        constant-velocity prediction and (dense tracking) the ray-cast for the next frame. Returns the pose, moved
        into the corrected map when a loop closed."""
        cfg, pose = self.config, at.pose
        with times("integrate"):
            if not at.input_set:
                self._tracker.set_input(depth, frame.rgb)
            self._tracker.integrate(pose)
        with times("semantics"):
            self._semantics.fuse_depth(depth, frame.labels, frame.K, pose, frame.confidence,
                                       self.config.semantic_stride)
        if cfg.scale_alignment and at.scale > 0:
            self._log_scales.append(float(np.log(at.scale)))
        if (self._tracker.integrated_frames - 1) % cfg.keyframe_every == 0:
            self.keyframes.append(Keyframe.downsampled(depth, frame.K, pose, cfg.keyframe_width))
            if len(self.keyframes) > cfg.max_keyframes:
                self.keyframes = self.keyframes[::2]
            if self.loops is not None:
                pose = self._loop_keyframe(frame, depth, pose)  # may rebuild the map (a new tracker)
        pose = np.asarray(pose, np.float64)
        if self._tracker.integrated_frames > 1 and not cfg.use_pose_prior:
            self._velocity = np.linalg.inv(self._last_pose) @ pose
        self._last_pose = pose
        self._prev_depth = depth if cfg.scale_alignment else None
        if not cfg.sparse_odometry:
            # Ray-cast the map for the next frame at the constant-velocity prediction: the tracker starts there,
            # which also steadies it where the geometry leaves a direction unconstrained (a wall).
            with times("raycast"):
                self._render_pose = pose @ self._velocity
                self._tracker.synthesize(self._render_pose)
        return pose

    def _record(self, frame: PerceptionFrame, at: _Located, times: StageTimes) -> StepResult:
        if self.loops is not None:
            self.loops.record_frame(at.pose)
            self.loops.continue_rebuild()  # a staged map rebuild after a loop closure: the next keyframes
        self._timestamps.append(frame.timestamp)
        self._poses.append(np.asarray(at.pose, np.float64).copy())
        self._ok.append(at.ok)
        self.frames += 1
        for k, v in times.seconds.items():
            self.timing_totals[k] += v
        return StepResult(self.frames - 1, frame.timestamp, np.array(at.pose, np.float64), at.ok, at.message,
                          times.milliseconds(), at.scale, self.tracked_features, at.keyframe, at.fallback,
                          at.retrack_failed)

    def _start_odometry(self, frame: PerceptionFrame) -> None:
        """Pick the odometry at the first frame; "vio" without IMU samples falls back to "vo" and says so."""
        cfg = self.config
        mode = "gt-poses" if cfg.use_pose_prior else cfg.odometry_method
        imu = None
        if mode == "vio" and frame.imu is None:
            mode = "vo"
            self.odometry_note = "no IMU in this source: visual-only odometry (vo)"
        elif mode == "vio":
            from mapping.imu import D435I
            from mapping.inertial import ImuFusion

            imu = ImuFusion(D435I.scaled(cfg.imu_noise_scale))
        self.odometry_mode = mode
        if cfg.sparse_odometry:
            start = frame.pose_prior if frame.pose_prior is not None else np.eye(4)
            sigma = cfg.sparse.depth_sigma_rel or depth_sigma_for(cfg.depth_mode)
            self._odometry = SparseOdometry(frame.K, frame.size, start, cfg.sparse, sigma, imu, cfg.scale_alignment)

    def odometry_summary(self) -> str:
        """One line for a status display: the odometry in use, keyframes and tracked features (sparse modes)."""
        mode = self.odometry_mode or self.config.odometry_method
        if self._odometry is None:
            return mode
        text = f"{mode}: {self.keyframe_count} keyframes, {self.tracked_features} tracks"
        if self._odometry.smoother_resets:
            text += f", smoother restarted {self._odometry.smoother_resets}x"
        return text + (f" ({self.odometry_note})" if self.odometry_note else "")

    @property
    def keyframe_count(self) -> int:
        return 0 if self._odometry is None else self._odometry.keyframes

    def _loop_keyframe(self, frame: PerceptionFrame, depth: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """Hand a keyframe to the loop closer; after an accepted loop, rebuild the map at the corrected poses and
        return this frame's pose in the corrected map (else ``pose`` unchanged)."""
        loops = self.loops
        before = loops.correction
        t0 = time.perf_counter()
        edge = loops.add_keyframe(frame.timestamp, frame.rgb, depth, frame.labels, frame.confidence, frame.K, pose)
        self.keyframes[-1].loop_index = len(loops.graph) - 1
        if edge is None:
            self.loop_seconds += time.perf_counter() - t0
            return pose
        jump = loops.correction @ np.linalg.inv(before)
        if loops.displacement() > self.voxel_size:  # else the map stays: no keyframe moved by a voxel
            counted = self._tracker.integrated_frames
            self._tracker, self._semantics = loops.rebuild(self.config, self.label_space.num_classes,
                                                           self.voxel_size, frame.K, frame.size)
            self._tracker.integrated_frames = counted  # keeps the keyframe schedule
        for kf in self.keyframes:
            if kf.loop_index >= 0:
                kf.pose = loops.graph.optimized[kf.loop_index].copy()
        self._last_pose = jump @ self._last_pose
        seconds = time.perf_counter() - t0
        self.loop_seconds += seconds
        loops.note(edge, seconds)
        return jump @ pose

    # ------------------------------------------------------------------ outputs
    def trajectory(self) -> tuple[np.ndarray, np.ndarray]:
        """(timestamps (N,), metric camera-to-world poses (N,4,4))."""
        poses = np.array(self._poses).reshape(-1, 4, 4)
        if self.loops is not None:  # every frame moved with its keyframe's correction
            poses = self.loops.trajectory()
        return np.array(self._timestamps, np.float64), poses

    def semantic_voxels(self) -> tuple[np.ndarray, np.ndarray]:
        """(metric voxel centres (M,3), class evidence (M,C))."""
        if self._semantics is None:
            return np.zeros((0, 3)), np.zeros((0, self.label_space.num_classes), np.float32)
        return self._semantics.voxels()

    def snapshot(self, with_objects: bool = True) -> MapSnapshot:
        from mapping.scene_graph import extract_objects

        times, poses = self.trajectory()
        if self._tracker is None:
            empty = np.zeros((0, 3), np.uint8)
            return MapSnapshot(np.zeros((0, 3)), np.zeros((0, 3), np.int32), empty, empty, np.zeros(0, np.uint8),
                               times, poses, np.array(self._ok, bool))
        vertices, triangles, rgb = self._tracker.extract_mesh()
        classes = self._semantics.classify(vertices)
        objects = (extract_objects(vertices, triangles, classes, self.label_space,
                                   self.config.scene_graph.min_object_area) if with_objects else [])
        lines = self.loops.loop_lines() if self.loops is not None else np.zeros((0, 2, 3))
        return MapSnapshot(vertices, triangles, class_colors(self.label_space, classes), rgb, classes,
                           times, poses, np.array(self._ok, bool), objects, lines)

    def points(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Metric surface points of the TSDF, their RGB colours and class ids (255 = unknown)."""
        if self._tracker is None:
            return np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros(0, np.uint8)
        pts, rgb = self._tracker.extract_points()
        return pts, rgb, self._semantics.classify(pts)

    def scene_graph(self, snapshot: MapSnapshot | None = None):
        from mapping.scene_graph import build_scene_graph

        snap = snapshot or self.snapshot()
        keyframes = [Keyframe(k.depth, k.K, k.pose) for k in self.keyframes]
        return build_scene_graph(snap.objects, snap.vertices, snap.vertex_classes, snap.trajectory, keyframes,
                                 self.label_space, self.config.scene_graph)

    def export(self, out_dir: str | Path, snapshot: MapSnapshot | None = None) -> list[Path]:
        """Every export file into ``out_dir``, all or none: each is written to a temporary name and checked,
        and only when all are good do they replace the previous export (whose files this map does not
        produce, e.g. a mesh when the map has none, are removed, so the folder never mixes two runs). On a
        failure (a full disk) the previous files stay and ``ExportError`` names the file and the cause."""
        out = Path(out_dir)
        if self.loops is not None and self.loops.rebuilding:  # the export holds the whole rebuilt map
            self.loops.finish_rebuild()
            snapshot = None
        snap = snapshot or self.snapshot()
        pts, rgb, _ = self.points()
        return write_map_files(out, (snap.vertices, snap.triangles, snap.class_colors, snap.rgb_colors), (pts, rgb),
                               snap.timestamps, snap.trajectory, self.scene_graph(snap), self.label_space,
                               None if self.loops is None else self.loops.graph)


def _check_frame(frame: PerceptionFrame, config: MappingConfig, tracker: Tracker | None) -> None:
    """A frame the bridge can take: a PerceptionFrame, with a pose prior in ground-truth-pose mode, of the map's size
    and intrinsics."""
    if not isinstance(frame, PerceptionFrame):
        raise InterfaceError(f"process() takes a PerceptionFrame, got {type(frame).__name__}")
    if config.use_pose_prior and frame.pose_prior is None:
        raise InterfaceError("ground-truth-pose mode needs frame.pose_prior on every frame")
    if tracker is not None and (frame.size != (tracker.height, tracker.width)
                                or not np.allclose(frame.K, tracker.K)):
        raise InterfaceError(f"frame size/intrinsics changed mid-sequence ({frame.size} vs "
                             f"{(tracker.height, tracker.width)}): reset() the bridge first")


def class_colors(label_space, classes: np.ndarray) -> np.ndarray:
    """(N,3) uint8 colours of class ids in the label space's colours (grey where unknown, 255)."""
    lut = np.full((256, 3), 128, np.uint8)
    lut[: label_space.num_classes] = label_space.colors
    return lut[classes]


def _apply_ratio(depth: np.ndarray, rendered: np.ndarray, scale: float, accepted: tuple[float, float]) -> float:
    """Rescale ``depth`` in place onto ``rendered`` when the median ratio lies inside ``accepted``; returns the
    accumulated factor."""
    ratio = scale_ratio(depth, rendered)
    if ratio is None or not accepted[0] < ratio < accepted[1]:
        return scale
    depth *= np.float32(ratio)
    return scale * ratio
