"""Evaluate a model on a frame source with the multi-task NYUDv2 protocol (metrics in m2hmx.metrics).

Predictions come from ``m2hmx.predictor.Predictor`` at the frames' own size, exactly as deployed. The
result is a JSON-ready dict; ``format_report`` prints it as tables and ``save_grid`` draws a PNG of
input / prediction / ground truth.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from m2hmx.metrics import DepthMeter, EdgeMeter, NormalsMeter, SegmentationMeter


class EvalError(Exception):
    """A model/dataset mismatch, reported as one line."""


def evaluate(predictor, source, min_depth: float, max_depth: float, max_frames: int | None = None,
             stride: int = 1, grid_path: str | Path | None = None, grid_frames: int = 2,
             progress: bool = True) -> dict:
    """Run ``predictor`` over every ``stride``-th frame of ``source`` (at most ``max_frames``)."""
    from tqdm import tqdm

    space = predictor.label_space
    if source.label_space is not None and space is not None and source.label_space.names != space.names:
        raise EvalError(f"{source.name}: label space '{source.label_space.name}' differs from the model's "
                        f"'{space.name}'")
    tasks = set(predictor.tasks)
    seg = SegmentationMeter(space.num_classes, space.ignore_index) if "semseg" in tasks else None
    depth = DepthMeter(min_depth, max_depth) if "depth" in tasks else None
    normals = NormalsMeter() if "normals" in tasks else None
    edges = EdgeMeter() if "edge" in tasks else None

    frames, planned = _frames(source, stride, max_frames)
    grid_at = set(np.linspace(0, planned - 1, grid_frames).round().astype(int).tolist()) if (
        grid_path and planned) else set()
    grid_rows = []
    used = 0
    for frame in tqdm(frames, total=planned, desc="eval", disable=not progress, dynamic_ncols=True):
        pred = predictor.predict(frame.rgb)
        if seg is not None and frame.labels is not None:
            seg.update(pred.labels, frame.labels)
        if depth is not None and frame.depth is not None:
            depth.update(pred.depth, frame.depth)
        if normals is not None and frame.normals is not None and pred.normals is not None:
            normals.update(pred.normals, frame.normals)
        if edges is not None and frame.edges is not None and pred.edges is not None:
            edges.update(pred.edges, frame.edges)
        if used in grid_at:
            grid_rows.append((frame, pred))
        used += 1
    if used == 0:
        raise EvalError(f"{source.name}: no frames to evaluate")

    results: dict = {"dataset": source.name, "frames": used, "stride": stride,
                     "depth_range": [min_depth, max_depth]}
    if seg is not None and seg.confusion.sum():
        results["semseg"] = seg.result()
        results["class_names"] = list(space.names)
    for key, meter in (("depth", depth), ("normals", normals), ("edge", edges)):
        if meter is not None and meter.result():
            results[key] = meter.result()
    if grid_path and grid_rows:
        save_grid(grid_rows, space, grid_path, max_depth)
    return results


def _frames(source, stride: int, max_frames: int | None):
    """(iterator over every ``stride``-th frame, at most ``max_frames``; planned count or None). Sources
    with ``__getitem__`` are indexed directly (a generated scene renders only the frames used)."""
    import itertools

    try:
        n = len(source)
    except TypeError:
        n = None
    if n is not None and hasattr(source, "__getitem__"):
        indices = range(0, n, stride)[:max_frames]
        return (source[i] for i in indices), len(indices)
    frames = itertools.islice(source, 0, None, stride)
    if max_frames is not None:
        frames = itertools.islice(frames, max_frames)
    planned = None if n is None else len(range(0, n, stride)[:max_frames])
    return frames, planned


def format_report(results: dict) -> str:
    """Human-readable tables of an ``evaluate`` result (what ``m2hmx-eval`` prints)."""
    lines = [f"dataset: {results['dataset']}  frames: {results['frames']} (stride {results['stride']})"]
    if "semseg" in results:
        s = results["semseg"]
        lines.append(f"semseg   mIoU {s['miou']:.4f}   pixel acc {s['pixel_acc']:.4f}")
    if "depth" in results:
        d = results["depth"]
        lines.append(f"depth    RMSE {d['rmse']:.4f} m   AbsRel {d['abs_rel']:.4f}   log10 {d['log10']:.4f}   "
                     f"d<1.25 {d['delta1']:.4f}   d<1.25^2 {d['delta2']:.4f}   d<1.25^3 {d['delta3']:.4f}")
        lines.append(f"         scale median(pred/gt) per frame: mean {d['scale_median_mean']:.4f}  "
                     f"std {d['scale_median_std']:.4f}  (range {results['depth_range'][0]}-"
                     f"{results['depth_range'][1]} m)")
    if "normals" in results:
        n = results["normals"]
        lines.append(f"normals  mean {n['mean']:.2f} deg   median {n['median']:.2f} deg   <11.25 "
                     f"{n['within_11.25']:.4f}   <22.5 {n['within_22.5']:.4f}   <30 {n['within_30']:.4f}")
    if "edge" in results:
        e = results["edge"]
        lines.append(f"edge     F (ODS-like, not SEISM) {e['f_ods']:.4f} @ {e['threshold']:.2f}   "
                     f"P {e['precision']:.4f}  R {e['recall']:.4f}")
    if "semseg" in results:
        lines.append("")
        lines.append(f"{'class':<22}{'IoU':>8}")
        for name, iou in zip(results["class_names"], results["semseg"]["iou_per_class"]):
            lines.append(f"{name:<22}{'-' if iou is None else f'{iou:.4f}':>8}")
    return "\n".join(lines)


def write_json(results: dict, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, path)


def _depth_rgb(depth: np.ndarray, max_depth: float) -> np.ndarray:
    import matplotlib

    rgb = matplotlib.colormaps["turbo"](np.clip(depth / max_depth, 0, 1))[..., :3]
    rgb[depth <= 0] = 0
    return (rgb * 255).astype(np.uint8)


def _normals_rgb(n: np.ndarray) -> np.ndarray:
    rgb = ((n * np.array([1, -1, -1])) * 0.5 + 0.5).clip(0, 1)  # OpenCV axes -> the usual normal-map colours
    rgb[np.linalg.norm(n, axis=-1) == 0] = 0
    return (rgb * 255).astype(np.uint8)


def save_grid(rows: list, space, path: str | Path, max_depth: float) -> None:
    """PNG with, per frame, a prediction row and a ground-truth row: input, semantics, depth (turbo, 0 to
    the GT's 99th percentile), normals, edges."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ["input", "semantics", "depth", "normals", "edges"]
    fig, axes = plt.subplots(2 * len(rows), len(cols), figsize=(3.2 * len(cols), 2.6 * 2 * len(rows)),
                             squeeze=False)
    for r, (frame, pred) in enumerate(rows):
        ref = frame.depth if frame.depth is not None and (frame.depth > 0).any() else pred.depth
        vmax = float(np.percentile(ref[ref > 0], 99)) if ref is not None and (ref > 0).any() else max_depth
        for which, source in enumerate((pred, frame)):
            labels, depth, normals = source.labels, source.depth, source.normals
            edges = source.edges
            images = [frame.rgb,
                      None if labels is None else space.colorize(labels),
                      None if depth is None else _depth_rgb(depth, vmax),
                      None if normals is None else _normals_rgb(normals),
                      None if edges is None else edges.astype(np.float32)]
            kind = ("prediction", "ground truth")[which]
            for c, img in enumerate(images):
                ax = axes[2 * r + which, c]
                ax.axis("off")
                if img is not None:
                    ax.imshow(img, cmap="gray", vmin=0, vmax=1) if img.ndim == 2 else ax.imshow(img)
                ax.set_title(f"frame {frame.index} ({kind})" if c == 0 else f"{cols[c]} ({kind})", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)
