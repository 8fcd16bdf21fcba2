"""DINOv3 ViT backbone (HF ``transformers``), weight loading (HF folder or Meta ``.pth``) and LoRA (``peft``).

The forward returns the raw (un-normed) outputs of the selected blocks and the register tokens of the last
one, as the authors' model does (docs/design/network.md section 3: the equivalent of DINOv3's
``get_intermediate_layers(n=..., norm=False, return_extra_tokens=True)``).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn
from transformers import DINOv3ViTConfig, DINOv3ViTModel

from m2hmx import M2HMXError
from m2hmx.config import BackboneConfig, LoRAConfig


class BackboneWeightsError(M2HMXError, RuntimeError):
    """Backbone weights that cannot be loaded (one line naming the file and the offending keys)."""


def hf_config(cfg: BackboneConfig) -> DINOv3ViTConfig:
    return DINOv3ViTConfig(hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                           num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
                           num_register_tokens=cfg.num_registers, patch_size=cfg.patch_size,
                           layer_norm_eps=cfg.layer_norm_eps, rope_theta=cfg.rope_theta,
                           pos_embed_rescale=cfg.rope_rescale, query_bias=True, key_bias=False, value_bias=True)


# ---------------------------------------------------------------------------------------------- weights
_META_RENAMES = [  # official dinov3 names -> HF names (transformers convert_dinov3_vit_to_hf.py)
    (r"^cls_token$", "embeddings.cls_token"),
    (r"^mask_token$", "embeddings.mask_token"),
    (r"^storage_tokens$", "embeddings.register_tokens"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embeddings."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"model.layer.\1.attention.o_proj."),
    (r"^blocks\.(\d+)\.ls(\d)\.gamma$", r"model.layer.\1.layer_scale\2.lambda1"),
    (r"^blocks\.(\d+)\.mlp\.fc1\.", r"model.layer.\1.mlp.up_proj."),
    (r"^blocks\.(\d+)\.mlp\.fc2\.", r"model.layer.\1.mlp.down_proj."),
    (r"^blocks\.(\d+)\.norm(\d)\.", r"model.layer.\1.norm\2."),
    (r"^norm\.", "norm."),
]
# Keys of the official checkpoint with no HF counterpart (dropped by the official converter too).
_META_DROPPED = re.compile(r"^(rope_embed\.periods|blocks\.\d+\.attn\.qkv\.bias_mask|local_cls_norm\..*)$")


def convert_meta_state_dict(sd: dict[str, torch.Tensor], source: str = "state dict") -> dict[str, torch.Tensor]:
    """Meta's ``dinov3_vit*_pretrain_*.pth`` layout -> HF ``DINOv3ViTModel`` keys.

    The fused ``qkv`` is split into q/k/v; its key bias is dropped because DINOv3's ``LinearKMaskedBias``
    multiplies it by ``bias_mask`` (0 on the key third), so the model never uses it (HF k_proj has no bias).
    Unknown keys raise ``BackboneWeightsError``.
    """
    out, unknown = {}, []
    for key, value in sd.items():
        m = re.match(r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", key)
        if m:
            q, k, v = value.chunk(3, dim=0)
            base = f"model.layer.{m.group(1)}.attention."
            out[base + "q_proj." + m.group(2)] = q
            out[base + "v_proj." + m.group(2)] = v
            if m.group(2) == "weight":
                out[base + "k_proj.weight"] = k
            else:
                mask = sd.get(key + "_mask")
                if mask is not None and bool(mask.chunk(3)[1].any()):
                    raise BackboneWeightsError(f"{source}: {key}_mask does not mask the key bias; "
                                               "not a DINOv3 checkpoint this model can represent")
            continue
        if _META_DROPPED.match(key):
            continue
        for pattern, repl in _META_RENAMES:
            if re.match(pattern, key):
                new = re.sub(pattern, repl, key)
                out[new] = value.reshape(1, 1, -1) if new == "embeddings.mask_token" else value
                break
        else:
            unknown.append(key)
    if unknown:
        raise BackboneWeightsError(f"{source}: unexpected keys for a DINOv3 ViT: {_few(unknown)}")
    return out


def _few(keys: list[str], n: int = 4) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def _hf_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF files store blocks as ``layer.N`` (transformers maps them to ``model.layer.N`` on load,
    ``conversion_mapping.py``); task/backbone wrappers may prefix the ViT's names."""
    out = {}
    for k, v in sd.items():
        k = re.sub(r"^(dinov3_vit|backbone|dinov3)\.", "", k)
        out[re.sub(r"^layer\.", "model.layer.", k)] = v
    return out


def read_backbone_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """HF-layout state dict from a Hugging Face model folder (``model.safetensors`` [sharded] or
    ``pytorch_model.bin``) or a Meta ``.pth`` file (converted)."""
    path = Path(path)
    try:
        if path.is_dir():
            files = sorted(path.glob("*.safetensors"))
            if files:
                from safetensors.torch import load_file
                sd = {}
                for f in files:
                    sd.update(load_file(str(f)))
            elif (path / "pytorch_model.bin").is_file():
                sd = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
            else:
                raise BackboneWeightsError(f"{path}: no *.safetensors or pytorch_model.bin in this folder")
            return _hf_names(sd)
        if path.is_file():
            sd = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
                sd = sd["model"]
            if not isinstance(sd, dict):
                raise BackboneWeightsError(f"{path}: not a state dict")
            if any(k.startswith("blocks.") for k in sd):
                return convert_meta_state_dict(sd, str(path))
            return _hf_names(sd)
    except BackboneWeightsError:
        raise
    except Exception as exc:  # corrupt / foreign files: one line, naming the file
        raise BackboneWeightsError(f"{path}: cannot read backbone weights ({type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    raise BackboneWeightsError(f"{path}: no such file or folder")


def load_backbone_weights(vit: DINOv3ViTModel, path: str | Path) -> None:
    """Load weights into ``vit`` exactly: any missing, unexpected or mis-shaped key raises."""
    sd = read_backbone_weights(path)
    own = vit.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in sd and sd[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_few(unexpected)}")
    if shapes:
        problems.append(f"wrong shapes: {_few(shapes, 2)}")
    if problems:
        raise BackboneWeightsError(f"{path}: weights do not fit this backbone ({'; '.join(problems)})")
    with torch.no_grad():
        for k, t in own.items():
            t.copy_(sd[k])


# ---------------------------------------------------------------------------------------------- LoRA
def lora_plan(cfg: BackboneConfig, lora: LoRAConfig) -> tuple[list[str], list[int]]:
    """(HF target module names, 0-based blocks) of the LoRA adapters for ``lora.style``."""
    if lora.style == "paper":  # QKV + MLP of the last half of the blocks (ViT-L: 12..23)
        return ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"], list(range(cfg.num_layers // 2, cfg.num_layers))
    if lora.style == "released":  # authors' code: q/k/v of every block (its block filter never matches)
        return ["q_proj", "k_proj", "v_proj"], list(range(cfg.num_layers))
    return [], []


def apply_lora(vit: DINOv3ViTModel, cfg: BackboneConfig, lora: LoRAConfig) -> None:
    targets, blocks = lora_plan(cfg, lora)
    if not targets:
        return
    from peft import LoraConfig, inject_adapter_in_model

    inject_adapter_in_model(LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                       target_modules=targets, layers_to_transform=blocks, layers_pattern="layer"),
                            vit)


# ---------------------------------------------------------------------------------------------- module
class DINOv3Backbone(nn.Module):
    """forward(x [B,3,H,W], H and W multiples of the patch size) ->
    (4 raw block outputs as maps [B,D,H/p,W/p], register tokens of the last selected block [B,R,D])."""

    def __init__(self, cfg: BackboneConfig, lora: LoRAConfig):
        super().__init__()
        self.cfg = cfg
        self.vit = DINOv3ViTModel(hf_config(cfg))
        if cfg.weights:
            load_backbone_weights(self.vit, cfg.weights)
        apply_lora(self.vit, cfg, lora)
        for name, p in self.vit.named_parameters():
            if "lora_" in name:
                p.requires_grad_(True)
            elif cfg.trainable:
                p.requires_grad_(True)
            else:
                p.requires_grad_(lora.style == "released" and ".norm" in f".{name}")
        # Unused by this forward (final norm, mask token): never trainable, so no parameter lacks a gradient.
        for name, p in self.vit.named_parameters():
            if name.startswith("norm.") or name == "embeddings.mask_token":
                p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        p = self.cfg.patch_size
        h, w = x.shape[-2] // p, x.shape[-1] // p
        if h * p != x.shape[-2] or w * p != x.shape[-1]:
            raise ValueError(f"backbone input {tuple(x.shape[-2:])} is not a multiple of the patch size {p}")
        hidden = self.vit.embeddings(x)
        rope = self.vit.rope_embeddings(x)  # RoPE rescale augmentation in train mode if configured
        prefix = 1 + self.cfg.num_registers
        maps, last = [], self.cfg.layer_indices[-1]
        for i, layer in enumerate(self.vit.model.layer[: last + 1]):
            hidden = layer(hidden, position_embeddings=rope)
            if i in self.cfg.layer_indices:
                tokens = hidden[:, prefix:, :]
                maps.append(tokens.transpose(1, 2).reshape(x.shape[0], -1, h, w))
        return maps, hidden[:, 1:prefix, :]
