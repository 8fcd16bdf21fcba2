"""The perception-to-mapping interface: one validated frame record, as a Hydra-style backend consumes it.

Conventions (see docs/design/formats.md, "Hydra's input contract"): ``rgb`` uint8 (H,W,3); ``depth`` float32
metres, 0 = invalid (uint16 millimetres are converted); ``labels`` (H,W) integer class ids of the map's
label space, 255 = unlabelled; ``confidence`` (H,W) float32 in [0,1] (the network's max class
probability), optional; ``K`` 3x3 pinhole matrix; ``pose_prior`` camera-to-world 4x4 (OpenCV axes), optional;
``imu`` the IMU samples since the previous frame (``mapping.imu.ImuSamples``: previous frame time < t <= this
frame's time), None when the source has no IMU.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mapping import MappingError

IGNORE_LABEL = 255
IMU_TIME_TOLERANCE = 1e-3  # s: a frame's last IMU sample may be this much after its timestamp
# Where a frame's depth comes from: the one vocabulary of MappingConfig.depth_mode, m2hmx-map --depth and
# m2hmx-viewer --depth (which switches between "pred" and "sensor"; without a network it maps "gt").
DEPTH_MODES = {
    "sensor": "the source's own depth, from a depth sensor",
    "gt": "the source's own depth, taken as exact (generated rooms, rendered ground truth)",
    "pred": "the network's predicted depth",
}
VIEWER_DEPTH_MODES = ("pred", "sensor")  # the viewer's choice (D toggles), first the default


class InterfaceError(MappingError, ValueError):
    """A perception frame that violates the interface (one-line message)."""


@dataclass
class PerceptionFrame:
    timestamp: float
    rgb: np.ndarray
    depth: np.ndarray
    labels: np.ndarray
    K: np.ndarray
    confidence: np.ndarray | None = None
    pose_prior: np.ndarray | None = None
    num_classes: int | None = None  # when given, labels must lie in [0, num_classes) or be 255
    imu: object | None = None  # mapping.imu.ImuSamples | None (typed loosely: imu.py imports this module)

    def __post_init__(self) -> None:
        self.timestamp = float(self.timestamp)
        if not np.isfinite(self.timestamp):
            raise InterfaceError(f"timestamp must be finite, got {self.timestamp}")
        rgb = np.asarray(self.rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise InterfaceError(f"rgb must be (H,W,3) uint8, got {rgb.shape} {rgb.dtype}")
        h, w = rgb.shape[:2]
        self.rgb = np.ascontiguousarray(rgb)
        self.depth = self._check_depth(np.asarray(self.depth), (h, w))
        self.labels = self._check_labels(np.asarray(self.labels), (h, w))
        if self.confidence is not None:
            conf = np.asarray(self.confidence)
            if conf.shape != (h, w):
                raise InterfaceError(f"confidence is {conf.shape}, rgb is {(h, w)}: sizes must agree")
            conf = conf.astype(np.float32, copy=False)
            if not np.all(np.isfinite(conf)) or conf.min() < 0 or conf.max() > 1:
                raise InterfaceError("confidence must be finite and inside [0, 1]")
            self.confidence = np.ascontiguousarray(conf)
        K = np.asarray(self.K, np.float64)
        if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise InterfaceError(f"K must be a finite 3x3 pinhole matrix with fx, fy > 0, got {K.tolist()}")
        self.K = K
        if self.pose_prior is not None:
            pose = np.asarray(self.pose_prior, np.float64)
            if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
                raise InterfaceError(f"pose_prior must be a finite 4x4 matrix, got shape {pose.shape}")
            rot = pose[:3, :3]
            if not np.allclose(rot @ rot.T, np.eye(3), atol=1e-3) or np.linalg.det(rot) < 0:
                raise InterfaceError("pose_prior rotation is not orthonormal (expected camera-to-world SE(3))")
            self.pose_prior = pose
        if self.imu is not None:
            from mapping.imu import ImuSamples

            if not isinstance(self.imu, ImuSamples):
                raise InterfaceError(f"imu must be mapping.imu.ImuSamples or None, got {type(self.imu).__name__}")
            if len(self.imu) and self.imu.t[-1] > self.timestamp + IMU_TIME_TOLERANCE:
                raise InterfaceError(f"IMU sample at {self.imu.t[-1]:.6f} s is after the frame's timestamp "
                                     f"{self.timestamp:.6f} s (a frame carries the samples up to its own time)")

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[0], self.rgb.shape[1]

    @staticmethod
    def _check_depth(depth: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        if depth.shape != hw:
            raise InterfaceError(f"depth is {depth.shape}, rgb is {hw}: sizes must agree")
        if depth.dtype == np.uint16:  # millimetres, 0 = invalid
            return depth.astype(np.float32) * np.float32(1e-3)
        if depth.dtype != np.float32:
            raise InterfaceError(f"depth must be float32 metres or uint16 millimetres, got {depth.dtype}")
        if not np.all(np.isfinite(depth)):
            raise InterfaceError("depth has NaN/inf values: use 0 for invalid pixels")
        if depth.min() < 0:
            raise InterfaceError("depth has negative values: use 0 for invalid pixels")
        return np.ascontiguousarray(depth)

    def _check_labels(self, labels: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        if labels.shape != hw:
            raise InterfaceError(f"labels is {labels.shape}, rgb is {hw}: sizes must agree")
        if not np.issubdtype(labels.dtype, np.integer):
            raise InterfaceError(f"labels must be integer class ids, got {labels.dtype}")
        if labels.size and (labels.min() < 0 or labels.max() > IGNORE_LABEL):
            raise InterfaceError(f"labels must be in [0, 255], got range [{labels.min()}, {labels.max()}]")
        labels = labels.astype(np.uint8, copy=False)
        if self.num_classes is not None:
            bad = (labels >= self.num_classes) & (labels != IGNORE_LABEL)
            if bad.any():
                raise InterfaceError(f"label id {int(labels[bad][0])} is outside the label space "
                                     f"(0..{self.num_classes - 1}, or 255 for unlabelled)")
        return np.ascontiguousarray(labels)
