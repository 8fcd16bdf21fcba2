"""A verified loop edge refined on the two keyframes' depth: point-to-plane ICP (Chen and Medioni 1992; Open3D's
``registration_icp``), coarse to fine, started at the PnP pose.

PnP measures the relative pose through the colour image's keypoints. Where colour and depth are not registered
exactly (7-Scenes' Kinect v1 frames), or a fit leans on a few matches, its rotation can be degrees off while every
check of the verification passes (benchmarks/RESULTS.md, "Loop closure: staged map correction"). ICP aligns the
whole depth surfaces instead. numpy + Open3D.
"""
from __future__ import annotations

import numpy as np
import open3d as o3d

VOXEL_M = 0.02  # point-cloud downsampling before ICP
SCALES_M = (0.08, 0.04, 0.02)  # correspondence distance per ICP round, coarse to fine
MIN_FITNESS = 0.2  # fraction of the moving cloud with a correspondence at the finest scale
# A loop is dropped when ICP moves its PnP pose further than this. Chosen on validation rooms 200000-200004
# (revisit walks, exact depth): the 51 PnP edges within 3.5 cm / 1.95 deg of the truth stay, the 4 at 6.8-10.7 cm
# (repeated furniture in room 200002) go, and ICP leaves every kept edge within 0.2 cm / 0.05 deg of the truth.
MAX_MOVE_M = 0.05
MAX_MOVE_DEG = 3.0


def _cloud(depth: np.ndarray, K: np.ndarray) -> o3d.geometry.PointCloud:
    v, u = np.nonzero(depth > 0)
    z = depth[v, u].astype(np.float64)
    pts = np.column_stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z])
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts)).voxel_down_sample(VOXEL_M)
    pc.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=3 * VOXEL_M, max_nn=30))
    return pc


def confirm(i_T_j: np.ndarray, depth_i: np.ndarray, K_i: np.ndarray, depth_j: np.ndarray,
            K_j: np.ndarray) -> np.ndarray | None:
    """The loop edge's pose refined by ``refine`` when the depth confirms it (enough overlap, and ICP moves the PnP
    pose by at most ``MAX_MOVE_M`` and ``MAX_MOVE_DEG``), else None: the loop is dropped."""
    out = refine(i_T_j, depth_i, K_i, depth_j, K_j)
    if out is None:
        return None
    move = np.linalg.inv(i_T_j) @ out[0]
    angle = np.degrees(np.arccos(np.clip((np.trace(move[:3, :3]) - 1) / 2, -1.0, 1.0)))
    if np.linalg.norm(move[:3, 3]) > MAX_MOVE_M or angle > MAX_MOVE_DEG:
        return None
    return out[0]


def refine(i_T_j: np.ndarray, depth_i: np.ndarray, K_i: np.ndarray, depth_j: np.ndarray,
           K_j: np.ndarray) -> tuple[np.ndarray, float] | None:
    """(refined pose of keyframe j in keyframe i's camera, ICP fitness), or None when the surfaces overlap too
    little to say (fitness below ``MIN_FITNESS``). Depths in metres (0 = none)."""
    target, source = _cloud(depth_i, K_i), _cloud(depth_j, K_j)
    if len(target.points) < 100 or len(source.points) < 100:
        return None
    T, result = np.asarray(i_T_j, np.float64), None
    for dist in SCALES_M:
        result = o3d.pipelines.registration.registration_icp(
            source, target, dist, T, o3d.pipelines.registration.TransformationEstimationPointToPlane(),
            o3d.pipelines.registration.ICPConvergenceCriteria(max_iteration=30))
        T = np.asarray(result.transformation)
    if result.fitness < MIN_FITNESS:
        return None
    return T, float(result.fitness)
