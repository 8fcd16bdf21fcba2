"""The network's eval forward in ONNX Runtime (CPU), cut only at the decoder's four selective scans.

The scan is a numba kernel with no ONNX form, and it is cheap (about 0.4 ms a level for the demo model at
144x192); the torch operators around it were not (16 ms a frame, almost all per-operator overhead). So the
forward is exported as five graphs, with the scan run by ``m2hmx.ssm`` between them:

    encode:   backbone + HFA + level 0's gate, norm, in_proj, causal conv, x_proj, dt_proj and softplus
    level k:  level k-1's D skip, z gate, out_proj, FFN and task branches + level k's pre-scan part (k = 1..3)
    heads:    level 3's post-scan part + the task heads + (``predict``) the Predictor's post-processing:
              crop, resize to the frame, argmax, confidence, depth clamp, unit normals, edge sigmoid

Each graph is exported with torch's TorchScript-based ONNX exporter (opset 17) for one input size (the heads
graph also for one set of outputs and one frame size) and run by ONNX Runtime's CPU provider, which fuses the
ViT's layer norms, GELUs and attention and the convolution + GroupNorm + GELU chains. Answers match torch's to
float rounding (tests/network/test_onnx_forward.py; benchmarks/RESULTS.md, "ONNX Runtime" sections).

Exported graphs are a snapshot of the weights, cached on disk under ``$M2HMX_CACHE`` (default ``~/.cache/m2hmx``)
in ``onnx/``, keyed by a hash of the weights, the config, the sizes, the outputs and the torch version, so a
second start loads them instead of exporting again (export: seconds; loading: a fraction of a second).
"""
from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mapping.atomic import atomic_write_bytes
from m2hmx.decoder import resize
from m2hmx.model import unit

OPSET = 17
OUTPUT_ORDER = ("semseg", "depth", "normals", "edge")
PREDICTION_ORDER = ("depth", "labels", "confidence", "normals", "edges")
GRAPH_VERSION = 3  # bumped when the cut or the post-processing changes: older cached graphs are not loaded
OUT = "new."  # prefix of the graphs' output names
LEVELS = 4  # the decoder's register-gated Mamba levels (coarse to fine)


def cache_dir() -> Path:
    return Path(os.environ.get("M2HMX_CACHE", Path.home() / ".cache" / "m2hmx")) / "onnx"


def weights_digest(model) -> str:
    """Hash of the model's config and every weight (the cache key's model part)."""
    h = hashlib.sha256(model.config.to_json().encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------- the pieces
# The decoder's forward (m2hmx.decoder.Decoder / RegisterGatedMamba, m2hmx.ssm.Mamba and _selective_scan_cpu,
# eval mode: DropPath is the identity) written as steps on a dict of named tensors, cut at the scan.

def _before_scan(model, k: int, c: dict, level_input: torch.Tensor) -> None:
    """Level k's RGM up to the scan: c["s"] (the residual stream [B,L,C]) and the scan's inputs x (u), z,
    delta (bias added, softplus), Bl, Cl ([B,L,N], the CPU kernel's time-major layout)."""
    rgm = model.decoder.rgm[k]
    m = rgm.mamba
    s = level_input.flatten(2).transpose(1, 2)
    u = rgm.norm(s * rgm.gate(c["g"])[:, None, :])
    length = u.shape[1]
    x, z = m.in_proj(u).transpose(1, 2).chunk(2, dim=1)
    x = F.silu(m.conv1d(x)[..., :length])
    dt, Bl, Cl = m.x_proj(x.transpose(1, 2)).split([m.dt_rank, m.d_state, m.d_state], dim=-1)
    delta = (dt @ m.dt_proj.weight.t()).transpose(1, 2)
    delta = F.softplus(delta + m.dt_proj.bias.float()[:, None])
    c.update(s=s, x=x.contiguous(), z=z, delta=delta.contiguous(), Bl=Bl.contiguous(), Cl=Cl.contiguous())


def _after_scan(model, k: int, c: dict) -> None:
    """Level k's RGM after the scan (c["y"]) and the task branches: c["state"] and c["f_{task}_{k}"]."""
    rgm = model.decoder.rgm[k]
    m = rgm.mamba
    y = (c["y"] + c["x"] * m.D.float()[:, None]) * F.silu(c["z"])
    s = c["s"] + m.out_proj(y.transpose(1, 2))
    s = s + rgm.ffn(rgm.norm(s))
    b, ch, h, w = c[f"p{k}"].shape
    state = s.transpose(1, 2).reshape(b, ch, h, w)
    c["state"] = state
    for t in model.tasks:
        f = model.decoder.branches[t][k](state)
        if k > 0:
            f = f + resize(c[f"f_{t}_{k - 1}"], f.shape[-2:])
        c[f"f_{t}_{k}"] = f


def _encode_piece(model, c: dict) -> None:
    pyramid, g = model.encode(c["images"])
    c.update({f"p{i}": p for i, p in enumerate(pyramid)}, g=g)
    _before_scan(model, 0, c, pyramid[0])


def _level_piece(model, k: int, c: dict) -> None:
    _after_scan(model, k - 1, c)
    p = c[f"p{k}"]
    _before_scan(model, k, c, p + resize(c["state"], p.shape[-2:]))


def postprocess(out: dict, crop: tuple[int, int], frame: tuple[int, int], min_depth: float,
                probs: bool = False) -> dict:
    """``Predictor.predict``'s post-processing of the network's outputs (batch 1), in torch and in the heads graph:
    crop the padding, resize to the frame (edges with align_corners, as the model resizes them), top class, its
    softmax probability, depth clamped to ``min_depth``, unit normals (H,W,3), edge probability; with ``probs``
    every class's softmax probability (C,H,W) too."""
    h, w = crop

    def back(t: torch.Tensor, align_corners: bool = False) -> torch.Tensor:
        t = t[..., :h, :w].float()
        if (h, w) != tuple(frame):
            t = F.interpolate(t, size=tuple(frame), mode="bilinear", align_corners=align_corners)
        return t.squeeze(0)  # not t[0]: exported as a Gather, a copy of the full-size map

    logits = back(out["semseg"])
    top, labels = logits.max(dim=0)
    result = {"depth": back(out["depth"]).squeeze(0).clamp_min(min_depth), "labels": labels.to(torch.uint8),
              "confidence": 1.0 / torch.exp(logits - top).sum(dim=0)}
    if probs:
        result["probs"] = torch.softmax(logits, dim=0)
    if "normals" in out:
        result["normals"] = unit(back(out["normals"]).unsqueeze(0)).squeeze(0).permute(1, 2, 0)
    if "edge" in out:
        result["edges"] = torch.sigmoid(back(out["edge"], align_corners=True).squeeze(0))
    return result


def _heads_piece(model, c: dict, size, outputs, post) -> dict:
    """Level 3 after its scan, the heads, and either the model's outputs (``post`` None) or the Predictor's
    results (``post``: (crop, frame, min_depth))."""
    _after_scan(model, LEVELS - 1, c)
    feats = {t: [c[f"f_{t}_{k}"] for k in reversed(range(LEVELS))] for t in model.tasks}  # fine -> coarse
    out = model.predict_heads(feats, size, outputs)
    if post is None:
        return {k: out[k] for k in OUTPUT_ORDER if k in out}
    result = postprocess(out, *post)
    return {k: result[k] for k in PREDICTION_ORDER if k in result}


class _Recording(dict):
    """A dict that notes which of its first keys are read (a piece's graph inputs)."""

    def __init__(self, items: dict, read: list):
        super().__init__(items)
        self.read, self._first = read, set(items)

    def __getitem__(self, name):
        if name in self._first and name not in self.read:
            self.read.append(name)
        return super().__getitem__(name)


class _Piece(nn.Module):
    """One graph: ``forward(*tensors named in_names)`` -> the tensors named ``out_names`` after ``run``."""

    def __init__(self, model, run, in_names: list[str], out_names: list[str]):
        super().__init__()
        self.model = model  # registered, so that its weights are exported as the graph's initialisers
        self.run, self.in_names, self.out_names = run, in_names, out_names

    def forward(self, *flat):
        c = dict(zip(self.in_names, flat))
        self.run(c)
        return tuple(c[n] for n in self.out_names)


class OnnxForward:
    """``M2HMX.forward(images, outputs)`` in eval mode, batch 1 on CPU (``__call__``), and the Predictor's
    forward + post-processing in one go (``predict``). Sessions are built on first use per input shape (and
    outputs and frame size for the last graph); ``threads``: ONNX Runtime's intra-op threads."""

    def __init__(self, model, threads: int = 1):
        import onnxruntime  # noqa: F401  (fail at construction, not at the first frame)

        self.model = model
        self.threads = threads
        self.digest = weights_digest(model)
        self._sessions: dict = {}  # key -> [(session, input names, output names)] of the five graphs
        self._by_name: dict = {}  # graph file name -> session (the first four graphs serve every key of a shape)
        self._A = [(-torch.exp(rgm.mamba.A_log.detach().float())).contiguous() for rgm in model.decoder.rgm]

    @property
    def shapes(self) -> set[tuple[int, ...]]:
        """The input shapes whose sessions are built."""
        return {key[0] for key in self._sessions}

    def __call__(self, images: torch.Tensor, outputs: tuple[str, ...] | None = None) -> dict:
        """The model's outputs ({task: [1,C,H,W] tensor}) for ``outputs`` (None: all)."""
        return {k: torch.from_numpy(v) for k, v in self._run(images, outputs, None).items()}

    def predict(self, images: torch.Tensor, outputs, crop: tuple[int, int], frame: tuple[int, int],
                min_depth: float) -> dict:
        """``postprocess`` of the model's outputs as numpy arrays: depth, labels (uint8), confidence and, when
        asked, normals (H,W,3) and edges, at ``frame`` size."""
        return self._run(images, outputs, (tuple(crop), tuple(frame), float(min_depth)))

    def _run(self, images: torch.Tensor, outputs, post) -> dict:
        key = (tuple(images.shape), outputs, post)
        if key not in self._sessions:
            self._sessions[key] = self._build(images, outputs, post)
        carry = {"images": images.contiguous().numpy()}
        for k, (session, in_names, out_names) in enumerate(self._sessions[key]):
            results = session.run(None, {n: carry[n] for n in in_names})
            carry.update(zip(out_names, results))
            if k < LEVELS:
                carry["y"] = self._scan(k, carry)
        return {n: carry[n] for n in self._sessions[key][-1][2]}

    def _scan(self, k: int, c: dict) -> np.ndarray:
        from m2hmx.ssm import scan_core_forward

        u, delta, bl, cl = (torch.from_numpy(c[n]) for n in ("x", "delta", "Bl", "Cl"))
        return scan_core_forward(u, delta, self._A[k], bl, cl).numpy()

    def _build(self, images: torch.Tensor, outputs, post) -> list:
        """Export (or load) the five graphs, running the pieces in torch in order on ``images`` to trace them.
        Each graph's input and output names are read from its session, so a graph file describes itself."""
        model, size = self.model, tuple(images.shape[-2:])
        tag = f"{self.digest[:24]}-{'x'.join(map(str, images.shape))}-v{GRAPH_VERSION}-torch{torch.__version__}"
        last = f"{','.join(outputs) if outputs else 'all'}-" + (
            "raw" if post is None else "{}x{}-{}x{}-{:g}".format(*post[0], *post[1], post[2]))
        pieces = [("encode", lambda c: _encode_piece(model, c))]
        pieces += [(f"level{k}", lambda c, k=k: _level_piece(model, k, c)) for k in range(1, LEVELS)]
        pieces.append((f"heads-{last}", lambda c: c.update(_heads_piece(model, c, size, outputs, post))))
        built = []
        carry = {"images": images.contiguous()}
        with torch.inference_mode():
            for k, (name, run) in enumerate(pieces):
                read: list[str] = []
                c = _Recording(carry, read)
                run(c)
                new = {n: v for n, v in c.items() if v is not carry.get(n)}
                if k == LEVELS:  # the heads graph: only the results
                    new = {n: new[n] for n in OUTPUT_ORDER + PREDICTION_ORDER if n in new}
                # eval() on the wrapper too: the exporter restores each wrapper's own mode afterwards, and a new
                # module's is train, which would leave the model in train mode (LoRA dropout on)
                piece = _Piece(model, run, read, list(new)).eval()
                session = self._session(f"{name}-{tag}", piece, tuple(carry[n] for n in read), read,
                                        [OUT + n for n in new])  # an output may replace an input of its name
                built.append((session, [i.name for i in session.get_inputs()],
                              [o.name.removeprefix(OUT) for o in session.get_outputs()]))
                carry.update(new)
                if k < LEVELS:
                    carry["y"] = torch.from_numpy(self._scan(k, {n: carry[n].numpy() for n in (
                        "x", "delta", "Bl", "Cl")}))
        return built

    def _session(self, name: str, module: nn.Module, args: tuple, input_names: list[str],
                 output_names: list[str]):
        if name not in self._by_name:
            self._by_name[name] = self._exported(name, module, args, input_names, output_names)
        return self._by_name[name]

    def _exported(self, name: str, module: nn.Module, args: tuple, input_names: list[str],
                  output_names: list[str]):
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
                              output_names=output_names)
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
