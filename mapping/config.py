"""The mapping backend's settings (``MappingConfig``): every threshold the bridge (``mapping.bridge``) applies, its
dense tracker's (``mapping.tracking``), its sparse odometry's (``OdometryConfig``) and its scene graph's
(``SceneGraphConfig``). No torch, no Qt."""
from __future__ import annotations

from dataclasses import dataclass, field

from mapping.odometry import ODOMETRY_MODES, OdometryConfig
from mapping.tracking import ODOMETRY_METHODS


@dataclass(frozen=True)
class SceneGraphConfig:
    """The scene graph's settings (``mapping.scene_graph``; the object area's choice: ``extract_objects``)."""

    min_object_area: float = 0.1  # m^2 of mesh an object piece needs
    place_spacing: float = 0.5  # m between candidate places on the horizontal grid
    place_height: float = 1.0  # m above the floor (robot height)
    min_clearance: float = 0.3  # m a place (and an edge's midpoint) keeps to every surface
    room_clearance: float = 0.55  # m a place needs to seed a room (doorways fall below it)
    min_room_places: int = 6  # places a room seed needs


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
    scene_graph: SceneGraphConfig = field(default_factory=SceneGraphConfig)  # objects, places, rooms

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
