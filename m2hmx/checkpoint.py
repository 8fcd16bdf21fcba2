"""Model files: one safetensors file with every weight (LoRA unmerged) and the network config as JSON in
its metadata, loadable without knowing the preset. Bad files raise a one-line ``CheckpointError``."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from m2hmx import M2HMXError
from m2hmx.config import ConfigError, M2HMXConfig
from mapping.atomic import atomic_path

FORMAT = "m2hmx-model-v1"


class CheckpointError(M2HMXError, RuntimeError):
    """A file that is not a loadable M2H-MX checkpoint (one line naming the file and the problem)."""


def save_checkpoint(path: str | os.PathLike, model, extra: dict | None = None) -> Path:
    """Write ``model`` (an ``M2HMX``) atomically to ``path``; ``extra``: JSON-serialisable notes (step,
    metrics...), read back by ``read_checkpoint_info``."""
    from safetensors.torch import save_file

    path = Path(path)
    config = model.config
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "config": config.to_json(), "extra": json.dumps(extra or {}, sort_keys=True)}
    def check(tmp: Path) -> None:  # the whole file reads back: every tensor's bytes are there
        from safetensors import safe_open

        with safe_open(str(tmp), "pt") as f:
            if len(list(f.keys())) != len(tensors):
                raise OSError(5, "the written file lacks tensors")

    with atomic_path(path, check) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_checkpoint_info(path: str | os.PathLike) -> tuple[M2HMXConfig, dict]:
    """(network config, extra dict) from a checkpoint's header, without reading the weights."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file, truncated or corrupt ({_first_line(exc)})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an M2H-MX checkpoint (metadata format is {meta.get('format')!r})")
    try:
        config = M2HMXConfig.from_dict(json.loads(meta["config"]))
        extra = json.loads(meta.get("extra", "{}"))
    except (KeyError, ValueError, TypeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: bad config in checkpoint ({_first_line(exc)})") from None
    return config, extra


def load_state(model, path: str | os.PathLike) -> None:
    """Load a checkpoint's weights into ``model`` exactly (same keys, same shapes) or raise."""
    from safetensors.torch import load_file

    try:
        sd = load_file(str(path))
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read the weights ({_first_line(exc)})") from None
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})"
                 for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes))
                 if keys]
        raise CheckpointError(f"{path}: weights do not match the model ({'; '.join(parts)})")
    model.load_state_dict(sd, strict=True)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Build the network described by the checkpoint at ``path``, load its weights, return it in eval mode."""
    import dataclasses

    from m2hmx.model import M2HMX

    config, _ = read_checkpoint_info(path)
    # The checkpoint holds every backbone weight: never re-read the original backbone file.
    config = dataclasses.replace(config, backbone=dataclasses.replace(config.backbone, weights=None))
    model = M2HMX(config)
    load_state(model, path)
    return model.to(device).eval()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
