"""The Open3D stand-in that rendered the demo model's stage-8 rooms on a GPU machine without Open3D
(benchmarks/open3d_standin) against Open3D itself, on the renderer's own rays."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import open3d as o3d

from m2hmx.data.synthetic import default_intrinsics, make_scene, make_trajectory

STANDIN = Path(__file__).resolve().parents[2] / "benchmarks" / "open3d_standin" / "open3d"


def _standin():
    """The stand-in imported under another name, so that it does not shadow Open3D."""
    spec = importlib.util.spec_from_file_location("open3d_standin", STANDIN / "__init__.py",
                                                  submodule_search_locations=[str(STANDIN)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["open3d_standin"] = module
    spec.loader.exec_module(module)
    return module


def test_standin_ray_casting_matches_open3d():
    standin = _standin()
    scene = make_scene(77)  # a room whose views have faces meeting at equal depth (ties)
    h, w = 60, 80
    K = default_intrinsics(h, w)
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    dirs_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u, float)], -1).reshape(-1, 3)
    real = scene.raycasting_scene()
    fake = standin.t.geometry.RaycastingScene()
    fake.add_triangles(standin.core.Tensor(scene.vertices.astype(np.float32)),
                       standin.core.Tensor(scene.triangles.astype(np.uint32)))
    same_class, n = 0, 0
    for pose in make_trajectory(scene, 300, 77)[::60]:
        rays = np.hstack([np.broadcast_to(pose[:3, 3], dirs_cam.shape), dirs_cam @ pose[:3, :3].T]).astype(np.float32)
        a = real.cast_rays(o3d.core.Tensor(rays))
        b = fake.cast_rays(standin.core.Tensor.from_numpy(rays))
        ta, tb = a["t_hit"].numpy(), b["t_hit"].numpy()
        ia, ib = a["primitive_ids"].numpy(), b["primitive_ids"].numpy()
        hit = np.isfinite(ta)
        assert np.array_equal(hit, np.isfinite(tb)) and np.array_equal(ia == real.INVALID_ID, ib == fake.INVALID_ID)
        assert hit.mean() > 0.9 and np.abs(ta[hit] - tb[hit]).max() < 1e-5
        same_class += (scene.triangle_class[ia[hit]] == scene.triangle_class[ib[hit]]).sum()
        n += hit.sum()
    assert same_class / n > 0.999
