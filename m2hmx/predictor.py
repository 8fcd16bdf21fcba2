"""Deployment wrapper: uint8 RGB of any size in, metric depth / classes / confidences / normals / edges out
at the input size. Thread count (``torch.set_num_threads``) is the caller's business."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from m2hmx import M2HMXError
from m2hmx.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from m2hmx.labels import LabelSpace, load_label_space
from m2hmx.onnx_forward import postprocess


class PredictorError(M2HMXError, ValueError):
    """Bad input to the predictor (one line)."""


@dataclass
class Prediction:
    depth: np.ndarray  # (H,W) float32 metres (> 0)
    labels: np.ndarray  # (H,W) uint8 train ids
    confidence: np.ndarray  # (H,W) float32 probability of the chosen class
    probs: np.ndarray | None = None  # (C,H,W) float32 class probabilities (return_probs=True)
    normals: np.ndarray | None = None  # (H,W,3) float32 unit vectors, camera frame
    edges: np.ndarray | None = None  # (H,W) float32 edge probability


class Predictor:
    """Runs an ``M2HMX`` in inference mode. ``amp``: None = bf16 autocast on CUDA and fp32 on CPU (bf16 is
    slower than fp32 on CPUs: 74 against 71 ms for the demo model on one thread of a CPU with AMX-BF16, and its
    answers change), or "bf16" / "fp16" / "fp32". The Mamba scan always runs in fp32.
    ``compile``: wrap the model in ``torch.compile``. ``tasks``: the outputs to predict (default all of the
    model's; depth and semseg at least), e.g. ("depth", "semseg") as the paper deploys it: the other heads'
    prediction layers are skipped and the asked outputs are unchanged (``M2HMX.forward``). On CPU the model
    runs channels-last (NHWC), which oneDNN's convolutions take without reordering their inputs
    (benchmarks/RESULTS.md, "Inference speed").
    ``engine``: "onnxruntime" (the default on CPU for fp32 without ``compile``) runs the network in ONNX Runtime
    with only the decoder's selective scans in numba, and (without ``return_probs``) the post-processing too
    (``m2hmx.onnx_forward``): about 0.6 of torch's CPU time, answers equal to float rounding. Its graphs are a
    snapshot of the weights, exported at the first frame of each size (or loaded from the cache). If the export
    or ONNX Runtime fails, the predictor says so in one line and runs in torch. "torch" runs the model as it is."""

    def __init__(self, model, device: str | torch.device = "cpu", amp: str | None = None, compile: bool = False,
                 tasks: tuple[str, ...] | None = None, engine: str | None = None):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = model.config
        wanted = self.config.tasks if tasks is None else tuple(tasks)
        unknown = sorted(set(wanted) - set(self.config.tasks))
        if unknown or not {"depth", "semseg"} <= set(wanted):
            raise PredictorError(f"tasks {','.join(wanted)}: need depth and semseg, from this model's "
                                 f"{','.join(self.config.tasks)}")
        self.model_tasks = self.config.tasks
        self.tasks = tuple(t for t in self.config.tasks if t in wanted)
        self._outputs = None if self.tasks == self.config.tasks else self.tasks
        if amp is None:
            amp = "bf16" if self.device.type == "cuda" else "fp32"
        if amp not in ("bf16", "fp16", "fp32"):
            raise PredictorError(f"amp '{amp}' is not bf16, fp16 or fp32")
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[amp]
        onnx_ok = self.device.type == "cpu" and amp == "fp32" and not compile
        if engine is None:
            engine = "onnxruntime" if onnx_ok else "torch"
        if engine not in ("onnxruntime", "torch"):
            raise PredictorError(f"engine '{engine}' is not onnxruntime or torch")
        if engine == "onnxruntime" and not onnx_ok:
            raise PredictorError("engine onnxruntime runs on CPU in fp32 without compile")
        self._forward = torch.compile(self.model) if compile else self.model
        if engine == "onnxruntime":
            try:
                from m2hmx.onnx_forward import OnnxForward

                self._forward = OnnxForward(self.model, torch.get_num_threads())
            except Exception as exc:  # onnxruntime missing or broken: torch gives the same answers, slower
                engine = self._torch_fallback(exc)
        self.engine = engine
        self.memory_format = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        if engine == "onnxruntime":
            self.memory_format = torch.contiguous_format  # ONNX Runtime takes NCHW; the decoder runs as it comes
        self.model.to(memory_format=self.memory_format)
        self.label_space: LabelSpace = load_label_space(self.config.label_space)
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    def _torch_fallback(self, exc: Exception) -> str:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        logging.getLogger("m2hmx").warning(f"m2hmx: ONNX Runtime not used ({type(exc).__name__}: {first[:160]}); "
                                           "running the network in torch")
        self._forward = self.model
        self.memory_format = torch.channels_last
        self.model.to(memory_format=self.memory_format)
        return "torch"

    @classmethod
    def from_checkpoint(cls, path, device: str | torch.device = "cpu", **kwargs) -> "Predictor":
        from m2hmx.checkpoint import load_model

        return cls(load_model(path, device), device, **kwargs)

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) the image is resized to: long side to the training resolution's long side, aspect kept."""
        scale = max(self.config.image_size) / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    @torch.inference_mode()
    def predict(self, rgb: np.ndarray, return_probs: bool = False) -> Prediction:
        if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3):
            got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
            raise PredictorError(f"predict() needs a uint8 (H,W,3) RGB image, got {got}")
        H, W = rgb.shape[:2]
        h, w = self.network_size(H, W)
        patch = self.config.backbone.patch_size
        ph, pw = math.ceil(h / patch) * patch, math.ceil(w / patch) * patch
        x = torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        if (h, w) != (H, W):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        x = (x - self._mean) / self._std
        x = F.pad(x, (0, pw - w, 0, ph - h))  # zero after normalisation = the mean colour
        x = x.contiguous(memory_format=self.memory_format)
        if self.engine == "onnxruntime" and not return_probs:
            try:  # the network and the post-processing below in ONNX Runtime
                r = self._forward.predict(x, self._outputs, (h, w), (H, W), self.config.min_depth)
                return Prediction(**r)
            except Exception as exc:
                self.engine = self._torch_fallback(exc)  # the export or the session failed on this size
                x = x.contiguous(memory_format=self.memory_format)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            try:
                out = self._forward(x, self._outputs)
            except Exception as exc:
                if self.engine != "onnxruntime":
                    raise
                self.engine = self._torch_fallback(exc)  # the export or the session failed on this size
                x = x.contiguous(memory_format=self.memory_format)
                out = self._forward(x, self._outputs)
        r = postprocess(out, (h, w), (H, W), self.config.min_depth, probs=return_probs)
        return Prediction(**{k: np.ascontiguousarray(v.cpu().numpy()) for k, v in r.items()})


class ScaledPredictor:
    """A predictor whose metric depth is multiplied by ``scale`` (``--depth-scale``: a camera whose focal
    length differs from the training data's gives depth off by a constant factor)."""

    def __init__(self, predictor, scale: float):
        self._predictor, self.scale = predictor, float(scale)
        self.label_space, self.tasks = predictor.label_space, predictor.tasks
        self.model_tasks = predictor.model_tasks

    def predict(self, rgb):
        pred = self._predictor.predict(rgb)
        pred.depth = pred.depth * np.float32(self.scale)
        return pred
