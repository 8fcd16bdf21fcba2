"""``m2hmx-map --rosbag OUT/``: write a run's perception as a ROS 2 bag (MCAP storage) without ROS.

Per mapped frame: ``sensor_msgs/Image`` rgb (``rgb8``), depth (``32FC1``, metres: the depth the map
integrated, after scale alignment) and labels (``mono8`` class ids, 255 = unlabelled),
``sensor_msgs/CameraInfo``, ``sensor_msgs/Imu`` samples when the frame carries IMU data, and
``tf2_msgs/TFMessage`` ``world -> base_link`` at the estimated pose; ``base_link -> camera`` once on
``/tf_static`` (transient-local, as a static broadcaster offers it); the whole estimated trajectory as one
``nav_msgs/Path`` at the end. Topic and frame names: ``m2hmx.data.ros``. Hydra's label space goes beside
the bag (``labelspace.yaml`` + ``labelspace_colors.csv``).

Uses ``rosbags`` (pure Python, the ``ros`` extra). The bag is written to a temporary folder beside
``OUT`` and renamed when closed, so a reader never sees half a bag.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from m2hmx.data.ros import (BODY_FRAME, BODY_FROM_OPTICAL, CAMERA_FRAME, TOPICS, TYPESTORE, WORLD_FRAME, body_pose,
                            matrix_to_quat_xyzw, ros_time, world_alignment)

MISSING = "rosbags is not installed: pip install 'm2hmx[ros]'"


def require_rosbags():
    try:
        import rosbags.rosbag2  # noqa: F401
    except ImportError:
        raise RuntimeError(MISSING) from None


def check_bag_target(out: str | Path) -> Path:
    """Fail before a run starts: ``out`` must not exist (rosbag2 never overwrites) and its parent must be
    writable. Returns the path."""
    import os

    require_rosbags()
    out = Path(out)
    if out.exists():
        raise ValueError(f"--rosbag {out}: already exists (a ROS 2 bag is a new folder)")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--rosbag {out}: cannot create {parent} ({exc.strerror})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--rosbag {out}: {parent} is not writable")
    return out


class RosbagWriter:
    """Write frames as they are mapped; ``close()`` finishes the bag."""

    def __init__(self, out: str | Path, label_space):
        from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self.out = check_bag_target(out)
        self.label_space = label_space
        self.tmp = self.out.with_name(f".{self.out.name}.partial")
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.ts = get_typestore(getattr(Stores, TYPESTORE))
        self.writer = Writer(self.tmp, version=8, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        never = QosTime(sec=0, nsec=0)
        latched = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, never, never,
                      QosLiveliness.AUTOMATIC, never, False)
        kinds = {"rgb": "sensor_msgs/msg/Image", "depth": "sensor_msgs/msg/Image", "labels": "sensor_msgs/msg/Image",
                 "camera_info": "sensor_msgs/msg/CameraInfo", "tf": "tf2_msgs/msg/TFMessage",
                 "path": "nav_msgs/msg/Path"}
        self.conn = {k: self.writer.add_connection(TOPICS[k], t, typestore=self.ts) for k, t in kinds.items()}
        self.conn["tf_static"] = self.writer.add_connection(TOPICS["tf_static"], "tf2_msgs/msg/TFMessage",
                                                            typestore=self.ts, offered_qos_profiles=[latched])
        self.align: np.ndarray | None = None  # map world -> REP 103 world
        self.poses: list[tuple[float, np.ndarray]] = []
        self.counts: dict[str, int] = {}
        self._last_imu_t = -np.inf
        self.closed = False

    # ------------------------------------------------------------------ messages
    def _header(self, t: float, frame_id: str):
        sec, nsec = ros_time(t)
        T = self.ts.types
        return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec),
                                         frame_id=frame_id)

    def _write(self, key: str, t: float, msg, msgtype: str) -> None:
        sec, nsec = ros_time(t)
        self.writer.write(self.conn[key], sec * 1_000_000_000 + nsec, self.ts.serialize_cdr(msg, msgtype))
        self.counts[key] = self.counts.get(key, 0) + 1

    def _image(self, t: float, array: np.ndarray, encoding: str, step_bytes: int):
        a = np.ascontiguousarray(array)
        return self.ts.types["sensor_msgs/msg/Image"](
            header=self._header(t, CAMERA_FRAME), height=a.shape[0], width=a.shape[1], encoding=encoding,
            is_bigendian=0, step=a.shape[1] * step_bytes, data=a.view(np.uint8).reshape(-1))

    def _transform(self, t: float, parent: str, child: str, T: np.ndarray):
        types = self.ts.types
        q = matrix_to_quat_xyzw(T[:3, :3])
        return types["geometry_msgs/msg/TransformStamped"](
            header=self._header(t, parent), child_frame_id=child,
            transform=types["geometry_msgs/msg/Transform"](
                translation=types["geometry_msgs/msg/Vector3"](x=T[0, 3], y=T[1, 3], z=T[2, 3]),
                rotation=types["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3])))

    def _pose_stamped(self, t: float, T: np.ndarray):
        types = self.ts.types
        q = matrix_to_quat_xyzw(T[:3, :3])
        return types["geometry_msgs/msg/PoseStamped"](
            header=self._header(t, WORLD_FRAME),
            pose=types["geometry_msgs/msg/Pose"](
                position=types["geometry_msgs/msg/Point"](x=T[0, 3], y=T[1, 3], z=T[2, 3]),
                orientation=types["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3])))

    def _camera_info(self, t: float, K: np.ndarray, height: int, width: int):
        P = np.zeros((3, 4))
        P[:3, :3] = K
        return self.ts.types["sensor_msgs/msg/CameraInfo"](
            header=self._header(t, CAMERA_FRAME), height=height, width=width, distortion_model="plumb_bob",
            d=np.zeros(5), k=np.asarray(K, np.float64).reshape(-1), r=np.eye(3).reshape(-1), p=P.reshape(-1),
            binning_x=0, binning_y=0,
            roi=self.ts.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                                  do_rectify=False))

    # ------------------------------------------------------------------ per frame
    def add(self, frame, pf, step) -> None:
        """One mapped frame: the source ``Frame`` (for IMU), the ``PerceptionFrame`` the map got and its
        ``StepResult`` (estimated pose, depth scale)."""
        t = float(pf.timestamp)
        if self.align is None:
            self.align = world_alignment(step.pose)
            static = np.eye(4)
            static[:3, :3] = BODY_FROM_OPTICAL
            msg = self.ts.types["tf2_msgs/msg/TFMessage"](transforms=[self._transform(t, BODY_FRAME, CAMERA_FRAME,
                                                                                      static)])
            self._write("tf_static", t, msg, "tf2_msgs/msg/TFMessage")
        h, w = pf.size
        self._write("rgb", t, self._image(t, pf.rgb, "rgb8", 3), "sensor_msgs/msg/Image")
        depth = np.asarray(pf.depth, np.float32) * np.float32(step.scale)
        self._write("depth", t, self._image(t, depth, "32FC1", 4), "sensor_msgs/msg/Image")
        self._write("labels", t, self._image(t, np.asarray(pf.labels, np.uint8), "mono8", 1), "sensor_msgs/msg/Image")
        self._write("camera_info", t, self._camera_info(t, pf.K, h, w), "sensor_msgs/msg/CameraInfo")
        pose = self.align @ np.asarray(step.pose, np.float64)
        self.poses.append((t, pose))
        msg = self.ts.types["tf2_msgs/msg/TFMessage"](transforms=[self._transform(t, WORLD_FRAME, BODY_FRAME,
                                                                                  body_pose(pose))])
        self._write("tf", t, msg, "tf2_msgs/msg/TFMessage")
        self._add_imu(getattr(frame, "imu", None))

    def _add_imu(self, imu) -> None:
        """IMU samples (``imu.t`` (N,), ``gyro`` (N,3) rad/s, ``accel`` (N,3) m/s^2, in the camera's optical
        frame), each written once even when consecutive frames' windows overlap."""
        if imu is None or len(getattr(imu, "t", ())) == 0:
            return
        if "imu" not in self.conn:
            self.conn["imu"] = self.writer.add_connection(TOPICS["imu"], "sensor_msgs/msg/Imu", typestore=self.ts)
        types = self.ts.types
        unknown = np.zeros(9)
        unknown[0] = -1.0  # REP 145 / sensor_msgs/Imu: covariance[0] = -1 means "no orientation estimate"
        for t, g, a in zip(np.asarray(imu.t, np.float64), np.asarray(imu.gyro), np.asarray(imu.accel)):
            if t <= self._last_imu_t or t < 0:  # bag times are unsigned
                continue
            self._last_imu_t = t
            msg = types["sensor_msgs/msg/Imu"](
                header=self._header(t, CAMERA_FRAME),
                orientation=types["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
                orientation_covariance=unknown,
                angular_velocity=types["geometry_msgs/msg/Vector3"](x=g[0], y=g[1], z=g[2]),
                angular_velocity_covariance=np.zeros(9),
                linear_acceleration=types["geometry_msgs/msg/Vector3"](x=a[0], y=a[1], z=a[2]),
                linear_acceleration_covariance=np.zeros(9))
            self._write("imu", float(t), msg, "sensor_msgs/msg/Imu")

    def close(self) -> Path | None:
        """Write the trajectory, finish the bag, move it into place and write the label space beside it.
        Returns the bag folder (None when no frame was written: nothing is left behind)."""
        if self.closed:
            return self.out if self.out.exists() else None
        self.closed = True
        if self.poses:
            t_end = self.poses[-1][0]
            msg = self.ts.types["nav_msgs/msg/Path"](header=self._header(t_end, WORLD_FRAME),
                                                      poses=[self._pose_stamped(t, p) for t, p in self.poses])
            self._write("path", t_end, msg, "nav_msgs/msg/Path")
        self.writer.close()
        if not self.poses:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return None
        # rosbag2 names the storage file after the folder: rename it with the folder
        for f in list(self.tmp.iterdir()):
            if f.name.startswith(self.tmp.name):
                f.rename(self.tmp / f.name.replace(self.tmp.name, self.out.name, 1))
        meta = self.tmp / "metadata.yaml"
        meta.write_text(meta.read_text().replace(self.tmp.name, self.out.name))
        from mapping.export import write_label_space

        write_label_space(self.tmp / "labelspace.yaml", self.tmp / "labelspace_colors.csv", self.label_space)
        self.tmp.rename(self.out)
        return self.out
