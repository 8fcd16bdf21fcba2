"""Pose geometry for the trackers: the distance between two poses (odometry gate, dense fallback, tracking checks),
landmarks projected into a pinhole camera, depth read at pixels, and a camera pose refined over Huber-weighted reprojection and range residuals with the landmarks held fixed (Gauss-Newton on
the right perturbation xi = (omega, v), IRLS weights; the Jacobians of a pinhole projection as in Barfoot,
"State Estimation for Robotics", sec. 7.3). numpy and OpenCV only."""
from __future__ import annotations

import cv2
import numpy as np


def project(K: np.ndarray, pts_w: np.ndarray, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (N,2) and depths (N,) of world points in the camera at ``pose`` (camera to world)."""
    cam = (pts_w - pose[:3, 3]) @ pose[:3, :3]
    z = cam[:, 2]
    uv = cam[:, :2] / np.maximum(z, 1e-6)[:, None] * [K[0, 0], K[1, 1]] + K[:2, 2]
    return uv, z


def rotation_angle_deg(rot: np.ndarray) -> float:
    """The angle (degrees) of a 3x3 rotation."""
    return float(np.degrees(np.arccos(np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0))))


def pose_gap(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(metres, degrees) between two camera-to-world poses."""
    return float(np.linalg.norm(a[:3, 3] - b[:3, 3])), rotation_angle_deg((np.linalg.inv(a) @ b)[:3, :3])


def depth_at(depth: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """``depth`` (H,W) at the nearest pixel of each of ``uv`` (clipped to the image), as float64."""
    h, w = depth.shape[:2]
    u = np.clip(np.round(uv[:, 0]).astype(int), 0, w - 1)
    v = np.clip(np.round(uv[:, 1]).astype(int), 0, h - 1)
    return depth[v, u].astype(np.float64)


def refine_pose(K: np.ndarray, pose: np.ndarray, pts_w: np.ndarray, uv: np.ndarray, rng: np.ndarray | None,
                sigma: np.ndarray | None, pixel_sigma: float, huber_k: float, iterations: int = 5) -> np.ndarray:
    """The camera pose that best explains ``uv`` (reprojections, sigma ``pixel_sigma`` px) and, where ``rng`` > 0,
    the ranges from the camera centre to ``pts_w`` (sigma ``sigma``); Huber threshold ``huber_k``."""
    fx, fy = K[0, 0], K[1, 1]
    use_rng = None if rng is None else rng > 0
    for _ in range(iterations):
        pc = (pts_w - pose[:3, 3]) @ pose[:3, :3]
        x, y, z = pc.T
        z = np.maximum(z, 1e-6)
        du = np.stack([fx / z, np.zeros_like(z), -fx * x / z ** 2], 1)
        dv = np.stack([np.zeros_like(z), fy / z, -fy * y / z ** 2], 1)
        skew = np.zeros((len(pc), 3, 3))  # d pc / d omega = [pc]_x ; d pc / d v = -I
        skew[:, 0, 1], skew[:, 0, 2], skew[:, 1, 2] = -pc[:, 2], pc[:, 1], -pc[:, 0]
        skew[:, 1, 0], skew[:, 2, 0], skew[:, 2, 1] = pc[:, 2], -pc[:, 1], pc[:, 0]
        dpc = np.concatenate([skew, -np.broadcast_to(np.eye(3), skew.shape)], 2)  # (N,3,6)
        res = [np.concatenate([(fx * x / z + K[0, 2] - uv[:, 0]), (fy * y / z + K[1, 2] - uv[:, 1])]) / pixel_sigma]
        jac = [np.concatenate([np.einsum("ni,nij->nj", du, dpc), np.einsum("ni,nij->nj", dv, dpc)]) / pixel_sigma]
        if use_rng is not None and use_rng.any():
            r = np.linalg.norm(pc[use_rng], axis=1)
            res.append((r - rng[use_rng]) / sigma[use_rng])
            jac.append(np.einsum("ni,nij->nj", pc[use_rng] / r[:, None], dpc[use_rng]) / sigma[use_rng, None])
        res, jac = np.concatenate(res), np.concatenate(jac)
        a = np.abs(res)
        w = np.where(a <= huber_k, 1.0, huber_k / np.maximum(a, 1e-12))  # Huber weights (IRLS)
        H = jac.T @ (jac * w[:, None])
        g = jac.T @ (w * res)
        xi = -np.linalg.solve(H + 1e-9 * np.eye(6), g)
        step = np.eye(4)
        step[:3, :3], _ = cv2.Rodrigues(xi[:3])
        step[:3, 3] = xi[3:]
        pose = pose @ step
        if np.abs(xi).max() < 1e-7:
            break
    return pose
