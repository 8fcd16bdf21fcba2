"""Hierarchical Feature Adapter (HFA), register vector and the register-gated Mamba decoder.

docs/design/network.md sections 5 and 6 (the authors' ``HFA_Adapter_V3`` / ``RegisterGatedMambaBlock`` /
``HMX_Decoder``). Pyramid levels are resized to each level's own size (never assumed to be exactly 2x),
so any input that is a multiple of 16 works.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def resize(x: torch.Tensor, size, align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize to ``size`` (a no-op when it already has that size)."""
    size = tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def conv_gn(cin: int, cout: int, k: int, bias: bool = True, groups: int = 1) -> nn.Sequential:
    """Conv(k x k, padding k//2) + GroupNorm(1, cout) (a LayerNorm over C,H,W)."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias), nn.GroupNorm(groups, cout))


class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval mode or at rate 0)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)


class HFA(nn.Module):
    """Backbone maps (4 x [B,D,h,w] at the patch stride 16) + register tokens [B,R,D] -> pyramid (coarse to
    fine, at ``head_stride`` x (8, 4, 2, 1)) and the global register vector g [B,C].

    Paper (head_stride 4): p32 = GN(conv3(maxpool2(p16))), p8 = GN(conv3(up2(p16))), p4 = GN(conv3(up2(p8))).
    head_stride 8 (demo): levels 64/32/16/8, each coarser level max-pooled from the next finer one."""

    def __init__(self, in_dim: int, dim: int, p16_source: str = "fused", head_stride: int = 4):
        super().__init__()
        self.p16_source = p16_source
        self.strides = tuple(head_stride * f for f in (8, 4, 2, 1))
        self.proj = nn.ModuleList(conv_gn(in_dim, dim, 1) for _ in range(4))
        self.fuse = nn.ModuleList(conv_gn(dim, dim, 3) for _ in range(4))
        self.down = nn.ModuleList(conv_gn(dim, dim, 3) for s in self.strides if s > 16)  # fine -> coarse
        self.up = nn.ModuleList(conv_gn(dim, dim, 3) for s in self.strides if s < 16)  # coarse -> fine
        self.register_proj = nn.Linear(in_dim, dim)

    def forward(self, maps: list[torch.Tensor], registers: torch.Tensor):
        P = [proj(m) for proj, m in zip(self.proj, maps)]
        fused = [None] * 4
        fused[3] = self.fuse[3](P[3])
        for i in (2, 1, 0):  # top-down (all maps share the stride-16 size)
            fused[i] = self.fuse[i](P[i] + resize(fused[i + 1], P[i].shape[-2:]))
        p16 = fused[0] if self.p16_source == "fused" else fused[3]
        coarser, finer = [], []
        f = p16
        for conv in self.down:
            f = conv(F.max_pool2d(f, 2, ceil_mode=True))
            coarser.append(f)
        f = p16
        for conv in self.up:
            f = conv(resize(f, (2 * f.shape[-2], 2 * f.shape[-1])))
            finer.append(f)
        g = self.register_proj(registers.mean(dim=1))
        return coarser[::-1] + [p16] + finer, g


class RegisterGatedMamba(nn.Module):
    """RGM(X, g): register-driven channel gate on the Mamba input, one causal raster scan, then an FFN.

    s = s + DropPath(Mamba(LN_a(s * gate))); s = s + DropPath(FFN(LN_a(s))), FFN = LN_b, Linear(C,2C), GELU,
    Linear(2C,C); the same LN_a before both (section 6)."""

    def __init__(self, dim: int, d_state: int, drop_path: float):
        super().__init__()
        from m2hmx.ssm import Mamba

        hidden = max(dim // 4, 16)
        self.gate = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, dim), nn.Sigmoid())
        self.norm = nn.LayerNorm(dim)
        self.mamba = Mamba(d_model=dim, d_state=d_state, d_conv=4, expand=2)
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s = x.flatten(2).transpose(1, 2)  # [B, HW, C] row-major raster
        gate = self.gate(g)[:, None, :]
        s = s + self.drop_path(self.mamba(self.norm(s * gate)))
        s = s + self.drop_path(self.ffn(self.norm(s)))
        return s.transpose(1, 2).reshape(b, c, h, w)


class Decoder(nn.Module):
    """Shared top-down RGM state (strides 32->4) + per-task adaptor branches fused across scales.

    Returns {task: [T_s4, T_s8, T_s16, T_s32]} (fine -> coarse), each [B,C,.,.]."""

    def __init__(self, tasks: tuple[str, ...], dim: int, d_state: int, drop_path: float):
        super().__init__()
        self.tasks = tasks
        self.rgm = nn.ModuleList(RegisterGatedMamba(dim, d_state, drop_path) for _ in range(4))
        self.branches = nn.ModuleDict({t: nn.ModuleList(
            nn.Sequential(conv_gn(dim, dim, 3, bias=False), nn.GELU()) for _ in range(4)) for t in tasks})

    def forward(self, pyramid: list[torch.Tensor], g: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        state = None
        feats = {t: [] for t in self.tasks}
        for k, p in enumerate(pyramid):  # p32, p16, p8, p4
            state = self.rgm[k](p if state is None else p + resize(state, p.shape[-2:]), g)
            for t in self.tasks:
                f = self.branches[t][k](state)
                if feats[t]:
                    f = f + resize(feats[t][-1], f.shape[-2:])
                feats[t].append(f)
        return {t: f[::-1] for t, f in feats.items()}
