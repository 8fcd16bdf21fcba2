"""Rerun recordings and ROS 2 bags: one real ``m2hmx-map`` run writes both, read back with the Rerun SDK's own
reader (``rerun.chunk.RrdReader``) and with ``rosbags``; the bag then plays as a dataset; bad input is one line."""
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from app.map_cli import main

SEED, FRAMES = 200001, 6  # a validation room (not the held-out 100000-100019)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    code = main(["--dataset", f"synthetic:{SEED}", "--depth", "sensor", "--max-frames", str(FRAMES), "--no-progress",
                 "--out", str(out / "map"), "--rerun-save", str(out / "run.rrd"), "--rosbag", str(out / "bag")])
    assert code == 0
    return out


def rrd_columns(path: Path) -> dict[str, dict[str, list]]:
    """{entity path: {column: values in frame order}} of an .rrd, through the SDK's reader."""
    from rerun.chunk import RrdReader

    rows: dict[str, list[dict]] = {}
    for chunk in RrdReader(path).stream().collect().stream():
        batch = chunk.to_record_batch().to_pydict()
        n = chunk.num_rows
        rows.setdefault(chunk.entity_path, []).extend({k: v[i] for k, v in batch.items()} for i in range(n))
    out = {}
    for entity, items in rows.items():
        items.sort(key=lambda r: r.get("frame") or 0)
        keys = {k for r in items for k in r}
        out[entity] = {k: [r.get(k) for r in items if r.get(k) is not None] for k in keys}
    return out


def tum_poses(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from m2hmx.data.readers.tum import tum_pose

    rows = [line.split() for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return np.array([float(r[0]) for r in rows]), np.array([tum_pose(*map(float, r[1:8])) for r in rows])


def bag_messages(path: Path) -> dict[str, list]:
    from rosbags.highlevel import AnyReader

    out: dict[str, list] = {}
    with AnyReader([path]) as reader:
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, conn.msgtype, reader.deserialize(raw, conn.msgtype)))
    return out


def test_rerun_recording_holds_every_frame_the_map_and_the_camera(run):
    from m2hmx.data.synthetic import SyntheticSource

    cols = rrd_columns(run / "run.rrd")
    per_frame = ["/world/camera", "/world/camera/image/rgb", "/world/camera/image/sensor_depth",
                 "/world/camera/image/segmentation", "/images/normals", "/images/edges", "/stats/fps",
                 "/stats/latency_ms", "/stats/tracking_ok"]
    for entity in per_frame:
        assert len(cols[entity]["frame"]) == FRAMES, entity
    assert cols["/world/camera"]["frame"] == list(range(FRAMES))
    # The camera's Transform3D is the estimated pose m2hmx-map exported.
    _, est = tum_poses(run / "map" / "trajectory.tum")
    logged = np.array([v[0] for v in cols["/world/camera"]["Transform3D:translation"]])
    assert np.abs(logged - est[:, :3, 3]).max() < 1e-5
    assert cols["/stats/tracking_ok"]["Scalars:scalars"] == [[1.0]] * FRAMES
    # Depth is metres (meter = 1) under a Pinhole with the source's K, so Rerun back-projects it.
    assert cols["/world/camera/image/sensor_depth"]["DepthImage:meter"][0] == [1.0]
    K = SyntheticSource(seed=SEED, frames=1)[0].K
    pinhole = np.array(cols["/world/camera/image"]["Pinhole:image_from_camera"][0][0]).reshape(3, 3).T  # column-major
    assert np.allclose(pinhole, K, atol=1e-3)
    assert cols["/world/camera/image"]["Pinhole:resolution"][0] == [[320.0, 240.0]]
    # The map at the snapshot rate, and always at the end: mesh, objects with labels, trajectory, ATE.
    mesh = cols["/world/mesh"]
    assert 1 <= len(mesh["frame"]) <= FRAMES and mesh["frame"][-1] == FRAMES - 1
    assert len(mesh["Mesh3D:vertex_positions"][-1]) > 1000 and len(mesh["Mesh3D:triangle_indices"][-1]) > 1000
    labels = cols["/world/objects"]["Boxes3D:labels"][-1]
    assert labels and all(isinstance(name, str) for name in labels)
    assert len(cols["/world/trajectory"]["LineStrips3D:strips"][-1][0]) == FRAMES
    assert len(cols["/world/ground_truth"]["LineStrips3D:strips"][-1][0]) == FRAMES
    assert 0 <= cols["/stats/ate_m"]["Scalars:scalars"][-1][0] < 0.02
    # The label space's names are the annotation context the segmentation refers to.
    context = cols["/"]["AnnotationContext:context"][0]
    assert "wall" in str(context) and "chair" in str(context)
    # A generated room's world is z-up.
    assert cols["/world"]["ViewCoordinates:xyz"][0] is not None


def test_rosbag_has_hydras_topics_encodings_metric_depth_and_tf(run):
    from m2hmx.data.ros import BODY_FROM_OPTICAL, TOPICS, transform_matrix
    from m2hmx.data.synthetic import SyntheticSource

    bag = run / "bag"
    msgs = bag_messages(bag)
    counts = {topic: len(v) for topic, v in msgs.items()}
    imu_samples = sum(len(SyntheticSource(seed=SEED)[i].imu) for i in range(FRAMES))  # generated rooms have IMU
    assert imu_samples == 1 + 200 * (FRAMES - 1) // 30  # 200 Hz from t = 0 to the last frame
    assert counts == {TOPICS["rgb"]: FRAMES, TOPICS["depth"]: FRAMES, TOPICS["labels"]: FRAMES,
                      TOPICS["camera_info"]: FRAMES, TOPICS["tf"]: FRAMES, TOPICS["tf_static"]: 1, TOPICS["path"]: 1,
                      TOPICS["imu"]: imu_samples}
    assert "metadata.yaml" in {p.name for p in bag.iterdir()} and list(bag.glob("*.mcap"))
    assert [m.encoding for _, _, m in msgs[TOPICS["rgb"]]] == ["rgb8"] * FRAMES
    assert [m.encoding for _, _, m in msgs[TOPICS["depth"]]] == ["32FC1"] * FRAMES
    assert [m.encoding for _, _, m in msgs[TOPICS["labels"]]] == ["mono8"] * FRAMES
    # Depth in metres: the source's own depth (sensor depth: no rescaling), pixel for pixel.
    src = SyntheticSource(seed=SEED)
    depth_msg = msgs[TOPICS["depth"]][3][2]
    depth = np.frombuffer(depth_msg.data.tobytes(), np.float32).reshape(depth_msg.height, depth_msg.width)
    assert np.array_equal(depth, src[3].depth)
    assert 0.3 < depth[120, 160] < 10
    info = msgs[TOPICS["camera_info"]][0][2]
    assert np.allclose(np.reshape(info.k, (3, 3)), src[0].K) and info.header.frame_id == "camera"
    # TF: world -> base_link at the estimated pose (REP 103 body axes), base_link -> camera the optical rotation;
    # composed they give the camera pose m2hmx-map exported (a z-up world is kept as it is).
    static = msgs[TOPICS["tf_static"]][0][2].transforms[0]
    assert (static.header.frame_id, static.child_frame_id) == ("base_link", "camera")
    _, est = tum_poses(run / "map" / "trajectory.tum")
    for i in (0, FRAMES - 1):
        tr = msgs[TOPICS["tf"]][i][2].transforms[0]
        assert (tr.header.frame_id, tr.child_frame_id) == ("world", "base_link")

        def matrix(t):
            return transform_matrix((t.translation.x, t.translation.y, t.translation.z),
                                    (t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w))

        camera = matrix(tr.transform) @ matrix(static.transform)
        assert np.allclose(camera, est[i], atol=1e-6)
        assert np.allclose(matrix(static.transform)[:3, :3], BODY_FROM_OPTICAL)
    path = msgs[TOPICS["path"]][0][2]
    assert len(path.poses) == FRAMES and path.header.frame_id == "world"
    # Hydra's label space beside the bag.
    assert "total_semantic_labels: 20" in (bag / "labelspace.yaml").read_text()
    assert (bag / "labelspace_colors.csv").read_text().startswith("name,red,green,blue,alpha,id\n")


def test_the_bag_plays_back_as_a_dataset_with_its_poses(run):
    from m2hmx.data.sources import open_source
    from m2hmx.data.synthetic import SyntheticSource

    src = open_source(str(run / "bag"))
    try:
        assert len(src) == FRAMES and src.label_space.name == "scannet20"
        frames = list(src)
    finally:
        src.close()
    truth = SyntheticSource(seed=SEED)
    t_est, est = tum_poses(run / "map" / "trajectory.tum")
    for f in frames:
        assert np.array_equal(f.rgb, truth[f.index].rgb) and np.array_equal(f.labels, truth[f.index].labels)
        assert np.array_equal(f.depth, truth[f.index].depth)
        assert abs(f.timestamp - t_est[f.index]) < 1e-6 and np.allclose(f.pose, est[f.index], atol=1e-6)
    # and maps like the original (the bag's TF is the estimate, near the ground truth)
    out = run / "from-bag"
    assert main(["--dataset", str(run / "bag"), "--depth", "sensor", "--no-progress", "--out", str(out)]) == 0
    t2, est2 = tum_poses(out / "trajectory.tum")
    assert len(t2) == FRAMES and np.abs(est2[:, :3, 3] - est[:, :3, 3]).max() < 0.01


def _write_robot_bag(path: Path, with_color: bool = True) -> np.ndarray:
    """A bag as a RealSense driver + odometry records it: bgr8 colour, 16UC1 depth in mm on RealSense topic
    names, CameraInfo, TF odom -> base -> camera_color_optical_frame. Returns the 2-frame camera poses."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    T = ts.types
    h, w = 48, 64
    K = np.array([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]])
    poses = []

    def header(t, frame):
        return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=int(t), nanosec=int(t % 1 * 1e9)),
                                         frame_id=frame)

    def transform(t, parent, child, x, yaw):
        c, s = np.cos(yaw / 2), np.sin(yaw / 2)
        return T["geometry_msgs/msg/TransformStamped"](
            header=header(t, parent), child_frame_id=child, transform=T["geometry_msgs/msg/Transform"](
                translation=T["geometry_msgs/msg/Vector3"](x=x, y=0.0, z=0.0),
                rotation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=s, w=c)))

    with Writer(path, version=8, storage_plugin=StoragePlugin.SQLITE3) as bag:
        topics = {"color": "/camera/camera/color/image_raw", "depth": "/camera/camera/aligned_depth_to_color/image_raw",
                  "info": "/camera/camera/color/camera_info", "tf": "/tf", "odom": "/odom"}
        types = {"color": "sensor_msgs/msg/Image", "depth": "sensor_msgs/msg/Image",
                 "info": "sensor_msgs/msg/CameraInfo", "tf": "tf2_msgs/msg/TFMessage", "odom": "nav_msgs/msg/Odometry"}
        conns = {k: bag.add_connection(topics[k], types[k], typestore=ts) for k in topics
                 if with_color or k != "color"}

        def put(key, t, msg):
            bag.write(conns[key], int(t * 1e9), ts.serialize_cdr(msg, types[key]))

        for k, t in enumerate((100.0, 100.1, 100.2, 100.3)):  # odometry at 10 Hz
            put("tf", t, T["tf2_msgs/msg/TFMessage"](transforms=[transform(t, "odom", "base", 0.5 * k, 0.0),
                                                                 transform(t, "base", "camera_color_optical_frame",
                                                                           0.0, 0.0)]))
        for t in (100.05, 100.25):  # images between odometry stamps: poses interpolated
            bgr = np.zeros((h, w, 3), np.uint8)
            bgr[..., 0] = 200  # blue
            if with_color:
                put("color", t, T["sensor_msgs/msg/Image"](header=header(t, "camera_color_optical_frame"), height=h,
                                                           width=w, encoding="bgr8", is_bigendian=0, step=w * 3,
                                                           data=bgr.reshape(-1)))
            mm = np.full((h, w), 1500, np.uint16)
            put("depth", t + 0.004, T["sensor_msgs/msg/Image"](
                header=header(t + 0.004, "camera_color_optical_frame"), height=h, width=w, encoding="16UC1",
                is_bigendian=0, step=w * 2, data=mm.view(np.uint8).reshape(-1)))
            put("info", t, T["sensor_msgs/msg/CameraInfo"](
                header=header(t, "camera_color_optical_frame"), height=h, width=w, distortion_model="plumb_bob",
                d=np.zeros(5), k=K.reshape(-1), r=np.eye(3).reshape(-1), p=np.hstack([K, np.zeros((3, 1))]).reshape(-1),
                binning_x=0, binning_y=0, roi=T["sensor_msgs/msg/RegionOfInterest"](
                    x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)))
            pose = np.eye(4)
            pose[0, 3] = 0.5 * (t - 100.0) / 0.1
            poses.append(pose)
    return np.array(poses)


def test_a_robot_recording_plays_with_topics_found_by_encoding(tmp_path):
    from m2hmx.data.sources import open_source

    poses = _write_robot_bag(tmp_path / "walk")
    src = open_source(str(tmp_path / "walk"))
    try:
        frames = list(src)
    finally:
        src.close()
    assert len(frames) == 2
    f = frames[1]
    assert f.rgb[0, 0].tolist() == [0, 0, 200]  # bgr8 -> RGB
    assert f.depth.dtype == np.float32 and np.allclose(f.depth, 1.5)  # 16UC1 millimetres -> metres
    assert f.K[0, 0] == 60.0 and f.labels is None and abs(f.timestamp - 100.25) < 1e-6
    assert np.allclose(f.pose, poses[1], atol=1e-6)  # TF interpolated between 100.2 and 100.3


def test_a_bag_without_colour_images_names_what_it_found(tmp_path):
    from m2hmx.data.errors import DatasetError
    from m2hmx.data.sources import open_source

    _write_robot_bag(tmp_path / "depth-only", with_color=False)
    with pytest.raises(DatasetError) as err:
        open_source(str(tmp_path / "depth-only"))
    msg = str(err.value)
    assert "no colour image topic" in msg and "/camera/camera/aligned_depth_to_color/image_raw (sensor_msgs/Image)" \
        in msg and "/tf (tf2_msgs/TFMessage)" in msg and "\n" not in msg


def test_imu_samples_go_into_the_bag_once_each(tmp_path):
    from types import SimpleNamespace

    from app.rosbag_io import RosbagWriter
    from m2hmx.data.ros import TOPICS
    from m2hmx.labels import load_label_space
    from mapping.interface import PerceptionFrame

    writer = RosbagWriter(tmp_path / "imu", load_label_space("scannet20"))
    K = np.array([[50.0, 0, 15.5], [0, 50.0, 11.5], [0, 0, 1]])
    for i in range(3):  # each frame carries the IMU samples since the one before, overlapping by one
        pf = PerceptionFrame(1.0 + 0.1 * i, np.zeros((24, 32, 3), np.uint8), np.full((24, 32), 2.0, np.float32),
                             np.zeros((24, 32), np.uint8), K)
        t = 1.0 + 0.1 * i - np.array([0.1, 0.05, 0.0])
        imu = SimpleNamespace(t=t, gyro=np.tile([0.1, 0.2, 0.3], (3, 1)), accel=np.tile([0.0, -9.81, 0.0], (3, 1)))
        writer.add(SimpleNamespace(imu=imu), pf, SimpleNamespace(pose=np.eye(4), scale=1.0))
    writer.add(SimpleNamespace(), pf, SimpleNamespace(pose=np.eye(4), scale=1.0))  # a frame without .imu
    writer.close()
    imu = bag_messages(tmp_path / "imu")[TOPICS["imu"]]
    stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for _, _, m in imu]
    assert len(imu) == 7 and np.all(np.diff(stamps) > 0)
    m = imu[0][2]
    assert m.linear_acceleration.y == -9.81 and m.angular_velocity.z == 0.3 and m.orientation_covariance[0] == -1


def test_unwritable_outputs_and_missing_extras_fail_before_the_run(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    existing = tmp_path / "bag"
    existing.mkdir()
    cases = [(["--rerun-save", str(blocker / "run.rrd")], "cannot create"),
             (["--rerun-save", str(tmp_path)], "is a folder"),
             (["--rosbag", str(existing)], "already exists"),
             (["--rosbag", str(blocker / "bag")], "cannot create")]
    for extra, words in cases:
        out = tmp_path / "map"
        assert main(["--dataset", "synthetic:0", "--out", str(out), "--no-progress", *extra]) == 2  # usage
        err = capsys.readouterr().err.strip()
        assert err.startswith("m2hmx-map: error:") and words in err and "\n" not in err, err
        assert not out.exists()
    with monkeypatch.context() as m:  # --rerun opens a viewer window: without a display, say so up front
        m.delenv("DISPLAY", raising=False)
        m.delenv("WAYLAND_DISPLAY", raising=False)
        assert main(["--dataset", "synthetic:0", "--out", str(tmp_path / "map"), "--rerun"]) == 2
        err = capsys.readouterr().err
        assert "needs a display" in err and "--rerun-save" in err and not (tmp_path / "map").exists()
    for module, flag, extra in (("rerun", "--rerun-save", "rerun"), ("rosbags", "--rosbag", "ros")):
        monkeypatch.setitem(sys.modules, module, None)  # as if the extra were not installed
        monkeypatch.setitem(sys.modules, f"{module}.rosbag2" if module == "rosbags" else module, None)
        assert main(["--dataset", "synthetic:0", "--out", str(tmp_path / "map"), flag, str(tmp_path / "x")]) == 2
        assert f"pip install 'm2hmx[{extra}]'" in capsys.readouterr().err
        monkeypatch.undo()


def test_viewer_logs_its_run_to_a_rerun_recording(make_window, demo_options, qtbot, tmp_path):
    rrd = tmp_path / "viewer.rrd"
    window = make_window(demo_options(max_frames=5, rerun=("save", str(rrd))))
    with qtbot.waitSignal(window.run_finished, timeout=180_000):
        pass
    window.shutdown()  # closes the recording: the .rrd appears under its name
    cols = rrd_columns(rrd)
    assert len(cols["/world/camera/image/rgb"]["frame"]) == window.session.frames_shown >= 1
    assert len(cols["/world/camera/image/segmentation"]["frame"]) == window.session.frames_shown  # ground-truth labels
    logged = np.array([v[0] for v in cols["/world/camera"]["Transform3D:translation"]])
    est_poses = np.array(window.session.est_poses)
    assert len(logged) == len(est_poses) and np.allclose(logged, est_poses[:, :3, 3], atol=1e-5)
    assert len(cols["/world/mesh"]["frame"]) >= 1
    assert len(cols["/stats/latency_ms"]["frame"]) == window.session.frames_shown


def test_rerun_addresses():
    from app.rerun_log import grpc_url

    assert grpc_url("otherhost:9000") == "rerun+http://otherhost:9000/proxy"
    assert grpc_url("otherhost") == "rerun+http://otherhost:9876/proxy"
    assert grpc_url("rerun+http://h:1/proxy") == "rerun+http://h:1/proxy"


def test_viewer_rerun_options_and_an_unwritable_recording_fail_before_the_window(tmp_path, capsys):
    from app.main import build_parser, main as viewer_main, options_from_args

    parse = build_parser().parse_args
    assert options_from_args(parse(["--rerun-save", "a.rrd"])).rerun == ("save", "a.rrd")
    assert options_from_args(parse(["--rerun-connect", "h:1"])).rerun == ("connect", "h:1")
    assert options_from_args(parse(["--rerun"])).rerun == ("spawn", None)
    assert options_from_args(parse([])).rerun is None
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as exit_:
        viewer_main(["--rerun-save", str(blocker / "run.rrd")])
    assert exit_.value.code == 2 and "cannot create" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:RRD file has no footer")  # a stream being received has no footer yet
def test_rerun_connect_streams_to_a_listening_viewer(tmp_path):
    """A real gRPC receiver (the SDK's own ``rerun`` binary, saving what it gets) on a free port."""
    import shutil
    import socket
    import subprocess
    import time

    binary = shutil.which("rerun", path=str(Path(sys.executable).parent)) or shutil.which("rerun")
    if binary is None:
        pytest.skip("the rerun binary (installed with rerun-sdk) is not on this machine")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    received = tmp_path / "received.rrd"
    server = subprocess.Popen([binary, "--port", str(port), "--save", str(received)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)  # its own group: the wrapper
    # script starts the real binary as a child, and both must go
    try:
        time.sleep(2.0)  # the server binds its port
        assert main(["--dataset", "synthetic:200002", "--depth", "sensor", "--max-frames", "3", "--no-progress",
                     "--out", str(tmp_path / "map"), "--rerun-connect", f"127.0.0.1:{port}"]) == 0
        deadline = time.monotonic() + 60
        while True:  # the receiver writes as the stream arrives
            try:
                cols = rrd_columns(received)
                if len(cols.get("/world/camera", {}).get("frame", [])) == 3 and "/world/mesh" in cols:
                    break
            except Exception:
                pass
            assert time.monotonic() < deadline, "the receiver did not get the 3 frames"
            time.sleep(1.0)
        assert len(cols["/world/camera/image/rgb"]["frame"]) == 3
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(10)


def test_ros_world_is_z_up_and_base_link_looks_along_the_camera():
    from m2hmx.data.ros import body_pose, world_alignment

    z_up = np.eye(4)
    z_up[:3, :3] = [[1, 0, 0], [0, 0, 1], [0, -1, 0]]  # an OpenCV camera looking along +y of a z-up world
    assert np.array_equal(world_alignment(z_up), np.eye(4))  # kept: poses in the bag equal the map's
    camera_start = np.eye(4)  # a map that started at the camera: its world is y down, z forward
    A = world_alignment(camera_start)
    pose = A @ camera_start
    assert np.allclose(pose[:3, 2], [1, 0, 0]) and np.allclose(-pose[:3, 1], [0, 0, 1])  # looks along +x, up is +z
    body = body_pose(pose)  # REP 103 body axes: x forward, y left, z up
    assert np.allclose(body[:3, :3], np.eye(3))
    assert np.isclose(np.linalg.det(A[:3, :3]), 1.0)
