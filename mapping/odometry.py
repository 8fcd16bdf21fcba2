"""Keyframe visual(-inertial) odometry: KLT tracks, landmarks from the frame's depth, PnP-RANSAC per frame,
and a GTSAM ISAM2 smoother over keyframes (Mono-Hydra's split: the pose comes from sparse tracks and the
IMU; the dense depth only gives landmarks their metric depth and feeds the map).

Per frame: track the live landmarks' pixels with KLT (``mapping.features``), seeded at their projection
from the predicted pose; estimate the pose by PnP-RANSAC against the landmarks' current estimates. A
keyframe is taken when the tracks' parallax since the last keyframe or their survival calls for it. A
keyframe adds to the factor graph: its pose, Huber-robust reprojection factors of every inlier track,
new landmarks (corners in the gaps) back-projected from the depth with a depth prior on each, and, with
an IMU, a CombinedImuFactor from the previous keyframe (velocities and biases as states). ISAM2 then
refines every keyframe pose and landmark; frames between keyframes keep their PnP pose.

Depth priors: a landmark's depth prior is a range factor (camera centre to landmark) whose sigma
follows the depth's expected relative error ``depth_sigma_rel`` (for the network's depth the model card's
AbsRel, 0.096) divided by the network's confidence at that pixel. Equal relative error is equal
inverse-depth error (sigma(1/z) = sigma_rel / z), linearised into range space as sigma_rel * range.
A range prior is added at every keyframe that observes the landmark (with its depth there), so a
landmark's depth averages over views and the reprojections of several keyframes outvote one wrong depth.

Predicted depth's scale wobbles from frame to frame. With ``align_scale`` each frame's depth is first brought
onto the landmarks' scale (median ratio at the pose from the reprojections alone) before its ranges enter the
pose refinement and, at keyframes, the depth priors; the map keeps the first frame's scale, as the dense path
does (``mapping.bridge``). Otherwise a per-frame scale error would pull every pose along the view axis.

Tracking failure (too few tracks, PnP fails) is reported and survived: the pose is held, the next frames
are tracked again from the last keyframe's image (relocalisation against the keyframe), and after
``relocalise_frames`` failed frames a new keyframe is started at the held pose, tied to it by a weak prior.
numpy, OpenCV, GTSAM; no torch, no Qt.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import gtsam
import numpy as np
from gtsam.symbol_shorthand import B, L, V, X

from mapping.features import FeatureConfig, depth_edges, detect, strong_corners, to_gray, track
from mapping.pose_refine import depth_at, pose_gap, project, refine_pose

ODOMETRY_MODES = ("vo", "vio")


@dataclass(frozen=True)
class OdometryConfig:
    features: FeatureConfig = field(default_factory=FeatureConfig)
    pixel_sigma: float = 1.0  # reprojection noise (px)
    huber_k: float = 1.345  # Huber threshold in sigmas (95 % efficiency at Gaussian noise)
    depth_sigma_rel: float | None = None  # None: by depth source (see ``depth_sigma_for``)
    min_confidence: float = 0.3  # confidences below it count as this (the prior's sigma is divided by it)
    pnp_px: float = 1.0  # PnP-RANSAC inlier threshold at 320 px width
    min_pnp_inliers: int = 12
    keyframe_parallax_px: float = 12.0  # median track motion since the keyframe at 320 px width
    keyframe_survival: float = 0.7  # new keyframe when fewer of the keyframe's tracks survive
    keyframe_min_tracks: int = 30
    keyframe_max_gap: int = 10  # frames
    relocalise_frames: int = 5  # failed frames before a new start at the held pose
    # A PnP pose whose position is over gate_m from the IMU's own prediction (constant velocity without an IMU), or
    # whose rotation is over gate_deg from the last pose turned by the gyro, is refused as a lost frame: sliding
    # tracks on bare walls pass PnP-RANSAC but move the pose far from where the IMU says it is. Chosen on validation
    # rooms 200000/200017 (docs/design/odometry.md): tracked frames there differ by at most 7 cm / 1.5 deg, and
    # 10 cm / 3 deg refused frames the dense tracker then placed worse.
    gate_m: float = 0.20
    gate_deg: float = 5.0
    imu_carry_frames: int = 15  # lost frames whose pose the IMU carries (then it is held)
    # A restart needs this many corners whose smaller structure-tensor eigenvalue is over restart_min_eigen
    # (validation room 200017: 1-9 such corners in its lost bare-wall views, 13-32 in its first 100 frames).
    restart_min_corners: int = 10
    restart_min_eigen: float = 1e-5
    isam_relinearize: float = 0.01
    # ISAM2 relinearises every this-many updates (GTSAM's default, 10). Every update (1) made a keyframe cost grow
    # with the map: p95 1.2-2.0 s per frame after 100 keyframes, against 77 ms with 10 (exact depth, room 200001,
    # 300-450 frames); on validation rooms 200000-200004 (model's depth) 10 gave ATE mean 6.60 cm against 7.96.
    isam_relinearize_skip: int = 10
    # Keyframes per smoother: after this many, a new ISAM2 starts at the latest keyframe (its pose, velocity and bias
    # with their marginals as priors, the live landmarks with one-view priors), so a keyframe's cost stops growing.
    # GTSAM's IncrementalFixedLagSmoother (lag 30 keyframes) was tried first: marginalising landmarks fills its
    # tree in, and a keyframe's cost grew 18 -> 259 ms (median) from frame 150 to 450 (benchmarks/RESULTS.md).
    smoother_window: int = 40


def depth_sigma_for(depth_mode: str) -> float:
    """Relative depth error of each source: the bundled model's AbsRel on held-out rooms (0.096, MODEL_CARD),
    about 1-2 % for a structured-light/ToF sensor at room range (Khoshelham and Elberink, Sensors 2012:
    random error grows to about 1.5 % of depth at 3-4 m for Kinect v1), and a nominal 0.5 % for exact depth."""
    return {"pred": 0.1, "sensor": 0.015, "gt": 0.001}[depth_mode]


@dataclass
class OdometryStep:
    pose: np.ndarray  # camera-to-world 4x4
    ok: bool
    message: str
    keyframe: bool
    tracked: int  # PnP inlier tracks in this frame
    # the factor that brings this frame's depth onto the landmarks' (the map's) scale: the one applied with
    # ``align_scale``, else the median landmark depth / frame depth at the tracks (None if too few)
    depth_ratio: float | None


class SparseOdometry:
    """Keyframe visual(-inertial) odometry for one camera (fixed K and image size)."""

    def __init__(self, K: np.ndarray, size: tuple[int, int], start_pose: np.ndarray, cfg: OdometryConfig,
                 depth_sigma_rel: float, imu=None, align_scale: bool = False):
        self.K = np.asarray(K, np.float64)
        self.h, self.w = size
        self.cfg = cfg
        self.px_scale = self.w / 320.0
        self.depth_sigma_rel = depth_sigma_rel
        self.align_scale = align_scale
        self.cal = gtsam.Cal3_S2(self.K[0, 0], self.K[1, 1], 0.0, self.K[0, 2], self.K[1, 2])
        self._isam_params = gtsam.ISAM2Params()
        self._isam_params.setRelinearizeThreshold(cfg.isam_relinearize)
        self._isam_params.relinearizeSkip = cfg.isam_relinearize_skip
        self.isam = gtsam.ISAM2(self._isam_params)
        self.window_start = 0  # the first keyframe of the current smoother
        self.smoother_resets = 0  # ill-posed updates survived by starting a new smoother
        self._graph = gtsam.NonlinearFactorGraph()
        self._values = gtsam.Values()
        self._proj_noise = gtsam.noiseModel.Robust.Create(gtsam.noiseModel.mEstimator.Huber.Create(cfg.huber_k),
                                                          gtsam.noiseModel.Isotropic.Sigma(2, cfg.pixel_sigma))
        self.imu = imu  # mapping.imu_fusion.ImuFusion or None
        self.pose = np.asarray(start_pose, np.float64).copy()
        self.velocity = np.eye(4)  # last frame-to-frame motion
        self.started = False
        self.track_px = np.zeros((0, 2), np.float32)
        self.track_lid = np.zeros(0, np.int64)
        self.track_src = np.zeros((0, 2), np.float32)  # each live track's pixel in the keyframe image
        self.landmarks: dict[int, np.ndarray] = {}  # live estimates (world, metres)
        self.next_lid = 0
        self.keyframes = 0
        self.kf_gray: np.ndarray | None = None
        self.kf_px = np.zeros((0, 2), np.float32)
        self.kf_lid = np.zeros(0, np.int64)
        self.kf_count = 0
        self.frames_since_kf = 0
        self.lost_frames = 0
        self.failures = 0
        self.gap = (0.0, 0.0)  # the last PnP pose's distance from the prediction (m, deg)
        self.carried = False  # the last lost frame's pose came from the IMU
        self._relocated = False  # the last frame's pose came from another tracker (``relocate``)

    # ------------------------------------------------------------------ helpers
    def _pnp(self, pts_w: np.ndarray, uv: np.ndarray, guess: np.ndarray, depth: np.ndarray,
             confidence: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float] | None:
        """PnP-RANSAC from ``guess``, then a robust pose-only refinement on the inliers that also uses this
        frame's depth at the tracks (range residuals weighted like the depth priors). Returns (pose, inlier
        mask, the factor that brings this frame's depth onto the landmarks' scale; 1 without alignment)."""
        cw = np.linalg.inv(guess)
        rvec, _ = cv2.Rodrigues(cw[:3, :3])
        tvec = cw[:3, 3].reshape(3, 1).copy()
        ok, rvec, tvec, inl = cv2.solvePnPRansac(pts_w.astype(np.float64), uv.astype(np.float64), self.K, None,
                                                 rvec, tvec, useExtrinsicGuess=True, iterationsCount=100,
                                                 reprojectionError=self.cfg.pnp_px * self.px_scale,
                                                 confidence=0.999, flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok or inl is None or len(inl) < self.cfg.min_pnp_inliers:
            return None
        inl = inl.ravel()
        R, _ = cv2.Rodrigues(rvec)
        cw = np.eye(4)
        cw[:3, :3], cw[:3, 3] = R, tvec.ravel()
        pose = np.linalg.inv(cw)
        scale = 1.0
        if self.align_scale:  # bring this frame's depth onto the landmarks' scale first (see class docstring)
            pose = refine_pose(self.K, pose, pts_w[inl], uv[inl], None, None, self.cfg.pixel_sigma, self.cfg.huber_k)
            _, z = project(self.K, pts_w[inl], pose)
            d = depth_at(depth, uv[inl])
            good = (d > 0) & (z > 0)
            if good.sum() >= self.cfg.min_pnp_inliers:
                ratio = float(np.median(z[good] / d[good]))
                scale = ratio if 0.5 < ratio < 2.0 else 1.0
        rng, sig = self._range_obs(depth, confidence, uv[inl])
        pose = refine_pose(self.K, pose, pts_w[inl], uv[inl], rng * scale, sig * scale, self.cfg.pixel_sigma,
                           self.cfg.huber_k)
        # final inliers at the refined pose
        proj, z = project(self.K, pts_w, pose)
        err = np.linalg.norm(proj - uv, axis=1)
        mask = (err < self.cfg.pnp_px * self.px_scale) & (z > 0)
        if mask.sum() < self.cfg.min_pnp_inliers:
            return None
        return pose, mask, scale

    def _range_obs(self, depth: np.ndarray, confidence: np.ndarray | None, uv: np.ndarray):
        """Range (camera centre to the surface point) at each pixel and its prior sigma; 0 where no depth."""
        z = depth_at(depth, uv)
        rays = np.column_stack([(uv[:, 0] - self.K[0, 2]) / self.K[0, 0], (uv[:, 1] - self.K[1, 2]) / self.K[1, 1],
                                np.ones(len(uv))])
        rng = z * np.linalg.norm(rays, axis=1)
        conf = np.ones(len(uv)) if confidence is None else \
            np.maximum(depth_at(confidence, uv), self.cfg.min_confidence)
        return rng, np.maximum(self.depth_sigma_rel * rng / conf, 1e-6)

    # ------------------------------------------------------------------ per frame
    def step(self, timestamp: float, rgb: np.ndarray, depth: np.ndarray, confidence: np.ndarray | None = None,
             imu_samples=None) -> OdometryStep:
        gray = to_gray(rgb, self.cfg.features.blur_sigma * self.px_scale)
        if self.imu is not None:
            self.imu.add(imu_samples)
        if not self.started:
            self.started = True
            self._keyframe(timestamp, gray, depth, confidence, self.pose, first=True)
            if self.imu is not None:
                self.imu.frame_done(timestamp, self.pose)
            return OdometryStep(self.pose.copy(), True, "", True, 0, None)
        predicted = self.pose @ self.velocity
        inertial = None  # the IMU's own prediction of this frame's pose
        if self.imu is not None:
            predicted = self.imu.predict(timestamp, self.pose, predicted)
            inertial = self.imu.predict_pose(timestamp)
        result = None
        if len(self.track_lid) >= self.cfg.min_pnp_inliers:
            result = self._track_from_keyframe(gray, predicted, self.track_src, self.track_lid, depth, confidence)
        if result is None and len(self.kf_lid) > len(self.track_lid):  # relocalise against the keyframe
            result = self._track_from_keyframe(gray, predicted, self.kf_px, self.kf_lid, depth, confidence)
        if result is None:
            return self._failed(timestamp, gray, depth, confidence, inertial)
        pose, _, scale = result
        # translation against the IMU's own prediction, rotation against the last pose turned by the gyro (the
        # IMU prediction's rotation starts at the last keyframe, whose smoothed pose can be degrees off)
        self.gap = (pose_gap(predicted if inertial is None else inertial, pose)[0], pose_gap(predicted, pose)[1])
        checked = self.lost_frames == 0 or self.carried  # a prediction to trust: tracked or carried by the IMU
        if checked and (self.gap[0] > self.cfg.gate_m or self.gap[1] > self.cfg.gate_deg):
            return self._failed(timestamp, gray, depth, confidence, inertial,
                                f"sparse pose refused ({100 * self.gap[0]:.1f} cm, {self.gap[1]:.1f} deg from the "
                                "prediction)")
        if scale != 1.0:
            depth = depth * np.float32(scale)
        self.lost_frames = 0
        self._relocated = False
        self.frames_since_kf += 1
        keyframe = self._needs_keyframe()
        if keyframe:
            pose = self._keyframe(timestamp, gray, depth, confidence, pose)
        self.velocity = np.linalg.inv(self.pose) @ pose
        self.pose = pose
        if self.imu is not None:
            self.imu.frame_done(timestamp, pose)
        ratio = scale if self.align_scale else self._depth_ratio(depth)
        return OdometryStep(pose.copy(), True, "", keyframe, len(self.track_lid), ratio)

    def _track_from_keyframe(self, gray: np.ndarray, predicted: np.ndarray, src: np.ndarray, lids: np.ndarray,
                             depth: np.ndarray, confidence: np.ndarray | None):
        """KLT from the keyframe image (not frame to frame, so track errors do not add up), seeded at the
        landmarks' projections at the predicted pose, then PnP-RANSAC. On success the live tracks are the
        inliers."""
        if len(lids) < self.cfg.min_pnp_inliers:
            return None
        pts = np.array([self.landmarks[i] for i in lids])
        guess, z = project(self.K, pts, predicted)
        inside = (z > 0) & (guess[:, 0] > 0) & (guess[:, 0] < self.w - 1) & (guess[:, 1] > 0) & \
                 (guess[:, 1] < self.h - 1)
        guess = np.where(inside[:, None], guess, src).astype(np.float32)
        px, ok = track(self.kf_gray, gray, src, self.cfg.features, guess)
        if ok.sum() < self.cfg.min_pnp_inliers:
            return None
        result = self._pnp(pts[ok], px[ok], predicted, depth, confidence)
        if result is not None:
            keep = np.flatnonzero(ok)[result[1]]
            self.track_px, self.track_lid, self.track_src = px[keep], lids[keep], src[keep]
        return result

    def _failed(self, timestamp, gray, depth, confidence, inertial: np.ndarray | None,
                message: str | None = None) -> OdometryStep:
        """A lost frame: the IMU carries the pose for up to ``imu_carry_frames`` (else it is held); after
        ``relocalise_frames`` a new start, unless this view has too few strong corners to track."""
        self.failures += 1
        self.lost_frames += 1
        n = len(self.track_lid)
        message = message or f"sparse tracking lost ({n} tracks left)"
        self.velocity = np.eye(4)
        # the IMU carries the pose unless another tracker placed the last frame (``relocate``; then that pose and
        # its motion are the prediction, as without an IMU)
        self.carried = inertial is not None and not self._relocated and self.lost_frames <= self.cfg.imu_carry_frames
        self._relocated = False
        if self.carried:
            self.velocity = np.linalg.inv(self.pose) @ inertial
            self.pose = inertial
            message += "; pose carried by the IMU"
        self.track_px, self.track_lid = np.zeros((0, 2), np.float32), np.zeros(0, np.int64)
        self.track_src = self.track_px
        if self.lost_frames >= self.cfg.relocalise_frames:
            strong = strong_corners(gray, depth, self.cfg.features, max(1, int(round(3 * self.px_scale))),
                                    self.cfg.restart_min_eigen)
            if strong < self.cfg.restart_min_corners:
                message += f"; no restart ({strong} strong corners)"
            else:  # no relocalisation: start anew at the held pose (weak prior), the map is kept
                self._keyframe(timestamp, gray, depth, confidence, self.pose, restart=True)
                self.lost_frames = 0
                message += "; restarted at the held pose"
        if self.imu is not None:
            self.imu.frame_done(timestamp, None)
        return OdometryStep(self.pose.copy(), False, message, False, 0, None)

    def relocate(self, pose: np.ndarray) -> None:
        """After a lost frame, the pose another tracker found for it: the next frames are predicted from it, and a
        restart (after ``relocalise_frames`` lost frames) starts there instead of at the last tracked pose."""
        pose = np.asarray(pose, np.float64)
        self.velocity = np.linalg.inv(self.pose) @ pose
        self.pose = pose.copy()
        self._relocated = True

    def _needs_keyframe(self) -> bool:
        cfg = self.cfg
        n = len(self.track_lid)
        if self.frames_since_kf == 1:
            self.kf_count = n  # tracks that survived their first frame: the reference for survival
        if self.frames_since_kf >= cfg.keyframe_max_gap or n < cfg.keyframe_min_tracks:
            return True
        if n < cfg.keyframe_survival * self.kf_count:
            return True
        parallax = np.median(np.linalg.norm(self.track_px - self.track_src, axis=1))
        return bool(parallax > cfg.keyframe_parallax_px * self.px_scale)

    def _depth_ratio(self, depth: np.ndarray) -> float | None:
        """Median of (landmark depth at this pose / the frame's depth at its pixel) over the live tracks."""
        if len(self.track_lid) < 20:
            return None
        pts = np.array([self.landmarks[i] for i in self.track_lid])
        _, z = project(self.K, pts, self.pose)
        d = depth_at(depth, self.track_px)
        ok = (d > 0) & (z > 0)
        if ok.sum() < 20:
            return None
        return float(np.median(z[ok] / d[ok]))

    # ------------------------------------------------------------------ keyframes and the smoother
    def _keyframe(self, timestamp, gray, depth, confidence, pose, first: bool = False,
                  restart: bool = False) -> np.ndarray:
        k = self.keyframes
        self.keyframes += 1
        xk = X(k)
        self._values.insert(xk, gtsam.Pose3(pose))
        if first or restart:
            sig = np.array([1e-4] * 6) if first else np.array([0.05, 0.05, 0.05, 0.1, 0.1, 0.1])
            self._graph.add(gtsam.PriorFactorPose3(xk, gtsam.Pose3(pose), gtsam.noiseModel.Diagonal.Sigmas(sig)))
        # observations of the live landmarks, with a depth prior where this frame has depth
        d_live = depth_at(depth, self.track_px) if len(self.track_lid) else np.zeros(0)
        for j, (lid, uv) in enumerate(zip(self.track_lid, self.track_px)):
            self._graph.add(gtsam.GenericProjectionFactorCal3_S2(gtsam.Point2(*uv.astype(np.float64)),
                                                                 self._proj_noise, xk, L(int(lid)), self.cal))
            if d_live[j] > 0:
                self._add_range_prior(xk, int(lid), uv, d_live[j], confidence)
        # new landmarks in the gaps
        count = self.cfg.features.max_features - len(self.track_lid)
        smooth = ~depth_edges(depth, max(1, int(round(3 * self.px_scale))))
        new = detect(gray, self.cfg.features, existing=self.track_px, mask=smooth, count=count)
        d = depth_at(depth, new) if len(new) else np.zeros(0)
        new, d = new[d > 0], d[d > 0]
        ids = np.arange(self.next_lid, self.next_lid + len(new))
        self.next_lid += len(new)
        if len(new):
            rays = np.column_stack([(new[:, 0] - self.K[0, 2]) / self.K[0, 0],
                                    (new[:, 1] - self.K[1, 2]) / self.K[1, 1], np.ones(len(new))])
            pts_w = (rays * d[:, None]) @ pose[:3, :3].T + pose[:3, 3]
            for lid, uv, p, z in zip(ids, new, pts_w, d):
                self._values.insert(L(int(lid)), gtsam.Point3(*p))
                self._graph.add(gtsam.GenericProjectionFactorCal3_S2(gtsam.Point2(*uv.astype(np.float64)),
                                                                     self._proj_noise, xk, L(int(lid)), self.cal))
                self._add_range_prior(xk, int(lid), uv, z, confidence)
                self.landmarks[int(lid)] = p
        if self.imu is not None:
            self.imu.add_keyframe(k, timestamp, pose, self._graph, self._values, first or restart)
        try:
            self.isam.update(self._graph, self._values)
        except RuntimeError:  # an ill-posed system (GTSAM's IndeterminateLinearSystemException), e.g. on bare walls
            if first:
                raise
            return self._new_smoother(timestamp, gray, depth, confidence, pose)
        self._graph = gtsam.NonlinearFactorGraph()
        self._values = gtsam.Values()
        est = self.isam.calculateEstimatePose3(xk).matrix()
        self.track_px = np.concatenate([self.track_px, new]).astype(np.float32)
        self.track_lid = np.concatenate([self.track_lid, ids]).astype(np.int64)
        for lid in self.track_lid:
            self.landmarks[int(lid)] = self.isam.calculateEstimatePoint3(L(int(lid)))
        if self.imu is not None:
            self.imu.keyframe_done(k, self.isam)
        self.kf_gray, self.kf_px, self.kf_lid = gray, self.track_px.copy(), self.track_lid.copy()
        self.track_src = self.track_px.copy()
        self.kf_count = len(self.track_lid)
        self.frames_since_kf = 0
        if first or restart:
            self.pose = est
        if k + 1 - self.window_start >= self.cfg.smoother_window:
            try:
                self._next_window(k)
            except RuntimeError:  # a marginal GTSAM cannot form (ill-posed): this smoother goes on, tried again
                pass  # at the next keyframe
        return est

    def _next_window(self, k: int) -> None:
        """A new ISAM2 from keyframe ``k``: its pose (and velocity and bias with an IMU chain at ``k``) enter with
        their estimates and marginal covariances as priors; each live landmark with a prior as wide as one view
        gives it (``pixel_sigma`` across the ray, the depth prior's sigma along it: marginal covariances of a few
        hundred landmarks cost 0.3-0.4 s). Older keyframes leave the smoother; their landmarks stay in the map."""
        old, est = self.isam, self.isam.calculateEstimate()
        graph, values = gtsam.NonlinearFactorGraph(), gtsam.Values()

        def prior(key, value, factor, cov=None):
            values.insert(key, value)
            cov = old.marginalCovariance(key) if cov is None else cov
            graph.add(factor(key, value, gtsam.noiseModel.Gaussian.Covariance(cov)))

        pose = est.atPose3(X(k))
        prior(X(k), pose, gtsam.PriorFactorPose3)
        if est.exists(V(k)):
            prior(V(k), est.atVector(V(k)), gtsam.PriorFactorVector)
            prior(B(k), est.atConstantBias(B(k)), gtsam.PriorFactorConstantBias)
        centre = pose.translation()
        for lid in self.track_lid:
            p = est.atPoint3(L(int(lid)))
            ray = p - centre
            rng = max(float(np.linalg.norm(ray)), 1e-3)
            ray /= rng
            across = (self.cfg.pixel_sigma / self.K[0, 0] * rng) ** 2
            along = (self.depth_sigma_rel * rng) ** 2
            prior(L(int(lid)), p, gtsam.PriorFactorPoint3, across * np.eye(3) + (along - across) * np.outer(ray, ray))
        new = gtsam.ISAM2(self._isam_params)
        new.update(graph, values)
        self.isam, self.window_start = new, k

    def _new_smoother(self, timestamp, gray, depth, confidence, pose) -> np.ndarray:
        """Start a new smoother at ``pose`` with this frame as its first keyframe (new landmarks from its depth, a
        new IMU chain): the map is kept, the old keyframes are no longer optimised."""
        self.smoother_resets += 1
        self.isam = gtsam.ISAM2(self._isam_params)
        self.window_start = self.keyframes
        self._graph, self._values = gtsam.NonlinearFactorGraph(), gtsam.Values()
        self.track_px, self.track_lid = np.zeros((0, 2), np.float32), np.zeros(0, np.int64)
        self.track_src = self.track_px
        if self.imu is not None:
            self.imu.last_kf = None  # the next keyframe starts the IMU chain with its priors
        return self._keyframe(timestamp, gray, depth, confidence, pose, first=True)

    def _add_range_prior(self, xk, lid: int, uv: np.ndarray, z: float, confidence) -> None:
        ray = np.array([(uv[0] - self.K[0, 2]) / self.K[0, 0], (uv[1] - self.K[1, 2]) / self.K[1, 1], 1.0])
        rng = float(z * np.linalg.norm(ray))
        conf = 1.0
        if confidence is not None:
            conf = max(float(depth_at(confidence, uv[None])[0]), self.cfg.min_confidence)
        sigma = self.depth_sigma_rel * rng / conf
        self._graph.add(gtsam.RangeFactor3D(xk, L(lid), rng, gtsam.noiseModel.Isotropic.Sigma(1, sigma)))
