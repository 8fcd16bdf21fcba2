"""Re-integration: keyframes stored compactly and integrated again at the true poses give the map's surface back."""
import numpy as np
from scipy.spatial import cKDTree

from m2hmx.data.synthetic import SyntheticSource
from mapping.bridge import MappingBridge, MappingConfig
from mapping.interface import PerceptionFrame
from mapping.keyframe_store import KeyframeStore


def test_reintegration_at_true_poses_gives_the_same_surface():
    src = SyntheticSource(200003, frames=36)
    cfg = MappingConfig(depth_mode="gt", use_pose_prior=True)
    bridge = MappingBridge(src.label_space, cfg)
    store = KeyframeStore()
    poses = []
    for i in range(0, 36, 3):  # the map integrates every 3rd frame; each is also a keyframe
        f = src[i]
        pf = PerceptionFrame(f.timestamp, f.rgb, f.depth, f.labels, f.K, pose_prior=src.poses[i])
        bridge.process(pf)
        store.add(f.timestamp, f.rgb, f.depth, f.labels, None, f.K)
        poses.append(src.poses[i])
    voxel = bridge.voxel_size
    snap = bridge.snapshot(with_objects=False)
    original = snap.vertices
    tracker, semantics = store.reintegrate(poses, cfg, src.label_space.num_classes, voxel)
    rebuilt = tracker.extract_mesh()[0]
    assert len(rebuilt) > 0.8 * len(original) > 1000
    d_to_orig = cKDTree(original).query(rebuilt)[0]
    d_to_new = cKDTree(rebuilt).query(original)[0]
    assert np.median(d_to_orig) < 0.25 * voxel and np.percentile(d_to_orig, 95) < voxel, \
        (np.median(d_to_orig), np.percentile(d_to_orig, 95), voxel)
    assert np.percentile(d_to_new, 90) < voxel  # and covers it
    # the class evidence comes back too: the rebuilt evidence gives the original surface its classes
    same = semantics.classify(original) == snap.vertex_classes
    assert same.mean() > 0.95
    assert store.nbytes < 70_000 * len(store)  # compact: < 70 KB a keyframe at 240x320 (raw: ~0.8 MB)


def test_reintegration_moves_the_map_with_the_poses():
    src = SyntheticSource(200003, frames=12)
    cfg = MappingConfig(depth_mode="gt", use_pose_prior=True)
    store = KeyframeStore()
    for i in range(0, 12, 4):
        f = src[i]
        store.add(f.timestamp, f.rgb, f.depth, f.labels, None, f.K)
    poses = [src.poses[i] for i in range(0, 12, 4)]
    shift = np.eye(4)
    shift[:3, 3] = [0.3, 0.0, 0.0]
    a = store.reintegrate(poses, cfg, src.label_space.num_classes, 0.02)[0].extract_mesh()[0]
    b = store.reintegrate([shift @ p for p in poses], cfg, src.label_space.num_classes, 0.02)[0].extract_mesh()[0]
    assert abs(np.median(b[:, 0]) - np.median(a[:, 0]) - 0.3) < 0.02
