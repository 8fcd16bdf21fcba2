"""Training losses of M2H-MX (design: docs/design/network.md section 9).

The released M2H-MX code fixes which terms exist and their weights (``compute_losses`` in
BavanthaU/mono-hydra-pp ``m2h_hmx_v3/model.py``); the loss classes themselves are not public, so each
term here is written from the paper it comes from (cited per function). All functions take the model's
raw outputs (``[B,C,H,W]``) and the batch of ``m2hmx.data.torch_datasets.FrameDataset``; predictions
of another size than the target are resized bilinearly to the target first.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = 255
REGRESSION_TASKS = ("depth", "normals")  # Kendall et al.: Gaussian likelihood; the others are classification


def _resize_to(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if pred.shape[-2:] == target.shape[-2:]:
        return pred
    return F.interpolate(pred, size=target.shape[-2:], mode="bilinear", align_corners=False)


def silog_loss(pred: torch.Tensor, target: torch.Tensor, min_depth: float, max_depth: float,
               variance_focus: float = 0.85, scale: float = 10.0) -> torch.Tensor:
    """Scale-invariant log loss: ``scale * sqrt(mean(g^2) - lambda * mean(g)^2)``, g = log d - log d*.

    Eigen et al., "Depth Map Prediction from a Single Image using a Multi-Scale Deep Network" (NeurIPS
    2014), with the BTS/AdaBins variance focus lambda = 0.85 and factor 10 (Lee et al. 2019, BTS
    ``silog_loss``; Bhat et al. 2021, AdaBins ``loss.py::SILogLoss``). Computed over the valid pixels of
    the whole batch (``min_depth < d* < max_depth``); the prediction is clamped to ``min_depth`` first
    because the bin+offset output can be <= 0.
    """
    pred = _resize_to(pred, target)
    valid = (target > min_depth) & (target < max_depth)
    if not bool(valid.any()):
        return pred.sum() * 0.0
    g = torch.log(pred[valid].clamp(min=min_depth)) - torch.log(target[valid])
    value = (g * g).mean() - variance_focus * g.mean() ** 2
    return scale * torch.sqrt(value.clamp(min=1e-8))


def log_l1_depth_loss(pred: torch.Tensor, target: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """Mean ``|log d - log d*|`` over valid pixels: pins the absolute scale that SILog (lambda 0.85) leaves
    loose. Not in the M2H-MX defaults (weight 0 there, like the code's ``depth_l1_weight``); the demo
    recipe uses it because mapping needs scale-consistent metric depth."""
    pred = _resize_to(pred, target)
    valid = (target > min_depth) & (target < max_depth)
    if not bool(valid.any()):
        return pred.sum() * 0.0
    return (torch.log(pred[valid].clamp(min=min_depth)) - torch.log(target[valid])).abs().mean()


def semantic_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Pixel-wise cross-entropy, ignoring ``ignore_index``.

    The authors' ``CombinedSegLoss`` is not public; we choose plain CE (the MTI-Net/MTMamba NYUD choice,
    ``losses/loss_functions.py`` in EnVision-Research/MTMamba) over CE + Dice: one term, no extra weight
    to tune. Returns 0 (with a graph) when every pixel is ignored.
    """
    logits = _resize_to(logits, target)
    if not bool((target != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, ignore_index=ignore_index)


def cosine_normal_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean_valid(1 - <n, n*>)`` with valid = GT normal not all zero (``CosineSimilarityLoss`` of
    M2H-MX, section 9.2; the cosine form of Bae et al. / MTI-Net's normal loss). Predictions are
    renormalised after resizing."""
    if pred.shape[-2:] != target.shape[-2:]:
        pred = F.normalize(_resize_to(pred, target), dim=1)
    valid = (target != 0).any(dim=1)
    if not bool(valid.any()):
        return pred.sum() * 0.0
    cos = (pred * target).sum(dim=1)
    return (1.0 - cos[valid]).mean()


def balanced_edge_bce(logits: torch.Tensor, target: torch.Tensor, pos_weight: float = 0.95,
                      ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Class-balanced binary cross-entropy of HED (Xie & Tu, ICCV 2015) with a fixed positive weight,
    as MTI-Net / MTMamba use for NYUD edges (``BalancedBinaryCrossEntropyLoss``, ``edge_w: 0.95``):
    ``mean(w * y * BCE + (1 - w) * (1 - y) * BCE)`` over pixels whose target is not ``ignore_index``.
    """
    logits = _resize_to(logits, target)
    valid = target != ignore_index
    if not bool(valid.any()):
        return logits.sum() * 0.0
    y = target[valid].float()
    z = logits[valid]
    bce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    weight = pos_weight * y + (1.0 - pos_weight) * (1.0 - y)
    return (weight * bce).mean()


def normals_from_depth(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Surface normals ``[B,3,H,W]`` of a depth map ``[B,1,H,W]`` (metres) with intrinsics ``K`` ``[B,3,3]``.

    Back-projects ``P = d K^-1 [u,v,1]`` and takes ``normalize(dP/dv x dP/du)`` from central differences
    (border pixels are zero). In OpenCV camera axes this orientation faces the camera (a wall straight
    ahead gets ``(0,0,-1)``), the convention of ``Frame.normals``.
    """
    b, _, h, w = depth.shape
    v, u = torch.meshgrid(torch.arange(h, device=depth.device, dtype=depth.dtype),
                          torch.arange(w, device=depth.device, dtype=depth.dtype), indexing="ij")
    fx, fy = K[:, 0, 0].view(b, 1, 1), K[:, 1, 1].view(b, 1, 1)
    cx, cy = K[:, 0, 2].view(b, 1, 1), K[:, 1, 2].view(b, 1, 1)
    d = depth[:, 0]
    points = torch.stack(((u - cx) / fx * d, (v - cy) / fy * d, d), dim=1)  # [B,3,H,W]
    du = torch.zeros_like(points)
    dv = torch.zeros_like(points)
    du[:, :, :, 1:-1] = points[:, :, :, 2:] - points[:, :, :, :-2]
    dv[:, :, 1:-1, :] = points[:, :, 2:, :] - points[:, :, :-2, :]
    return F.normalize(torch.cross(dv, du, dim=1), dim=1, eps=1e-12)


def depth_normal_consistency(depth: torch.Tensor, normals: torch.Tensor, K: torch.Tensor,
                             ref_depth: torch.Tensor | None = None) -> torch.Tensor:
    """Geometric consistency ``GC = mean_valid(1 - <n, n_d>)`` between predicted normals and the normals
    of a depth map (M2H-MX ``geometric_consistency_loss``, section 9.2; the depth-normal constraint of
    Yang et al., "Unsupervised Learning of Geometry with Edge-aware Depth-Normal Consistency", AAAI 2018).
    Valid = interior pixels, and ``ref_depth > 0`` when a reference (GT) depth is given."""
    depth = _resize_to(depth, normals)
    n_d = normals_from_depth(depth, K)
    valid = n_d.abs().sum(dim=1) > 0
    if ref_depth is not None:
        valid &= _resize_to(ref_depth, normals)[:, 0] > 0
    if not bool(valid.any()):
        return normals.sum() * 0.0
    cos = (normals * n_d).sum(dim=1)
    return (1.0 - cos[valid]).mean()


@torch.no_grad()
def semantic_edge_map(seg_logits: torch.Tensor) -> torch.Tensor:
    """Label-change mask ``[B,1,H,W]`` of ``argmax(seg_logits)``: 1 where the class differs from the right
    or lower neighbour (M2H-MX ``compute_losses``, section 9.1)."""
    k = seg_logits.argmax(dim=1, keepdim=True).float()
    dx = F.pad((k[..., :, 1:] - k[..., :, :-1]).abs(), (0, 1, 0, 0))
    dy = F.pad((k[..., 1:, :] - k[..., :-1, :]).abs(), (0, 0, 0, 1))
    return (dx + dy).clamp(0, 1)


def edge_semantic_consistency(edge_logits: torch.Tensor, seg_logits: torch.Tensor) -> torch.Tensor:
    """``L1(sigmoid(e), E_sem(z).detach())``: edges should fire where the predicted classes change
    (M2H-MX ``consistency_se``)."""
    target = semantic_edge_map(_resize_to(seg_logits, edge_logits))
    return (torch.sigmoid(edge_logits) - target).abs().mean()


class UncertaintyWeighting(nn.Module):
    """Homoscedastic task uncertainty (Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty
    to Weigh Losses", CVPR 2018), paper form with ``s = log sigma^2`` (init 0):
    regression ``0.5 exp(-s) L + 0.5 s``, classification ``exp(-s) L + 0.5 s``.
    Depth and normals are regression; semseg and edge classification. The parameter ``log_vars`` is
    ordered like ``tasks`` (sorted names, as the released code) and gets no weight decay."""

    def __init__(self, tasks: tuple[str, ...]):
        super().__init__()
        self.tasks = tuple(sorted(tasks))
        self.log_vars = nn.Parameter(torch.zeros(len(self.tasks)))

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        total = self.log_vars.new_zeros(())
        for i, task in enumerate(self.tasks):
            if task not in losses:
                continue
            s = self.log_vars[i]
            factor = 0.5 if task in REGRESSION_TASKS else 1.0
            total = total + factor * torch.exp(-s) * losses[task] + 0.5 * s
        return total


@dataclass
class LossWeights:
    """Term weights; defaults are the released M2H-MX defaults (``HMXV3ModelConfig``, section 2/9.1)."""

    aux: dict = field(default_factory=lambda: {"semseg": 0.3, "depth": 0.3, "edge": 0.1, "normals": 0.0})
    geom_consistency: float = 0.5  # GC(d, n, d*) added to the normals loss
    consistency_dn: float = 0.5  # GC(d.detach(), n)
    consistency_se: float = 0.2  # L1(sigmoid(e), E_sem(z))
    depth_log_l1: float = 0.0  # |log d - log d*| (scale anchor; 0 in the released code)
    edge_pos_weight: float = 0.95
    uncertainty: bool = True


class MultiTaskLoss(nn.Module):
    """All M2H-MX training terms (section 9.1) for the configured tasks.

    ``forward(outputs, batch) -> (total, parts)`` where ``parts`` maps ``task`` to its (unweighted by
    uncertainty) loss and ``total`` is the Kendall-weighted sum (or the plain sum when
    ``weights.uncertainty`` is False, and always in eval mode). Tasks whose ground truth is missing in the
    batch are skipped.
    """

    def __init__(self, tasks: tuple[str, ...], min_depth: float, max_depth: float,
                 weights: LossWeights | None = None, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.tasks = tuple(tasks)
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.weights = weights or LossWeights()
        self.ignore_index = ignore_index
        self.uncertainty = UncertaintyWeighting(self.tasks) if self.weights.uncertainty else None

    def _with_aux(self, fn, task: str, outputs: dict, target: torch.Tensor) -> torch.Tensor:
        loss = fn(outputs[task], target)
        w = float(self.weights.aux.get(task, 0.0))
        if w > 0:
            for aux in outputs.get("aux", {}).get(task, []):
                loss = loss + w * fn(aux, target)
        return loss

    def forward(self, outputs: dict, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        w = self.weights
        parts: dict[str, torch.Tensor] = {}
        if "semseg" in self.tasks and "semseg" in batch:
            parts["semseg"] = self._with_aux(
                lambda p, t: semantic_loss(p, t, self.ignore_index), "semseg", outputs, batch["semseg"])
        if "depth" in self.tasks and "depth" in batch:
            def depth_fn(p, t):
                loss = silog_loss(p, t, self.min_depth, self.max_depth)
                if w.depth_log_l1 > 0:
                    loss = loss + w.depth_log_l1 * log_l1_depth_loss(p, t, self.min_depth, self.max_depth)
                return loss
            parts["depth"] = self._with_aux(depth_fn, "depth", outputs, batch["depth"])
        if "normals" in self.tasks and "normals" in batch:
            loss = self._with_aux(cosine_normal_loss, "normals", outputs, batch["normals"])
            if "depth" in outputs and "K" in batch:
                if w.geom_consistency > 0 and "depth" in batch:
                    loss = loss + w.geom_consistency * depth_normal_consistency(
                        outputs["depth"], outputs["normals"], batch["K"], batch["depth"])
                if w.consistency_dn > 0:
                    loss = loss + w.consistency_dn * depth_normal_consistency(
                        outputs["depth"].detach(), outputs["normals"], batch["K"])
            parts["normals"] = loss
        if "edge" in self.tasks and "edge" in batch:
            loss = self._with_aux(lambda p, t: balanced_edge_bce(p, t, w.edge_pos_weight, self.ignore_index),
                                  "edge", outputs, batch["edge"])
            if w.consistency_se > 0 and "semseg" in outputs:
                loss = loss + w.consistency_se * edge_semantic_consistency(outputs["edge"], outputs["semseg"])
            parts["edge"] = loss
        if not parts:
            raise ValueError(f"the batch has ground truth for none of the tasks {self.tasks} (keys: {sorted(batch)})")
        if self.uncertainty is not None and self.training:
            total = self.uncertainty(parts)
        else:
            total = sum(parts.values())
        return total, parts

