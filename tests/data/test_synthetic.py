"""The synthetic generator: geometry-consistent ground truth, exact reload, determinism, motion."""
import hashlib

import cv2
import numpy as np
import pytest

from m2hmx.data.readers.scannet import ScanNetExport
from m2hmx.data.synthetic import SyntheticSource, make_scene, wall_views, write_scene

H, W = 96, 128


@pytest.fixture(scope="module")
def source():
    return SyntheticSource(seed=3, frames=40, height=H, width=W)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "scene0000_00"
    write_scene(out, seed=3, frames=6, height=H, width=W, progress=False)
    return out


def backproject(frame):
    """World points of the valid depth pixels, and their (v, u) pixel coordinates."""
    v, u = np.nonzero(frame.depth > 0)
    z = frame.depth[v, u].astype(np.float64)
    K = frame.K
    pc = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], 1)
    return pc @ frame.pose[:3, :3].T + frame.pose[:3, 3], v, u


def test_scene_is_a_furnished_room():
    for seed in range(4):
        sc = make_scene(seed)
        assert 2.5 <= sc.room_size[2] <= 3.0 and 3.0 <= sc.room_size[:2].min() and sc.room_size[:2].max() <= 6.5
        assert len(sc.objects) >= 6
        assert 200 < len(sc.triangles) < 5000
        for o in sc.objects:  # every item inside the room
            assert np.all(o.aabb_min >= -1e-9) and np.all(o.aabb_max <= sc.room_size + 1e-9)
            assert np.allclose(o.center, (o.aabb_min + o.aabb_max) / 2) and np.all(o.extent > 0)
    assert len(make_scene(0).mesh.triangles) == len(make_scene(0).triangles)


def test_frames_have_all_ground_truth(source):
    f = source[0]
    assert f.rgb.shape == (H, W, 3) and f.rgb.dtype == np.uint8
    assert f.depth.dtype == np.float32 and 0.2 < f.depth[f.depth > 0].min() and f.depth.max() < 10.0
    assert (f.depth > 0).all()  # a closed room: every ray hits
    assert f.labels.dtype == np.uint8 and len(np.unique(f.labels)) >= 3
    n = np.linalg.norm(f.normals, axis=-1)
    assert np.allclose(n, 1, atol=1e-4)
    rays = np.stack([*np.meshgrid(np.arange(W) - f.K[0, 2], np.arange(H) - f.K[1, 2]), np.full((H, W), f.K[0, 0])], -1)
    assert (np.sum(f.normals * rays, -1) <= 1e-6).all()  # facing the camera
    assert set(np.unique(f.edges)) <= {0, 1} and 0.005 < f.edges.mean() < 0.2
    assert np.allclose(f.pose[:3, :3] @ f.pose[:3, :3].T, np.eye(3), atol=1e-9)
    # RGB is not a function of the class: pixels of one class take many colours
    lab = f.labels == np.bincount(f.labels.ravel()).argmax()
    assert len(np.unique(f.rgb[lab] // 8, axis=0)) > 20


def test_depth_lands_on_the_mesh(source):
    rs = source.scene.raycasting_scene()
    import open3d as o3d

    for i in (0, 20):
        pts, _, _ = backproject(source[i])
        d = rs.compute_distance(o3d.core.Tensor(pts.astype(np.float32))).numpy()
        assert np.percentile(d, 99) < 2e-3 and d.max() < 1e-2


def test_labels_match_the_geometry_hit(source):
    import open3d as o3d

    rs = source.scene.raycasting_scene()
    f = source[10]
    pts, v, u = backproject(f)
    ans = rs.compute_closest_points(o3d.core.Tensor(pts.astype(np.float32)))
    cls = source.scene.triangle_class[ans["primitive_ids"].numpy().astype(np.int64)]
    assert np.mean(cls == f.labels[v, u]) > 0.99


def test_multiview_depth_consistency(source):
    fi, fj = source[0], source[8]
    pts, _, _ = backproject(fi)
    Tcw = np.linalg.inv(fj.pose)
    pc = pts @ Tcw[:3, :3].T + Tcw[:3, 3]
    z = pc[:, 2]
    uj = np.round(pc[:, 0] / z * fj.K[0, 0] + fj.K[0, 2]).astype(int)
    vj = np.round(pc[:, 1] / z * fj.K[1, 1] + fj.K[1, 2]).astype(int)
    ok = (z > 0.1) & (uj >= 0) & (uj < W) & (vj >= 0) & (vj < H)
    assert ok.mean() > 0.5  # the views overlap
    dz = np.abs(fj.depth[vj[ok], uj[ok]] - z[ok])
    assert np.median(dz) < 0.01 and np.mean(dz < 0.05) > 0.9  # disagreements only at occlusions / edges


def test_walkthrough_is_smooth_and_inside(tmp_path):
    src = SyntheticSource(seed=5, frames=300, height=24, width=32)
    P = src.poses
    step = np.linalg.norm(np.diff(P[:, :3, 3], axis=0), axis=1)
    rel = np.einsum("nji,njk->nik", P[:-1, :3, :3], P[1:, :3, :3])
    ang = np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert step.max() < 0.05 and ang.max() < 3.0
    assert step.sum() > 2.0  # it actually walks (about 10 s at 0.25-0.4 m/s)
    W_, D_, H_ = src.scene.room_size
    assert np.all(P[:, 0, 3] > 0.2) and np.all(P[:, 0, 3] < W_ - 0.2) and np.all(P[:, 1, 3] > 0.2)
    assert np.all(P[:, 1, 3] < D_ - 0.2) and np.all((P[:, 2, 3] > 0.9) & (P[:, 2, 3] < 1.8))
    for o in src.scene.objects:  # never inside furniture
        inside = np.all((P[:, :3, 3] > o.aabb_min) & (P[:, :3, 3] < o.aabb_max), axis=1)
        assert not inside.any(), o.name


def test_export_reloads_identically(source, written):
    src = ScanNetExport(written)
    assert len(src) == 6 and src.label_space.name == "scannet20"
    for i in (0, 5):
        a, b = source[i], src[i]
        assert np.array_equal(b.rgb, cv2.imread(str(written / "color" / f"{i}.jpg"))[:, :, ::-1])
        assert np.abs(b.rgb.astype(int) - a.rgb).mean() < 3.0  # JPEG quality 95
        assert np.abs(b.depth - a.depth).max() <= 0.0005 + 1e-6
        assert np.array_equal(b.labels, a.labels) and np.array_equal(b.edges, a.edges)
        assert np.array_equal(b.pose, a.pose) and np.allclose(b.K, a.K)
        assert np.abs(b.normals - a.normals).max() < 1e-4
        assert b.timestamp == pytest.approx(i / 30)
    gt = np.loadtxt(written / "groundtruth.txt")
    assert gt.shape == (6, 8) and np.allclose(gt[:, 1:4], [source.poses[i][:3, 3] for i in range(6)], atol=1e-8)
    import json

    meta = json.loads((written / "scene.json").read_text())
    assert meta["seed"] == 3 and meta["label_space"] == "scannet20"
    assert len(meta["objects"]) == len(source.scene.objects)


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(tmp_path):
    a = write_scene(tmp_path / "a", seed=7, frames=3, height=48, width=64, progress=False)
    b = write_scene(tmp_path / "b", seed=7, frames=3, height=48, width=64, progress=False)
    c = write_scene(tmp_path / "c", seed=8, frames=3, height=48, width=64, progress=False)
    da, db, dc = _digest(a), _digest(b), _digest(c)
    assert len(da) == 3 * 5 + 4 + 2 + 3 and da == db  # + imu0/data.csv, imu0/sensor.yaml, cam0/sensor.yaml
    assert da["scene.json"] != dc["scene.json"] and da["depth/0.png"] != dc["depth/0.png"]
    assert da["imu0/data.csv"] != dc["imu0/data.csv"]


def test_cli_writes_a_scene(tmp_path, capsys):
    from m2hmx.cli.synth import main

    assert main(["--out", str(tmp_path / "s"), "--seed", "1", "--frames", "2", "--height", "32", "--width", "40"]) == 0
    assert sorted(p.name for p in (tmp_path / "s" / "depth").iterdir()) == ["0.png", "1.png"]
    assert cv2.imread(str(tmp_path / "s" / "color" / "1.jpg")).shape == (32, 40, 3)


def test_wall_views_face_a_nearby_wall_with_little_floor_in_sight():
    src = SyntheticSource(seed=5, frames=2, height=48, width=64)
    walk = src[0].rgb.tobytes()
    poses = wall_views(src.scene, 8, seed=5)
    assert poses.shape == (8, 4, 4)
    assert np.array_equal(poses, wall_views(src.scene, 8, seed=5))  # a function of the seed
    W_, D_, H_ = src.scene.room_size
    floor = src.label_space.names.index("floor")
    no_floor, medians = 0, []
    for k, pose in enumerate(poses):
        c = pose[:3, 3]
        assert 0.25 < c[0] < W_ - 0.25 and 0.25 < c[1] < D_ - 0.25 and 1.0 <= c[2] <= 1.8
        assert not any(np.all((c > o.aabb_min) & (c < o.aabb_max)) for o in src.scene.objects)
        assert abs(pose[2, 2]) < 0.6  # the view axis is near level (pitch -32 to +6 deg)
        frame = src.view(pose, 2 + k)
        valid = frame.depth > 0
        assert valid.mean() > 0.99 and frame.depth[valid].min() > 0.1
        medians.append(np.median(frame.depth[valid]))
        no_floor += (frame.labels == floor).mean() < 0.02
    assert np.median(medians) < 1.6 and no_floor >= 4  # close, and mostly without the floor (walk: 0.2-0.5 of it)
    assert src[0].rgb.tobytes() == walk  # the walkthrough is unchanged
