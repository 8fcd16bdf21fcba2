"""Training loop: recipe configs, AdamW groups, warm-up + poly/cosine, resumable checkpoints, DDP.

A recipe is a YAML file (``m2hmx/configs/<name>.yaml``) loaded into a ``TrainConfig`` (``m2hmx.train_config``),
with command-line ``--set section.key=value`` overrides. The loop is deterministic for a fixed seed: the data
order of every step and each item's augmentation are derived from ``(seed, step, slot)``, and a
checkpoint (``<out_dir>/last.pt``) holds model, loss (log-variances), optimizer, scheduler, step and
RNG states, so a resumed run continues bit-identically. ``torchrun --nproc_per_node N`` runs it with
DistributedDataParallel (NCCL on CUDA, gloo on CPU). Recipe: docs/design/network.md section 10.
"""
from __future__ import annotations

import csv
import math
import multiprocessing
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from m2hmx.data.splits import reserved_seeds_in
from m2hmx.losses import LossWeights, MultiTaskLoss
from m2hmx.train_config import (DataSection, OptimSection, TrainConfig, TrainError,  # noqa: F401 (re-exported)
                                build_model_config, load_config)
from mapping.atomic import atomic_path

NO_DECAY_SUFFIXES = ("A_log", "D", "log_vars", "cls_token", "register_tokens", "mask_token")


# ------------------------------------------------------------------------------------------- data
class FrameSubset:
    """Every ``stride``-th frame of a random-access frame source (what ``FrameDataset`` needs), then the views
    from ``extra_poses`` (camera-to-world) that the source renders with ``view`` (``SyntheticSource``)."""

    def __init__(self, source, stride: int, extra_poses=()):
        self.source, self.stride, self.extra_poses = source, int(stride), list(extra_poses)
        self.name, self.label_space = source.name, source.label_space
        self.indices = range(0, len(source), self.stride)

    def __len__(self) -> int:
        return len(self.indices) + len(self.extra_poses)

    def __getitem__(self, i: int):
        if i < len(self.indices):
            return self.source[self.indices[i]]
        k = i - len(self.indices)
        return self.source.view(self.extra_poses[k], len(self.source) + k)

    def close(self) -> None:
        self.source.close()


def render_room(job):
    """One generated room's training frames, rendered into a ``FrameDataset``'s memory cache.
    ``job``: (seed, the recipe's ``DataSection``, label space)."""
    from m2hmx.data.synthetic import SyntheticSource, wall_views
    from m2hmx.data.torch_datasets import FrameDataset

    seed, data_cfg, label_space = job
    room = SyntheticSource(seed, data_cfg.frames, data_cfg.height, data_cfg.width)
    extra = wall_views(room.scene, data_cfg.wall_views, seed) if data_cfg.wall_views else ()
    ds = FrameDataset(FrameSubset(room, data_cfg.stride, extra), size=data_cfg.size, augment=data_cfg.augment,
                      label_space=label_space)
    ds.preload()
    return ds


def build_dataset(data_cfg: DataSection, label_space, progress: bool = False) -> Dataset:
    from tqdm import tqdm

    from m2hmx.data.sources import open_source
    from m2hmx.data.torch_datasets import FrameDataset

    kind = data_cfg.kind
    if kind == "cityscapes":
        raise TrainError("the Cityscapes recipe needs a Cityscapes dataset reader, which m2hmx.data does not "
                         "have yet (readers: ScanNet, TUM, 7-Scenes, NYUDv2 .mat, video, images, synthetic)")
    size, augment = data_cfg.size, data_cfg.augment
    if kind == "synthetic":  # rendered, not read from disk (~25 ms a frame, cheaper than decoding files)
        seeds = range(*data_cfg.seeds)
        refusal = reserved_seeds_in(seeds)
        if refusal:
            raise TrainError(f"data.seeds {list(data_cfg.seeds)}: {refusal}")
        # Rendered room by room up front: rendering on demand keeps a ray caster alive for every room not yet
        # fully cached, and with 1000 rooms Open3D crashed (segfault). Rooms render in one process per core
        # (spawned, not forked: this process's OpenMP threads may be running), in seed order whatever the core count;
        # under torchrun each of a node's ranks renders the whole set, with its share of the cores.
        jobs = [(seed, data_cfg, label_space) for seed in seeds]
        cores = len(os.sched_getaffinity(0)) // int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        workers = min(cores, len(jobs))
        with (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) if workers > 1
              else nullcontext()) as pool:
            rendered = pool.map(render_room, jobs, chunksize=4) if pool else map(render_room, jobs)
            datasets = list(tqdm(rendered, total=len(jobs), desc="rendering rooms", disable=not progress,
                                 dynamic_ncols=True))
        return ConcatDataset(datasets)
    specs = list(data_cfg.sources)  # kind sources or nyudv2 (the config allows no other)
    if not specs:
        raise TrainError(f"data.kind is '{kind}' but data.sources is empty")

    for spec in specs:  # a generated room given as a source spec is refused like data.seeds
        seed = str(spec).partition("synthetic:")[2]
        refusal = reserved_seeds_in(range(int(seed), int(seed) + 1)) if seed.isdigit() else None
        if refusal:
            raise TrainError(f"data.sources has {spec}: {refusal}")

    def open_train(spec: str):
        if kind == "nyudv2":  # the 795-image train split (splits.mat beside the .mat)
            from m2hmx.data.readers.nyu import NYUv2Labeled

            root = data_cfg.data_root
            path = Path(root) / spec if root and not Path(spec).exists() else Path(spec)
            return NYUv2Labeled(path, split="train")
        return open_source(spec, data_cfg.data_root)

    parts = [FrameDataset(open_train(spec), size=size, augment=augment, label_space=label_space)
             for spec in specs]
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


class SeededItems(Dataset):
    """Wraps a dataset so that item ``(index, seed)`` runs the base ``__getitem__`` with python, numpy
    and torch RNGs seeded by ``seed``, restoring the global RNG states afterwards: augmentation is a
    function of the data schedule only (reproducible and resumable, with any number of workers)."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        index, seed = key
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            np.random.seed(seed % 2 ** 32)
            torch.manual_seed(seed)
            try:
                return self.base[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


class StepBatches:
    """Batch sampler of ``(index, item_seed)`` lists for steps ``start..steps-1``. Each epoch is a
    permutation from ``seed + epoch``; step ``s`` takes the ``s``-th global batch and rank ``r`` its
    ``r``-th slice, so the order depends on neither resumption nor worker count."""

    def __init__(self, n: int, batch_size: int, steps: int, seed: int, start: int = 0, rank: int = 0,
                 world: int = 1):
        self.n, self.bs, self.steps, self.seed, self.start = n, batch_size, steps, seed, start
        self.rank, self.world = rank, world
        self.per_epoch = n // (batch_size * world)
        if self.per_epoch == 0:
            raise TrainError(f"the dataset has {n} items, fewer than one global batch ({batch_size} x {world})")

    def __len__(self) -> int:
        return max(0, self.steps - self.start)

    def __iter__(self):
        perm, perm_epoch = None, -1
        gb = self.bs * self.world
        for step in range(self.start, self.steps):
            epoch, k = divmod(step, self.per_epoch)
            if epoch != perm_epoch:
                perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch)).tolist()
                perm_epoch = epoch
            first = k * gb + self.rank * self.bs
            yield [(perm[first + j], (self.seed * 1_000_003 + step) * 1024 + self.rank * self.bs + j)
                   for j in range(self.bs)]


# -------------------------------------------------------------------------------------- optimiser
class TrainModule(nn.Module):
    """Network + loss in one module, so DDP synchronises the loss's log-variances too."""

    def __init__(self, model: nn.Module, criterion: MultiTaskLoss, autocast_device: str | None):
        super().__init__()
        self.model, self.criterion = model, criterion
        self.autocast_device = autocast_device

    def forward(self, batch: dict):
        ctx = (torch.autocast(self.autocast_device, dtype=torch.bfloat16) if self.autocast_device
               else nullcontext())
        with ctx:
            outputs = self.model(batch["image"])
        return self.criterion(_to_float(outputs), batch)


def _init_from(module: TrainModule, path: str) -> None:
    """Start a fresh run (step 0, new optimiser and schedule) from a saved network's weights and, where the
    checkpoint records them, its loss log-variances: fine-tuning, or going on when ``last.pt`` is gone."""
    from m2hmx.checkpoint import CheckpointError, load_state, read_checkpoint_info

    try:
        _, extra = read_checkpoint_info(path)
        load_state(module.model, path)
    except CheckpointError as exc:  # a file that exists but does not load: a failure, not a usage error
        raise CheckpointError(f"train.init_from: {exc}") from None
    log_vars = module.criterion.uncertainty.log_vars if module.criterion.uncertainty is not None else None
    if log_vars is not None and extra.get("log_vars") is not None:
        if len(extra["log_vars"]) != len(log_vars):
            raise TrainError(f"train.init_from: {path} records {len(extra['log_vars'])} task log-variances, "
                             f"the recipe has {len(log_vars)} tasks")
        with torch.no_grad():
            log_vars.copy_(torch.tensor(extra["log_vars"], dtype=log_vars.dtype))


def _to_float(x):
    if isinstance(x, torch.Tensor):
        return x.float() if x.is_floating_point() else x
    if isinstance(x, dict):
        return {k: _to_float(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_float(v) for v in x)
    return x


def param_groups(module: TrainModule, optim_cfg: OptimSection) -> list[dict]:
    """AdamW groups: no weight decay on norms, biases (all 1-D tensors), ``A_log``, ``D``, tokens and
    log-variances; the backbone (its LoRA adapters) at ``lr * backbone_lr_scale``."""
    lr, wd = optim_cfg.lr, optim_cfg.weight_decay
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim <= 1 or name.rsplit(".", 1)[-1] in NO_DECAY_SUFFIXES
        backbone = name.startswith("model.backbone.")
        groups.setdefault((no_decay, backbone), []).append(p)
    scale = optim_cfg.backbone_lr_scale
    return [{"params": ps, "weight_decay": 0.0 if nd else wd, "lr": lr * (scale if bb else 1.0)}
            for (nd, bb), ps in sorted(groups.items())]


def lr_factor(step: int, total: int, warmup: int, schedule: str, power: float,
              time_progress: float | None = None) -> float:
    """Linear warm-up from 0 over ``warmup`` steps, then poly(power) or cosine decay to 0 at ``total``, or,
    with a time budget, at the end of the budget (``time_progress`` = fraction of it spent, when further)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if time_progress is not None:
        progress = max(progress, min(1.0, time_progress))
    if schedule == "poly":
        return (1.0 - progress) ** power
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise TrainError(f"optim.schedule '{schedule}' is not poly or cosine")


# ------------------------------------------------------------------------------------ checkpoints
def _atomic_torch_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    """Restore ``_rng_state()``; its tensors may come back on the GPU (``torch.load`` with ``map_location``)."""
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# ----------------------------------------------------------------------------------- distributed
def _dist_setup(device_cfg: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_cfg in ("auto", "cuda")
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


# ------------------------------------------------------------------------------------------ train
def check_prefixes(model: nn.Module, prefixes) -> tuple[str, ...]:
    """``prefixes`` (parameter-name prefixes), or a TrainError naming those that match no parameter of ``model``."""
    prefixes = tuple(str(p).rstrip(".") for p in prefixes)
    names = [name for name, _ in model.named_parameters()]
    unknown = [p for p in prefixes if not any(n == p or n.startswith(p + ".") for n in names)]
    if unknown:
        tops = sorted({n.split(".")[0] for n in names})
        raise TrainError(f"train.trainable {list(unknown)} names no parameters of the network (top level: {tops}; "
                         f"e.g. heads.depth, decoder)")
    return prefixes


def freeze_except(model: nn.Module, prefixes) -> int:
    """Train only parameters whose name starts with one of ``prefixes`` (others stop needing gradients; a
    frozen parameter, e.g. a LoRA-adapted backbone weight, is never unfrozen). Returns the trainable count."""
    prefixes = check_prefixes(model, prefixes)
    count = 0
    for name, p in model.named_parameters():
        if not any(name == q or name.startswith(q + ".") for q in prefixes):
            p.requires_grad_(False)
        elif p.requires_grad:
            count += p.numel()
    return count


def train(cfg: TrainConfig, progress: bool = True, dataset: Dataset | None = None, add_targets=None) -> TrainModule:
    """Run (or resume) the recipe ``cfg``; writes ``<out_dir>/{last.pt, model.safetensors, log.csv,
    config.yaml}`` and returns the trained network + loss module (each rank its own copy).

    ``dataset``: train on these items instead of building ``cfg.data`` (e.g. one recording's frames);
    ``add_targets(batch) -> batch``: called on each batch on the device before the forward pass (e.g. targets
    distilled from a teacher network)."""
    from m2hmx.labels import load_label_space
    from m2hmx.model import build_model

    tcfg = cfg.train
    called = time.perf_counter()
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    rank, world, device = _dist_setup(tcfg.device)
    seed = tcfg.seed
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

    model_config = build_model_config(cfg.model)
    label_space = load_label_space(model_config.label_space)
    dataset = SeededItems(dataset if dataset is not None else
                          build_dataset(cfg.data, label_space, progress and rank == 0))
    model = build_model(model_config)
    try:
        weights = LossWeights(**cfg.loss)
    except TypeError as exc:
        raise TrainError(f"loss: {exc}") from None
    criterion = MultiTaskLoss(model_config.tasks, model_config.min_depth, model_config.max_depth, weights)
    module = TrainModule(model, criterion, "cuda" if device.type == "cuda" and tcfg.bf16 else None)
    module.to(device).train()
    if tcfg.trainable is not None:
        freeze_except(model, tcfg.trainable)
    run = _TrainRun(cfg, module, rank, world, device, called)
    run.run(dataset, add_targets, progress)
    return module


class _TrainRun:
    """``train``'s optimiser, schedule, clock, checkpoints and log for one rank."""

    def __init__(self, cfg: TrainConfig, module: TrainModule, rank: int, world: int, device: torch.device,
                 called: float):
        tcfg, ocfg = cfg.train, cfg.optim
        self.cfg, self.module, self.rank, self.world, self.device = cfg, module, rank, world, device
        self.main_rank = rank == 0
        self.optimizer = torch.optim.AdamW(param_groups(module, ocfg), betas=ocfg.betas)
        self.total = tcfg.steps
        self.called = called
        self.budget_s = None if tcfg.minutes is None else 60.0 * tcfg.minutes
        self.started: float | None = None  # the schedule's clock runs from the first step, the budget from the call
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(
            s, self.total, ocfg.warmup_steps, ocfg.schedule, ocfg.poly_power,
            self.time_progress()))
        self.out_dir = Path(tcfg.out_dir)
        self.last = self.out_dir / "last.pt"
        self.start = self._resume_or_init()
        if self.main_rank:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        self.stop = min(self.total, tcfg.stop_at) if tcfg.stop_at is not None else self.total
        tasks = sorted(module.model.config.tasks)
        self.log_path = self.out_dir / "log.csv"
        self.fields = ["step", "epoch", "lr", "loss"] + [f"loss_{t}" for t in tasks] + \
            [f"logvar_{t}" for t in tasks] + ["grad_norm", "sec_per_step"]
        if self.main_rank:
            _trim_log(self.log_path, self.fields, self.start)

    def time_progress(self) -> float | None:
        if self.budget_s is None or self.started is None:
            return None
        return (time.perf_counter() - self.started) / max(1e-6, self.budget_s - (self.started - self.called))

    def _resume_or_init(self) -> int:
        """The step to start from: last.pt's (it holds the whole state: init_from does not apply), else 0."""
        tcfg = self.cfg.train
        if tcfg.resume:
            if not self.last.is_file():
                raise TrainError(f"cannot resume: {self.last} does not exist")
            state = torch.load(self.last, map_location=self.device, weights_only=False)
            self.module.load_state_dict(state["module"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            _set_rng_state(state["rng"][self.rank] if self.rank < len(state["rng"]) else state["rng"][0])
            return int(state["step"])
        if tcfg.init_from:
            _init_from(self.module, tcfg.init_from)
        return 0

    def save(self, step: int) -> None:
        from m2hmx.checkpoint import save_checkpoint

        rngs = [None] * self.world
        if self.world > 1:
            torch.distributed.all_gather_object(rngs, _rng_state())
        else:
            rngs = [_rng_state()]
        if not self.main_rank:
            return
        module, criterion = self.module, self.module.criterion
        _atomic_torch_save({"module": module.state_dict(), "optimizer": self.optimizer.state_dict(),
                            "scheduler": self.scheduler.state_dict(), "step": step, "rng": rngs,
                            "config": self.cfg.to_dict()},
                           self.last)
        save_checkpoint(self.out_dir / "model.safetensors", module.model,
                        extra={"step": step, "recipe": Path(self.cfg.config_file).stem,
                               "log_vars": criterion.uncertainty.log_vars.tolist() if criterion.uncertainty else None})

    def log(self, sums: dict, count: int, step: int, per_epoch: int, seconds: float) -> None:
        """A row of log.csv: the means of ``count`` steps' sums."""
        row = {k: v / count for k, v in sums.items()}
        row.update(step=step, epoch=step // per_epoch, lr=self.scheduler.get_last_lr()[0], sec_per_step=seconds / count)
        uncertainty = self.module.criterion.uncertainty
        if uncertainty is not None:
            row.update(zip((f"logvar_{t}" for t in uncertainty.tasks), uncertainty.log_vars.tolist()))
        _append_log(self.log_path, self.fields, row)

    def run(self, dataset: Dataset, add_targets, progress: bool) -> None:
        from tqdm import tqdm

        tcfg, ocfg, module = self.cfg.train, self.cfg.optim, self.module
        seed, start, stop, budget_s = tcfg.seed, self.start, self.stop, self.budget_s
        sampler = StepBatches(len(dataset), tcfg.batch_size, stop, seed, start, self.rank, self.world)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=tcfg.num_workers,
                            pin_memory=self.device.type == "cuda",
                            generator=torch.Generator().manual_seed(seed))  # keeps the global RNG untouched
        net = module
        if self.world > 1:
            # find_unused_parameters: heads whose aux weight is 0 (normals) produce outputs no loss uses
            net = nn.parallel.DistributedDataParallel(
                module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)
        sums: dict[str, float] = {}
        count, tick = 0, time.perf_counter()
        bar = tqdm(total=stop if budget_s is None else round(budget_s), initial=start if budget_s is None else 0,
                   unit="step" if budget_s is None else "s", desc="train",
                   disable=not (progress and self.main_rank), dynamic_ncols=True)
        step = start
        self.started = time.perf_counter()
        save_s = 0.0 if budget_s is None else 2.0  # the final save is part of the budget
        last_step_at = self.started
        try:
            for batch in loader:
                if budget_s is not None:  # stop when one more step (as slow as the mean or the last) would overrun it
                    now = time.perf_counter()
                    pace = max((now - self.started) / (step - start), now - last_step_at) if step > start else 0.0
                    if now - self.called + pace > budget_s - save_s:
                        break
                    last_step_at = now
                batch = _to_device(batch, self.device)
                if add_targets is not None:
                    batch = add_targets(batch)
                loss, parts = net(batch)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(module.parameters(), ocfg.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                step += 1
                sums["loss"] = sums.get("loss", 0.0) + loss.item()
                for t, v in parts.items():
                    sums[f"loss_{t}"] = sums.get(f"loss_{t}", 0.0) + v.item()
                sums["grad_norm"] = sums.get("grad_norm", 0.0) + float(grad_norm)
                count += 1
                if budget_s is None:
                    bar.update(1)
                else:
                    bar.n = min(round(budget_s), round(time.perf_counter() - self.started))
                    bar.refresh()
                bar.set_postfix(step=step, loss=f"{loss.item():.3f}")
                if self.main_rank and (step % tcfg.log_every == 0 or step == stop):
                    now = time.perf_counter()
                    self.log(sums, count, step, sampler.per_epoch, now - tick)
                    sums, count, tick = {}, 0, now
                if step % tcfg.ckpt_every == 0 and step != stop:
                    self.save(step)
        except KeyboardInterrupt:
            if self.main_rank:
                bar.write(f"interrupted at step {step}: saving {self.last}")
        finally:
            bar.close()
        if self.main_rank and count:  # steps since the last log row (a budget or an interrupt ended the run)
            self.log(sums, count, step, sampler.per_epoch, time.perf_counter() - tick)
        self.save(step)
        if self.world > 1:
            torch.distributed.barrier()


def _trim_log(path: Path, fields: list[str], start: int) -> None:
    """Start a fresh log, or on resume drop rows past the resumed step."""
    rows = []
    if start > 0 and path.is_file():
        with path.open() as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _append_log(path: Path, fields: list[str], row: dict) -> None:
    with path.open("a", newline="") as f:
        csv.DictWriter(f, fieldnames=fields, extrasaction="ignore").writerow(
            {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
