import numpy as np
import pytest

from mapping.interface import InterfaceError, PerceptionFrame


def _frame(**over):
    h, w = 12, 16
    args = dict(timestamp=0.0, rgb=np.zeros((h, w, 3), np.uint8), depth=np.ones((h, w), np.float32),
                labels=np.zeros((h, w), np.uint8), K=np.array([[10.0, 0, 8], [0, 10, 6], [0, 0, 1]]))
    args.update(over)
    return PerceptionFrame(**args)


def test_valid_frame_and_uint16_depth_in_millimetres():
    f = _frame(depth=np.full((12, 16), 1500, np.uint16), confidence=np.full((12, 16), 0.5, np.float32))
    assert f.depth.dtype == np.float32 and np.allclose(f.depth, 1.5)
    assert f.size == (12, 16)


@pytest.mark.parametrize("over, words", [
    (dict(depth=np.ones((10, 16), np.float32)), "sizes must agree"),
    (dict(depth=np.full((12, 16), np.nan, np.float32)), "NaN"),
    (dict(depth=-np.ones((12, 16), np.float32)), "negative"),
    (dict(depth=np.ones((12, 16), np.float64)), "float32"),
    (dict(labels=np.zeros((12, 15), np.uint8)), "sizes must agree"),
    (dict(labels=np.full((12, 16), 40, np.uint8), num_classes=20), "outside the label space"),
    (dict(labels=np.zeros((12, 16), np.float32)), "integer"),
    (dict(rgb=np.zeros((12, 16), np.uint8)), "rgb must be"),
    (dict(confidence=np.full((12, 16), 1.5, np.float32)), "confidence"),
    (dict(K=np.eye(4)), "3x3"),
    (dict(pose_prior=np.diag([1.0, 1, 2, 1])), "orthonormal"),
    (dict(timestamp=float("inf")), "timestamp"),
])
def test_invalid_frames_raise_one_line_errors(over, words):
    with pytest.raises(InterfaceError) as err:
        _frame(**over)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_ignore_label_allowed_with_label_space():
    f = _frame(labels=np.full((12, 16), 255, np.uint8), num_classes=20)
    assert f.labels.max() == 255
