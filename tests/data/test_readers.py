"""Dataset readers: .sens, TUM RGB-D, 7-Scenes, NYUv2 .mat, video / images, and open_source."""

import cv2
import numpy as np
import pytest

from m2hmx.data import Frame
from m2hmx.data.readers.nyu import NYU_K, NYUv2Labeled
from m2hmx.data.readers.scannet import ScanNetExport
from m2hmx.data.readers.sens import SensFile
from m2hmx.data.readers.sevenscenes import SevenScenes
from m2hmx.data.readers.tum import TUMSequence, associate
from m2hmx.data.readers.video import ImageFolder, VideoFile
from m2hmx.data.sources import open_source
from m2hmx.data.synthetic import SyntheticSource, write_scene
from tests.data.helpers import write_nyu_mat, write_sens, write_tum


@pytest.fixture(scope="module")
def synth():
    return SyntheticSource(seed=2, frames=5, height=48, width=64)


def test_sens_matches_the_7scenes_frames(shared_data):
    sens = SensFile(shared_data / "sens-sample" / "redkitchen_frames000-019.sens")
    seven = SevenScenes(shared_data / "7scenes-redkitchen")
    assert len(sens) == 20
    for i in (0, 7, 19):
        a, b = sens[i], seven[i]
        valid = b.depth > 0
        assert np.array_equal(a.depth[valid], b.depth[valid])
        assert np.abs(a.rgb.astype(int) - b.rgb).mean() < 3.0  # re-encoded JPEG
        assert np.allclose(a.pose, b.pose, atol=1e-6) and np.allclose(a.K, b.K)
        assert a.timestamp == pytest.approx(i / 30, abs=1e-4)
    sens.close()


def test_sevenscenes_reader(shared_data):
    src = SevenScenes(shared_data / "7scenes-redkitchen")
    f = src[0]
    assert len(src) == 300 and f.rgb.shape == (480, 640, 3) and f.depth.shape == (480, 640)
    raw = cv2.imread(str(shared_data / "7scenes-redkitchen" / "frame-000000.depth.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(f.depth == 0, (raw == 0) | (raw == 65535))
    assert 0.3 < np.median(f.depth[f.depth > 0]) < 4.0
    assert np.allclose(f.K, [[585, 0, 320], [0, 585, 240], [0, 0, 1]]) and f.timestamp == 0.0
    assert src[30].timestamp == pytest.approx(1.0)


@pytest.mark.parametrize("cc,dc", [(2, 1), (1, 0), (0, 1)])
def test_sens_roundtrip_of_a_synthetic_scene(tmp_path, synth, cc, dc):
    frames = list(synth)
    frames[2] = Frame(rgb=frames[2].rgb, K=frames[2].K, timestamp=0, depth=frames[2].depth, pose=None)
    path = write_sens(tmp_path / "s.sens", frames, color_compression=cc, depth_compression=dc)
    with pytest.warns(UserWarning, match="skipped 1 frame"):
        src = SensFile(path)
    assert len(src) == 4 and [f.index for f in src] == [0, 1, 3, 4]
    f, ref = src[2], frames[3]
    assert np.abs(f.depth - ref.depth).max() <= 0.0005 + 1e-6
    assert np.allclose(f.pose, ref.pose, atol=1e-6) and np.allclose(f.K, ref.K, atol=1e-4)
    tol = 0 if cc != 2 else 6.0  # JPEG of a tiny noisy image
    assert np.abs(f.rgb.astype(int) - ref.rgb).mean() <= tol


def test_tum_association(tmp_path):
    folder = tmp_path / "rgbd_dataset_freiburg1_xyz"
    t0 = write_tum(folder)
    src = open_source(str(folder))
    assert isinstance(src, TUMSequence)
    frames = list(src)
    assert len(frames) == 5  # frame 3 has no depth within 0.02 s
    ks = [round((f.timestamp - t0) * 30) for f in frames]
    assert ks == [0, 1, 2, 4, 5]
    for k, f in zip(ks, frames):
        assert f.rgb[0, 0, 0] == 20 * k
        assert np.allclose(f.depth, k + 1)  # 5000 = 1 m
        assert np.allclose(f.pose[:3, 3], [3 * k * 0.01, 0, 1.5])  # gt sample at 3k (+2 ms)
        assert np.allclose(f.pose[:3, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-6)
    assert np.allclose(frames[0].K, [[517.3, 0, 318.6], [0, 516.5, 255.3], [0, 0, 1]])


def test_associate_is_one_to_one():
    a = np.array([0.0, 0.010, 0.100, 0.200])
    b = np.array([0.5, 0.095, 0.006])
    # 0.006 is nearer to 0.010 than to 0.0, each stamp is used once, 0.200 and 0.5 have no partner
    assert associate(a, b) == [(1, 2), (2, 1)]


def test_nyu_labeled_mat(tmp_path):
    from scipy.io import savemat

    rgb, depth, raw = write_nyu_mat(tmp_path / "nyu_depth_v2_labeled.mat")
    src = open_source(str(tmp_path / "nyu_depth_v2_labeled.mat"))
    assert isinstance(src, NYUv2Labeled) and len(src) == 3 and src.label_space.name == "nyu40"
    f = src[1]
    assert np.array_equal(f.rgb, rgb[1]) and np.array_equal(f.depth, depth[1])
    assert np.allclose(f.K, NYU_K)
    assert (f.labels[0] == 0).all() and (f.labels[1] == 1).all() and (f.labels[2] == 4).all()
    assert f.labels[3, 1] == 21 and f.labels[4, 0] == 255  # ceiling = nyu40 22; unlabelled -> ignore
    savemat(tmp_path / "splits.mat", {"trainNdxs": np.array([[1], [3]]), "testNdxs": np.array([[2]])})
    train = NYUv2Labeled(tmp_path / "nyu_depth_v2_labeled.mat", split="train")
    test = NYUv2Labeled(tmp_path / "nyu_depth_v2_labeled.mat", split="test", splits_path=tmp_path / "splits.mat")
    assert [f.index for f in train] == [0, 2] and [f.index for f in test] == [1]
    assert np.array_equal(test[0].rgb, rgb[1])


def test_video_and_image_folder(tmp_path):
    path = str(tmp_path / "clip.avi")
    vw = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 15, (64, 48))
    for k in range(5):
        vw.write(np.full((48, 64, 3), (40 * k, 100, 200), np.uint8))  # BGR
    vw.release()
    src = open_source(path)
    assert isinstance(src, VideoFile) and len(src) == 5
    frames = list(src)
    assert len(frames) == 5 and frames[3].rgb.shape == (48, 64, 3)
    assert abs(int(frames[3].rgb[10, 10, 2]) - 120) < 8 and abs(int(frames[3].rgb[10, 10, 0]) - 200) < 8
    assert frames[3].timestamp == pytest.approx(3 / 15)
    assert frames[0].K[0, 0] == pytest.approx(32 / np.tan(np.radians(30)))  # 60 deg FOV guess
    assert src[1].rgb[10, 10, 2] < src[4].rgb[10, 10, 2]  # random access
    src.close()
    (tmp_path / "imgs").mkdir()
    for k in (2, 0, 1):
        cv2.imwrite(str(tmp_path / "imgs" / f"img_{k:03d}.png"), np.full((6, 8, 3), k, np.uint8))
    imgs = open_source(str(tmp_path / "imgs"))
    assert isinstance(imgs, ImageFolder) and [int(f.rgb[0, 0, 0]) for f in imgs] == [0, 1, 2]


def test_scannet_scene_shorthand(tmp_path, synth, monkeypatch):
    root = tmp_path / "data"
    write_scene(root / "scannet" / "scene0011_00", seed=2, frames=2, height=32, width=40, progress=False)
    assert isinstance(open_source("scannet/scene0011", str(root)), ScanNetExport)
    monkeypatch.setenv("M2HMX_DATA_ROOT", str(root))
    assert isinstance(open_source("scene0011_00"), ScanNetExport)
    # a scans/ tree holding the scene's .sens
    root2 = tmp_path / "data2"
    (root2 / "scans" / "scene0042_01").mkdir(parents=True)
    write_sens(root2 / "scans" / "scene0042_01" / "scene0042_01.sens", list(synth))
    src = open_source("scannet/scene0042_01", str(root2))
    assert isinstance(src, SensFile) and len(src) == 5
    assert open_source("synthetic:4").scene.seed == 4


def test_scannet_export_with_raw_labels_and_large_colour(tmp_path, synth):
    """Real ScanNet exports: 2x larger colour, label-filt/ with raw ids mapped through the tsv."""
    folder = tmp_path / "scene0001_00"
    write_scene(folder, seed=2, frames=2, height=48, width=64, progress=False)
    (folder / "label").rename(folder / "label-filt")
    (folder / "scene.json").unlink()
    for k in range(2):  # colour at twice the depth size, as ScanNet's 1296x968 vs 640x480
        f = synth[k]
        cv2.imwrite(str(folder / "color" / f"{k}.jpg"), cv2.resize(f.rgb[:, :, ::-1], (128, 96), interpolation=cv2.INTER_NEAREST))
        raw = np.full((48, 64), 1, np.uint16)  # raw ScanNet id 1 = wall
        raw[:, 32:] = 2  # raw id 2 = chair
        raw[0, 0] = 0
        cv2.imwrite(str(folder / "label-filt" / f"{k}.png"), raw)
    tsv = tmp_path / "scannetv2-labels.combined.tsv"
    tsv.write_text("id\traw_category\tcategory\tcount\tnyu40id\n1\twall\twall\t10\t1\n2\tchair\tchair\t5\t5\n")
    src = ScanNetExport(folder, label_tsv=tsv)
    f = src[1]
    assert f.rgb.shape == (48, 64, 3) and np.abs(f.rgb.astype(int) - synth[1].rgb).mean() < 4
    assert f.labels[5, 5] == 0 and f.labels[5, 40] == 4 and f.labels[0, 0] == 255
    assert ScanNetExport(folder).label_space is None  # without the tsv, raw labels are ignored


def test_sens_version3_and_export_with_invalid_pose(tmp_path, synth):
    src = SensFile(write_sens(tmp_path / "v3.sens", list(synth), version=3))
    assert len(src) == 5 and np.allclose(src[4].pose, synth[4].pose, atol=1e-6)
    folder = write_scene(tmp_path / "scene", seed=2, frames=3, height=24, width=32, progress=False)
    (folder / "pose" / "1.txt").write_text("\n".join(["-inf -inf -inf -inf"] * 4) + "\n")
    with pytest.warns(UserWarning, match="skipped 1 frame"):
        exp = ScanNetExport(folder)
    assert exp.frame_ids == [0, 2] and exp[1].index == 2
