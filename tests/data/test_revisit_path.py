"""The generator's revisit walk: back at its start, deterministic per seed, and the default walk unchanged."""
import numpy as np
import pytest

from m2hmx.data.errors import DatasetError
from m2hmx.data.sources import REVISIT_FRAMES, open_source
from m2hmx.data.synthetic import SyntheticSource, make_path, make_scene


@pytest.mark.parametrize("seed", [200000, 200001])
def test_revisit_walk_returns_to_its_start(seed):
    src = open_source(f"synthetic:{seed}?revisit")
    P = src.poses
    assert len(src) == REVISIT_FRAMES and src.name.endswith("-revisit")
    late = P[len(P) // 2:]
    d = np.linalg.norm(late[:, :3, 3] - P[0, :3, 3], axis=1)
    j = int(np.argmin(d))
    cos = (np.trace(P[0, :3, :3].T @ late[j, :3, :3]) - 1) / 2
    assert d[j] < 0.02 and np.degrees(np.arccos(np.clip(cos, -1, 1))) < 5  # same place, same view
    step = np.linalg.norm(np.diff(P[:, :3, 3], axis=0), axis=1)
    assert step.max() < 0.6 / 30  # a walk (< 0.6 m/s), no jump
    np.testing.assert_array_equal(P, SyntheticSource(seed, frames=REVISIT_FRAMES, revisit=True).poses)


def test_default_walk_is_unchanged_and_bad_option_is_one_line():
    scene = make_scene(100000)
    assert not np.allclose(make_path(scene, 300, 100000).frame_poses[-1],
                           make_path(scene, 300, 100000, revisit=True).frame_poses[-1])
    np.testing.assert_array_equal(SyntheticSource(100000).poses, make_path(scene, 300, 100000).frame_poses)
    with pytest.raises(DatasetError, match="unknown synthetic option 'loop'"):
        open_source("synthetic:5?loop")
