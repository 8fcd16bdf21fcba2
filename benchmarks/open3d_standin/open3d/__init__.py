"""A stand-in for the part of Open3D that the room generator's renderer uses (``t.geometry.RaycastingScene``
``add_triangles`` / ``cast_rays`` and ``core.Tensor``), for a lent GPU machine where Open3D cannot be installed
(its wheel, 105 MB, is over what that machine takes along; embreex's is 15 MB). Only for
``benchmarks.train_on_lent_gpu``: put this folder first on PYTHONPATH there. ``tests/data/test_open3d_standin.py``
checks it against Open3D."""
from . import core, t  # noqa: F401
