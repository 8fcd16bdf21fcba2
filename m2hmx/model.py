"""M2H-MX: DINOv3 ViT (+LoRA) -> HFA -> register-gated Mamba decoder -> asymmetric CTM/MSCA task heads.

Execution order (docs/design/network.md section 7.8): depth (pure source) -> edge -> normals -> semseg (the last
sink, seeing every refined geometric feature). Absent tasks are skipped; each head mixes the features of
all other configured tasks (raw decoder features until that task's head has run).
"""
from __future__ import annotations

import torch
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

    def needed_heads(self, outputs: tuple[str, ...] | None = None) -> tuple[str, ...]:
        """The heads whose final prediction layers run for ``outputs`` (default: every task). Every head's
        features always run: each later head mixes them in (semseg sees all of them), so leaving a head out
        would change the other answers. Edges are predicted whenever semseg refines its logits with them."""
        wanted = set(self.tasks if outputs is None else outputs)
        unknown = wanted - set(self.tasks)
        if unknown or not {"depth", "semseg"} <= wanted:
            raise ValueError(f"outputs {sorted(wanted)}: need depth and semseg, from this model's "
                             f"{', '.join(self.tasks)}")
        if self.heads["semseg"].edge_refine is not None:
            wanted.add("edge")
        return tuple(t for t in self.tasks if t in wanted)

    def forward(self, images: torch.Tensor, outputs: tuple[str, ...] | None = None) -> dict:
        """``outputs``: the tasks to predict (eval mode; default all), e.g. ("depth", "semseg") as the paper
        deploys it: the other heads' prediction layers and full-size outputs are skipped, and the asked
        outputs are exactly what the full forward gives."""
        pyramid, g = self.encode(images)
        return self.predict_heads(self.decoder(pyramid, g), images.shape[-2:], outputs)

    def encode(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Backbone + HFA: (pyramid coarse to fine, register vector g), the decoder's input."""
        maps, registers = self.backbone(images)
        return self.hfa(maps, registers)

    def predict_heads(self, feats: dict[str, list[torch.Tensor]], size, outputs: tuple[str, ...] | None = None
                      ) -> dict:
        """The task heads on the decoder's features and the outputs at the input ``size`` (see ``forward``)."""
        size = tuple(size)
        predict = self.needed_heads(outputs) if outputs is not None and not self.training else self.tasks
        context = {t: feats[t][0] for t in self.tasks}  # raw stride-4 features, replaced as heads run
        out, aux = {}, {}
        for task in HEAD_ORDER:
            if task not in self.tasks:
                continue
            head = self.heads[task]
            if task == "depth":
                r = head(feats[task])
            else:
                r = head(feats[task], [context[t] for t in self.tasks if t != task], predict=task in predict)
            context[task] = r["feature"]
            if task not in predict:
                continue
            aux[task] = [resize(a, size, align_corners=task == "edge") for a in r["aux"]]
            out[task] = resize(r[task], size, align_corners=task == "edge")
            if task == "depth" and self.training:
                out["depth_bin_logits"] = r["bin_logits"]
                out["depth_bin_edges"] = r["bin_edges"]
                out["depth_coarse"] = resize(r["coarse"], size)
                out["depth_offset"] = resize(r["offset"], size)
        if "normals" in out:
            out["normals"] = unit(out["normals"])
            aux["normals"] = [unit(a) for a in aux["normals"]]
        seg_head = self.heads["semseg"]
        if seg_head.edge_refine is not None:
            out["semseg"] = seg_head.refine_with_edges(out["semseg"], out["edge"])
        if outputs is not None:
            out = {k: v for k, v in out.items() if k in outputs or k not in self.tasks}
        if self.training:
            out["aux"] = aux
        return out


def unit(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``F.normalize(x, dim=1)`` (x / max(|x|, eps) over channels) as plain elementwise ops: torch's
    vector norm over the channels of an NCHW map took 6 ms for a 3x144x192 map on one CPU thread."""
    return x / torch.sqrt((x * x).sum(dim=1, keepdim=True)).clamp_min(eps)


def build_model(config_or_name: M2HMXConfig | str) -> M2HMX:
    """Build M2H-MX from a config or a preset name (random decoder/head init; backbone weights from
    ``config.backbone.weights`` when set). Works under ``with torch.device("meta")`` for counting."""
    config = get_preset(config_or_name) if isinstance(config_or_name, str) else config_or_name
    return M2HMX(config)
