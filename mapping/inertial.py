"""The IMU in the keyframe smoother: gravity alignment, CombinedImuFactor between keyframes, gyro-aided prediction.

The smoother's states are camera poses (camera-to-world), so the IMU enters GTSAM's preintegration through
``body_P_sensor`` = the IMU's pose in the camera frame (the inverse of ``ImuSamples.body_T_cam``); velocities are
the camera's. Each keyframe adds a velocity V(k) and a bias B(k) and a CombinedImuFactor from the previous
keyframe (Forster et al., "On-Manifold Preintegration for Real-Time Visual-Inertial Odometry", TRO 2017, as
implemented in GTSAM; the factor also carries the bias random walk between the two keyframes).

Gravity: the map's world frame is whatever the first pose makes it, so the direction of gravity in it is found
from the accelerometer: over the first ``gravity_window_s`` of tracked frames, the specific force rotated into the
world by the visual poses averages to minus gravity (the walk's own acceleration averages out). The IMU factors
start at the first keyframe after that. The prediction of each frame's pose turns the constant-velocity guess
by the gyroscope's rotation since the last frame, which keeps KLT's search window on fast turns.
"""
from __future__ import annotations

import gtsam
import numpy as np
from gtsam.symbol_shorthand import B, V, X

from mapping.imu import ImuNoise, ImuSamples, preintegrate, preintegration_params

GRAVITY = 9.81


class ImuFusion:
    def __init__(self, noise: ImuNoise, gravity_window_s: float = 0.5, velocity_sigma: float = 0.5,
                 accel_bias_sigma: float = 0.1, gyro_bias_sigma: float = 0.01):
        self.noise = noise
        self.gravity_window_s = gravity_window_s
        self.velocity_sigma = velocity_sigma
        self.bias_sigmas = np.array([accel_bias_sigma] * 3 + [gyro_bias_sigma] * 3)
        self.buffer: ImuSamples | None = None  # samples since the last keyframe in the chain (or since the start)
        self.params = None  # preintegration parameters, once gravity is known
        self._specific_force: list[np.ndarray] = []  # world-frame accelerometer readings (gravity window)
        self._force_t: list[float] = []
        self.gravity: np.ndarray | None = None
        self.bias = gtsam.imuBias.ConstantBias()
        self.last_kf: tuple[int, float, np.ndarray, np.ndarray] | None = None  # (k, t, pose, velocity)
        self._frames: list[tuple[float, np.ndarray]] = []  # recent (t, pose), for the starting velocity
        self._last_frame_t: float | None = None
        self._pending: ImuSamples | None = None  # this frame's samples, until frame_done
        self._rot_params = preintegration_params(noise, GRAVITY)  # for the gyro-only prediction before gravity

    def add(self, samples: ImuSamples | None) -> None:
        if samples is None or len(samples) == 0:
            return
        self.buffer = samples if self.buffer is None else self.buffer.concat(samples)
        self._pending = samples

    def _cam_R_imu(self) -> np.ndarray:
        return self.buffer.body_T_cam[:3, :3].T

    def predict(self, t: float, pose: np.ndarray, fallback: np.ndarray) -> np.ndarray:
        """``fallback`` (constant velocity) with its rotation replaced by the gyro's since the last frame."""
        if self.buffer is None or self._last_frame_t is None:
            return fallback
        s = self.buffer.between(self._last_frame_t, t)
        if len(s) < 2:
            return fallback
        pim = preintegrate(self.buffer, self._last_frame_t, t, self._params_for_rotation(), self.bias)
        dR_imu = pim.deltaRij().matrix()
        cRi = self._cam_R_imu()
        out = fallback.copy()
        out[:3, :3] = pose[:3, :3] @ cRi @ dR_imu @ cRi.T
        return out

    def predict_pose(self, t: float) -> np.ndarray | None:
        """The camera pose at ``t`` propagated by the IMU alone from the last smoothed keyframe's pose, velocity
        and bias (GTSAM's NavState prediction); None before the IMU chain has a smoothed keyframe."""
        if self.params is None or self.last_kf is None or self.last_kf[3] is None or self.buffer is None:
            return None
        _, tk, pose_k, vel_k = self.last_kf
        if not t > tk or len(self.buffer.between(tk, t)) < 2:
            return None
        pim = preintegrate(self.buffer, tk, t, self.params, self.bias)
        return pim.predict(gtsam.NavState(gtsam.Pose3(pose_k), vel_k), self.bias).pose().matrix()

    def _params_for_rotation(self):
        return self.params if self.params is not None else self._rot_params

    def frame_done(self, t: float, pose: np.ndarray | None) -> None:
        """After each frame: collect the gravity window (tracked frames only)."""
        if pose is not None:
            self._frames = (self._frames + [(t, pose)])[-12:]
            pending = self._pending
            if self.gravity is None and pending is not None and len(pending):
                wRi = pose[:3, :3] @ pending.body_T_cam[:3, :3].T
                self._specific_force.append(pending.accel @ wRi.T)
                self._force_t.append(t)
                if self._force_t[-1] - self._force_t[0] >= self.gravity_window_s:
                    f = np.concatenate(self._specific_force).mean(0)
                    self.gravity = -GRAVITY * f / np.linalg.norm(f)
                    self.params = preintegration_params(self.noise, GRAVITY)
                    self.params.n_gravity = self.gravity
                    self.params.setBodyPSensor(gtsam.Pose3(np.linalg.inv(pending.body_T_cam)))
        self._pending = None
        self._last_frame_t = t
        if self.last_kf is None and self.buffer is not None:
            self.buffer = self.buffer.between(t - 0.05, np.inf)

    def _start_velocity(self) -> np.ndarray:
        if len(self._frames) < 2:
            return np.zeros(3)
        (t0, p0), (t1, p1) = self._frames[0], self._frames[-1]
        return (p1[:3, 3] - p0[:3, 3]) / max(t1 - t0, 1e-3)

    def add_keyframe(self, k: int, t: float, pose: np.ndarray, graph, values, first: bool) -> None:
        """Add V(k), B(k) and the IMU factor from the previous keyframe (or the priors that start the chain)."""
        if self.params is None or self.buffer is None:
            return
        if self.last_kf is None:  # start the chain here
            v0 = self._start_velocity()
            values.insert(V(k), v0)
            values.insert(B(k), self.bias)
            graph.add(gtsam.PriorFactorVector(V(k), v0, gtsam.noiseModel.Isotropic.Sigma(3, self.velocity_sigma)))
            graph.add(gtsam.PriorFactorConstantBias(B(k), self.bias,
                                                    gtsam.noiseModel.Diagonal.Sigmas(self.bias_sigmas)))
        else:
            kp, tp, pose_p, vel_p = self.last_kf
            pim = preintegrate(self.buffer, tp, t, self.params, self.bias)
            graph.add(gtsam.CombinedImuFactor(X(kp), V(kp), X(k), V(k), B(kp), B(k), pim))
            nav = pim.predict(gtsam.NavState(gtsam.Pose3(pose_p), vel_p), self.bias)
            values.insert(V(k), nav.velocity())
            values.insert(B(k), self.bias)
        self.last_kf = (k, t, pose, None)
        self.buffer = self.buffer.between(t - 0.05, np.inf)  # a few samples before t for interpolation

    def keyframe_done(self, k: int, isam) -> None:
        if self.last_kf is None or self.last_kf[0] != k:
            return
        pose = isam.calculateEstimatePose3(X(k)).matrix()
        vel = isam.calculateEstimateVector(V(k))
        self.bias = isam.calculateEstimateConstantBias(B(k))
        self.last_kf = (k, self.last_kf[1], pose, vel)
