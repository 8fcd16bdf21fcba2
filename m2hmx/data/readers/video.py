"""RGB-only sources read with OpenCV: video files and folders of images (sorted by name).

Neither has calibration, so K is guessed from a 60 deg horizontal field of view with the principal
point at the image centre (typical of webcams and phone video); depth, labels and poses are absent.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from m2hmx.data.errors import DatasetError
from m2hmx.data.frame import Frame
from m2hmx.data.readers._common import (FOV_GUESS, IMAGE_EXTS, IndexedSource, default_intrinsics_fov, read_folder_imu,
                                        read_image)

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


class VideoFile(IndexedSource):
    """Frames of a video file; timestamps from the container's frame rate (30 Hz when unknown)."""

    intrinsics_from = FOV_GUESS

    def __init__(self, path):
        import cv2

        self.path = path = Path(path)
        if not path.is_file():
            raise DatasetError(path, "file not found")
        self._cap = cv2.VideoCapture(str(path))
        if not self._cap.isOpened():
            raise DatasetError(path, "cannot open as a video (unsupported codec or not a video file)")
        self.name = path.stem
        self.fps = self._cap.get(cv2.CAP_PROP_FPS) or 30.0
        self._n = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        w, h = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if self._n <= 0 or w <= 0 or h <= 0:
            raise DatasetError(path, "video reports no frames")
        self.K = default_intrinsics_fov(h, w)
        self._next = 0

    def __len__(self) -> int:
        return self._n

    def _read(self, i: int) -> Frame:
        import cv2

        if i != self._next:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, i)
        ok, bgr = self._cap.read()
        if not ok:
            raise DatasetError(self.path, f"cannot decode frame {i} (file truncated or corrupt)")
        self._next = i + 1
        return Frame(rgb=np.ascontiguousarray(bgr[:, :, ::-1]), K=self.K.copy(), timestamp=i / self.fps, index=i)

    def __iter__(self):
        for i in range(self._n):
            try:
                yield self._frame(i)
            except DatasetError:
                if i > 0:  # containers often over-report the frame count by a few
                    return
                raise

    def close(self) -> None:
        self._cap.release()


class ImageFolder(IndexedSource):
    """Images in a folder, in name order, at 30 Hz."""

    intrinsics_from = FOV_GUESS

    def __init__(self, folder, fps: float = 30.0):
        self.folder = folder = Path(folder)
        if not folder.is_dir():
            raise DatasetError(folder, "folder not found")
        self.paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not self.paths:
            raise DatasetError(folder, f"no images ({', '.join(IMAGE_EXTS)})")
        self.name, self.fps = folder.name, fps
        self.imu, self.imu_path = read_folder_imu(folder), folder / "imu0" / "data.csv"

    def __len__(self) -> int:
        return len(self.paths)

    def _time(self, i: int) -> float:
        return i / self.fps

    def _read(self, i: int) -> Frame:
        rgb = read_image(self.paths[i])
        K = default_intrinsics_fov(*rgb.shape[:2])
        return Frame(rgb=rgb, K=K, timestamp=i / self.fps, index=i)
