"""Keyframe pose graph in GTSAM: odometry edges, loop-closure edges, robust optimisation, g2o export.

Hydra (Hughes et al., RSS 2022) and Kimera-PGMO optimise their loop closures with graduated non-convexity
(GNC, Yang et al., RA-L 2020), so that a wrong loop is switched off instead of bending the map. Here that is
``gtsam.GncLMOptimizer`` with the truncated-least-squares loss; the prior and the odometry edges are declared
known inliers, so GNC decides about loop edges only. A loop whose final GNC weight is below 0.5 is reported as
rejected. Poses are camera-to-world 4x4 matrices; keyframe k is the GTSAM key ``X(k)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gtsam
import numpy as np
from gtsam.symbol_shorthand import X


@dataclass(frozen=True)
class PoseGraphConfig:
    # Odometry edge noise per keyframe step. A keyframe step is ~0.1-0.3 m and odometry on network depth
    # drifts 16-46 cm and 3-8 deg a second (assets/MODEL_CARD.md), i.e. up to ~2 cm and ~1 deg a keyframe:
    # sigmas of that size let GNC admit a correct loop after a long drift.
    odom_sigma_m: float = 0.02
    odom_sigma_deg: float = 1.0
    # Loop edge noise: a PnP fit with >= 30 inliers at 320 px is good to about 2 cm / 1 deg.
    loop_sigma_m: float = 0.02
    loop_sigma_deg: float = 1.0
    # GNC: probability of the chi^2 (6 DoF) inlier threshold (GTSAM's default is 0.99).
    gnc_inlier_probability: float = 0.99


@dataclass(frozen=True)
class LoopEdge:
    i: int  # older keyframe
    j: int  # newer keyframe
    i_T_j: np.ndarray  # pose of keyframe j in keyframe i's camera frame (4x4)
    inliers: int = 0  # verification inliers (for reports)
    disagreement_deg: float = 0.0  # verification: rotation between the forward and backward PnP poses (for reports)


def _noise(sigma_m: float, sigma_deg: float) -> gtsam.noiseModel.Diagonal:
    r = np.radians(sigma_deg)
    return gtsam.noiseModel.Diagonal.Sigmas(np.array([r, r, r, sigma_m, sigma_m, sigma_m]))  # Pose3: (rot, trans)


class PoseGraph:
    """Keyframes in order, each linked to the previous by its odometry; loop edges between any two."""

    def __init__(self, config: PoseGraphConfig | None = None):
        self.config = config or PoseGraphConfig()
        self.odometry: list[np.ndarray] = []  # keyframe poses as the odometry estimated them
        self.loops: list[LoopEdge] = []
        self.optimized: list[np.ndarray] = []  # after the last optimize(); odometry poses before it
        self.accepted: list[bool] = []  # per loop, after the last optimize()

    def __len__(self) -> int:
        return len(self.odometry)

    def add_keyframe(self, pose: np.ndarray) -> int:
        """Append a keyframe at its odometry pose; returns its index. Later keyframes are placed relative to the
        latest optimised pose, so the map keeps its corrections while odometry continues."""
        pose = np.asarray(pose, np.float64)
        self.odometry.append(pose.copy())
        if len(self.optimized) == 0:
            self.optimized.append(pose.copy())
        else:
            prev_odom, prev_opt = self.odometry[-2], self.optimized[-1]
            self.optimized.append(prev_opt @ np.linalg.inv(prev_odom) @ pose)
        return len(self.odometry) - 1

    def add_loop(self, edge: LoopEdge) -> None:
        n = len(self.odometry)
        if not (0 <= edge.i < n and 0 <= edge.j < n) or edge.i == edge.j:
            raise ValueError(f"loop edge ({edge.i}, {edge.j}) needs two different keyframes of 0..{n - 1}")
        self.loops.append(edge)

    def correction(self, k: int) -> np.ndarray:
        """World-to-world transform that moves keyframe k from its odometry pose to its optimised pose."""
        return self.optimized[k] @ np.linalg.inv(self.odometry[k])

    # ------------------------------------------------------------------ graph
    def factor_graph(self) -> tuple[gtsam.NonlinearFactorGraph, gtsam.Values, list[int]]:
        """(graph, initial values, indices of the loop factors). Factor 0 is the prior on keyframe 0."""
        cfg = self.config
        graph, values = gtsam.NonlinearFactorGraph(), gtsam.Values()
        if not self.odometry:
            return graph, values, []
        graph.add(gtsam.PriorFactorPose3(X(0), gtsam.Pose3(self.odometry[0]), _noise(1e-4, 1e-3)))
        odom_noise = _noise(cfg.odom_sigma_m, cfg.odom_sigma_deg)
        for k in range(1, len(self.odometry)):
            rel = np.linalg.inv(self.odometry[k - 1]) @ self.odometry[k]
            graph.add(gtsam.BetweenFactorPose3(X(k - 1), X(k), gtsam.Pose3(rel), odom_noise))
        loop_noise = _noise(cfg.loop_sigma_m, cfg.loop_sigma_deg)
        loop_idx = []
        for e in self.loops:
            loop_idx.append(graph.size())
            graph.add(gtsam.BetweenFactorPose3(X(e.i), X(e.j), gtsam.Pose3(e.i_T_j), loop_noise))
        for k, pose in enumerate(self.optimized):
            values.insert(X(k), gtsam.Pose3(pose))
        return graph, values, loop_idx

    def optimize(self) -> list[np.ndarray]:
        """Robust (GNC-TLS) optimisation over all keyframes; returns and keeps the optimised poses."""
        graph, values, loop_idx = self.factor_graph()
        if not self.loops:
            self.optimized = [p.copy() for p in self.odometry]
            self.accepted = []
            return self.optimized
        params = gtsam.GncLMParams()
        params.setLossType(gtsam.GncLossType.TLS)
        params.setKnownInliers([i for i in range(graph.size()) if i not in set(loop_idx)])
        opt = gtsam.GncLMOptimizer(graph, values, params)
        opt.setInlierCostThresholdsAtProbability(self.config.gnc_inlier_probability)
        result = opt.optimize()
        weights = np.asarray(opt.getWeights())
        self.accepted = [bool(weights[i] > 0.5) for i in loop_idx]
        self.optimized = [result.atPose3(X(k)).matrix() for k in range(len(self.odometry))]
        return self.optimized

    def write_g2o(self, path: str | Path, batch=None) -> Path:
        """The graph (odometry and accepted loop edges) at its optimised poses in g2o's text format
        (``VERTEX_SE3:QUAT`` / ``EDGE_SE3:QUAT``), written atomically (into ``batch``, a ``mapping.atomic.AtomicBatch``,
        when given); ``gtsam.readG2o(path, True)`` reads it."""
        from mapping.atomic import AtomicBatch

        graph, values, loop_idx = self.factor_graph()
        rejected = {i for i, ok in zip(loop_idx, self.accepted) if not ok}
        kept = gtsam.NonlinearFactorGraph()
        for i in range(1, graph.size()):  # g2o has no prior factor: vertex 0 is the fixed one by convention
            if i not in rejected:
                kept.add(graph.at(i))
        own = batch is None
        batch = AtomicBatch() if own else batch
        with batch.path(path) as tmp:
            gtsam.writeG2o(kept, values, str(tmp))
        if own:
            batch.commit()
        return Path(path)


def interpolate_frames(frame_poses: np.ndarray, frame_keyframe: np.ndarray, graph: PoseGraph) -> np.ndarray:
    """Corrected poses of every frame: frame f (odometry pose P_f, anchored to keyframe k = frame_keyframe[f], the
    latest keyframe at or before it) moves with its keyframe's correction. Frames before the first keyframe
    (index -1) are left as they are."""
    out = np.array(frame_poses, np.float64, copy=True)
    for f, k in enumerate(frame_keyframe):
        if 0 <= k < len(graph):
            out[f] = graph.correction(int(k)) @ out[f]
    return out
