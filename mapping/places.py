"""Place recognition over keyframes: an ORB bag of binary words, then PnP-RANSAC on the keyframe's 3D points.

Candidates: each keyframe's ORB descriptors (Rublee et al., ICCV 2011; ``cv2.ORB``) are quantised to the nearest
word (Hamming) of a flat vocabulary built from generated rooms (``assets/place_vocabulary.npz``, made by
``benchmarks/build_place_vocabulary.py``) and weighted by tf-idf. Two keyframes' L1-normalised vectors score
``1 - |v1 - v2|_1 / 2`` (DBoW2's L1 score, Galvez-Lopez and Tardos, T-RO 2012), and like DBoW2 a score counts
relative to the query's score against its own predecessor (the best a nearby view gets). Keyframes closer in
time than ``min_gap_keyframes`` are never candidates (they are odometry's business).

Verification: the query's ORB features are matched to the candidate's (Lowe ratio test), the candidate's
matched keypoints are lifted to 3D with its depth, and ``cv2.solvePnPRansac`` must find at least ``min_inliers``
inliers, in both directions (the query's points into the candidate's image too) with poses that agree, and the
query's own depth at the inliers must agree with the candidate's points moved into the query camera (median
relative error below ``max_depth_disagreement``). A fit on a few matches clustered on one object passes one
direction now and then with a pose 20-30 cm off; it does not pass both.
numpy + OpenCV only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mapping.pose_graph import LoopEdge

VOCABULARY = Path(__file__).resolve().parent.parent / "assets" / "place_vocabulary.npz"


@dataclass(frozen=True)
class PlaceConfig:
    orb_features: int = 800
    orb_fast_threshold: int = 10  # generated rooms' textures are soft: OpenCV's 20 finds too few corners
    orb_levels: int = 4  # 240x320 images: more levels are too small for 19 px patches
    orb_patch: int = 19
    edge_radius_px: int = 3  # corners within this of a depth step get no 3D point
    # A step: depth's second difference between neighbouring pixels above this fraction of the depth. A plane's is
    # ~2x the square of its relative first difference (about 1e-4 for a floor 3 m away), so oblique surfaces keep
    # their points; an edge's, even blurred over a few pixels by a network, is its jump over that width.
    max_depth_bend: float = 0.02
    min_gap_keyframes: int = 15  # candidates are at least this many keyframes older
    min_score: float = 0.05  # absolute floor of the BoW score
    min_relative_score: float = 0.3  # score / (score against the previous keyframe)
    max_candidates: int = 3  # verified per query, best score first
    ratio: float = 0.8  # Lowe's ratio test on Hamming distances
    min_inliers: int = 40  # 30 let through 25 cm-off fits on repeated furniture (validation room 200002)
    reprojection_px: float = 3.0  # at 320 px width; scaled with the image width
    max_depth_disagreement: float = 0.15  # median |d_query / d_predicted - 1| over the inliers
    max_disagreement_deg: float = 2.0  # between the forward and the backward PnP pose
    max_disagreement_rel: float = 0.05  # translation, relative to the scene's median distance


@dataclass
class PlaceKeyframe:
    index: int
    keypoints: np.ndarray  # (N,2) float32 pixels
    descriptors: np.ndarray  # (N,32) uint8
    points: np.ndarray  # (N,3) camera-frame points (NaN where no depth)
    bow: dict = field(default_factory=dict)  # word -> tf-idf weight (L1-normalised)


class Vocabulary:
    """A flat vocabulary of binary words with their inverse document frequencies."""

    def __init__(self, words: np.ndarray, idf: np.ndarray):
        self.words = np.ascontiguousarray(words, np.uint8)
        self.idf = np.asarray(idf, np.float64)
        self._matcher = cv2.BFMatcher(cv2.NORM_HAMMING)

    @classmethod
    def load(cls, path: str | Path = VOCABULARY) -> "Vocabulary":
        data = np.load(path)
        return cls(data["words"], data["idf"])

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, words=self.words, idf=self.idf)

    def quantize(self, descriptors: np.ndarray) -> np.ndarray:
        if len(descriptors) == 0:
            return np.zeros(0, np.int64)
        return np.array([m.trainIdx for m in self._matcher.match(descriptors, self.words)], np.int64)

    def vector(self, descriptors: np.ndarray) -> dict:
        words = self.quantize(descriptors)
        if len(words) == 0:
            return {}
        ids, counts = np.unique(words, return_counts=True)
        w = counts / len(words) * self.idf[ids]
        total = w.sum()
        return {} if total <= 0 else dict(zip(ids.tolist(), (w / total).tolist()))


def score(a: dict, b: dict) -> float:
    """DBoW2's L1 score of two L1-normalised vectors: 1 - |a - b|_1 / 2 = sum over shared words of
    (|a| + |b| - |a - b|) / 2."""
    if len(a) > len(b):
        a, b = b, a
    return float(sum(min(va, b[w]) for w, va in a.items() if w in b))


def orb(config: PlaceConfig, width: int) -> cv2.ORB:
    return cv2.ORB_create(nfeatures=config.orb_features, scaleFactor=1.2, nlevels=config.orb_levels,
                          edgeThreshold=config.orb_patch, patchSize=config.orb_patch,
                          fastThreshold=config.orb_fast_threshold)


def describe(gray: np.ndarray, config: PlaceConfig) -> tuple[np.ndarray, np.ndarray]:
    """(keypoints (N,2) float32, descriptors (N,32) uint8) of a grey image."""
    kps, desc = orb(config, gray.shape[1]).detectAndCompute(gray, None)
    if desc is None or not kps:
        return np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8)
    return np.array([k.pt for k in kps], np.float32), desc


class PlaceRecognizer:
    """Keyframe database: ``add`` each keyframe, ``query`` a new one for verified loop edges."""

    def __init__(self, K: np.ndarray, size: tuple[int, int], config: PlaceConfig | None = None,
                 vocabulary: Vocabulary | None = None):
        self.config = config or PlaceConfig()
        self.K = np.asarray(K, np.float64)
        self.height, self.width = size
        self.vocabulary = vocabulary or Vocabulary.load()
        self.keyframes: list[PlaceKeyframe] = []
        self._inverted: dict[int, list[int]] = {}  # word -> positions in self.keyframes
        self._matcher = cv2.BFMatcher(cv2.NORM_HAMMING)

    def describe(self, index: int, rgb: np.ndarray, depth: np.ndarray) -> PlaceKeyframe:
        gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
        px, desc = describe(gray, self.config)
        u = np.clip(np.round(px[:, 0]).astype(int), 0, self.width - 1)
        v = np.clip(np.round(px[:, 1]).astype(int), 0, self.height - 1)
        z = depth[v, u].astype(np.float64)
        # A corner on a depth edge (a T-junction of a foreground and a background edge) is no point in space:
        # it slides along the background as the view changes. Only corners on smooth depth get a 3D point.
        d = np.pad(np.where(depth > 0, depth, np.float32(1e3)).astype(np.float32), 1, mode="edge")
        bend = np.maximum(np.abs(d[1:-1, 2:] - 2 * d[1:-1, 1:-1] + d[1:-1, :-2]),
                          np.abs(d[2:, 1:-1] - 2 * d[1:-1, 1:-1] + d[:-2, 1:-1]))
        kernel = np.ones((2 * self.config.edge_radius_px + 1,) * 2, np.uint8)
        z[cv2.dilate(bend, kernel)[v, u] > self.config.max_depth_bend * np.maximum(z, 1e-3)] = 0
        pts = np.column_stack([(px[:, 0] - self.K[0, 2]) / self.K[0, 0] * z, (px[:, 1] - self.K[1, 2]) / self.K[1, 1] * z, z])
        pts[z <= 0] = np.nan
        return PlaceKeyframe(index, px, desc, pts, self.vocabulary.vector(desc))

    def add(self, kf: PlaceKeyframe) -> None:
        pos = len(self.keyframes)
        self.keyframes.append(kf)
        for w in kf.bow:
            self._inverted.setdefault(w, []).append(pos)

    def candidates(self, kf: PlaceKeyframe) -> list[tuple[float, PlaceKeyframe]]:
        """Older keyframes (by the gap) whose score passes both thresholds, best first."""
        cfg = self.config
        if not self.keyframes or not kf.bow:
            return []
        shared: set[int] = set()
        for w in kf.bow:
            shared.update(self._inverted.get(w, ()))
        reference = score(kf.bow, self.keyframes[-1].bow) if self.keyframes[-1].index < kf.index else 1.0
        floor = max(cfg.min_score, cfg.min_relative_score * reference)
        out = []
        for pos in shared:
            other = self.keyframes[pos]
            if kf.index - other.index < cfg.min_gap_keyframes:
                continue
            s = score(kf.bow, other.bow)
            if s >= floor:
                out.append((s, other))
        out.sort(key=lambda c: -c[0])
        return out[:cfg.max_candidates]

    def _pnp(self, obj: np.ndarray, px: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(camera-from-object 4x4, inlier indices) by EPnP-RANSAC then iterative refinement on the inliers."""
        cfg = self.config
        has = np.isfinite(obj).all(1)
        idx = np.flatnonzero(has)
        if len(idx) < cfg.min_inliers:
            return None
        ok, rvec, tvec, inl = cv2.solvePnPRansac(obj[idx], px[idx].astype(np.float64), self.K, None,
                                                 iterationsCount=200,
                                                 reprojectionError=cfg.reprojection_px * self.width / 320.0,
                                                 confidence=0.999, flags=cv2.SOLVEPNP_EPNP)
        if not ok or inl is None or len(inl) < cfg.min_inliers:
            return None
        inl = idx[inl.ravel()]
        ok, rvec, tvec = cv2.solvePnP(obj[inl], px[inl].astype(np.float64), self.K, None, rvec, tvec,
                                      useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = cv2.Rodrigues(rvec)[0], tvec.ravel()
        return T, inl

    def verify(self, kf: PlaceKeyframe, other: PlaceKeyframe, depth: np.ndarray) -> LoopEdge | None:
        """Loop edge (other -> kf) when PnP-RANSAC passes both ways (the candidate's 3D points into the query
        image and the query's into the candidate's), the two relative poses agree, and the query's depth agrees
        with the candidate's points moved into the query camera; else None."""
        cfg = self.config
        if len(kf.descriptors) < cfg.min_inliers or len(other.descriptors) < cfg.min_inliers:
            return None
        pairs = self._matcher.knnMatch(kf.descriptors, other.descriptors, k=2)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < cfg.ratio * p[1].distance]
        if len(good) < cfg.min_inliers:
            return None
        q = np.array([m.queryIdx for m in good], np.int64)
        t = np.array([m.trainIdx for m in good], np.int64)
        forward = self._pnp(other.points[t], kf.keypoints[q])
        if forward is None:
            return None
        q_T_o, inl = forward
        backward = self._pnp(kf.points[q], other.keypoints[t])
        if backward is None:
            return None
        diff = backward[0] @ q_T_o  # identity when both directions agree
        angle = np.degrees(np.arccos(np.clip((np.trace(diff[:3, :3]) - 1) / 2, -1, 1)))
        scale = max(np.median(np.linalg.norm(other.points[t[inl]], axis=1)), 0.5)
        if angle > cfg.max_disagreement_deg or np.linalg.norm(diff[:3, 3]) > cfg.max_disagreement_rel * scale:
            return None
        predicted = other.points[t[inl]] @ q_T_o[:3, :3].T + q_T_o[:3, 3]  # the candidate's points, query camera
        d = kf.points[q[inl], 2]
        valid = np.isfinite(d) & (predicted[:, 2] > 0)
        if valid.sum() < cfg.min_inliers // 2:
            return None
        if np.median(np.abs(d[valid] / predicted[valid, 2] - 1.0)) > cfg.max_depth_disagreement:
            return None
        return LoopEdge(other.index, kf.index, np.linalg.inv(q_T_o), int(len(inl)), float(angle))

    def query(self, kf: PlaceKeyframe, depth: np.ndarray) -> LoopEdge | None:
        """The best verified loop edge for a new keyframe (not yet added), or None."""
        best = None
        for _, other in self.candidates(kf):
            edge = self.verify(kf, other, depth)
            if edge is not None and (best is None or edge.inliers > best.inliers):
                best = edge
        return best
