"""``RaycastingScene`` for one triangle mesh, on Embree through ``embreex`` (the ray tracer Open3D's own
``RaycastingScene`` is built on), for the CPU. The generated rooms have ~800 triangles."""
import numpy as np
from embreex import rtcore_scene
from embreex.mesh_construction import TriangleMesh

from ..core import Tensor


class RaycastingScene:
    INVALID_ID = 2 ** 32 - 1

    def __init__(self):
        self._scene = rtcore_scene.EmbreeScene()

    def add_triangles(self, vertices: Tensor, triangles: Tensor) -> int:
        TriangleMesh(self._scene, np.ascontiguousarray(vertices.numpy(), np.float32),
                     np.ascontiguousarray(triangles.numpy(), np.int32))
        return 0  # geometry id

    def cast_rays(self, rays: Tensor) -> dict:
        """rays (N, 6): origin, direction. Returns t_hit (in units of the direction's length; inf on a miss)
        and primitive_ids (INVALID_ID on a miss), as Open3D does."""
        r = np.asarray(rays.numpy(), np.float32)
        hit = self._scene.run(np.ascontiguousarray(r[:, :3]), np.ascontiguousarray(r[:, 3:]), output=1)
        miss = hit["primID"] < 0
        ids = np.where(miss, np.uint32(self.INVALID_ID), hit["primID"].astype(np.uint32))
        return {"t_hit": Tensor(np.where(miss, np.float32(np.inf), hit["tfar"])), "primitive_ids": Tensor(ids)}
