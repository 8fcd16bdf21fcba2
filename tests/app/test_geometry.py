"""3D view geometry helpers (no OpenGL needed)."""
import numpy as np

from app.widgets.map_view import box_lines, frustum_lines
from app.session import up_transform


def _look(yaw, pitch):
    """Camera-to-world rotation (OpenCV camera) in a z-up world, looking along yaw, tilted by pitch."""
    fwd = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)])
    right = np.cross(fwd, [0, 0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    P = np.eye(4)
    P[:3, :3] = np.column_stack([right, down, fwd])
    return P


def test_up_transform_keeps_a_z_up_world_upright_under_camera_pitch():
    T = up_transform(_look(0.7, -0.35))  # camera pitched 20 deg down in a z-up room
    np.testing.assert_allclose(T[:3, :3] @ [0, 0, 1], [0, 0, 1], atol=1e-12)
    assert np.isclose(np.linalg.det(T[:3, :3]), 1.0)


def test_up_transform_of_a_map_started_at_a_camera_puts_minus_y_up():
    T = up_transform(np.eye(4))
    np.testing.assert_allclose(T[:3, :3] @ [0, -1, 0], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(T[:3, :3] @ [0, 0, 1], [0, 1, 0], atol=1e-12)


def test_frustum_apex_and_corners():
    K = np.array([[100.0, 0, 80], [0, 100, 60], [0, 0, 1]])
    pose = np.eye(4)
    pose[:3, 3] = [1, 2, 3]
    segs = frustum_lines(pose, K, (120, 160), depth=0.5)
    assert segs.shape == (16, 3)
    np.testing.assert_allclose(segs[0], [1, 2, 3])
    np.testing.assert_allclose(segs[1], [1 + (0 - 80) / 100 * 0.5, 2 + (0 - 60) / 100 * 0.5, 3.5])


def test_box_lines_cover_the_twelve_edges():
    segs = box_lines([0, 0, 0], [1, 2, 3]).reshape(12, 2, 3)
    lengths = np.sort(np.linalg.norm(segs[:, 0] - segs[:, 1], axis=1))
    np.testing.assert_allclose(lengths, [1] * 4 + [2] * 4 + [3] * 4)
