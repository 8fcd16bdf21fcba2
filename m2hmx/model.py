"""M2H-MX: DINOv3 ViT (+LoRA) -> HFA -> register-gated Mamba decoder -> asymmetric CTM/MSCA task heads.

Execution order (docs/design/network.md section 7.8): depth (pure source) -> edge -> normals -> semseg (the last
sink, seeing every refined geometric feature). Absent tasks are skipped; each head mixes the features of
all other configured tasks (raw decoder features until that task's head has run).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from m2hmx.backbone import DINOv3Backbone
from m2hmx.config import M2HMXConfig, get_preset
from m2hmx.decoder import HFA, Decoder, resize
from m2hmx.heads import DepthHead, EdgeHead, NormalsHead, SemsegHead

HEAD_ORDER = ("depth", "edge", "normals", "semseg")


class M2HMX(nn.Module):
    """forward(images [B,3,H,W] ImageNet-normalised, H and W multiples of 16) -> dict of full-size outputs:
    "semseg" [B,C,H,W] logits, "depth" [B,1,H,W] metres, "normals" [B,3,H,W] unit, "edge" [B,1,H,W] logits
    (configured tasks only); in train mode also "aux" {task: [tensors at full size]}, "depth_bin_logits"
    [B,N,H/4,W/4], "depth_bin_edges" [B,N] (right edges), "depth_coarse", "depth_offset" [B,1,H,W]."""

    def __init__(self, config: M2HMXConfig):
        super().__init__()
        self.config = config
        c = config.decoder_dim
        tasks = config.tasks
        self.backbone = DINOv3Backbone(config.backbone, config.lora)
        self.hfa = HFA(config.backbone.hidden_size, c, config.hfa_p16_source, config.head_stride)
        self.decoder = Decoder(tasks, c, config.d_state, config.drop_path)
        n_ctx = len(tasks) - 1
        heads = {"depth": DepthHead(c, config.depth_bins, config.min_depth, config.max_depth),
                 "semseg": SemsegHead(c, config.num_classes, n_ctx, config.msca_variant,
                                      config.seg_edge_refine and "edge" in tasks)}
        if "edge" in tasks:
            heads["edge"] = EdgeHead(c, n_ctx, config.msca_variant)
        if "normals" in tasks:
            heads["normals"] = NormalsHead(c, n_ctx, config.msca_variant)
        self.heads = nn.ModuleDict({t: heads[t] for t in tasks})

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.config.tasks

    def forward(self, images: torch.Tensor) -> dict:
        size = images.shape[-2:]
        maps, registers = self.backbone(images)
        pyramid, g = self.hfa(maps, registers)
        feats = self.decoder(pyramid, g)
        context = {t: feats[t][0] for t in self.tasks}  # raw stride-4 features, replaced as heads run
        out, aux = {}, {}
        for task in HEAD_ORDER:
            if task not in self.tasks:
                continue
            head = self.heads[task]
            if task == "depth":
                r = head(feats[task])
            else:
                r = head(feats[task], [context[t] for t in self.tasks if t != task])
            context[task] = r["feature"]
            aux[task] = [resize(a, size, align_corners=task == "edge") for a in r["aux"]]
            out[task] = resize(r[task], size, align_corners=task == "edge")
            if task == "depth" and self.training:
                out["depth_bin_logits"] = r["bin_logits"]
                out["depth_bin_edges"] = r["bin_edges"]
                out["depth_coarse"] = resize(r["coarse"], size)
                out["depth_offset"] = resize(r["offset"], size)
        if "normals" in out:
            out["normals"] = F.normalize(out["normals"], dim=1)
            aux["normals"] = [F.normalize(a, dim=1) for a in aux["normals"]]
        seg_head = self.heads["semseg"]
        if seg_head.edge_refine is not None:
            out["semseg"] = seg_head.refine_with_edges(out["semseg"], out["edge"])
        if self.training:
            out["aux"] = aux
        return out


def build_model(config_or_name: M2HMXConfig | str) -> M2HMX:
    """Build M2H-MX from a config or a preset name (random decoder/head init; backbone weights from
    ``config.backbone.weights`` when set). Works under ``with torch.device("meta")`` for counting."""
    config = get_preset(config_or_name) if isinstance(config_or_name, str) else config_or_name
    return M2HMX(config)
