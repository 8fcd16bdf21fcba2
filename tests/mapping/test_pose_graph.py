"""Pose graph: one correct loop edge takes drift back, one wrong loop edge is switched off, g2o round trip."""
import gtsam
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mapping.pose_graph import LoopEdge, PoseGraph, interpolate_frames
from tests.mapping.conftest import drifted


def _drifted(truth):
    """Odometry with 0.4 deg of yaw and 3 % too much translation per step."""
    return drifted(truth, yaw_deg=0.4, translation_scale=1.03)


def _circle(n=40, radius=1.5):
    """Keyframes on a closed circle (the last one back at the first), camera looking outwards."""
    poses = []
    for a in np.linspace(0, 2 * np.pi, n):
        T = np.eye(4)
        T[:3, :3] = Rotation.from_euler("z", a).as_matrix() @ Rotation.from_euler("x", -90, degrees=True).as_matrix()
        T[:3, 3] = [radius * np.cos(a), radius * np.sin(a), 1.4]
        poses.append(T)
    return np.array(poses)




def _ate(poses, truth):
    return float(np.sqrt(np.mean(np.sum((np.array(poses)[:, :3, 3] - truth[:, :3, 3]) ** 2, 1))))


def _graph(odom):
    g = PoseGraph()
    for p in odom:
        g.add_keyframe(p)
    return g


def test_one_correct_loop_takes_drift_back():
    truth = _circle()
    odom = _drifted(truth)
    g = _graph(odom)
    before = _ate(g.optimize(), truth)
    g.add_loop(LoopEdge(0, len(truth) - 1, np.linalg.inv(truth[0]) @ truth[-1]))
    after = _ate(g.optimize(), truth)
    assert before > 0.1  # the drift is real: > 10 cm
    assert g.accepted == [True]
    assert after < 0.25 * before, (before, after)


def test_wrong_loop_does_not_bend_the_graph():
    truth = _circle()
    odom = _drifted(truth)
    plain = _ate(_graph(odom).optimize(), truth)
    wrong = LoopEdge(5, 25, np.eye(4))  # keyframes 3 m apart on opposite sides, claimed to coincide
    g = _graph(odom)
    g.add_loop(wrong)
    alone = _ate(g.optimize(), truth)
    assert g.accepted == [False]
    assert abs(alone - plain) < 0.01 * plain, (plain, alone)
    # with the correct loop beside it: the correct one is kept, the wrong one rejected
    g = _graph(odom)
    g.add_loop(LoopEdge(0, len(truth) - 1, np.linalg.inv(truth[0]) @ truth[-1]))
    g.add_loop(wrong)
    both = _ate(g.optimize(), truth)
    assert g.accepted == [True, False]
    assert both < 0.25 * plain


def test_frames_follow_their_keyframe():
    truth = _circle(10)
    odom = _drifted(truth)
    g = _graph(odom)
    g.add_loop(LoopEdge(0, 9, np.linalg.inv(truth[0]) @ truth[-1]))
    g.optimize()
    frames = odom[[2, 5, 9]] @ np.diag([1.0, 1, 1, 1])
    moved = interpolate_frames(frames, np.array([2, 5, 9]), g)
    np.testing.assert_allclose(moved, np.array(g.optimized)[[2, 5, 9]], atol=1e-9)


def test_g2o_export_reads_back_in_gtsam(tmp_path):
    truth = _circle(12)
    g = _graph(_drifted(truth))
    g.add_loop(LoopEdge(0, 11, np.linalg.inv(truth[0]) @ truth[-1]))
    g.add_loop(LoopEdge(2, 8, np.eye(4)))  # wrong: left out of the file
    g.optimize()
    path = g.write_g2o(tmp_path / "pose_graph.g2o")
    text = path.read_text().splitlines()
    assert sum(line.startswith("VERTEX_SE3:QUAT") for line in text) == 12
    assert sum(line.startswith("EDGE_SE3:QUAT") for line in text) == 11 + 1
    graph, values = gtsam.readG2o(str(path), True)
    assert graph.size() == 12 and values.size() == 12
    for k in range(12):
        np.testing.assert_allclose(values.atPose3(k).matrix(), g.optimized[k], atol=1e-5)  # g2o text keeps 6 digits
    assert not list(tmp_path.glob(".*tmp*"))


def test_bad_loop_edge_is_one_clear_error():
    g = _graph(_circle(4))
    with pytest.raises(ValueError, match="two different keyframes"):
        g.add_loop(LoopEdge(0, 7, np.eye(4)))
