"""Network configuration: ``M2HMXConfig`` and the named presets (torch-free).

Values follow docs/design/network.md (sections 2, 4, 11, 12): the paper's M2H-MX-L (DINOv3 ViT-L/16, decoder
width 256, Mamba d_state 32, 64 depth bins over [0.1, 10] m, LoRA r 16 / alpha 32 / dropout 0.05 on the QKV
and MLP projections of the last half of the blocks). M2H-MX-B and -S change only the backbone.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from m2hmx import M2HMXError

TASKS = ("semseg", "depth", "normals", "edge")  # canonical order (decoder branch / loss order)
LORA_STYLES = ("paper", "released", "none")
P16_SOURCES = ("fused", "deepest")
MSCA_VARIANTS = ("released", "segnext")


class ConfigError(M2HMXError, ValueError):
    """An invalid network configuration (one line naming the field)."""


@dataclass(frozen=True)
class BackboneConfig:
    """A DINOv3 ViT (HF ``DINOv3ViTConfig`` fields) and how the network uses it.

    ``layer_indices``: 0-based blocks whose raw outputs feed the HFA (the last one also gives the register
    tokens). ``rope_rescale``: log-uniform RoPE coordinate rescale factor applied in train mode (HF
    ``pos_embed_rescale``; DINOv3 trains with 2.0) or None for off. ``trainable``: train every backbone
    weight (only for the demo ViT, which has no pretrained weights to start from); paper presets keep the
    backbone frozen and adapt it with LoRA. ``weights``: a Hugging Face model folder or Meta's official
    ``.pth`` loaded when the model is built (None: random init, e.g. when loading a full checkpoint).
    """

    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    intermediate_size: int = 4096
    num_registers: int = 4
    patch_size: int = 16
    layer_indices: tuple[int, ...] = (5, 11, 17, 23)
    layer_norm_eps: float = 1e-5
    rope_theta: float = 100.0
    rope_rescale: float | None = 2.0
    trainable: bool = False
    weights: str | None = None


@dataclass(frozen=True)
class LoRAConfig:
    """LoRA on the backbone (via ``peft``).

    ``style``: "paper" = q/k/v + MLP (up/down) projections of the last half of the blocks, norms frozen
    (paper section III-A1); "released" = q/k/v of every block and every backbone LayerNorm trainable (what
    the authors' released code does, network.md section 4); "none" = no adapters.
    """

    style: str = "paper"
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05


@dataclass(frozen=True)
class M2HMXConfig:
    name: str = "m2hmx-l"
    tasks: tuple[str, ...] = TASKS
    num_classes: int = 40
    label_space: str = "nyu40"
    image_size: tuple[int, int] = (480, 640)  # training resolution (H, W); the Predictor resizes to its scale
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    decoder_dim: int = 256
    d_state: int = 32
    drop_path: float = 0.1
    depth_bins: int = 64
    min_depth: float = 0.1
    max_depth: float = 10.0
    hfa_p16_source: str = "fused"  # "fused" = F_0 (paper); "deepest" = F_3 (released code), section 12 #4
    head_stride: int = 4  # finest pyramid level / head resolution: 4 (paper) or 8 (demo: 4x fewer head MACs)
    msca_variant: str = "released"  # "released" (authors' code) or "segnext" (original MSCA), section 12 #5
    seg_edge_refine: bool = True  # edge-aware semseg logit refine (NYUD config; only with the edge task)

    def __post_init__(self):
        tasks = tuple(self.tasks)
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or not tasks:
            raise ConfigError(f"tasks {list(tasks)}: each must be one of {list(TASKS)}")
        if not {"semseg", "depth"} <= set(tasks):
            raise ConfigError(f"tasks {list(tasks)}: depth and semseg are always required")
        object.__setattr__(self, "tasks", tuple(t for t in TASKS if t in tasks))
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        bb = self.backbone
        if len(bb.layer_indices) != 4 or not all(0 <= i < bb.num_layers for i in bb.layer_indices) \
                or list(bb.layer_indices) != sorted(set(bb.layer_indices)):
            raise ConfigError(f"backbone.layer_indices {bb.layer_indices}: need 4 increasing blocks "
                              f"in 0..{bb.num_layers - 1}")
        if bb.hidden_size % bb.num_heads:
            raise ConfigError(f"backbone.hidden_size {bb.hidden_size} is not divisible by num_heads {bb.num_heads}")
        if self.lora.style not in LORA_STYLES:
            raise ConfigError(f"lora.style '{self.lora.style}' is not one of {list(LORA_STYLES)}")
        if self.hfa_p16_source not in P16_SOURCES:
            raise ConfigError(f"hfa_p16_source '{self.hfa_p16_source}' is not one of {list(P16_SOURCES)}")
        if self.head_stride not in (4, 8):
            raise ConfigError(f"head_stride {self.head_stride} is not 4 or 8")
        if self.msca_variant not in MSCA_VARIANTS:
            raise ConfigError(f"msca_variant '{self.msca_variant}' is not one of {list(MSCA_VARIANTS)}")
        if self.decoder_dim % 32:
            raise ConfigError(f"decoder_dim {self.decoder_dim} must be a multiple of 32 (GroupNorm(32, C))")
        if not 0 < self.min_depth < self.max_depth:
            raise ConfigError(f"depth range [{self.min_depth}, {self.max_depth}] is not 0 < min < max")
        if any(s % bb.patch_size for s in self.image_size):
            raise ConfigError(f"image_size {self.image_size} is not a multiple of the patch size {bb.patch_size}")

    # ---- serialisation (the checkpoint stores this JSON) ----
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "M2HMXConfig":
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            raise ConfigError(f"unknown network config fields {extra}")
        bb = dict(d.pop("backbone", {}))
        if "layer_indices" in bb:
            bb["layer_indices"] = tuple(bb["layer_indices"])
        for sub, sub_cls in ((bb, BackboneConfig), (d.get("lora", {}), LoRAConfig)):
            bad = sorted(set(sub) - {f.name for f in dataclasses.fields(sub_cls)})
            if bad:
                raise ConfigError(f"unknown {sub_cls.__name__} fields {bad}")
        return cls(**{**d, "tasks": tuple(d.get("tasks", TASKS)), "backbone": BackboneConfig(**bb),
                      "lora": LoRAConfig(**d.get("lora", {}))})


def _vit(hidden: int, layers: int, heads: int, **kw) -> BackboneConfig:
    """A DINOv3 ViT/16 (FFN ratio 4, 4 registers) taking 4 evenly spaced blocks, like [5,11,17,23] of 24."""
    step = layers // 4
    return BackboneConfig(hidden_size=hidden, num_layers=layers, num_heads=heads, intermediate_size=4 * hidden,
                          layer_indices=tuple(step * (k + 1) - 1 for k in range(4)), **kw)


# The demo ViT: DINOv3 architecture at 192 wide / 6 blocks, trained from scratch (no pretrained weights of
# this size exist and nothing can be downloaded), hence trainable and without LoRA or RoPE rescaling.
# Its heads run at stride 8 (pyramid 64/32/16/8): at stride 4 the heads and the finest decoder level are
# 6 of its 7.2 GMAC at 240x320; at stride 8 the network is 2.5 GMAC, within a 2-core 10 frames/s budget.
_DEMO_VIT = BackboneConfig(hidden_size=192, num_layers=6, num_heads=3, intermediate_size=768,
                           layer_indices=(1, 2, 4, 5), rope_rescale=None, trainable=True)

PRESETS: dict[str, M2HMXConfig] = {
    "m2hmx-l": M2HMXConfig(name="m2hmx-l", backbone=_vit(1024, 24, 16)),
    "m2hmx-b": M2HMXConfig(name="m2hmx-b", backbone=_vit(768, 12, 12)),
    "m2hmx-s": M2HMXConfig(name="m2hmx-s", backbone=_vit(384, 12, 6)),
    "m2hmx-demo": M2HMXConfig(name="m2hmx-demo", num_classes=20, label_space="scannet20", image_size=(240, 320),
                              backbone=_DEMO_VIT, lora=LoRAConfig(style="none"), decoder_dim=64, d_state=16,
                              head_stride=8),
}

# Trained weights shipped in assets/ for a preset, tied to its name (as timm ties pretrained weights to a model name).
BUNDLED_WEIGHTS = {"m2hmx-demo": "m2hmx-demo.safetensors"}


def bundled_checkpoint(preset: str = "m2hmx-demo") -> Path:
    """The path of the weights bundled for ``preset`` (``BUNDLED_WEIGHTS``); a checkout without assets lacks the file."""
    from m2hmx import ASSETS_DIR

    if preset not in BUNDLED_WEIGHTS:
        raise ConfigError(f"no bundled weights for the preset '{preset}' (bundled: {', '.join(BUNDLED_WEIGHTS)})")
    return ASSETS_DIR / BUNDLED_WEIGHTS[preset]


def get_preset(name: str, **overrides) -> M2HMXConfig:
    """The preset ``name`` (see ``PRESETS``), with top-level fields replaced by ``overrides``."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset '{name}' (known: {', '.join(PRESETS)})")
    return dataclasses.replace(PRESETS[name], **overrides) if overrides else PRESETS[name]
