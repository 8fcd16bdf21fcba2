"""The Open3D stand-in for GPU machines without Open3D (benchmarks/open3d_standin, Embree through embreex)
against Open3D itself: whole frames rendered by the room generator's renderer with each."""
import importlib.util
import sys
from pathlib import Path

import numpy as np

from m2hmx.data.synthetic import SyntheticSource

STANDIN = Path(__file__).resolve().parents[2] / "benchmarks" / "open3d_standin" / "open3d"


def _standin():
    """The stand-in imported under another name, so that importing it does not shadow Open3D."""
    spec = importlib.util.spec_from_file_location("open3d_standin", STANDIN / "__init__.py",
                                                  submodule_search_locations=[str(STANDIN)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["open3d_standin"] = module
    spec.loader.exec_module(module)
    return module


def test_frames_rendered_with_the_standin_match_open3d_frames(monkeypatch):
    frames = range(0, 300, 60)
    room = SyntheticSource(77, 300, 240, 320)  # a room whose views have faces meeting at equal depth (ties)
    real = [room[i] for i in frames]
    monkeypatch.setitem(sys.modules, "open3d", _standin())
    room = SyntheticSource(77, 300, 240, 320)
    fake = [room[i] for i in frames]
    assert type(room._renderer.rs).__module__ == "open3d_standin.t.geometry"  # the stand-in did the ray casting
    same_label = 0
    for a, b in zip(real, fake):
        hit = a.depth > 0
        assert hit.mean() > 0.9 and np.array_equal(hit, b.depth > 0)
        assert np.abs(a.depth - b.depth).max() < 1e-5
        same_label += (a.labels == b.labels).mean()
        assert np.abs(a.rgb.astype(int) - b.rgb.astype(int)).mean() < 0.05
    assert same_label / len(real) > 0.999
