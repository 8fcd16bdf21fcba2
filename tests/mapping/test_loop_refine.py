"""A loop edge a few degrees off is pulled back to the true relative pose by ICP on the two keyframes' depth."""
import numpy as np
from scipy.spatial.transform import Rotation

from m2hmx.data.synthetic import SyntheticSource
from mapping.keyframe_store import KeyframeStore
from mapping.loop_refine import refine


def _angle(a, b):
    return np.degrees(np.linalg.norm(Rotation.from_matrix(a[:3, :3].T @ b[:3, :3]).as_rotvec()))


def test_icp_pulls_a_rotated_edge_back_and_declines_without_overlap():
    src = SyntheticSource(200003, frames=40)
    store = KeyframeStore()
    for i in (0, 12, 39):
        f = src[i]
        store.add(f.timestamp, f.rgb, f.depth, f.labels, None, f.K)
    a, b = store.keyframes[0], store.keyframes[1]
    truth = np.linalg.inv(src.poses[0]) @ src.poses[12]
    off = truth.copy()
    off[:3, :3] = Rotation.from_euler("y", 5, degrees=True).as_matrix() @ truth[:3, :3]
    off[:3, 3] += [0.05, 0.0, 0.0]
    T, fitness = refine(off, a.depth(), a.K, b.depth(), b.K)
    assert _angle(T, truth) < 1.0 and np.linalg.norm(T[:3, 3] - truth[:3, 3]) < 0.02, \
        (_angle(T, truth), np.linalg.norm(T[:3, 3] - truth[:3, 3]))
    assert fitness > 0.5
    far = np.eye(4)
    far[:3, 3] = [5.0, 0.0, 0.0]  # an edge that puts the two views 5 m apart: no overlap, no answer
    assert refine(far, a.depth(), a.K, b.depth(), b.K) is None
