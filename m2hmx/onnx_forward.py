"""The network's eval forward with its backbone + HFA and its heads in ONNX Runtime (CPU), the decoder in torch.

The decoder stays in torch because its selective scan is a numba kernel with no ONNX form. The other two parts
are exported with torch's TorchScript-based ONNX exporter (opset 17) for one input size and one set of outputs,
and run by ONNX Runtime's CPU provider, which fuses the ViT's layer norms, GELUs and attention and the heads'
convolution + GroupNorm + GELU chains that eager torch runs as hundreds of separate operators (benchmarks/RESULTS.md,
"ONNX Runtime"). Answers match torch's to float rounding (logits within ~2e-5 on ImageNet-normalised images).

Exported graphs are a snapshot of the weights, cached on disk under ``$M2HMX_CACHE`` (default ``~/.cache/m2hmx``)
in ``onnx/``, keyed by a hash of the weights, the config, the input size, the outputs and the torch version, so
a second start loads them instead of exporting again (export: seconds; loading: a fraction of a second).
"""
from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from mapping.atomic import atomic_write_bytes

OPSET = 17
OUTPUT_ORDER = ("semseg", "depth", "normals", "edge")


def cache_dir() -> Path:
    return Path(os.environ.get("M2HMX_CACHE", Path.home() / ".cache" / "m2hmx")) / "onnx"


class _Encode(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        pyramid, g = self.model.encode(images)
        return (*pyramid, g)


class _Heads(nn.Module):
    def __init__(self, model, size, outputs):
        super().__init__()
        self.model, self.size, self.outputs = model, size, outputs

    def forward(self, *flat):
        tasks = self.model.tasks
        feats = {t: list(flat[4 * i:4 * i + 4]) for i, t in enumerate(tasks)}
        out = self.model.predict_heads(feats, self.size, self.outputs)
        return tuple(out[k] for k in OUTPUT_ORDER if k in out)


def weights_digest(model) -> str:
    """Hash of the model's config and every weight (the cache key's model part)."""
    h = hashlib.sha256(model.config.to_json().encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


class OnnxForward:
    """``M2HMX.forward(images, outputs)`` in eval mode, batch 1 on CPU, as ONNX Runtime + torch. One pair of
    sessions per (input shape, outputs), built on first use; ``threads``: ONNX Runtime's intra-op threads."""

    def __init__(self, model, threads: int = 1):
        import onnxruntime  # noqa: F401  (fail at construction, not at the first frame)

        self.model = model
        self.threads = threads
        self.digest = weights_digest(model)
        self._sessions: dict = {}

    def __call__(self, images: torch.Tensor, outputs: tuple[str, ...] | None = None) -> dict:
        key = (tuple(images.shape), outputs)
        if key not in self._sessions:
            self._sessions[key] = self._build(images, outputs)
        encode, heads, names = self._sessions[key]
        parts = encode.run(None, {"images": images.contiguous().numpy()})
        feats = self.model.decoder([torch.from_numpy(p) for p in parts[:-1]], torch.from_numpy(parts[-1]))
        flat = {f"f{i}": f.contiguous().numpy() for i, f in enumerate(f for t in self.model.tasks for f in feats[t])}
        results = heads.run(None, {i.name: flat[i.name] for i in heads.get_inputs()})
        return {name: torch.from_numpy(r) for name, r in zip(names, results)}

    def _build(self, images: torch.Tensor, outputs):
        model, size = self.model, tuple(images.shape[-2:])
        with torch.inference_mode():
            pyramid, g = model.encode(images)
            feats = model.decoder(pyramid, g)
            reference = model.predict_heads(feats, size, outputs)
        names = tuple(k for k in OUTPUT_ORDER if k in reference)
        flat = tuple(f.contiguous() for t in model.tasks for f in feats[t])
        shape = "x".join(map(str, images.shape))
        tag = f"{self.digest[:24]}-{shape}-{','.join(outputs) if outputs else 'all'}-torch{torch.__version__}"
        # eval() on the wrappers too: the exporter restores each wrapper's own mode afterwards, and a new
        # module's is train, which would leave the model in train mode (LoRA dropout on)
        encode = self._session(f"encode-{tag}", _Encode(model).eval(), (images.contiguous(),), ["images"])
        heads = self._session(f"heads-{tag}", _Heads(model, size, outputs).eval(), flat,
                              [f"f{i}" for i in range(len(flat))], names)
        return encode, heads, names

    def _session(self, name: str, module: nn.Module, args: tuple, input_names: list[str],
                 output_names: tuple[str, ...] | None = None):
        path = cache_dir() / f"{name}.onnx"
        if path.is_file():
            try:
                return self._load(path.read_bytes())
            except Exception:  # a damaged cache file: export again
                pass
        buffer = io.BytesIO()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes
            torch.onnx.export(module, args, buffer, dynamo=False, opset_version=OPSET, input_names=input_names,
                              output_names=list(output_names) if output_names else None)
        session = self._load(buffer.getvalue())
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, buffer.getvalue())
        except OSError:
            pass  # a read-only or full cache only costs the next start another export
        return session

    def _load(self, data: bytes):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
