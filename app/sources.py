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
    intrinsics: tuple[float, float, float, float] | None = None  # dataset / video: --intrinsics fx, fy, cx, cy
    realtime: bool = False  # play a recording or the demo at its clock, dropping frames like a live camera

    def describe(self) -> str:
        return {"demo": f"generated scene (seed {self.demo_seed})", "camera": f"camera {self.value}",
                "realsense": f"RealSense {self.value or '(first found)'}", "realsense-bag": f"recording {self.value}",
                "dataset": f"dataset {self.value}", "video": f"video {self.value}"}[self.kind]


def open_viewer_source(spec: SourceSpec, size: tuple[int, int] | None = None):
    """Open the source ``spec`` names; raises SourceError (one line) when it cannot be opened."""
    source = _open(spec, size)
    if spec.realtime and not source.live:
        return RealtimePlayback(source)
    return source


def _open(spec: SourceSpec, size: tuple[int, int] | None):
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
    from m2hmx.data.sources import describe_intrinsics, open_source

    try:
        src = open_source(spec.value, data_root=spec.data_root, intrinsics=spec.intrinsics)
        src.intrinsics_note = describe_intrinsics(src)  # the window says which intrinsics and where from
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
                 normals=nearest(frame.normals), edges=nearest(frame.edges), imu=frame.imu)


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


class MotionBuffer:
    """Gyro and accel samples as they arrive (two streams at their own rates, e.g. a D435i's 200 Hz gyro and 250 Hz
    accel), handed out as one IMU stream on the gyro's times with the accel linearly interpolated (realsense-ros's
    ``unite_imu_method: linear_interpolation``). Thread-safe: the camera's callback adds, the reader takes."""

    def __init__(self, body_T_cam: np.ndarray):
        import threading

        self.body_T_cam = body_T_cam
        self._lock = threading.Lock()
        self._gyro: list[tuple[float, tuple]] = []
        self._accel: list[tuple[float, tuple]] = []
        self._last = -np.inf  # time of the last sample handed out

    def add(self, kind: str, t: float, xyz) -> None:
        with self._lock:
            (self._gyro if kind == "gyro" else self._accel).append((t, tuple(xyz)))

    def take(self, until: float):
        """``mapping.imu.ImuSamples`` of the gyro samples after the last one handed out, up to ``until`` and up to
        the newest accel sample (later ones wait for the next call)."""
        from mapping.imu import ImuSamples

        with self._lock:
            gyro, accel = sorted(self._gyro), sorted(self._accel)
            if not gyro or not accel:
                return ImuSamples.empty(self.body_T_cam)
            tg = np.array([t for t, _ in gyro])
            ta = np.array([t for t, _ in accel])
            take = (tg > self._last) & (tg >= ta[0]) & (tg <= min(until, ta[-1]))  # accel on both sides
            wg = np.array([v for _, v in gyro])[take]
            va = np.array([v for _, v in accel])
            t = tg[take]
            acc = np.column_stack([np.interp(t, ta, va[:, k]) for k in range(3)]) if len(t) else np.zeros((0, 3))
            if len(t):
                self._last = t[-1]
            keep_a = max(int(np.searchsorted(ta, self._last)) - 1, 0)  # one accel sample before the cut stays
            self._gyro = [g for g in gyro if g[0] > self._last]
            self._accel = accel[keep_a:]
        return ImuSamples(t, wg.reshape(-1, 3), acc, self.body_T_cam)


class RealSenseSource:
    """An Intel RealSense camera (live, or a recording played back): colour plus the sensor's depth aligned
    to the colour image (metres). K comes from the colour stream's calibration. A D435i's (or a recording's)
    gyro and accel streams become ``Frame.imu`` (gyro times, accel interpolated; the IMU's axes and the
    colour camera's pose in them from the device's extrinsics); without them frames carry no IMU. Frames arrive
    through a callback, so motion samples keep coming while a frame is processed; a live frame not taken in time
    is replaced by the newest, whose IMU then covers the dropped one's interval too. ``record``: a live camera's
    streams are also written to this ``.bag`` (librealsense's recorder), which ``m2hmx-adapt`` and
    ``--realsense-bag`` read back."""

    label_space = None
    GYRO_HZ, ACCEL_HZ = 200, 250  # D435i stream rates (BMI055: gyro 200/400 Hz, accel 63/250 Hz)

    def __init__(self, serial: str | None = None, bag: str | None = None, width: int = 640, height: int = 480,
                 fps: int = 30, record: str | None = None):
        import queue

        rs = _import_realsense()
        self._rs = rs
        self.live = bag is None
        self.num_frames = None
        self.name = f"realsense {serial or ''}".strip() if bag is None else f"recording {bag}"
        self._pipe = rs.pipeline()
        self._frames = queue.Queue(maxsize=2)
        self._motion = None
        self._stopping = False
        cfg = rs.config()
        if bag is not None:
            from pathlib import Path

            if not Path(bag).is_file():
                raise SourceError(f"{bag}: no such recording")
            cfg.enable_device_from_file(str(bag), repeat_playback=False)  # all recorded streams, IMU included
        else:
            ctx_devices = rs.context().query_devices()
            if not ctx_devices:
                raise SourceError("no RealSense camera found (is it plugged in, over USB 3?)")
            if serial:
                cfg.enable_device(serial)
            cfg.enable_stream(rs.stream.color, width, height, rs.format.rgb8, fps)
            cfg.enable_stream(rs.stream.depth, width, height, rs.format.z16, fps)
            device = next((d for d in ctx_devices if not serial or d.get_info(rs.camera_info.serial_number) == serial),
                          ctx_devices[0])
            if any(p.stream_type() == rs.stream.gyro for s in device.query_sensors() for p in s.get_stream_profiles()):
                cfg.enable_stream(rs.stream.accel, rs.format.motion_xyz32f, self.ACCEL_HZ)
                cfg.enable_stream(rs.stream.gyro, rs.format.motion_xyz32f, self.GYRO_HZ)
            if record:
                cfg.enable_record_to_file(str(record))
        try:
            profile = self._pipe.start(cfg, self._on_frame)
        except RuntimeError as exc:
            raise SourceError(f"{self.name}: could not start ({str(exc).strip()})") from None
        if bag is not None:
            profile.get_device().as_playback().set_real_time(False)  # no frames skipped while we are busy
        self._depth_units = profile.get_device().first_depth_sensor().get_depth_scale()
        self._align = rs.align(rs.stream.color)
        color = profile.get_stream(rs.stream.color)
        intr = color.as_video_stream_profile().get_intrinsics()
        self.K = np.array([[intr.fx, 0, intr.ppx], [0, intr.fy, intr.ppy], [0, 0, 1]], np.float64)
        streams = {p.stream_type(): p for p in profile.get_streams()}
        if rs.stream.gyro in streams and rs.stream.accel in streams:
            ext = color.get_extrinsics_to(streams[rs.stream.gyro])  # colour-camera points -> IMU frame
            body_T_cam = np.eye(4)
            body_T_cam[:3, :3] = np.array(ext.rotation, np.float64).reshape(3, 3).T  # librealsense: column-major
            body_T_cam[:3, 3] = ext.translation
            self._motion = MotionBuffer(body_T_cam)

    def _on_frame(self, frame) -> None:
        """librealsense's callback (its own thread): motion samples into the buffer, framesets into the queue."""
        import queue

        rs = self._rs
        if frame.is_motion_frame():
            if self._motion is not None:
                kind = "gyro" if frame.get_profile().stream_type() == rs.stream.gyro else "accel"
                d = frame.as_motion_frame().get_motion_data()
                self._motion.add(kind, frame.get_timestamp() / 1000.0, (d.x, d.y, d.z))
            return
        if not frame.is_frameset():
            return
        frames = frame.as_frameset()
        frames.keep()  # hold it past the callback
        while not self._stopping:
            try:
                if not self.live:  # recordings: wait for the reader (playback is not real time)
                    self._frames.put(frames, timeout=0.1)
                else:
                    self._frames.put_nowait(frames)
                return
            except queue.Full:
                if self.live:
                    try:
                        self._frames.get_nowait()  # drop the stale frame; its IMU goes with the next one
                    except queue.Empty:
                        pass

    def __iter__(self):
        import queue

        rs, index = self._rs, 0
        while True:
            try:
                frames = self._frames.get(timeout=5.0)
            except queue.Empty:
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
            t = frames.get_timestamp() / 1000.0
            imu = self._motion.take(t) if self._motion is not None else None
            yield Frame(rgb=np.ascontiguousarray(rgb), K=self.K.copy(), timestamp=t, index=index, depth=d, imu=imu)
            index += 1

    def close(self) -> None:
        self._stopping = True
        try:
            self._pipe.stop()
        except RuntimeError:
            pass


class BackAndForth:
    """Cycles a finite source forwards then backwards (a camera walking to and fro in a finite room, with no
    jump at the turns) for ``total`` frames; timestamps keep increasing. For soak runs. Frames carry no IMU."""

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
            frame.imu = None  # played backwards and re-timed: the recorded motion no longer matches
            yield frame

    def close(self) -> None:
        self.source.close()


class RealtimePlayback:
    """A finite source played at its recording's clock, like a live camera (``--realtime``): frame k is handed
    out no earlier than (its timestamp - the first's) after the first one was, and a frame whose successor is
    already due when it is asked for is skipped (counted in ``skipped``; its IMU samples go with the next frame),
    so a slow reader gets the newest frame instead of falling behind. ``live`` is True, so the viewer's
    hand-offs also replace stale frames. ``due[index]`` is each handed-out frame's monotonic due time, from
    which a caller measures latency. Time spent paused counts, as it would for a camera."""

    live = True

    def __init__(self, source, speed: float = 1.0):  # speed: recording seconds per wall second
        self.source, self.speed = source, speed
        self.name = f"{source.name} (real time)"
        self.label_space = source.label_space
        self.num_frames = getattr(source, "num_frames", None)
        self.skipped = 0
        self.due: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self.source)

    def __getattr__(self, name):  # the wrapped source's other attributes (has_imu, visible_objects, ...)
        return getattr(self.source, name)

    def __iter__(self):
        self.skipped, self.due = 0, {}
        times = getattr(self.source, "timestamps", None)
        if times is not None and hasattr(self.source, "__getitem__"):
            yield from self._indexed(np.asarray(times, float))
        else:
            yield from self._sequential()

    def _due(self, start, timestamp: float) -> float:
        return start[0] + (timestamp - start[1]) / self.speed

    def _handout(self, frame, due: float):
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self.due[frame.index] = due
        return frame

    def _indexed(self, times: np.ndarray):
        """A source that knows every frame's time: the newest due frame is read, the skipped ones never are.
        When the source holds its whole IMU stream (``imu.between``), the frame carries the samples since the
        last frame handed out."""
        start, i, last_t = None, 0, None
        stream = getattr(self.source, "imu", None)
        while i < len(times):
            now = time.monotonic()
            if start is None:
                start = (now, times[0])
            j = max(i, int(np.searchsorted(times, start[1] + (now - start[0]) * self.speed, side="right")) - 1)
            self.skipped += j - i
            frame = self.source[j]
            if j > i and last_t is not None and hasattr(stream, "between"):
                frame.imu = stream.between(last_t, frame.timestamp)
            yield self._handout(frame, self._due(start, times[j]))
            last_t, i = frame.timestamp, j + 1

    def _sequential(self):
        """Any other source: frames are read in turn, and one whose successor is already due is skipped (its
        IMU samples go with the next frame)."""
        from mapping.imu import carry_over

        frames = iter(self.source)
        start = None
        frame = next(frames, None)
        while frame is not None:
            if start is None:
                start = (time.monotonic(), frame.timestamp)
            due, later = self._due(start, frame.timestamp), None
            while time.monotonic() > due:
                later = next(frames, None)
                if later is None or self._due(start, later.timestamp) > time.monotonic():
                    break
                later.imu = carry_over(frame.imu, later.imu)
                self.skipped += 1
                frame, due, later = later, self._due(start, later.timestamp), None
            yield self._handout(frame, due)
            frame = later if later is not None else next(frames, None)

    def close(self) -> None:
        self.source.close()
