"""Fit a model to one RGB-D recording (``m2hmx-adapt``): the sensor's depth is the depth target, the starting
model's own predictions keep its other tasks from drifting, and everything runs within a wall-clock budget.

The steps go through ``m2hmx.train.train`` (same losses, optimiser, augmentation and checkpoint format): the
recording's frames are the dataset, ``train.minutes`` the budget, ``train.trainable`` the parts that learn.

* Depth: SILog + |log d - log d*| (the demo recipe's scale anchor) against the sensor's depth; pixels without a
  reading (0) and beyond ``far`` metres (where consumer depth sensors are noisy) are left out of the loss.
* Semantics, normals, edges: the recording has no labels, so each batch is first run through a frozen copy of
  the starting model, whose outputs on the same augmented image are the targets (self-distillation with hard
  labels: class argmax, normals, edge probability > 0.5). The cost is measured as the agreement of the adapted
  model's classes with the starting model's on the held-out frames, and on labelled rooms by ``m2hmx-eval``.
* Augmentation: ``FrameDataset``'s zoom (depth divided by the zoom), crop, flip and colour jitter, all of
  which keep the depth metric for a network that is not given K.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from m2hmx import M2HMXError
from m2hmx.data.frame import Frame
from mapping.atomic import atomic_write_bytes, atomic_write_text

WORK_LONG_SIDE = 1.5  # frames are kept at this multiple of the network's long side: room for the 1.5x zoom


class AdaptError(M2HMXError):
    """A recording, range or budget that cannot be adapted to (one line)."""


@dataclass
class AdaptConfig:
    """One adaptation run. ``frames``: (first, end) positions in the recording, end exclusive, None = its end;
    ``holdout``: fraction of that range, at its end, kept out of training to score before/after; ``parts``:
    parameter-name prefixes that train (None: every trainable parameter); ``far``: metres beyond which sensor
    depth is not a target."""

    minutes: float = 15.0
    steps: int | None = None  # stop after this many steps even if budget is left (None: the budget decides)
    frames: tuple[int, int | None] = (0, None)
    holdout: float = 0.1
    parts: tuple[str, ...] | None = ("heads", "decoder", "hfa")
    lr: float = 5e-4
    warmup_steps: int = 20
    batch_size: int = 4
    far: float = 5.0
    eval_frames: int = 30  # at most this many held-out frames are scored (evenly spaced; fewer if 5 % of the
    # budget runs out)
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None


@dataclass
class AdaptResult:
    out: Path
    card: Path
    steps: int
    train_frames: tuple[int, int]
    holdout_frames: tuple[int, int] | None
    before: dict = field(default_factory=dict)  # depth metrics of the starting model on the held-out frames
    after: dict = field(default_factory=dict)
    label_agreement: float | None = None  # adapted vs starting model's classes, held-out pixels
    scored: list[int] = field(default_factory=list)  # ``Frame.index`` of the held-out frames scored
    wall_s: float = 0.0
    train_s: float = 0.0


def parse_frames(text: str) -> tuple[int, int | None]:
    """``"A:B"`` / ``"A:"`` / ``":B"`` -> (A, B) with B exclusive (None = to the end)."""
    first, sep, end = text.partition(":")
    try:
        a = int(first) if first.strip() else 0
        b = int(end) if end.strip() else None
    except ValueError:
        a = b = -1
    if not sep or a < 0 or (b is not None and b <= a):
        raise AdaptError(f"--frames '{text}' is not A:B with 0 <= A < B (B exclusive; either may be left out)")
    return a, b


def _resize(frame: Frame, long_side: int) -> Frame:
    """``frame`` with its long side at most ``long_side`` (colour area-averaged, depth nearest, K scaled)."""
    import cv2

    from m2hmx.data.transforms import scale_intrinsics

    H, W = frame.rgb.shape[:2]
    s = long_side / max(H, W)
    if s >= 1:
        return frame
    h, w = max(1, round(H * s)), max(1, round(W * s))
    depth = None if frame.depth is None else cv2.resize(frame.depth, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
    return Frame(rgb=cv2.resize(frame.rgb, (w, h), interpolation=cv2.INTER_AREA),
                 K=scale_intrinsics(frame.K, w / W, h / H), timestamp=frame.timestamp, index=frame.index,
                 depth=depth, pose=frame.pose)


def read_recording(source, frames: tuple[int, int | None], long_side: int, progress: bool = False,
                   deadline: float | None = None) -> list[Frame]:
    """The frames ``frames`` of ``source`` (random access or iterable), resized; refuses a source without depth
    and gives up once ``time.perf_counter()`` passes ``deadline``."""
    from tqdm import tqdm

    a, b = frames
    try:
        n = len(source)
    except TypeError:
        n = None
    if n is not None:
        if a >= n:
            raise AdaptError(f"{source.name}: --frames starts at {a} but the recording has {n} frames")
        indices = range(a, n if b is None else min(b, n))
        it = (source[i] for i in indices)
        total = len(indices)
    else:
        import itertools

        it, total = itertools.islice(iter(source), a, b), None if b is None else b - a
    out: list[Frame] = []
    for frame in tqdm(it, total=total, desc="reading", disable=not progress, dynamic_ncols=True):
        if frame.depth is None:
            raise AdaptError(f"{source.name}: the recording has no depth (RGB only, e.g. a webcam or video); "
                             "adapting needs an RGB-D recording (RealSense .bag, ScanNet, TUM, 7-Scenes, m2hmx-synth)")
        out.append(_resize(frame, long_side))
        if deadline is not None and time.perf_counter() > deadline:
            raise AdaptError(f"{source.name}: the budget is spent while reading the recording ({len(out)} frames "
                             "read); give more --minutes or fewer --frames")
    if len(out) < 2:
        raise AdaptError(f"{source.name}: --frames {a}:{'' if b is None else b} holds {len(out)} frame(s); need at least 2")
    return out


class Distiller:
    """``add_targets`` for ``m2hmx.train.train``: the frozen starting model's outputs on the batch's images
    become the semantics (argmax), normals and edge (probability > 0.5) targets; sensor depth stays the depth
    target."""

    def __init__(self, teacher: torch.nn.Module):
        self.teacher = teacher.eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, batch: dict) -> dict:
        out = self.teacher(batch["image"])
        batch = dict(batch)
        batch["semseg"] = out["semseg"].argmax(dim=1)
        if "normals" in out:
            batch["normals"] = out["normals"]
        if "edge" in out:
            batch["edge"] = (out["edge"] > 0).float()  # logit > 0 <=> probability > 0.5
        return batch


def _mask_far(frame: Frame, far: float) -> Frame:
    depth = frame.depth.copy()
    depth[~(depth <= far)] = 0.0
    return dataclasses.replace(frame, depth=depth)


def _score(predictor, frames: list[Frame], min_depth: float, max_depth: float,
           deadline: float | None = None) -> tuple[dict, list[np.ndarray]]:
    """Depth metrics (``DepthMeter``) of ``predictor`` on ``frames`` and its class maps; stops early (at least
    one frame) once ``time.perf_counter()`` passes ``deadline``."""
    from m2hmx.metrics import DepthMeter

    meter, labels = DepthMeter(min_depth, max_depth), []
    for frame in frames:
        if labels and deadline is not None and time.perf_counter() > deadline:
            break
        pred = predictor.predict(frame.rgb)
        meter.update(pred.depth, frame.depth)
        labels.append(pred.labels)
    return meter.result(), labels


def adapt(source, checkpoint: str | os.PathLike, out: str | os.PathLike, config: AdaptConfig | None = None,
          recording: str | None = None, started: float | None = None, progress: bool = False) -> AdaptResult:
    """Fine-tune ``checkpoint`` on ``source``'s RGB-D frames within ``config.minutes`` of wall clock counted from
    ``started`` (``time.perf_counter()``; default: now); write ``out`` (safetensors) and ``<out stem>.card.md``
    and ``<out stem>.train_log.csv`` beside it."""
    from m2hmx.checkpoint import read_checkpoint_info
    from m2hmx.data.torch_datasets import FrameDataset
    from m2hmx.predictor import Predictor
    from m2hmx.train import TrainError, train

    config = config or AdaptConfig()
    t0 = time.perf_counter() if started is None else started
    budget, out = 60.0 * float(config.minutes), Path(out)
    _check_options(config, out)
    if config.threads:
        torch.set_num_threads(int(config.threads))
    net_config, extra = read_checkpoint_info(checkpoint)  # CheckpointError: a file that does not load (exit 1)
    long_side = round(WORK_LONG_SIDE * max(net_config.image_size))
    frames = read_recording(source, config.frames, long_side, progress, deadline=t0 + 0.5 * budget)

    def refuse(what: str):
        return AdaptError(f"the budget of {config.minutes:g} min is spent {what} ({len(frames)} frames read, "
                          f"{time.perf_counter() - t0:.0f} s gone); give more --minutes or fewer --frames")

    if budget - (time.perf_counter() - t0) < 10.0:  # loading and scoring the model alone take seconds
        raise refuse("before the model is loaded")
    tick = time.perf_counter()
    teacher = _load_teacher(checkpoint, config)
    load_s = time.perf_counter() - tick  # what building the trained copy will take too
    first = config.frames[0]
    train_frames, held, n_hold = _split_frames(frames, config)

    # Score the starting model now; its time is what scoring the adapted model will take at the end.
    start_predictor = Predictor(teacher, config.device, engine="torch")  # no export in the timed scoring
    tick = time.perf_counter()
    before, before_labels = _score(start_predictor, held, net_config.min_depth, net_config.max_depth,
                                   deadline=tick + 0.05 * budget) if held else ({}, [])
    held = held[:len(before_labels)]  # what the budget allowed; the adapted model is scored on the same frames
    score_s = time.perf_counter() - tick

    dataset = FrameDataset([_mask_far(f, config.far) for f in train_frames], size=net_config.image_size,
                           augment=True, label_space=None)
    work = Path(tempfile.mkdtemp(prefix="m2hmx-adapt-"))
    try:
        margin = 2.0 + 0.01 * budget  # saving the model and writing the card, on a busy machine
        train_s = budget - (time.perf_counter() - t0) - 1.5 * score_s - margin
        if train_s <= load_s + 1.0:
            raise refuse("before training starts")
        cfg = _recipe(config, net_config, checkpoint, work, train_s)
        tick = time.perf_counter()
        try:
            module = train(cfg, progress=progress, dataset=dataset, add_targets=Distiller(teacher))
        except TrainError as exc:
            raise AdaptError(str(exc)) from None
        train_wall = time.perf_counter() - tick
        steps = _last_step(work / "log.csv")
        if steps == 0:
            raise refuse("before the first training step")
        model = module.model.eval()
        after, after_labels = _score(Predictor(model, config.device, engine="torch"), held, net_config.min_depth,
                                     net_config.max_depth) if held else ({}, [])
        agreement = (float(np.mean([np.mean(a == b) for a, b in zip(before_labels, after_labels)]))
                     if held else None)
        result = AdaptResult(out=out, card=out.with_name(out.stem + ".card.md"), steps=steps,
                             train_frames=(first, first + len(train_frames)),
                             holdout_frames=(first + len(train_frames), first + len(frames)) if n_hold else None,
                             before=before, after=after, label_agreement=agreement, train_s=train_wall,
                             scored=[int(f.index) for f in held])
        _save(result, module, config, checkpoint, extra, recording or source.name, work / "log.csv")
        result.wall_s = time.perf_counter() - t0
        _write_card(result, config, checkpoint, recording or source.name, held, net_config)
        result.wall_s = time.perf_counter() - t0
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _save(result: AdaptResult, module, config: AdaptConfig, checkpoint, extra: dict, recording: str,
          log_csv: Path) -> None:
    """The adapted model (with where it came from and its held-out scores) and its training log beside it."""
    from m2hmx.checkpoint import save_checkpoint

    log_vars = module.criterion.uncertainty.log_vars.tolist() if module.criterion.uncertainty else None
    save_checkpoint(result.out, module.model, extra={
        "adapted_from": str(checkpoint), "adapted_from_extra": extra, "recording": recording,
        "train_frames": list(result.train_frames), "holdout_frames": result.holdout_frames and list(
            result.holdout_frames), "steps": result.steps, "minutes": config.minutes, "log_vars": log_vars,
        "holdout_before": result.before, "holdout_after": result.after, "label_agreement": result.label_agreement})
    atomic_write_bytes(result.out.with_name(result.out.stem + ".train_log.csv"), log_csv.read_bytes())


def _load_teacher(checkpoint, config: AdaptConfig):
    """The starting model (the distillation teacher); the parts to train (``--train``) must name some of it."""
    from m2hmx.checkpoint import load_model
    from m2hmx.train import TrainError, check_prefixes

    teacher = load_model(checkpoint, config.device)  # CheckpointError: a file that does not load (exit 1)
    if config.parts is not None:
        try:
            check_prefixes(teacher, config.parts)
        except TrainError as exc:
            raise AdaptError(str(exc).replace("train.trainable", "--train")) from None
    return teacher


def _check_options(config: AdaptConfig, out: Path) -> None:
    if not 60.0 * float(config.minutes) > 0:
        raise AdaptError(f"--minutes must be > 0, got {config.minutes}")
    if not 0 <= config.holdout < 1:
        raise AdaptError(f"--holdout must be in [0, 1), got {config.holdout}")
    if out.suffix != ".safetensors":
        raise AdaptError(f"--out {out}: the model file must end in .safetensors")


def _split_frames(frames: list, config: AdaptConfig) -> tuple[list, list, int]:
    """(frames to train on, held-out frames to score (at most ``eval_frames``, evenly spread), frames held out):
    the last ``holdout`` fraction of the recording is held out."""
    n_hold = int(round(config.holdout * len(frames)))
    if n_hold and len(frames) - n_hold < config.batch_size:
        raise AdaptError(f"{len(frames)} frames leave {len(frames) - n_hold} to train on after the held-out "
                         f"{n_hold}; need at least the batch size {config.batch_size}")
    train_frames = frames[:len(frames) - n_hold]
    if len(train_frames) < config.batch_size:
        raise AdaptError(f"{len(train_frames)} frames to train on; need at least the batch size {config.batch_size}")
    held = frames[len(frames) - n_hold:]
    if len(held) > config.eval_frames:
        held = [held[i] for i in np.linspace(0, len(held) - 1, config.eval_frames).round().astype(int)]
    return train_frames, held, n_hold


def _recipe(config: AdaptConfig, net_config, checkpoint, work: Path, train_s: float):
    """The training recipe (``m2hmx.train_config.TrainConfig``) of an adaptation: the checkpoint's network from
    its weights, depth distilled with the log-L1 anchor, for ``train_s`` seconds, written into ``work``."""
    from m2hmx.train_config import ModelSection, OptimSection, TrainConfig, TrainSection

    overrides = net_config.to_dict()
    overrides["backbone"]["weights"] = None
    return TrainConfig(
        config_file="adapt", model=ModelSection(preset="m2hmx-demo", overrides=overrides),
        optim=OptimSection(lr=float(config.lr), backbone_lr_scale=1.0, warmup_steps=int(config.warmup_steps),
                           schedule="cosine"),
        loss={"depth_log_l1": 1.0},
        train=TrainSection(steps=int(config.steps or 10 ** 9), minutes=train_s / 60.0,
                           batch_size=int(config.batch_size), seed=int(config.seed), out_dir=str(work),
                           ckpt_every=10 ** 9, log_every=10, device=config.device, init_from=str(checkpoint),
                           trainable=None if config.parts is None else tuple(config.parts)))


def _last_step(log_csv: Path) -> int:
    import csv

    with log_csv.open() as f:
        rows = list(csv.DictReader(f))
    return int(rows[-1]["step"]) if rows else 0


def _write_card(result: AdaptResult, config: AdaptConfig, checkpoint, recording: str, held: list,
                net_config) -> None:
    """``<out stem>.card.md``: data, frames, minutes, what trained, before and after (written atomically)."""
    def row(name, d):
        if not d:
            return f"| {name} | - | - | - | - |"
        return (f"| {name} | {d['abs_rel']:.4f} | {d['delta1']:.4f} | {d['rmse']:.4f} | "
                f"{d['scale_median_mean']:.3f} +- {d['scale_median_std']:.3f} |")

    load = os.getloadavg()
    parts = "every trainable parameter" if config.parts is None else ", ".join(config.parts)
    hold = (f"frames {result.holdout_frames[0]}-{result.holdout_frames[1] - 1} (the range's last "
            f"{config.holdout:.0%}), {len(held)} of them scored" if result.holdout_frames else "none (--holdout 0)")
    lines = [
        f"# {result.out.name}: {net_config.name} adapted to one recording",
        "",
        f"Written by `m2hmx-adapt` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| | |", "|---|---|",
        f"| recording | `{recording}` |",
        f"| started from | `{checkpoint}` |",
        f"| trained on | frames {result.train_frames[0]}-{result.train_frames[1] - 1} "
        f"({result.train_frames[1] - result.train_frames[0]} frames) |",
        f"| held out | {hold} |",
        f"| budget | {config.minutes:g} min; used {result.wall_s / 60:.2f} min in all, {result.train_s / 60:.2f} min "
        f"training, {result.steps} steps at batch {config.batch_size} |",
        f"| machine | {os.cpu_count()} CPUs, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at the end; "
        f"device {config.device} |",
        f"| trained parts | {parts}; AdamW lr {config.lr:g}, cosine over the budget |",
        f"| depth target | the sensor's depth, pixels without a reading or beyond {config.far:g} m left out; "
        "SILog + log-L1 |",
        "| semantics, normals, edges | distilled from the starting model's own predictions (hard labels) |",
        "| augmentation | zoom 1-1.5x with depth / zoom, crop, flip, colour jitter |",
        "",
        "Held-out frames, sensor depth as ground truth "
        f"({net_config.min_depth:g}-{net_config.max_depth:g} m):",
        "",
        "| model | AbsRel | d<1.25 | RMSE m | scale median(pred/gt) |", "|---|---|---|---|---|",
        row("before (starting model)", result.before),
        row("after (this model)", result.after),
        "",
        ("Classes that agree with the starting model's on the held-out pixels: "
         f"{result.label_agreement:.1%} (the recording has no labels; this is what distillation keeps)."
         if result.label_agreement is not None else "No frames were held out, so nothing was scored."),
        "",
        "The recording's own frames say how well the model now fits this place, not how it does elsewhere.",
        "",
    ]
    atomic_write_text(result.card, "\n".join(lines))


def describe(result: AdaptResult) -> str:
    """One summary line for the command."""
    def fmt(d):
        return f"AbsRel {d['abs_rel']:.3f}, d<1.25 {d['delta1']:.3f}" if d else "-"

    text = f"{result.steps} steps in {result.train_s / 60:.1f} min ({result.wall_s / 60:.1f} min in all)"
    if result.holdout_frames:
        text += (f"; held-out frames {result.holdout_frames[0]}-{result.holdout_frames[1] - 1}: before "
                 f"{fmt(result.before)}, after {fmt(result.after)}, classes agreeing {result.label_agreement:.1%}")
    return text + f"; wrote {result.out} and {result.card.name}"


__all__ = ["AdaptConfig", "AdaptError", "AdaptResult", "Distiller", "adapt", "describe", "parse_frames",
           "read_recording"]
