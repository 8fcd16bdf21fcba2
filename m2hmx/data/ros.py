"""ROS 2 conventions shared by the bag writer (``app.rosbag_io``) and reader (``m2hmx.data.readers.rosbag``).

Topic names are the defaults of the paper's own ROS 2 stack, mono-hydra-pp
(BavanthaU/mono-hydra-pp, ``mono_hydra/launch/mono_hydra_scannet.launch.py`` at commit 161a89b:
``rgb_topic``, ``camera_info_topic``, ``depth_topic``, ``label_topic``, ``imu_topic``), which remaps them onto
Hydra's inputs ``hydra/input/camera/{rgb/image_raw, rgb/camera_info, depth_registered/image_rect,
semantic/image_raw}`` (the same input names as MIT-SPARK/Hydra-ROS ``hydra_ros/launch/datasets/
uhumans2.launch.yaml``, there under ``left_cam``). Depth is ``32FC1`` metres and labels ``mono8`` class ids,
as mono-hydra-pp's perception node publishes them (``mono_hydra_perception/m2h_hmx_large_node.py``).
Hydra has no trajectory topic; the ``nav_msgs/Path`` topic name is this project's own.

Frames: ``world -> base_link -> camera``. ``world`` and ``base_link`` follow REP 103 (x forward, y left,
z up); ``camera`` is the optical frame of the images (REP 103's optical convention: x right, y down,
z forward, the same axes as OpenCV and ``Frame.pose``). Hydra's launch files take them as
``odom_frame:=world robot_frame:=base_link sensor_frame:=camera``. numpy only.
"""
from __future__ import annotations

import numpy as np

TOPICS = {
    "rgb": "/camera/color/image_raw",
    "camera_info": "/camera/color/camera_info",
    "depth": "/camera/depth_cam/image_raw",
    "labels": "/camera/seg_cam/labels_argmax",
    "imu": "/imu/aligned",
    "tf": "/tf",
    "tf_static": "/tf_static",
    "path": "/m2hmx/trajectory",  # ours: Hydra reads poses from TF, not from a Path
}
WORLD_FRAME, BODY_FRAME, CAMERA_FRAME = "world", "base_link", "camera"
TYPESTORE = "ROS2_JAZZY"  # rosbags.typesys.Stores member whose message definitions the bag carries

# The optical frame's axes in the body frame (REP 103): x_optical = -y_body, y_optical = -z_body,
# z_optical = x_body. Columns are the optical axes.
BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def ros_time(seconds: float) -> tuple[int, int]:
    """(sec, nanosec) of a builtin_interfaces/Time."""
    ns = int(round(seconds * 1e9))
    return ns // 1_000_000_000, ns % 1_000_000_000


def world_alignment(first_pose: np.ndarray) -> np.ndarray:
    """4x4 rotation taking the map's world into a REP 103 world (z up).

    A world whose axis nearest to the first camera's up (-y, OpenCV) is +z (ScanNet, the generated
    rooms) is kept as it is, so poses in the bag equal the dataset's. Otherwise (a map started at a
    camera: y down) that axis becomes +z and the camera's forward direction +x."""
    cam_up = -np.asarray(first_pose, np.float64)[:3, 1]
    axis = int(np.argmax(np.abs(cam_up)))
    T = np.eye(4)
    if axis == 2 and cam_up[2] > 0:
        return T
    up = np.zeros(3)
    up[axis] = np.sign(cam_up[axis])
    fwd = np.asarray(first_pose, np.float64)[:3, 2] - up * np.dot(first_pose[:3, 2], up)
    fwd /= max(np.linalg.norm(fwd), 1e-9)
    T[:3, :3] = np.stack([fwd, np.cross(up, fwd), up])
    return T


def body_pose(camera_pose: np.ndarray) -> np.ndarray:
    """world_T_base_link of a camera-to-world pose in OpenCV axes (base_link at the camera's centre)."""
    T = np.array(camera_pose, np.float64)
    T[:3, :3] = T[:3, :3] @ BODY_FROM_OPTICAL.T
    return T


def matrix_to_quat_xyzw(R: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(np.asarray(R, np.float64)).as_quat()


def transform_matrix(translation, quat_xyzw) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(np.asarray(quat_xyzw, np.float64)).as_matrix()
    T[:3, 3] = translation
    return T
