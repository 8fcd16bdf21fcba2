"""The staged map rebuild after a loop closure: the nearest keyframes at once, the rest over the next frames, and
when it is complete the same surface and class evidence as a full rebuild."""
import numpy as np
from scipy.spatial import cKDTree

from m2hmx.data.synthetic import SyntheticSource
from mapping.bridge import MappingConfig
from mapping.loops import LoopCloser, LoopConfig, nearest_first


def _closer(src, step: int, config: LoopConfig) -> tuple[LoopCloser, list[np.ndarray]]:
    closer = LoopCloser(src.K, (src.height, src.width), config)
    poses = []
    for i in range(0, len(src), step):
        f = src[i]
        closer.graph.add_keyframe(src.poses[i])
        closer.store.add(f.timestamp, f.rgb, f.depth, f.labels, None, f.K)
        poses.append(src.poses[i])
    return closer, poses


def test_staged_rebuild_ends_as_the_full_rebuild():
    src = SyntheticSource(200003, frames=60)
    closer, poses = _closer(src, 3, LoopConfig(rebuild_now=4, rebuild_per_frame=5))  # 20 keyframes
    cfg, classes, voxel = MappingConfig(depth_mode="gt"), src.label_space.num_classes, 0.02
    tracker, semantics = closer.rebuild(cfg, classes, voxel, src.K, (src.height, src.width))
    first = tracker.extract_mesh()[0]
    assert closer.rebuilding and tracker.integrated_frames == 0  # the bridge's frame count is not touched
    steps = 0
    while closer.rebuilding:
        closer.continue_rebuild()
        steps += 1
    assert steps == 4  # 16 keyframes left, 5 a frame
    staged = tracker.extract_mesh()[0]
    full_tracker, full_semantics = closer.store.reintegrate(poses, cfg, classes, voxel, src.K,
                                                            (src.height, src.width))
    full = full_tracker.extract_mesh()[0]
    assert len(first) < 0.8 * len(full)  # the first stage holds part of the map only
    assert len(full) > 1000 and abs(len(staged) - len(full)) < 0.02 * len(full), (len(staged), len(full))
    d_staged = cKDTree(full).query(staged)[0]
    d_full = cKDTree(staged).query(full)[0]
    assert np.percentile(d_staged, 99) < voxel and np.percentile(d_full, 99) < voxel, \
        (np.percentile(d_staged, 99), np.percentile(d_full, 99))
    assert (semantics.classify(full) == full_semantics.classify(full)).mean() > 0.99


def test_first_stage_takes_the_views_nearest_the_camera():
    src = SyntheticSource(200003, frames=60)
    _, poses = _closer(src, 3, LoopConfig())
    order = nearest_first(poses)
    assert order[0] == len(poses) - 1 and sorted(order) == list(range(len(poses)))
    dist = [np.linalg.norm(poses[i][:3, 3] - poses[-1][:3, 3]) for i in order]
    assert np.mean(dist[:5]) < np.mean(dist[-5:])


def test_finish_completes_a_staged_rebuild():
    src = SyntheticSource(200003, frames=30)
    closer, poses = _closer(src, 3, LoopConfig(rebuild_now=2, rebuild_per_frame=1))
    tracker, _ = closer.rebuild(MappingConfig(depth_mode="gt"), src.label_space.num_classes, 0.02, src.K,
                                (src.height, src.width))
    before = len(tracker.extract_mesh()[0])
    closer.finish_rebuild()
    assert not closer.rebuilding and len(tracker.extract_mesh()[0]) > before
    closer.continue_rebuild()  # nothing left: a no-op
