"""The Mono-Hydra bridge: perception frames in, metric-semantic map, trajectory and scene graph out.

``MappingBridge.process`` runs per frame: (scale-align predicted depth) -> track against the map ->
(re-align at the tracked pose) -> TSDF integration -> class-evidence fusion -> ray-cast for the next
frame. Failed tracking keeps the map and holds the last good pose. No torch, no Qt.

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mapping.fusion import SemanticVoxels, confidence_weight
from mapping.interface import IGNORE_LABEL, InterfaceError, PerceptionFrame
from mapping.odometry import ODOMETRY_MODES, OdometryConfig, SparseOdometry, depth_sigma_for
from mapping.tracking import (ODOMETRY_METHODS, Tracker, TrackingFailure, refine_pose_and_scale,
                              rotation_angle_deg, scale_ratio)

STAGES = ("odometry", "align", "track", "integrate", "semantics", "raycast")


@dataclass
class MappingConfig:
    depth_mode: str = "sensor"  # "sensor" | "gt" | "pred": where the depth comes from
    align_scale: bool | None = None  # rescale depth onto the map; None = on for predicted depth only
    use_pose_prior: bool = False  # ground-truth-pose mode: frame.pose_prior is the pose, no tracking
    voxel_size: float | None = None  # metres; None = 1 cm for images >= 640 px wide, else 2 cm
    block_count: int = 4000  # initial TSDF block reservation (16^3 voxels each); grows when needed
    depth_min: float = 0.1
    depth_max: float = 5.0
    depth_diff: float = 0.07  # odometry correspondence gate (m)
    trunc_voxel_multiplier: float = 8.0  # TSDF truncation = 8 voxels (Open3D's default)
    # "point_to_plane" | "hybrid" | "intensity" (dense frame-to-model) or "vio" | "vo" (sparse keyframe
    # odometry, mapping.odometry; "vio" runs visual-only when the source has no IMU; the frames it loses, e.g. on a
    # bare wall, go to the dense method ``dense_method``). None = vio for predicted depth, point_to_plane otherwise.
    # Predicted depth's shape errors move a dense geometric fit by their full size; the sparse odometry takes its
    # poses from feature tracks and the IMU, with the network's depth as priors. Chosen on validation rooms
    # 200000-200004 (150 frames, the bundled model's depth): vio 5.0-9.4 cm against hybrid 7.0-36.7 cm, at about
    # a third of the CPU time. On exact and sensor depth point-to-plane measures best (benchmarks/RESULTS.md,
    # "Sparse odometry as the default for predicted depth"; docs/design/odometry.md).
    odometry: str | None = None
    sparse: OdometryConfig = field(default_factory=OdometryConfig)  # the sparse odometry's settings
    imu_noise_scale: float = 1.0  # the IMU noise figures (mapping.imu.D435I) times this
    # Odometry iterations per image-pyramid level, finest first. Open3D's default (6, 3, 1) leaves one
    # iteration at the coarsest level, too few to recover a fast turn (a 3 deg miss of the constant-
    # velocity prediction put 9 cm into one frame); coarse iterations are cheap (1/16 of the pixels).
    odometry_iterations: tuple[int, ...] = (6, 3, 10)
    min_fitness: float = 0.25  # odometry inlier fraction below which tracking has failed
    max_jump_m: float = 0.3  # larger per-frame translation = failure
    max_jump_deg: float = 30.0  # larger per-frame rotation = failure
    # A dense pose for a frame the sparse odometry lost is refused (the frame fails, the pose is held) when it lies
    # further than this from the constant-velocity prediction: on a view where the network's depth is far off
    # (validation room 200000's last frames: scale 1.4-1.6) the dense fit jumps 20-30 cm in one frame.
    fallback_max_step_m: float = 0.08
    fallback_max_step_deg: float = 8.0
    weight_threshold: float = 2.0  # TSDF weight a voxel needs to appear in extracted geometry
    min_confidence: float = 0.5  # pixels below it are left out of TSDF integration
    min_depth_pixels: int = 100  # a frame with fewer valid depth pixels is not integrated (a failure)
    # Depth-scale factors accepted per frame (others are treated as a failed estimate and not applied): the median
    # ratio to the map (ray-cast, or the sparse odometry's landmarks) and the joint pose-and-scale fit's correction.
    scale_ratio_range: tuple[float, float] = (0.5, 2.0)
    scale_refine_range: tuple[float, float] = (0.8, 1.25)
    semantic_stride: int = 2  # semantic update on every k-th pixel in each direction
    keyframe_every: int = 10  # integrated frames between free-space keyframes (scene-graph places)
    keyframe_width: int = 80  # a free-space keyframe's depth is downsampled to about this many columns
    max_keyframes: int = 400  # beyond this many free-space keyframes every other one is dropped
    loop_closure: bool = False  # keyframes -> place recognition -> pose graph -> map rebuilt (mapping.loops)

    def __post_init__(self) -> None:
        if self.depth_mode not in ("sensor", "gt", "pred"):
            raise ValueError(f"depth_mode must be sensor, gt or pred, got '{self.depth_mode}'")
        choices = (*ODOMETRY_METHODS, *ODOMETRY_MODES)
        if self.odometry not in (None, *choices):
            raise ValueError(f"odometry must be one of {', '.join(choices)}, got '{self.odometry}'")
        if not self.imu_noise_scale > 0:
            raise ValueError(f"imu_noise_scale must be > 0, got {self.imu_noise_scale}")

    @property
    def odometry_method(self) -> str:
        if self.odometry is not None:
            return self.odometry
        return "vio" if self.depth_mode == "pred" else "point_to_plane"

    @property
    def dense_method(self) -> str:
        """The dense frame-to-model method: the chosen one, or with sparse odometry the one that takes the frames
        it loses (hybrid for predicted depth, point_to_plane otherwise)."""
        if self.odometry_method in ODOMETRY_METHODS:
            return self.odometry_method
        return "hybrid" if self.depth_mode == "pred" else "point_to_plane"

    @property
    def sparse_odometry(self) -> bool:
        return self.odometry_method in ODOMETRY_MODES and not self.use_pose_prior

    @property
    def scale_alignment(self) -> bool:
        return self.depth_mode == "pred" if self.align_scale is None else bool(self.align_scale)

    def resolve_voxel_size(self, width: int) -> float:
        if self.voxel_size is not None:
            return float(self.voxel_size)
        return 0.01 if width >= 640 else 0.02


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
        self._retrack_failed = False
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
        cfg = self.config
        if not isinstance(frame, PerceptionFrame):
            raise InterfaceError(f"process() takes a PerceptionFrame, got {type(frame).__name__}")
        if cfg.use_pose_prior and frame.pose_prior is None:
            raise InterfaceError("ground-truth-pose mode needs frame.pose_prior on every frame")
        times = dict.fromkeys(STAGES, 0.0)
        if self._tracker is None:
            start = frame.pose_prior if frame.pose_prior is not None else np.eye(4)
            self._tracker = Tracker(frame.K, frame.size, start, cfg)
            self._semantics = SemanticVoxels(self._tracker.voxel_size, self.label_space.num_classes)
            self._last_pose = np.asarray(start, np.float64)
            if cfg.loop_closure:  # with pose priors too: they are then odometry, and loops correct them
                from mapping.loops import LoopCloser, LoopConfig

                self.loops = LoopCloser(frame.K, frame.size, LoopConfig.for_depth(cfg.depth_mode))
        tracker = self._tracker
        if frame.size != (tracker.height, tracker.width) or not np.allclose(frame.K, tracker.K):
            raise InterfaceError(f"frame size/intrinsics changed mid-sequence ({frame.size} vs "
                                 f"{(tracker.height, tracker.width)}): reset() the bridge first")

        depth = frame.depth.copy()
        depth[(depth < cfg.depth_min) | (depth > cfg.depth_max)] = 0
        if frame.confidence is not None:
            depth[frame.confidence < cfg.min_confidence] = 0
        ok, message, scale = True, "", 1.0
        input_set = False  # the tracker holds this frame's (final) depth
        align = cfg.scale_alignment
        keyframe = fallback = self._retrack_failed = False
        if self.odometry_mode is None:
            self._start_odometry(frame)
        if cfg.sparse_odometry:
            t0 = time.perf_counter()
            ok, message, pose, scale, keyframe = self._sparse_step(frame, depth)
            times["odometry"] += time.perf_counter() - t0
            if self.loops is not None:  # the odometry's pose, moved into the loop-corrected map
                pose = self.loops.correction @ pose
            if not ok and tracker.integrated_frames:
                # The sparse odometry lost this frame (a bare wall has no corners to track, but its planes
                # still fix the pose): the dense tracker takes it against the map, and the sparse odometry
                # carries on from that pose (its relocalisation and restarts start there).
                self._render_pose = self._last_pose @ self._velocity
                tracker.synthesize(self._render_pose)
                ok, dense_message, pose, scale = self._dense_track(frame, depth, times)
                input_set = True
                off = np.linalg.inv(self._render_pose) @ pose
                if ok and (np.linalg.norm(off[:3, 3]) > cfg.fallback_max_step_m
                           or rotation_angle_deg(off[:3, :3]) > cfg.fallback_max_step_deg):
                    ok, pose = False, self._last_pose
                    dense_message = (f"dense pose refused ({100 * np.linalg.norm(off[:3, 3]):.0f} cm, "
                                     f"{rotation_angle_deg(off[:3, :3]):.0f} deg from the prediction)")
                if ok:
                    self.dense_fallbacks += 1
                    fallback = True
                    held = pose if self.loops is None else np.linalg.inv(self.loops.correction) @ pose
                    self._odometry.relocate(held)
                    message = f"{message}; pose from the dense {cfg.dense_method} tracker"
                else:
                    message = f"{message}; {dense_message}"
        elif cfg.use_pose_prior:
            pose = frame.pose_prior if self.loops is None else self.loops.correction @ frame.pose_prior
            if align and tracker.integrated_frames:
                t0 = time.perf_counter()
                tracker.synthesize(pose)
                scale = _apply_ratio(depth, tracker.rendered_depth(), scale, cfg.scale_ratio_range)
                times["align"] += time.perf_counter() - t0
        elif tracker.integrated_frames == 0:
            pose = self._last_pose
        else:
            ok, message, pose, scale = self._dense_track(frame, depth, times)
            input_set = True

        if ok and (depth > 0).sum() < cfg.min_depth_pixels:
            ok, message = False, "no valid depth in this frame"
        if ok:
            t0 = time.perf_counter()
            if not input_set:
                tracker.set_input(depth, frame.rgb)
            tracker.integrate(pose)
            times["integrate"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            self._fuse_semantics(frame, depth, pose)
            times["semantics"] += time.perf_counter() - t0
            if align and scale > 0:
                self._log_scales.append(float(np.log(scale)))
            if (tracker.integrated_frames - 1) % cfg.keyframe_every == 0:
                self._add_keyframe(depth, frame.K, pose)
                if self.loops is not None:
                    pose = self._loop_keyframe(frame, depth, pose)
                    tracker = self._tracker
            pose = np.asarray(pose, np.float64)
            if tracker.integrated_frames > 1 and not cfg.use_pose_prior:
                self._velocity = np.linalg.inv(self._last_pose) @ pose
            self._last_pose = pose
            self._prev_depth = depth if align else None
            if not cfg.sparse_odometry:
                # Ray-cast the map for the next frame at the constant-velocity prediction: the tracker starts
                # there, which also steadies it where the geometry leaves a direction unconstrained (a wall).
                t0 = time.perf_counter()
                self._render_pose = pose @ self._velocity
                tracker.synthesize(self._render_pose)
                times["raycast"] += time.perf_counter() - t0
        else:
            self.failures += 1
        if self.loops is not None:
            self.loops.record_frame(pose)
            self.loops.continue_rebuild()  # a staged map rebuild after a loop closure: the next keyframes
        self._timestamps.append(frame.timestamp)
        self._poses.append(np.asarray(pose, np.float64).copy())
        self._ok.append(ok)
        self.frames += 1
        for k, v in times.items():
            self.timing_totals[k] += v
        return StepResult(self.frames - 1, frame.timestamp, np.array(pose, np.float64), ok, message,
                          {k: 1000 * v for k, v in times.items()}, scale, self.tracked_features, keyframe, fallback,
                          self._retrack_failed)

    def _dense_track(self, frame: PerceptionFrame, depth: np.ndarray, times: dict):
        """Frame-to-model tracking against the ray-cast in ``self._tracker`` (rendered at ``self._render_pose``);
        with scale alignment, ``depth`` is brought onto the map's scale in place (see module docstring).
        Returns (ok, message, pose, scale); the tracker holds ``depth`` as its input afterwards."""
        cfg, tracker = self.config, self._tracker
        scale = 1.0
        if cfg.scale_alignment:
            t0 = time.perf_counter()
            scale = _apply_ratio(depth, tracker.rendered_depth(), scale, cfg.scale_ratio_range)  # at the prediction
            times["align"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        tracker.set_input(depth, frame.rgb)
        try:
            delta, _ = tracker.track()
        except TrackingFailure as exc:
            self._velocity = np.eye(4)
            times["track"] += time.perf_counter() - t0
            return False, str(exc), self._last_pose, scale
        pose = self._render_pose @ delta
        times["track"] += time.perf_counter() - t0
        if cfg.scale_alignment and self._prev_depth is not None:
            # Scale from a joint pose + scale fit against the previous (aligned) depth map, then
            # re-track with the corrected depth (see module docstring).
            t0 = time.perf_counter()
            init = np.linalg.inv(self._last_pose) @ pose
            refined = refine_pose_and_scale(depth, self._prev_depth, frame.K, init=init)
            times["align"] += time.perf_counter() - t0
            low, high = cfg.scale_refine_range
            if refined is not None and low < refined[1] < high:
                depth *= np.float32(refined[1])
                scale *= refined[1]
                t0 = time.perf_counter()
                tracker.set_input(depth, frame.rgb)
                try:
                    delta, _ = tracker.track()
                    pose = self._render_pose @ delta
                except TrackingFailure:  # counted and reported; the first track's pose stands
                    self.retrack_failures += 1
                    self._retrack_failed = True
                times["track"] += time.perf_counter() - t0
        return True, "", pose, scale

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

    def _sparse_step(self, frame: PerceptionFrame, depth: np.ndarray):
        """The sparse odometry's pose; with scale alignment, the depth is brought onto the landmarks' scale."""
        step = self._odometry.step(frame.timestamp, frame.rgb, depth, frame.confidence, frame.imu)
        self.tracked_features = step.tracked
        scale = 1.0
        low, high = self.config.scale_ratio_range
        if step.ok and self.config.scale_alignment and step.depth_ratio is not None and low < step.depth_ratio < high:
            scale = step.depth_ratio
            depth *= np.float32(scale)
        return step.ok, step.message, step.pose, scale, step.keyframe

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

    def _fuse_semantics(self, frame: PerceptionFrame, depth: np.ndarray, pose: np.ndarray) -> None:
        s = max(1, self.config.semantic_stride)
        d = depth[::s, ::s]
        labels = frame.labels[::s, ::s]
        valid = (d > 0) & (labels != IGNORE_LABEL)
        if not valid.any():
            return
        v, u = np.nonzero(valid)
        z = d[valid].astype(np.float64)
        K = frame.K
        x = ((u * s) - K[0, 2]) / K[0, 0] * z
        y = ((v * s) - K[1, 2]) / K[1, 1] * z
        pts = np.stack([x, y, z], 1) @ pose[:3, :3].T + pose[:3, 3]
        conf = None if frame.confidence is None else frame.confidence[::s, ::s][valid]
        weights = confidence_weight(conf, self.label_space.num_classes, len(z))
        self._semantics.fuse(pts, labels[valid], weights)

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

    def _add_keyframe(self, depth: np.ndarray, K: np.ndarray, pose: np.ndarray) -> None:
        step = max(1, depth.shape[1] // self.config.keyframe_width)
        Ks = K.copy()
        Ks[:2] /= step
        Ks[:2, 2] = (K[:2, 2] - (step - 1) / 2.0) / step
        self.keyframes.append(Keyframe(depth[step // 2::step, step // 2::step].copy(), Ks, np.array(pose)))
        if len(self.keyframes) > self.config.max_keyframes:
            self.keyframes = self.keyframes[::2]

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
        centres, evidence = self._semantics.voxels()
        return centres, evidence

    def snapshot(self, with_objects: bool = True) -> MapSnapshot:
        from mapping.scene_graph import extract_objects

        times, poses = self.trajectory()
        if self._tracker is None:
            empty = np.zeros((0, 3), np.uint8)
            return MapSnapshot(np.zeros((0, 3)), np.zeros((0, 3), np.int32), empty, empty, np.zeros(0, np.uint8),
                               times, poses, np.array(self._ok, bool))
        vertices, triangles, rgb = self._tracker.extract_mesh()
        classes = self._semantics.classify(vertices)
        objects = extract_objects(vertices, triangles, classes, self.label_space) if with_objects else []
        lines = self.loops.loop_lines() if self.loops is not None else np.zeros((0, 2, 3))
        return MapSnapshot(vertices, triangles, self.class_colors(classes), rgb, classes,
                           times, poses, np.array(self._ok, bool), objects, lines)

    def class_colors(self, classes: np.ndarray) -> np.ndarray:
        lut = np.full((256, 3), 128, np.uint8)
        lut[: self.label_space.num_classes] = self.label_space.colors
        return lut[classes]

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
                                 self.label_space)

    def export(self, out_dir: str | Path, snapshot: MapSnapshot | None = None) -> list[Path]:
        """Every export file into ``out_dir``, all or none: each is written to a temporary name and checked,
        and only when all are good do they replace the previous export (whose files this map does not
        produce, e.g. a mesh when the map has none, are removed, so the folder never mixes two runs). On a
        failure (a full disk) the previous files stay and ``ExportError`` names the file and the cause."""
        from mapping.atomic import AtomicBatch
        from mapping.export import write_label_space, write_mesh, write_point_cloud
        from mapping.trajectory import write_hydra_csv, write_tum

        out = Path(out_dir)
        if self.loops is not None and self.loops.rebuilding:  # the export holds the whole rebuilt map
            self.loops.finish_rebuild()
            snapshot = None
        snap = snapshot or self.snapshot()
        pts, rgb, _ = self.points()
        graph = self.scene_graph(snap)
        with AtomicBatch() as batch:
            if len(snap.triangles):
                write_mesh(out / "mesh.ply", snap.vertices, snap.triangles, snap.class_colors, batch)
                write_mesh(out / "mesh_rgb.ply", snap.vertices, snap.triangles, snap.rgb_colors, batch)
                write_mesh(out / "mesh.glb", snap.vertices, snap.triangles, snap.class_colors, batch)
            if len(pts):
                write_point_cloud(out / "points.ply", pts, rgb, batch)
            if len(snap.timestamps):
                write_tum(out / "trajectory.tum", snap.timestamps, snap.trajectory, batch)
                write_hydra_csv(out / "trajectory.csv", snap.timestamps, snap.trajectory, batch)
            if self.loops is not None and len(self.loops.graph):
                self.loops.graph.write_g2o(out / "pose_graph.g2o", batch)
            graph.write(out, self.label_space, batch)
            write_label_space(out / "labelspace.yaml", out / "labelspace_colors.csv", self.label_space, batch)
            written = batch.commit()
        for name in (*EXPORT_FILES, *LOOP_EXPORT_FILES):
            if out / name not in written:
                (out / name).unlink(missing_ok=True)  # a previous run's file this map has no content for
        return written


EXPORT_FILES = ("mesh.ply", "mesh_rgb.ply", "mesh.glb", "points.ply", "trajectory.tum", "trajectory.csv",
                "scene_graph.json", "dsg.json", "dsg.sparkdsg", "labelspace.yaml", "labelspace_colors.csv")
LOOP_EXPORT_FILES = ("pose_graph.g2o",)  # written as well when loop closure is on


def _apply_ratio(depth: np.ndarray, rendered: np.ndarray, scale: float, accepted: tuple[float, float]) -> float:
    """Rescale ``depth`` in place onto ``rendered`` when the median ratio lies inside ``accepted``; returns the
    accumulated factor."""
    ratio = scale_ratio(depth, rendered)
    if ratio is None or not accepted[0] < ratio < accepted[1]:
        return scale
    depth *= np.float32(ratio)
    return scale * ratio
