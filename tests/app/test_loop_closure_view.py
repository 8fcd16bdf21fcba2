"""Loop closures reach the viewer: the map update carries the loop lines, the option reaches MappingConfig."""
import numpy as np

from app.main import build_parser, options_from_args
from app.mapping_process import make_update
from mapping.bridge import MapSnapshot


def test_map_update_carries_loop_lines():
    lines = np.array([[[0, 0, 0], [1, 0, 0]], [[0, 1, 0], [0, 1, 1]]], np.float64)
    snap = MapSnapshot(np.zeros((3, 3)), np.array([[0, 1, 2]], np.int32), np.zeros((3, 3), np.uint8),
                       np.zeros((3, 3), np.uint8), np.zeros(3, np.uint8), np.zeros(2), np.stack([np.eye(4)] * 2),
                       np.ones(2, bool), [], lines)
    update = make_update(snap, 2, 1.0)
    assert update.loop_lines.shape == (2, 2, 3)
    np.testing.assert_allclose(update.loop_lines, lines)
    no_loops = make_update(MapSnapshot(snap.vertices, snap.triangles, snap.class_colors, snap.rgb_colors,
                                       snap.vertex_classes, snap.timestamps, snap.trajectory, snap.tracking_ok), 2, 1.0)
    assert no_loops.loop_lines.shape == (0, 2, 3)


def test_loop_closure_option_reaches_the_viewer_options(tmp_path):
    args = build_parser().parse_args(["--dataset", "synthetic:200000?revisit", "--loop-closure"])
    assert options_from_args(args).loop_closure is True
    args = build_parser().parse_args(["--dataset", "synthetic:200000"])
    assert options_from_args(args).loop_closure is False
