"""IMU through the data path: the generator's IMU (frame poses unchanged, deterministic, D435i noise), written as
imu0/data.csv and read back by every folder reader, a .sens IMU trailer, and sources without IMU."""
import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.pipeline import to_perception_frame
from m2hmx.data import DatasetError
from m2hmx.data.readers.sens import DEVICE_T_CAMERA, IMU_FRAME, SensFile
from m2hmx.data.readers.sevenscenes import SevenScenes
from m2hmx.data.readers.video import ImageFolder
from m2hmx.data.sources import open_source
from m2hmx.data.synthetic import FPS, SyntheticSource, make_path, make_scene, make_trajectory, write_scene
from mapping.imu import D435I, ImuSamples, write_euroc_csv
from tests.data.helpers import write_sens

REFERENCE = Path(__file__).with_name("trajectory_reference.json")


def test_frame_poses_unchanged():
    """The 30 Hz poses (and so the images) of every seed stay as before the IMU: values saved from the generator as
    it was (every 10th frame of five seeds, the held-out rooms 100000 and 100004 among them)."""
    ref = json.loads(REFERENCE.read_text())["seeds"]
    for seed, entry in ref.items():
        scene = make_scene(int(seed))
        poses = make_trajectory(scene, entry["frames"], int(seed))
        np.testing.assert_allclose(poses[::10, :3], np.reshape(entry["poses"], (-1, 3, 4)), rtol=0, atol=1e-12)
        path = make_path(scene, entry["frames"], int(seed))  # the continuous path meets every frame
        np.testing.assert_allclose(path.poses(path.times), poses, rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def source():
    return SyntheticSource(seed=5, frames=60, height=24, width=32)


def test_generated_frames_carry_the_imu_since_the_previous_frame(source):
    imu = source.imu
    assert isinstance(imu, ImuSamples) and np.array_equal(imu.body_T_cam, np.eye(4))
    assert len(imu) == 59 * 20 // 3 + 1 and np.allclose(np.diff(imu.t), 0.005)  # 200 Hz up to the last frame
    frames = list(source)
    assert len(frames[0].imu) == 1 and frames[0].imu.t[0] == 0.0  # up to its own time
    for prev, f in zip(frames, frames[1:]):
        assert len(f.imu) in (6, 7) and prev.timestamp < f.imu.t[0] and f.imu.t[-1] <= f.timestamp
    joined = frames[0].imu
    for f in frames[1:]:
        joined = joined.concat(f.imu)
    assert np.array_equal(joined.t, imu.t) and np.array_equal(joined.accel, imu.accel)
    assert source[17].imu.t.tolist() == frames[17].imu.t.tolist()  # random access gives the same slice
    pf = to_perception_frame(frames[9], depth_mode="gt")
    assert pf.imu is frames[9].imu


def test_generated_imu_physics_noise_and_determinism(source):
    clean = source.path.imu(noise=None)
    assert np.array_equal(clean.t, source.imu.t)
    # a slow hand-held walk: specific force about g, turning under 2 rad/s
    assert np.allclose(np.linalg.norm(clean.accel, axis=1).mean(), 9.81, atol=0.05)
    assert np.abs(clean.gyro).max() < 2.0
    # noise: white at density * sqrt(rate) (differences of neighbours cancel the slow bias walk) ...
    d = source.imu.gyro - clean.gyro, source.imu.accel - clean.accel
    for diff, density in zip(d, (D435I.gyro_noise_density, D435I.accel_noise_density)):
        white = np.diff(diff, axis=0).std() / math.sqrt(2)
        assert white == pytest.approx(density * math.sqrt(200.0), rel=0.1)
    # ... with its own RNG stream: same seed, same samples; another seed, other noise; frames as without IMU
    again = SyntheticSource(seed=5, frames=60, height=24, width=32)
    assert np.array_equal(again.imu.gyro, source.imu.gyro) and np.array_equal(again.imu.accel, source.imu.accel)
    assert not np.allclose(source.path.imu(D435I, seed=6).gyro, source.imu.gyro)
    assert np.array_equal(again.poses, make_trajectory(make_scene(5), 60, 5))


def test_one_frame_walk_stands_still():
    src = SyntheticSource(seed=5, frames=1, height=16, width=16)
    assert len(src.imu) == 1 and np.allclose(src.path.imu().accel, [src.poses[0][:3, :3].T @ [0, 0, 9.81]])


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "scene0000_00"
    write_scene(out, seed=5, frames=12, height=24, width=32, progress=False)
    return out


def _same_imu(frames_a, frames_b):
    for a, b in zip(frames_a, frames_b, strict=True):
        assert np.array_equal(a.imu.t, b.imu.t) and np.array_equal(a.imu.gyro, b.imu.gyro)
        assert np.array_equal(a.imu.accel, b.imu.accel) and np.array_equal(a.imu.body_T_cam, b.imu.body_T_cam)


def test_synth_export_reads_back_with_its_imu(written):
    assert (written / "imu0" / "data.csv").is_file() and (written / "cam0" / "sensor.yaml").is_file()
    _same_imu(list(open_source(str(written))), list(SyntheticSource(seed=5, frames=12, height=24, width=32)))


def test_every_folder_reader_takes_imu0(tmp_path, written):
    ref = list(SyntheticSource(seed=5, frames=12, height=24, width=32))
    # 7-Scenes layout: frame-XXXXXX.color.png/.depth.png/.pose.txt, 30 Hz
    seven = tmp_path / "seven"
    seven.mkdir()
    for f in ref:
        cv2.imwrite(str(seven / f"frame-{f.index:06d}.color.png"), f.rgb[:, :, ::-1])
        cv2.imwrite(str(seven / f"frame-{f.index:06d}.depth.png"), np.round(f.depth * 1000).astype(np.uint16))
        np.savetxt(seven / f"frame-{f.index:06d}.pose.txt", f.pose)
    assert all(f.imu is None for f in SevenScenes(seven))  # no imu0/: no IMU
    shutil.copytree(written / "imu0", seven / "imu0")
    _same_imu(list(open_source(str(seven))), ref)
    # a plain image folder at 30 Hz
    images = tmp_path / "images"
    images.mkdir()
    for f in ref:
        cv2.imwrite(str(images / f"{f.index:04d}.png"), f.rgb[:, :, ::-1])
    shutil.copytree(written / "imu0", images / "imu0")
    src = open_source(str(images))
    assert isinstance(src, ImageFolder)
    _same_imu(list(src), ref)
    # TUM RGB-D: rgb.txt + depth.txt with the frames' times
    tum = tmp_path / "rgbd_dataset_freiburg1_test"
    (tum / "rgb").mkdir(parents=True)
    (tum / "depth").mkdir()
    rgb_txt, depth_txt = [], []
    for f in ref:
        name = f"{f.index}.png"
        cv2.imwrite(str(tum / "rgb" / name), f.rgb[:, :, ::-1])
        cv2.imwrite(str(tum / "depth" / name), np.round(f.depth * 5000).astype(np.uint16))
        rgb_txt.append(f"{f.timestamp!r} rgb/{name}")
        depth_txt.append(f"{f.timestamp!r} depth/{name}")
    (tum / "rgb.txt").write_text("\n".join(rgb_txt) + "\n")
    (tum / "depth.txt").write_text("\n".join(depth_txt) + "\n")
    shutil.copytree(written / "imu0", tum / "imu0")
    _same_imu(list(open_source(str(tum))), ref)


def test_missing_and_bad_imu_in_a_folder_is_one_line(tmp_path, written):
    folder = tmp_path / "scene"
    shutil.copytree(written, folder)
    src = SyntheticSource(seed=5, frames=12, height=24, width=32)
    write_euroc_csv(folder / "imu0" / "data.csv", src.imu.between(-1, 0.2))  # the IMU stops at 0.2 s
    frames = open_source(str(folder))
    with pytest.raises(DatasetError) as exc:
        list(frames)
    assert str(exc.value) == (f"{folder / 'imu0' / 'data.csv'}: IMU samples missing: frame 10 at 0.333 s needs samples "
                              "from 0.300 s, the IMU stream covers 0.000-0.200 s")
    lines = (folder / "imu0" / "data.csv").read_text().splitlines()
    lines[5] = lines[5].replace(",", ";", 2)
    (folder / "imu0" / "data.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as exc:
        open_source(str(folder))
    assert str(exc.value).startswith(f"{folder / 'imu0' / 'data.csv'}:6: expected 7 comma-separated numbers")
    assert "\n" not in str(exc.value)


def _coremotion(imu: ImuSamples, t_us):
    """``imu`` (camera axes, specific force in m/s^2) as ScanNet's iPad would store it."""
    rec = np.zeros(len(imu), IMU_FRAME)
    R = DEVICE_T_CAMERA[:3, :3]
    rec["rotation_rate"] = imu.gyro @ R.T
    rec["acceleration"] = -(imu.accel @ R.T) / 9.80665
    rec["gravity"] = (0, 0, -1)
    rec["timestamp"] = t_us
    return rec


def test_sens_imu_frames_read_back(tmp_path):
    src = SyntheticSource(seed=5, frames=6, height=24, width=32)
    frames = list(src)
    t_us = np.round(src.imu.t * 1e6 * 33333 / (1e6 / FPS)).astype(np.uint64)  # on the writer's 33333 us frame clock
    path = write_sens(tmp_path / "imu.sens", frames, imu_frames=_coremotion(src.imu, t_us))
    sens = SensFile(path)
    assert np.array_equal(sens.imu.body_T_cam, DEVICE_T_CAMERA) and len(sens.imu) == len(src.imu)
    np.testing.assert_allclose(sens.imu.accel @ DEVICE_T_CAMERA[:3, :3], src.imu.accel, atol=1e-12)
    np.testing.assert_allclose(sens.imu.gyro @ DEVICE_T_CAMERA[:3, :3], src.imu.gyro, atol=1e-12)
    got = list(sens)
    assert [len(f.imu) for f in got] == [len(f.imu) for f in frames]
    assert all(f.imu.t[-1] <= f.timestamp for f in got)
    assert len(sens[3].imu) == len(got[3].imu)
    # no IMU frames (ScanNet's version 3 has no trailer at all): no IMU
    assert SensFile(write_sens(tmp_path / "v4.sens", frames)).imu is None
    assert all(f.imu is None for f in SensFile(write_sens(tmp_path / "v3.sens", frames, version=3)))
    # a cut-off trailer and non-monotonic IMU times: one line naming the file
    data = path.read_bytes()
    (tmp_path / "cut.sens").write_bytes(data[:-100])
    with pytest.raises(DatasetError, match=r"cut.sens: truncated .sens: \d+ IMU frames need bytes up to"):
        SensFile(tmp_path / "cut.sens")
    t_bad = t_us.copy()
    t_bad[4] = t_bad[2]
    bad = write_sens(tmp_path / "bad.sens", frames, imu_frames=_coremotion(src.imu, t_bad))
    with pytest.raises(DatasetError) as exc:
        SensFile(bad)
    assert str(exc.value).startswith(f"{bad}: IMU frame 4: time ") and "\n" not in str(exc.value)
