"""Evaluate a model on frame sources, together one test set, with the multi-task NYUDv2 protocol (metrics in
m2hmx.metrics).

Predictions come from ``m2hmx.predictor.Predictor`` at the frames' own size, exactly as deployed. The
result is a JSON-ready dict; ``format_report`` prints it as tables and ``save_grid`` draws a PNG of
input / prediction / ground truth.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mapping.atomic import atomic_path, atomic_write_text
from m2hmx import M2HMXError
from m2hmx.data.transforms import normals_to_rgb
from m2hmx.metrics import DepthMeter, EdgeMeter, NormalsMeter, SegmentationMeter


class EvalError(M2HMXError):
    """A model/dataset mismatch, reported as one line."""


def evaluate(predictor, sources, min_depth: float, max_depth: float, max_frames: int | None = None,
             stride: int = 1, grid_path: str | Path | None = None, grid_frames: int = 2,
             progress: bool = True, on_source=None) -> dict:
    """Run ``predictor`` over every ``stride``-th frame (at most ``max_frames`` each) of ``sources`` (any iterable,
    used once, in order) as one test set: one confusion matrix, normal-angle histogram and edge count over all
    frames, depth errors averaged over frames, the depth scale's std within each source. With several sources,
    ``per_source`` holds each one's own results (also passed to ``on_source`` as each is done) and ``spread``
    their distribution over sources (``spread_over_sources``). The grid shows frames of the first source."""
    space = predictor.label_space
    pooled, per_source, grid_rows = None, [], []
    for k, source in enumerate(sources):
        if source.label_space is not None and space is not None and source.label_space.names != space.names:
            raise EvalError(f"{source.name}: label space '{source.label_space.name}' differs from the model's "
                            f"'{space.name}'")
        meters = {"semseg": SegmentationMeter(space.num_classes, space.ignore_index), "depth": DepthMeter(
            min_depth, max_depth), "normals": NormalsMeter(), "edge": EdgeMeter()}
        meters = {task: meter for task, meter in meters.items() if task in predictor.tasks}
        used = _accumulate(predictor, source, meters, stride, max_frames, grid_frames if grid_path and k == 0 else 0,
                           grid_rows, progress)
        per_source.append(_results(source.name, used, meters, space))
        if on_source is not None:
            on_source(per_source[-1])
        if pooled is None:
            pooled = meters
        else:
            for task, meter in pooled.items():
                meter.merge(meters[task])
    results = _results(", ".join(r["dataset"] for r in per_source), sum(r["frames"] for r in per_source),
                       pooled, space)
    results.update(stride=stride, depth_range=[min_depth, max_depth])
    if len(per_source) > 1:
        results["per_source"] = per_source
        results["spread"] = spread_over_sources(per_source)
    if grid_rows:
        save_grid(grid_rows, space, grid_path, max_depth)
    return results


def _accumulate(predictor, source, meters: dict, stride: int, max_frames: int | None, grid_frames: int,
                grid_rows: list, progress: bool) -> int:
    """Feed ``source``'s frames and their predictions to ``meters``; keep ``grid_frames`` of them; frames used."""
    from tqdm import tqdm

    frames, planned = _frames(source, stride, max_frames)
    grid_at = set(np.linspace(0, planned - 1, grid_frames).round().astype(int).tolist()) if (
        grid_frames and planned) else set()
    used = 0
    for frame in tqdm(frames, total=planned, desc=f"eval {source.name}", disable=not progress, dynamic_ncols=True):
        pred = predictor.predict(frame.rgb)
        truth = {"semseg": frame.labels, "depth": frame.depth, "normals": frame.normals, "edge": frame.edges}
        guess = {"semseg": pred.labels, "depth": pred.depth, "normals": pred.normals, "edge": pred.edges}
        for task, meter in meters.items():
            if truth[task] is not None and guess[task] is not None:
                meter.update(guess[task], truth[task])
        if used in grid_at:
            grid_rows.append((frame, pred))
        used += 1
    if used == 0:
        raise EvalError(f"{source.name}: no frames to evaluate")
    return used


# (task, key, label, True where larger is worse): the per-source numbers whose spread is reported
SPREAD = [("depth", "abs_rel", "AbsRel", True), ("depth", "delta1", "d<1.25", False),
          ("depth", "scale_median_std", "scale std", True), ("semseg", "miou", "mIoU", False)]


def spread_over_sources(per_source: list[dict]) -> dict:
    """Per metric of ``SPREAD``: the median over sources, the 90th percentile on the bad side (``p90`` where larger
    is worse, else ``p10``), the worst value and the source it came from. What pooled numbers hide: a few rooms
    that fail outright."""
    spread = {}
    for task, key, _, larger_is_worse in SPREAD:
        named = [(r[task][key], r["dataset"]) for r in per_source if task in r and key in r[task]]
        if not named:
            continue
        values = np.array([v for v, _ in named])
        worst = int(np.argmax(values) if larger_is_worse else np.argmin(values))
        spread[key] = {"median": float(np.median(values)),
                       ("p90" if larger_is_worse else "p10"): float(np.percentile(values,
                                                                                 90 if larger_is_worse else 10)),
                       "worst": float(values[worst]), "worst_dataset": named[worst][1], "sources": len(values)}
    return spread


def format_spread(spread: dict) -> list[str]:
    """Lines of a table of ``spread_over_sources``'s result."""
    lines = [f"{'spread over datasets':<22}{'median':>10}{'p90 (bad)':>11}{'worst':>10}  worst dataset"]
    for _, key, label, larger_is_worse in SPREAD:
        if key in spread:
            s = spread[key]
            lines.append(f"{label:<22}{s['median']:10.4f}{s['p90' if larger_is_worse else 'p10']:11.4f}"
                         f"{s['worst']:10.4f}  {s['worst_dataset']}")
    lines.append("(p90 (bad): the 90th percentile where larger is worse, the 10th where smaller is worse)")
    return lines


def _results(name: str, frames: int, meters: dict, space) -> dict:
    results: dict = {"dataset": name, "frames": frames}
    if "semseg" in meters and meters["semseg"].confusion.sum():
        results["semseg"] = meters["semseg"].result()
        results["class_names"] = list(space.names)
    for task in ("depth", "normals", "edge"):
        result = meters[task].result() if task in meters else {}
        if result:
            results[task] = result
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


SUMMARY = [("semseg", "miou", "mIoU"), ("semseg", "pixel_acc", "pix acc"), ("depth", "rmse", "RMSE m"),
           ("depth", "abs_rel", "AbsRel"), ("depth", "delta1", "d<1.25"), ("depth", "scale_median_mean", "scale"),
           ("depth", "scale_median_std", "scale std"), ("normals", "mean", "nrm mean"), ("edge", "f_ods", "edge F")]


def format_report(results: dict) -> str:
    """Human-readable tables of an ``evaluate`` result (what ``m2hmx-eval`` prints)."""
    sources = results.get("per_source", [])
    name = f"{len(sources)} datasets as one test set (each on its own below)" if sources else results["dataset"]
    lines = [f"dataset: {name}  frames: {results['frames']} (stride {results['stride']})"]
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
    if results.get("spread"):
        lines += [""] + format_spread(results["spread"])
    if "semseg" in results:
        lines.append("")
        lines.append(f"{'class':<22}{'IoU':>8}")
        for name, iou in zip(results["class_names"], results["semseg"]["iou_per_class"]):
            lines.append(f"{name:<22}{'-' if iou is None else f'{iou:.4f}':>8}")
    if sources:
        lines += ["", "each dataset on its own, and the mean of their numbers (not the protocol's numbers, above):",
                  f"{'dataset':<22}{'frames':>7}" + "".join(f"{label:>10}" for _, _, label in SUMMARY)]
        rows = [[r.get(task, {}).get(key, np.nan) for task, key, _ in SUMMARY] for r in sources]
        for r, row in zip(sources, rows):
            lines.append(f"{r['dataset']:<22}{r['frames']:>7}" + "".join(f"{v:10.4f}" for v in row))
        lines.append(f"{'mean':<22}{'':>7}" + "".join(f"{v:10.4f}" for v in np.nanmean(rows, axis=0)))
    return "\n".join(lines)


def write_json(results: dict, path: str | Path) -> None:
    atomic_write_text(path, json.dumps(results, indent=2) + "\n")


def _depth_rgb(depth: np.ndarray, max_depth: float) -> np.ndarray:
    import matplotlib

    rgb = matplotlib.colormaps["turbo"](np.clip(depth / max_depth, 0, 1))[..., :3]
    rgb[depth <= 0] = 0
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
                      None if normals is None else normals_to_rgb(normals),
                      None if edges is None else edges.astype(np.float32)]
            kind = ("prediction", "ground truth")[which]
            for c, img in enumerate(images):
                ax = axes[2 * r + which, c]
                ax.axis("off")
                if img is not None:
                    ax.imshow(img, cmap="gray", vmin=0, vmax=1) if img.ndim == 2 else ax.imshow(img)
                ax.set_title(f"frame {frame.index} ({kind})" if c == 0 else f"{cols[c]} ({kind})", fontsize=9)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:  # same suffix: matplotlib picks PNG by it
            fig.savefig(tmp, dpi=80)
    finally:
        plt.close(fig)
