"""RGB-D frame-to-model tracking and TSDF integration on Open3D's ``t.pipelines.slam.Model``.

Each frame is tracked against the depth ray-cast from the map at the last pose (KinectFusion style,
Newcombe et al. 2011; Open3D's dense SLAM pipeline), then integrated at the tracked pose. A failed
track (Open3D's "singular 6x6" RuntimeError, too few inliers, or an implausible jump) raises
``TrackingFailure``; the caller keeps the map and the last good pose and the next frame is tracked
against the same ray-cast, so tracking resumes once the view overlaps the map again.

Predicted depth is not a sensor: its per-frame scale wobbles. ``scale_ratio`` estimates the factor that
maps a depth image onto the depth rendered from the map (robust median over overlapping pixels), which
the bridge applies before tracking and again after it.
"""
from __future__ import annotations

import re

import numpy as np
import open3d as o3d
import open3d.core as o3c

from mapping import MappingError
from mapping.pose_refine import rotation_angle_deg

o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)

_CPU = o3c.Device("CPU:0")
BLOCK_RESOLUTION = 16  # voxels per TSDF block edge
ODOMETRY_METHODS = {
    "point_to_plane": o3d.t.pipelines.odometry.Method.PointToPlane,
    "hybrid": o3d.t.pipelines.odometry.Method.Hybrid,
    "intensity": o3d.t.pipelines.odometry.Method.Intensity,
}


class TrackingFailure(MappingError, RuntimeError):
    """Tracking could not estimate this frame's pose (one-line reason)."""


def scale_ratio(depth: np.ndarray, rendered: np.ndarray, min_pixels: int = 500,
                inlier_band: float = 0.1) -> float | None:
    """Robust factor s with ``s * depth ~= rendered`` over pixels valid in both (None if too few).

    The median of per-pixel ratios, then the median again over ratios within ``inlier_band`` of it
    (pixels on newly seen or occluding surfaces disagree with the render and drop out)."""
    valid = (depth > 0) & (rendered > 0)
    if valid.sum() < min_pixels:
        return None
    ratios = rendered[valid] / depth[valid]
    med = float(np.median(ratios))
    inliers = ratios[np.abs(ratios / med - 1.0) < inlier_band]
    if len(inliers) < min_pixels:
        return None
    return float(np.median(inliers))


def _backproject(depth: np.ndarray, K: np.ndarray, us: np.ndarray, vs: np.ndarray) -> np.ndarray:
    z = depth[vs, us].astype(np.float64)
    return np.stack([(us - K[0, 2]) / K[0, 0] * z, (vs - K[1, 2]) / K[1, 1] * z, z], -1)


def _normal_map(vertex: np.ndarray, valid: np.ndarray, max_jump: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals (float32) from central differences of an (H,W,3) vertex map, facing the camera."""
    v = vertex.astype(np.float32)
    dx = v[1:-1, 2:] - v[1:-1, :-2]
    dy = v[2:, 1:-1] - v[:-2, 1:-1]
    (ax, ay, az), (bx, by, bz) = np.moveaxis(dx, -1, 0), np.moveaxis(dy, -1, 0)
    n = np.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], -1)  # dx x dy
    norm = np.sqrt(np.einsum("...i,...i->...", n, n))
    ok = valid[1:-1, 2:] & valid[1:-1, :-2] & valid[2:, 1:-1] & valid[:-2, 1:-1] & valid[1:-1, 1:-1]
    ok &= (np.abs(az) < max_jump) & (np.abs(bz) < max_jump) & (norm > 1e-12)
    n /= np.maximum(norm, 1e-12)[..., None]
    n[np.einsum("...i,...i->...", n, v[1:-1, 1:-1]) > 0] *= -1
    normals = np.zeros_like(v)
    normals[1:-1, 1:-1] = n
    mask = np.zeros(valid.shape, bool)
    mask[1:-1, 1:-1] = ok
    return normals, mask


def smooth_depth(depth: np.ndarray, size: int, max_step: float = 0.05) -> np.ndarray:
    """Box filter over valid pixels; pixels near a depth step (or invalid) become 0."""
    from scipy.ndimage import maximum_filter, minimum_filter, uniform_filter

    valid = depth > 0
    d = np.where(valid, depth, 0).astype(np.float64)
    den = uniform_filter(valid.astype(np.float64), size)
    out = uniform_filter(d, size) / np.maximum(den, 1e-9)
    spread = maximum_filter(d, size) - minimum_filter(np.where(valid, d, np.inf), size)
    keep = valid & (den > 0.99) & (spread < max_step * np.maximum(d, 1e-3))
    return np.where(keep, out, 0).astype(np.float32)


def refine_pose_and_scale(depth: np.ndarray, rendered: np.ndarray, K: np.ndarray, init: np.ndarray | None = None,
                          stride: int = 4, iterations: int = 10, huber: float = 0.01, gate: float = 0.05,
                          scale_prior: float = 1e-2, smooth: int = 5) -> tuple[np.ndarray, float] | None:
    """Projective point-to-plane alignment with a scale (7 DoF) of ``depth`` to the ``rendered`` map view.

    Returns (delta, s): the input camera's pose in the render camera's frame (4x4) and the factor for
    ``depth``, or None when too few correspondences. Solving scale with the pose removes the ambiguity
    between a depth-scale error and motion along the view axis that a separate scale step leaves in
    the pose (Gauss-Newton on ``n . (s R p + t - v)``, Huber weights; a weak prior keeps s where the
    geometry cannot tell them apart, e.g. a single wall; 1e-2 rather than 1e-3 cut the ATE spread over six
    generated 40-frame runs with 3 % scale error + 1 % pixel noise from 1.1-4.6x to 0.8-1.6x exact depth)."""
    from scipy.spatial.transform import Rotation

    # Per-pixel depth noise both tilts the reference normals and, as noise in the fitted points, biases
    # the scale towards 0 (errors in variables): fit box-filtered depths.
    depth, rendered = smooth_depth(depth, smooth), smooth_depth(rendered, smooth)
    h, w = depth.shape
    target_valid = rendered > 0
    vv, uu = np.mgrid[0:h, 0:w]
    vertex = _backproject(rendered, K, uu, vv)
    normals, normal_ok = _normal_map(vertex, target_valid)
    vs, us = np.mgrid[stride // 2:h:stride, stride // 2:w:stride]
    vs, us = vs.ravel(), us.ravel()
    keep = depth[vs, us] > 0
    points = _backproject(depth, K, us[keep], vs[keep])
    if len(points) < 200:
        return None
    init = np.eye(4) if init is None else init
    rot, trans, log_s = init[:3, :3].copy(), init[:3, 3].copy(), 0.0
    for _ in range(iterations):
        q = np.exp(log_s) * points @ rot.T + trans
        z = q[:, 2]
        ok = z > 1e-3
        u = np.full(len(q), -1, np.int64)
        v = np.full(len(q), -1, np.int64)
        u[ok] = np.round(q[ok, 0] / z[ok] * K[0, 0] + K[0, 2]).astype(np.int64)
        v[ok] = np.round(q[ok, 1] / z[ok] * K[1, 1] + K[1, 2]).astype(np.int64)
        ok &= (u >= 0) & (u < w) & (v >= 0) & (v < h)
        ok[ok] &= normal_ok[v[ok], u[ok]]
        if ok.sum() < 200:
            return None
        qo, n, tgt = q[ok], normals[v[ok], u[ok]], vertex[v[ok], u[ok]]
        e = np.sum(n * (qo - tgt), 1)
        inl = np.abs(e) < gate
        qo, n, e = qo[inl], n[inl], e[inl]
        if len(e) < 200:
            return None
        J = np.column_stack([np.cross(qo, n), n, np.sum(n * (qo - trans), 1)])
        wgt = np.minimum(1.0, huber / np.maximum(np.abs(e), 1e-12))
        H = (J * wgt[:, None]).T @ J
        g = (J * wgt[:, None]).T @ e
        lam = scale_prior * np.trace(H)
        H[6, 6] += lam
        g[6] += lam * log_s
        x = -np.linalg.solve(H, g)
        dR = Rotation.from_rotvec(x[:3]).as_matrix()
        log_s += x[6]
        rot, trans = dR @ rot, dR @ trans + x[3:6]
        if np.linalg.norm(x) < 1e-6:
            break
    delta = np.eye(4)
    delta[:3, :3], delta[:3, 3] = rot, trans
    return delta, float(np.exp(log_s))


def _reserve_ray_cast_fragments(model, K: np.ndarray, size: tuple[int, int], voxel_size: float,
                                depth_max: float) -> None:
    """Size the fragment buffer of the model's ray caster once, for every block a view can hold.

    Open3D 0.20's ``EstimateRange`` (VoxelBlockGridImpl.h) keeps one fragment buffer per voxel grid,
    sized on first use from that cast's range map, ``(h/8)(w/8)/256/voxel_size`` entries: 200 for
    240x320 at 2 cm, where a room view needs 200-300. A cast that needs more leaves part of its range map
    empty ("Could not generate full range map": holes in the rendered depth), and Open3D then grows the
    buffer, a few entries at a time. Runs that went through these reallocations crashed now and then
    (2 of 12 runs of the tracking tests; under gdb, in the range-map update of ``EstimateRange``,
    at an address far outside the map); with the buffer sized here, none of 200 runs did.
    One cast with a range-map factor of 1 on an empty view, made before any other, sizes the buffer
    from its own image: at least 65,536 entries (earlier Open3D versions had a fixed 65,535) and at
    least twice the number of TSDF blocks that fit in the viewing frustum up to ``depth_max``."""
    h, w = size
    block = BLOCK_RESOLUTION * voxel_size
    frustum_volume = depth_max ** 3 * (w / K[0, 0]) * (h / K[1, 1]) / 3.0
    fragments = max(65536, int(2 * frustum_volume / block ** 3))
    side = int(np.ceil(np.sqrt(fragments * 256 * voxel_size)))  # buffer = side^2 / 256 / voxel_size
    intrinsic = o3c.Tensor(np.array([[side, 0, side / 2], [0, side, side / 2], [0, 0, 1]], np.float64))
    behind_camera = o3c.Tensor(np.array([[0, 0, -2]], np.int32))  # a block no ray can reach
    model.voxel_grid.ray_cast(behind_camera, intrinsic, o3c.Tensor(np.eye(4)), side, side, ["depth"],
                              1.0, 0.1, depth_max, 1.0, 8.0, 1)


class Tracker:
    """One TSDF model plus its input and ray-cast frames, for images of a fixed size and intrinsics."""

    def __init__(self, K: np.ndarray, size: tuple[int, int], initial_pose: np.ndarray, config):
        self.config = config
        self.height, self.width = size
        self.K = np.asarray(K, np.float64)
        self.voxel_size = config.resolve_voxel_size(self.width)
        self.model = o3d.t.pipelines.slam.Model(self.voxel_size, BLOCK_RESOLUTION, config.block_count,
                                                o3c.Tensor(np.asarray(initial_pose, np.float64)), _CPU)
        # Open3D 0.20's TSDF integration truncates a voxel's projection to a pixel index (``ui = int(u)``
        # in VoxelBlockGridImpl.h, IntegrateCPU), so each voxel reads the depth of a pixel up to one pixel
        # up-left of it: the map comes out rotated by ~0.1 deg against every view (measured: 0.13-0.16 deg
        # between a frame and the map rendered at its own pose; 0.02-0.05 deg with this fix). Moving the
        # principal point of the frame used for integration by half a pixel turns that into rounding.
        # Tracking uses only the ray-cast frame's intrinsics (Model::TrackFrameToModel).
        integration_K = self.K.copy()
        integration_K[:2, 2] += 0.5
        self.input = o3d.t.pipelines.slam.Frame(self.height, self.width, o3c.Tensor(integration_K), _CPU)
        self.raycast = o3d.t.pipelines.slam.Frame(self.height, self.width, o3c.Tensor(self.K), _CPU)
        _reserve_ray_cast_fragments(self.model, self.K, size, self.voxel_size, config.depth_max)
        self.criteria = [o3d.t.pipelines.odometry.OdometryConvergenceCriteria(n) for n in config.odometry_iterations]
        self._frame_id = 0
        self.integrated_frames = 0
        self.raycast_valid = False

    def set_input(self, depth: np.ndarray, rgb: np.ndarray) -> None:
        self.input.set_data_from_image("depth", o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(depth))))
        rgbf = np.ascontiguousarray(rgb, dtype=np.float32) * np.float32(1.0 / 255.0)
        self.input.set_data_from_image("color", o3d.t.geometry.Image(o3c.Tensor(rgbf)))

    def rendered_depth(self) -> np.ndarray:
        """Depth (metres, 0 = no surface) of the latest ray-cast."""
        return self.raycast.get_data_as_image("depth").as_tensor().numpy()[..., 0]

    def track(self) -> tuple[np.ndarray, float]:
        """Pose change from the ray-cast view to the input frame (4x4) and the odometry fitness."""
        cfg = self.config
        if not self.raycast_valid:
            raise TrackingFailure("the map has no surface to track against yet")
        try:
            method = ODOMETRY_METHODS[cfg.dense_method]
            result = self.model.track_frame_to_model(self.input, self.raycast, 1.0, cfg.depth_max,
                                                     cfg.depth_diff, method, self.criteria)
        except RuntimeError as exc:  # e.g. "Singular 6x6 linear system detected, tracking failed."
            text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
            reason = text.splitlines()[0] if text else type(exc).__name__
            reason = re.sub(r"^\[Open3D Error\] \(.*?\) \S+:\d+: ", "", reason)
            raise TrackingFailure(f"odometry failed: {reason}") from None
        delta = result.transformation.numpy()
        fitness = float(result.fitness)
        if not np.all(np.isfinite(delta)):
            raise TrackingFailure("odometry returned a non-finite pose")
        if fitness < cfg.min_fitness:
            raise TrackingFailure(f"too few inliers (fitness {fitness:.4f} < {cfg.min_fitness})")
        jump = float(np.linalg.norm(delta[:3, 3]))
        angle = rotation_angle_deg(delta[:3, :3])
        if jump > cfg.max_jump_m or angle > cfg.max_jump_deg:
            raise TrackingFailure(f"implausible jump ({jump:.2f} m, {angle:.0f} deg in one frame)")
        return delta, fitness

    def integrate(self, pose: np.ndarray) -> None:
        self.model.update_frame_pose(self._frame_id, o3c.Tensor(np.asarray(pose, np.float64)))
        self.model.integrate(self.input, 1.0, self.config.depth_max, self.config.trunc_voxel_multiplier)
        self._frame_id += 1
        self.integrated_frames += 1

    def synthesize(self, pose: np.ndarray) -> None:
        """Ray-cast the map's depth (and normals/vertices used by tracking) at ``pose``."""
        cfg = self.config
        # Open3D 0.20's ray caster looks a sample point's voxel up by flooring (RayCastCPU), i.e. reads
        # the TSDF half a voxel off the integrator's voxel positions on average (measured: rendered
        # surfaces sit at p + voxel/2 * (1,1,1)); casting from a camera moved by the same offset turns the
        # look-up into nearest-voxel and renders the surfaces where they were measured.
        shifted = np.array(pose, np.float64)
        shifted[:3, 3] += 0.5 * self.voxel_size
        self.model.update_frame_pose(self._frame_id, o3c.Tensor(shifted))
        self.model.synthesize_model_frame(self.raycast, 1.0, cfg.depth_min, cfg.depth_max,
                                          cfg.trunc_voxel_multiplier, cfg.dense_method != "point_to_plane")
        self.raycast_valid = self.integrated_frames > 0

    def extract_mesh(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(vertices (V,3) float64, triangles (T,3) int32, colours (V,3) uint8) of the TSDF's zero surface."""
        try:
            mesh = self.model.extract_trianglemesh(self.config.weight_threshold)
        except RuntimeError:  # empty map
            return np.zeros((0, 3)), np.zeros((0, 3), np.int32), np.zeros((0, 3), np.uint8)
        if "positions" not in mesh.vertex or mesh.vertex.positions.shape[0] == 0:
            return np.zeros((0, 3)), np.zeros((0, 3), np.int32), np.zeros((0, 3), np.uint8)
        vertices = mesh.vertex.positions.numpy().astype(np.float64)
        triangles = mesh.triangle.indices.numpy().astype(np.int32)
        colors = _to_uint8(mesh.vertex.colors.numpy()) if "colors" in mesh.vertex else \
            np.full((len(vertices), 3), 180, np.uint8)
        return vertices, triangles, colors

    def extract_points(self) -> tuple[np.ndarray, np.ndarray]:
        try:
            pcd = self.model.extract_pointcloud(self.config.weight_threshold)
        except RuntimeError:
            return np.zeros((0, 3)), np.zeros((0, 3), np.uint8)
        if "positions" not in pcd.point or pcd.point.positions.shape[0] == 0:
            return np.zeros((0, 3)), np.zeros((0, 3), np.uint8)
        points = pcd.point.positions.numpy().astype(np.float64)
        colors = _to_uint8(pcd.point.colors.numpy()) if "colors" in pcd.point else \
            np.full((len(points), 3), 180, np.uint8)
        return points, colors


def _to_uint8(colors: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(colors, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
