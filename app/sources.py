"""Frame sources for the viewer (no Qt): live cameras (OpenCV, RealSense), datasets and videos through
``m2hmx.data.sources.open_source``, the generated demo scene, and a back-and-forth loop for soak runs.

Every source here is an iterable of ``m2hmx.data.Frame`` with ``name``, ``label_space``, ``num_frames``
(None when live), ``live`` (True: frames keep coming whether we read them or not, so stale ones may be
dropped) and ``close()``. Opening problems raise ``SourceError`` with a one-line message.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from m2hmx.data import DatasetError, Frame
from m2hmx.data.synthetic import FIRST_HELD_OUT_SEED


class SourceError(RuntimeError):
    """A source that cannot be opened or stopped delivering frames (one line)."""


@dataclass
class SourceSpec:
    """What the command line asked for; ``open_viewer_source`` turns it into a source."""

    kind: str = "demo"  # demo | camera | realsense | realsense-bag | dataset | video
    value: str | None = None  # camera index, serial, file or dataset spec
    record: str | None = None  # realsense: also record the camera's streams to this .bag
    data_root: str | None = None
    demo_seed: int = FIRST_HELD_OUT_SEED  # a room the bundled model never saw in training
    demo_frames: int = 300

    def describe(self) -> str:
        return {"demo": f"generated scene (seed {self.demo_seed})", "camera": f"camera {self.value}",
                "realsense": f"RealSense {self.value or '(first found)'}", "realsense-bag": f"recording {self.value}",
                "dataset": f"dataset {self.value}", "video": f"video {self.value}"}[self.kind]


def open_viewer_source(spec: SourceSpec, size: tuple[int, int] | None = None):
    """Open the source ``spec`` names; raises SourceError (one line) when it cannot be opened."""
    if spec.kind == "demo":
        from m2hmx.data.synthetic import SyntheticSource

        h, w = size or (240, 320)
        src = SyntheticSource(seed=spec.demo_seed, frames=spec.demo_frames, height=h, width=w)
        src.live = False
        return src
    if spec.kind == "camera":
        return CameraSource(int(spec.value))
    if spec.kind in ("realsense", "realsense-bag"):
        return RealSenseSource(serial=spec.value if spec.kind == "realsense" else None,
                               bag=spec.value if spec.kind == "realsense-bag" else None,
                               record=spec.record if spec.kind == "realsense" else None)
    from m2hmx.data.sources import open_source

    try:
        src = open_source(spec.value, data_root=spec.data_root)
    except DatasetError as exc:
        raise SourceError(str(exc)) from None
    src.live = False
    if not hasattr(src, "num_frames"):
        src.num_frames = len(src)
    return src


def resize_frame(frame: Frame, size: tuple[int, int]) -> Frame:
    """``frame`` at ``size`` (h, w): colour area-averaged, dense ground truth nearest, K scaled per axis."""
    import cv2

    h, w = size
    H, W = frame.rgb.shape[:2]
    if (H, W) == (h, w):
        return frame
    sx, sy = w / W, h / H
    K = frame.K.copy()
    K[0, 0] *= sx
    K[1, 1] *= sy
    K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5  # pixel centres stay pixel centres
    K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5

    def nearest(a):
        return None if a is None else cv2.resize(a, (w, h), interpolation=cv2.INTER_NEAREST)

    interp = cv2.INTER_AREA if sx < 1 else cv2.INTER_LINEAR
    return Frame(rgb=cv2.resize(frame.rgb, (w, h), interpolation=interp), K=K, timestamp=frame.timestamp,
                 index=frame.index, depth=nearest(frame.depth), labels=nearest(frame.labels), pose=frame.pose,
                 normals=nearest(frame.normals), edges=nearest(frame.edges))


class CameraSource:
    """An OpenCV ``VideoCapture`` device (webcam). K is guessed from a 60 deg horizontal field of view."""

    live = True
    num_frames = None
    label_space = None

    def __init__(self, index: int):
        import cv2

        from m2hmx.data.readers._common import default_intrinsics_fov

        self.index = index
        self.name = f"camera {index}"
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # our own message says it in one line
        self._cap = cv2.VideoCapture(index)
        ok, bgr = self._cap.read() if self._cap.isOpened() else (False, None)
        if not ok:
            self._cap.release()
            raise SourceError(f"camera {index} could not be opened (no such device, or busy)")
        self._first = bgr
        self.K = default_intrinsics_fov(*bgr.shape[:2])
        self._t0 = time.monotonic()

    def __iter__(self):
        index = 0
        while True:
            bgr, self._first = self._first, None
            if bgr is None:
                ok, bgr = self._cap.read()
                if not ok:
                    raise SourceError(f"camera {self.index}: reading a frame failed (unplugged?)")
            yield Frame(rgb=np.ascontiguousarray(bgr[:, :, ::-1]), K=self.K.copy(),
                        timestamp=time.monotonic() - self._t0, index=index)
            index += 1

    def close(self) -> None:
        self._cap.release()


def _import_realsense():
    try:
        import pyrealsense2 as rs
    except ImportError:
        raise SourceError("RealSense support needs pyrealsense2: pip install 'm2hmx[realsense]'") from None
    return rs


class RealSenseSource:
    """An Intel RealSense camera (live, or a recording played back): colour plus the sensor's depth aligned
    to the colour image (metres). K comes from the colour stream's calibration. ``record``: a live camera's
    streams are also written to this ``.bag`` (librealsense's recorder), which ``m2hmx-adapt`` and
    ``--realsense-bag`` read back."""

    label_space = None

    def __init__(self, serial: str | None = None, bag: str | None = None, width: int = 640, height: int = 480,
                 fps: int = 30, record: str | None = None):
        rs = _import_realsense()
        self._rs = rs
        self.live = bag is None
        self.num_frames = None
        self.name = f"realsense {serial or ''}".strip() if bag is None else f"recording {bag}"
        self._pipe = rs.pipeline()
        cfg = rs.config()
        if bag is not None:
            from pathlib import Path

            if not Path(bag).is_file():
                raise SourceError(f"{bag}: no such recording")
            cfg.enable_device_from_file(str(bag), repeat_playback=False)
        else:
            if not rs.context().query_devices():
                raise SourceError("no RealSense camera found (is it plugged in, over USB 3?)")
            if serial:
                cfg.enable_device(serial)
            cfg.enable_stream(rs.stream.color, width, height, rs.format.rgb8, fps)
            cfg.enable_stream(rs.stream.depth, width, height, rs.format.z16, fps)
            if record:
                cfg.enable_record_to_file(str(record))
        try:
            profile = self._pipe.start(cfg)
        except RuntimeError as exc:
            raise SourceError(f"{self.name}: could not start ({str(exc).strip()})") from None
        if bag is not None:
            profile.get_device().as_playback().set_real_time(False)  # no frames skipped while we are busy
        self._depth_units = profile.get_device().first_depth_sensor().get_depth_scale()
        self._align = rs.align(rs.stream.color)
        intr = profile.get_stream(rs.stream.color).as_video_stream_profile().get_intrinsics()
        self.K = np.array([[intr.fx, 0, intr.ppx], [0, intr.fy, intr.ppy], [0, 0, 1]], np.float64)

    def __iter__(self):
        rs, index = self._rs, 0
        while True:
            try:
                frames = self._pipe.wait_for_frames(5000)
            except RuntimeError:
                if not self.live:
                    return  # end of the recording
                raise SourceError(f"{self.name}: no frames for 5 s (unplugged?)") from None
            frames = self._align.process(frames)
            color, depth = frames.get_color_frame(), frames.get_depth_frame()
            if not color or not depth:
                continue
            rgb = np.asanyarray(color.get_data())
            if color.get_profile().format() == rs.format.bgr8:
                rgb = rgb[:, :, ::-1]
            d = np.asanyarray(depth.get_data()).astype(np.float32) * np.float32(self._depth_units)
            yield Frame(rgb=np.ascontiguousarray(rgb), K=self.K.copy(), timestamp=frames.get_timestamp() / 1000.0,
                        index=index, depth=d)
            index += 1

    def close(self) -> None:
        try:
            self._pipe.stop()
        except RuntimeError:
            pass


class BackAndForth:
    """Cycles a finite source forwards then backwards (a camera walking to and fro in a finite room, with no
    jump at the turns) for ``total`` frames; timestamps keep increasing. For soak runs."""

    live = False

    def __init__(self, source, total: int, fps: float = 30.0):
        self.source, self.num_frames, self.fps = source, total, fps
        self.name = f"{source.name} (back and forth, {total} frames)"
        self.label_space = source.label_space

    def __len__(self) -> int:
        return self.num_frames

    def __iter__(self):
        n = len(self.source)
        period = max(1, 2 * n - 2)
        for k in range(self.num_frames):
            j = k % period
            frame = self.source[j if j < n else period - j]
            frame.timestamp, frame.index = k / self.fps, k
            yield frame

    def close(self) -> None:
        self.source.close()
