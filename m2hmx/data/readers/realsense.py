"""Intel RealSense recordings (``.bag``, as ``rs-record``, the RealSense Viewer or ``m2hmx-viewer --realsense
--record`` write them), played back through librealsense (``pyrealsense2``, the ``realsense`` extra): colour plus
the depth aligned to the colour image (``rs.align``), in metres; K from the colour stream's calibration; frames as
fast as they can be read (no real-time skipping). Not tested on a recording here: pyrealsense2 is not installed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from m2hmx.data.errors import DatasetError
from m2hmx.data.frame import Frame


class RealSenseBag:
    """An iterable of the recording's frames (no random access: a .bag plays back in order)."""

    label_space = None
    num_frames = None

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise DatasetError(self.path, "no such recording")
        try:
            import pyrealsense2 as rs
        except ImportError:
            raise DatasetError(self.path, "reading a RealSense .bag needs pyrealsense2: "
                                          "pip install 'm2hmx[realsense]'") from None
        self._rs = rs
        self.name = self.path.stem

    def __iter__(self):
        rs = self._rs
        pipe, cfg = rs.pipeline(), rs.config()
        cfg.enable_device_from_file(str(self.path), repeat_playback=False)
        try:
            profile = pipe.start(cfg)
        except RuntimeError as exc:
            raise DatasetError(self.path, f"cannot play back ({str(exc).strip()})") from None
        try:
            profile.get_device().as_playback().set_real_time(False)
            scale = np.float32(profile.get_device().first_depth_sensor().get_depth_scale())
            try:
                intr = profile.get_stream(rs.stream.color).as_video_stream_profile().get_intrinsics()
            except RuntimeError:
                raise DatasetError(self.path, "the recording has no colour stream") from None
            K = np.array([[intr.fx, 0, intr.ppx], [0, intr.fy, intr.ppy], [0, 0, 1]], np.float64)
            align, index, t0 = rs.align(rs.stream.color), 0, None
            while True:
                ok, frames = pipe.try_wait_for_frames(5000)
                if not ok:
                    return  # end of the recording
                frames = align.process(frames)
                color, depth = frames.get_color_frame(), frames.get_depth_frame()
                if not color:
                    continue
                rgb = np.asanyarray(color.get_data())
                if color.get_profile().format() == rs.format.bgr8:
                    rgb = rgb[:, :, ::-1]
                t = frames.get_timestamp() / 1000.0
                t0 = t if t0 is None else t0
                yield Frame(rgb=np.ascontiguousarray(rgb), K=K.copy(), timestamp=t - t0, index=index,
                            depth=np.asanyarray(depth.get_data()).astype(np.float32) * scale if depth else None)
                index += 1
        finally:
            pipe.stop()

    def close(self) -> None:
        pass
