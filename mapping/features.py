"""Sparse visual front end: Shi-Tomasi corners tracked frame to frame with pyramidal KLT (OpenCV).

Corners: J. Shi and C. Tomasi, "Good Features to Track", CVPR 1994 (``cv2.goodFeaturesToTrack``).
Tracking: J.-Y. Bouguet's pyramidal Lucas-Kanade (``cv2.calcOpticalFlowPyrLK``); a track survives only if
tracking it back from the new image lands within ``fb_max_px`` of where it started (the forward-backward
check of Kalal et al., "Forward-Backward Error", ICPR 2010). Geometric outliers are removed later by
PnP-RANSAC in ``mapping.odometry``. numpy + OpenCV only.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class FeatureConfig:
    max_features: int = 300  # corners kept per image (new ones fill the gaps between live tracks)
    quality: float = 0.001  # Shi-Tomasi quality level, relative to the strongest corner
    min_distance_px: float = 6.0  # at 320 px width; scaled with the image width
    klt_window: int = 21
    klt_levels: int = 3
    fb_max_px: float = 0.5  # forward-backward disagreement above which a track is dropped
    border_px: int = 8  # corners this close to the border are not used
    blur_sigma: float = 1.5  # px at 320 px width
    min_isotropy: float = 0.02  # smaller/larger structure-tensor eigenvalue: below it a "corner" is an edge


def to_gray(rgb: np.ndarray, blur_sigma: float) -> np.ndarray:
    """Grey image, Gaussian-blurred: the blur turns the stair steps of aliased edges (which crawl along the
    edge as the camera moves and would pass as corners) into straight edges, and lowers pixel noise."""
    gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    return cv2.GaussianBlur(gray, (0, 0), blur_sigma) if blur_sigma > 0 else gray


def detect(gray: np.ndarray, cfg: FeatureConfig, existing: np.ndarray | None = None,
           mask: np.ndarray | None = None, count: int | None = None) -> np.ndarray:
    """(M,2) float32 corners, at least ``min_distance`` away from the ``existing`` (N,2) points."""
    h, w = gray.shape
    scale = w / 320.0
    min_dist = cfg.min_distance_px * scale
    m = np.zeros((h, w), np.uint8)
    b = int(cfg.border_px * scale)
    m[b:h - b, b:w - b] = 255
    if mask is not None:
        m[~mask] = 0
    if existing is not None and len(existing):
        for x, y in np.round(existing).astype(int):
            cv2.circle(m, (int(x), int(y)), int(min_dist), 0, -1)
    n = cfg.max_features if count is None else count
    if n <= 0:
        return np.zeros((0, 2), np.float32)
    pts = cv2.goodFeaturesToTrack(gray, n, cfg.quality, min_dist, mask=m, blockSize=3)
    if pts is None:
        return np.zeros((0, 2), np.float32)
    pts = pts.reshape(-1, 2)
    # An edge point passes a low Shi-Tomasi threshold but KLT slides it along the edge (aperture problem),
    # consistently both ways, so the forward-backward check does not catch it: keep isotropic corners only.
    eig = cv2.cornerEigenValsAndVecs(gray, 5, 3)[..., :2]
    ij = np.round(pts).astype(int)
    l1, l2 = eig[ij[:, 1], ij[:, 0]].T
    pts = pts[np.minimum(l1, l2) > cfg.min_isotropy * np.maximum(l1, l2)]
    if not len(pts):
        return np.zeros((0, 2), np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.01)
    pts = cv2.cornerSubPix(gray, pts.reshape(-1, 1, 2).astype(np.float32), (3, 3), (-1, -1), criteria)
    return pts.reshape(-1, 2).astype(np.float32)


def depth_edges(depth: np.ndarray, radius: int, rel_jump: float = 0.03) -> np.ndarray:
    """(H,W) bool: pixels within ``radius`` of a depth step larger than ``rel_jump`` of the depth, or of a
    hole. A corner there is an occlusion boundary (a T-junction of two surfaces) whose depth is ambiguous
    and whose image position is not a fixed 3D point. A 5x5 median first keeps pixel noise from passing
    as steps."""
    k = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    d = cv2.medianBlur(depth.astype(np.float32), 5)
    hi = cv2.dilate(d, k)
    lo = cv2.erode(np.where(d > 0, d, np.float32(1e6)), k)
    return (hi - lo > rel_jump * np.maximum(lo, 1e-3)) | (lo >= 1e6) | (d <= 0)


def track(prev: np.ndarray, cur: np.ndarray, pts: np.ndarray, cfg: FeatureConfig,
          guess: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """KLT from ``prev`` to ``cur`` with the forward-backward check: (new points (N,2), ok mask (N,)).

    ``guess`` (N,2), e.g. the points projected at a predicted pose, starts the search there."""
    if len(pts) == 0:
        return np.zeros((0, 2), np.float32), np.zeros(0, bool)
    p0 = pts.reshape(-1, 1, 2).astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)
    kw = dict(winSize=(cfg.klt_window, cfg.klt_window), maxLevel=cfg.klt_levels, criteria=criteria)
    if guess is not None:
        p1 = guess.reshape(-1, 1, 2).astype(np.float32).copy()
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(prev, cur, p0, p1, flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **kw)
    else:
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(prev, cur, p0, None, **kw)
    p0b, st2, _ = cv2.calcOpticalFlowPyrLK(cur, prev, p1, p0.copy(), flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **kw)
    fb = np.linalg.norm((p0b - p0).reshape(-1, 2), axis=1)
    new = p1.reshape(-1, 2)
    h, w = cur.shape
    inside = (new[:, 0] >= 0) & (new[:, 0] < w - 1) & (new[:, 1] >= 0) & (new[:, 1] < h - 1)
    ok = st1.ravel().astype(bool) & st2.ravel().astype(bool) & (fb < cfg.fb_max_px) & inside
    return new, ok


def strong_corners(gray: np.ndarray, depth: np.ndarray, cfg: FeatureConfig, edge_px: int, min_eigen: float) -> int:
    """How many of ``detect``'s corners (away from depth steps wider than ``edge_px``) have a smaller
    structure-tensor eigenvalue above ``min_eigen``: bare walls' shading noise passes Shi-Tomasi's relative
    threshold but not this absolute one."""
    pts = detect(gray, cfg, mask=~depth_edges(depth, edge_px))
    if not len(pts):
        return 0
    eig = cv2.cornerMinEigenVal(gray, 5, 3)
    ij = np.round(pts).astype(int)
    return int((eig[ij[:, 1], ij[:, 0]] > min_eigen).sum())
