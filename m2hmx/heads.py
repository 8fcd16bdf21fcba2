"""Task heads: multi-scale fusion, Cross-Task Mixing (CTM), MSCA, adaptive-bin depth, edge, normals, semseg.

docs/design/network.md section 7 (the authors' ``heads.py``: ``_BaseHead``, ``CrossTaskMixer``, ``MSCABlock``,
``BinDepthHead``, ``EdgeHead``, ``NormalsHead``, ``SimpleSegmentationHead``); the SegNeXt MSCA variant after
Visual-Attention-Network/SegNeXt ``mmseg/models/backbones/mscan.py::AttentionModule``; the adaptive bins
after AdaBins (Bhat et al. 2021) with softmax widths.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from m2hmx.decoder import resize


def conv_gn_act(cin: int, cout: int, kernel: int | tuple[int, int], groups: int = 1,
                dw: bool = False) -> nn.Sequential:
    """Conv (no bias, "same" padding) + GroupNorm(groups) + GELU; ``dw`` = depthwise."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    conv = nn.Conv2d(cin, cout, (kh, kw), padding=(kh // 2, kw // 2), bias=False, groups=cin if dw else 1)
    return nn.Sequential(conv, nn.GroupNorm(groups, cout), nn.GELU())


class FusionBlock(nn.Module):
    """y = ReLU(GN32(conv3(x))); out = ReLU(GN32(conv3(y)) + x)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.gn1 = nn.GroupNorm(32, dim)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.gn2 = nn.GroupNorm(32, dim)

    def forward(self, x):
        y = F.relu(self.gn1(self.conv1(x)))
        return F.relu(self.gn2(self.conv2(y)) + x)


class PredMLP(nn.Sequential):
    """Conv1x1(GELU(Conv3x3(f)))."""

    def __init__(self, dim: int, out: int):
        super().__init__(nn.Conv2d(dim, dim, 3, padding=1), nn.GELU(), nn.Conv2d(dim, out, 1))


class MSCA(nn.Module):
    """Multi-scale convolutional attention: out = Id(x) * attention(x).

    "released": A = GELU(GN(dw5x5 x)); A += GELU(GN(dw1xk A)); A += GELU(GN(dwkx1 A)); A = conv1x1(A);
    optional SE; attention = sigmoid(GELU(A)). "segnext": SegNeXt's dw5x5 then three strip branches
    (1x7/7x1, 1x11/11x1, 1x21/21x1) summed, conv1x1, used as the multiplier directly.
    Id = GN(1)(conv1x1) if ``use_proj`` else identity."""

    def __init__(self, dim: int, variant: str = "released", k: int = 9, use_proj: bool = True,
                 se_inner: bool = False):
        super().__init__()
        self.variant = variant
        if variant == "released":
            self.dw5 = conv_gn_act(dim, dim, 5, dw=True)
            self.dw_row = conv_gn_act(dim, dim, (1, k), dw=True)
            self.dw_col = conv_gn_act(dim, dim, (k, 1), dw=True)
        else:
            self.dw5 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
            self.strips = nn.ModuleList(nn.Sequential(
                nn.Conv2d(dim, dim, (1, s), padding=(0, s // 2), groups=dim),
                nn.Conv2d(dim, dim, (s, 1), padding=(s // 2, 0), groups=dim)) for s in (7, 11, 21))
        self.mix = nn.Conv2d(dim, dim, 1)
        self.se = nn.Conv2d(dim, dim, 1) if se_inner else None
        self.identity = nn.Sequential(nn.Conv2d(dim, dim, 1, bias=False), nn.GroupNorm(1, dim)) \
            if use_proj else nn.Identity()
        self._init()

    def _init(self):  # kaiming_normal(fan_out, relu), zero bias (authors' MSCABlock)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        if self.variant == "released":
            a = self.dw5(x)
            a = a + self.dw_row(a)
            a = a + self.dw_col(a)
        else:
            a = self.dw5(x)
            a = a + sum(strip(a) for strip in self.strips)
        a = self.mix(a)
        if self.se is not None:
            a = a * torch.sigmoid(self.se(a.mean(dim=(2, 3), keepdim=True)))
        gate = torch.sigmoid(F.gelu(a)) if self.variant == "released" else a
        return self.identity(x) * gate


class CrossTaskMixer(nn.Module):
    """CTM(F_b, {F_j}): M = GELU(GN(conv1x1([F_b, P_j * (1 + a_j)]))); out = M + MSCA(M)."""

    def __init__(self, dim: int, n_context: int, msca_variant: str):
        super().__init__()
        self.project = nn.ModuleList(conv_gn_act(dim, dim, 1) for _ in range(n_context))
        self.gate = nn.ModuleList(nn.Sequential(conv_gn_act(dim, dim, 1), nn.Conv2d(dim, 1, 1), nn.Sigmoid())
                                  for _ in range(n_context))
        self.mix = conv_gn_act((n_context + 1) * dim, dim, 1)
        self.msca = MSCA(dim, msca_variant, use_proj=True)

    def forward(self, base, context: list[torch.Tensor]):
        parts = [base]
        for proj, gate, c in zip(self.project, self.gate, context):
            c = resize(c, base.shape[-2:])
            parts.append(proj(c) * (1.0 + gate(c)))
        m = self.mix(torch.cat(parts, dim=1))
        return m + self.msca(m)


class BaseHead(nn.Module):
    """Coarse-to-fine fusion of the task's decoder features [s4, s8, s16, s32] + one refine block.

    forward returns the stride-4 feature and (in train mode) the aux predictions of ``aux_idx`` positions
    (0 = s32, 1 = s16, 2 = s8), made by ``self.pred``."""

    def __init__(self, dim: int, out: int, aux_idx: tuple[int, ...]):
        super().__init__()
        self.fuse = nn.ModuleList(FusionBlock(dim) for _ in range(4))
        self.refine = FusionBlock(dim)
        self.pred = PredMLP(dim, out)
        self.aux_idx = aux_idx

    def fuse_features(self, feats: list[torch.Tensor]):
        coarse_to_fine = feats[::-1]
        f, aux = None, []
        for i, t in enumerate(coarse_to_fine):
            # authors: Up2 (align_corners=True) then resize to the target; one resize is the same for exact 2x
            f = self.fuse[i](t if f is None else t + resize(f, t.shape[-2:], align_corners=True))
            if self.training and i in self.aux_idx:
                aux.append(self.pred(f))
        return self.refine(f), aux


class DepthHead(BaseHead):
    """Adaptive bins: per-image softmax bin widths over [d_min, d_max], per-pixel bin probabilities,
    expected bin centre + an unbounded residual offset."""

    def __init__(self, dim: int, bins: int, min_depth: float, max_depth: float):
        super().__init__(dim, 1, (1, 2))
        self.min_depth, self.max_depth = min_depth, max_depth
        self.widths = nn.Sequential(nn.Conv2d(dim, bins, 1, bias=False), nn.GELU(), nn.Conv2d(bins, bins, 1))
        self.logits = nn.Sequential(conv_gn_act(dim, dim, 3, groups=8), nn.Conv2d(dim, bins, 1))
        self.offset = nn.Sequential(conv_gn_act(dim, dim // 2, 3, groups=4), nn.Conv2d(dim // 2, 1, 1))

    def forward(self, feats):
        f, aux = self.fuse_features(feats)
        w = torch.softmax(self.widths(f.mean(dim=(2, 3), keepdim=True)).flatten(1), dim=1)  # [B,N]
        edges = self.min_depth + (self.max_depth - self.min_depth) * torch.cumsum(w, dim=1)  # right edges
        left = torch.cat([edges.new_full((edges.shape[0], 1), self.min_depth), edges[:, :-1]], dim=1)
        centres = 0.5 * (left + edges)
        logits = self.logits(f)
        coarse = (torch.softmax(logits, dim=1) * centres[:, :, None, None]).sum(1, keepdim=True)
        offset = self.offset(f)
        return {"depth": coarse + offset, "bin_logits": logits, "bin_edges": edges, "coarse": coarse,
                "offset": offset, "aux": aux, "feature": f}


class EdgeHead(BaseHead):
    def __init__(self, dim: int, n_context: int, msca_variant: str):
        super().__init__(dim, 1, (1,))
        self.ctm = CrossTaskMixer(dim, n_context, msca_variant)
        self.out = nn.Sequential(nn.Conv2d(dim, dim // 2, 3, padding=1, bias=False), nn.GELU(),
                                 nn.Conv2d(dim // 2, 1, 1))

    def forward(self, feats, context, predict: bool = True):
        f, aux = self.fuse_features(feats)
        f = self.ctm(f, context)
        return {"edge": self.out(f) if predict else None, "aux": aux, "feature": f}


class NormalsHead(BaseHead):
    def __init__(self, dim: int, n_context: int, msca_variant: str):
        super().__init__(dim, 3, (1, 2))
        self.ctm = CrossTaskMixer(dim, n_context, msca_variant)
        self.out = nn.Sequential(nn.Conv2d(dim, dim, 1, bias=False), nn.GELU(), nn.Conv2d(dim, 3, 1))

    def forward(self, feats, context, predict: bool = True):
        f, aux = self.fuse_features(feats)
        f = self.ctm(f, context)
        return {"normals": self.out(f) if predict else None, "aux": aux, "feature": f}


class SemsegHead(BaseHead):
    """z = pred(f) + pred(MSCA_se(CTM(f))) (shared pred), optionally + edge-aware refine (full size)."""

    EDGE_THRESHOLD, EDGE_STRENGTH = 0.6, 0.1  # authors' NYUD config

    def __init__(self, dim: int, num_classes: int, n_context: int, msca_variant: str, edge_refine: bool):
        super().__init__(dim, num_classes, (1, 2))
        self.ctm = CrossTaskMixer(dim, n_context, msca_variant)
        self.msca = MSCA(dim, msca_variant, use_proj=False, se_inner=True)
        self.edge_refine = nn.Conv2d(1, num_classes, 1) if edge_refine else None

    def forward(self, feats, context, predict: bool = True):
        f, aux = self.fuse_features(feats)
        z0 = self.pred(f)
        fs = self.ctm(f, context)
        return {"semseg": z0 + self.pred(self.msca(fs)), "aux": aux, "feature": fs}

    def refine_with_edges(self, logits_full, edge_logits_full):
        e = torch.sigmoid((torch.sigmoid(edge_logits_full) - self.EDGE_THRESHOLD) * 10.0)
        # the 1x1 convolution from one channel as a broadcast multiply-add: the same sums, without oneDNN's
        # set-up for a 1-input-channel convolution (3 ms a frame at 144x192 on one thread)
        w, b = self.edge_refine.weight.view(1, -1, 1, 1), self.edge_refine.bias.view(1, -1, 1, 1)
        return logits_full + self.EDGE_STRENGTH * (e * w + b)
