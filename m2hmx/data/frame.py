"""The frame record every source yields (numpy only)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Frame:
    """One RGB(-D) frame with whatever ground truth its source has.

    Conventions: ``K`` is the 3x3 pinhole matrix of ``rgb``'s size; ``depth`` is float32 metres with 0
    where invalid; ``labels`` holds train ids of the source's label space (255 = ignore); ``pose`` is
    camera-to-world (4x4, OpenCV camera axes: x right, y down, z forward); ``normals`` are unit vectors
    in the camera frame facing the camera (0 where unknown); ``edges`` is a {0,1} uint8 semantic edge map;
``imu`` holds the IMU samples with previous frame time < t <= ``timestamp`` (``mapping.imu.ImuSamples``; the
first frame carries those up to its own time, possibly none), None when the source has no IMU.
    """

    rgb: np.ndarray  # (H, W, 3) uint8
    K: np.ndarray  # (3, 3) float64
    timestamp: float  # seconds
    index: int = 0
    depth: np.ndarray | None = None  # (H, W) float32 metres
    labels: np.ndarray | None = None  # (H, W) uint8
    pose: np.ndarray | None = None  # (4, 4) float64 camera-to-world
    normals: np.ndarray | None = None  # (H, W, 3) float32
    edges: np.ndarray | None = None  # (H, W) uint8
    imu: object | None = None  # mapping.imu.ImuSamples | None

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.rgb.shape[0], self.rgb.shape[1]
