"""``RaycastingScene`` for one triangle mesh: the closest hit of every ray by the Moller-Trumbore test (Moller and
Trumbore, "Fast, minimum storage ray-triangle intersection", 1997), brute force over all triangles in float64
PyTorch, on CUDA when there is a GPU. The generated rooms have ~500 triangles."""
import numpy as np
import torch

from ..core import Tensor

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


class RaycastingScene:
    INVALID_ID = 2 ** 32 - 1

    def __init__(self):
        self.v0 = self.e1 = self.e2 = self.e2_x_e1 = None

    def add_triangles(self, vertices: Tensor, triangles: Tensor) -> int:
        v = torch.as_tensor(vertices.numpy(), dtype=torch.float64, device=DEVICE)
        f = torch.as_tensor(triangles.numpy().astype(np.int64), device=DEVICE)
        self.v0, self.e1, self.e2 = v[f[:, 0]], v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]
        self.e2_x_e1 = torch.cross(self.e2, self.e1, dim=1)
        return 0  # geometry id

    def cast_rays(self, rays: Tensor, chunk: int = 16384) -> dict:
        """rays (N, 6): origin, direction. Returns t_hit (in units of the direction's length; inf on a miss)
        and primitive_ids (INVALID_ID on a miss), as Open3D does."""
        r = torch.as_tensor(np.asarray(rays.numpy()), dtype=torch.float64, device=DEVICE)
        t_hit = torch.full((len(r),), float("inf"), dtype=torch.float64, device=DEVICE)
        ids = torch.full((len(r),), -1, dtype=torch.int64, device=DEVICE)
        origins, which = torch.unique(r[:, :3], dim=0, return_inverse=True)
        for k, origin in enumerate(origins):
            # With a shared origin o, s = o - v0 is per triangle, and each of Moller-Trumbore's determinant,
            # u, v and t numerators is a dot product of the ray direction d with a per-triangle vector.
            s = origin - self.v0
            q = torch.cross(s, self.e1, dim=1)
            per_triangle = torch.stack([self.e2_x_e1,                          # det = d . (e2 x e1)
                                        torch.cross(self.e2, s, dim=1),        # u det = d . (e2 x s)
                                        q], 2)                                 # v det = d . (s x e1)
            t_num = (self.e2 * q).sum(1)                                       # t det = e2 . (s x e1)
            rows = torch.nonzero(which == k).squeeze(1)
            for j in range(0, len(rows), chunk):
                idx = rows[j:j + chunk]
                det, u_num, v_num = torch.einsum("nc,tck->knt", r[idx, 3:], per_triangle).unbind(0)
                ok = det.abs() > 1e-12
                inv = 1.0 / torch.where(ok, det, torch.ones_like(det))
                u, v, t = u_num * inv, v_num * inv, t_num[None, :] * inv
                ok &= (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
                t_min, arg = torch.where(ok, t, torch.full_like(t, float("inf"))).min(1)
                t_hit[idx] = t_min
                ids[idx] = torch.where(torch.isfinite(t_min), arg, torch.full_like(arg, -1))
        ids = ids.cpu().numpy()
        return {"t_hit": Tensor(t_hit.float().cpu().numpy()),
                "primitive_ids": Tensor(np.where(ids < 0, self.INVALID_ID, ids).astype(np.uint32))}
