"""Train the demo model on a GPU within a fixed wall-clock budget (how stages 8-11, 13 and 14 were trained).

Renders as many generated training rooms as fit in ``--render-s`` (a first chunk of ``--probe`` rooms, then chunks
sized by the rate of the chunk before, which includes starting the rendering processes: the last chunks fill the
time that this cautious rate leaves). Then it keeps rendering the next rooms in ``--render-workers`` background
processes (niced: training's own process and loaders come first) while it trains: ``m2hmx.train.train`` runs in
``--segments`` segments of one cosine schedule, each resuming the last with the rooms rendered by then added (the
contiguous seed range done so far). The steps are as many as end ``--end-s`` seconds after the start, at the seconds
a step costs from ``--sec-per-step`` or a short timing run taken while the background rendering runs. It prints the
equivalent ``m2hmx-train`` commands (one per segment), which is what the model card records. The model is also
written in two halves (the lent machine returns files of at most 16 MiB).

Where Open3D cannot be installed: ``PYTHONPATH=benchmarks/open3d_standin:. python3 -m benchmarks.train_on_lent_gpu``.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import multiprocessing
import os
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

T0 = time.time()
STOPPED = False  # set by SIGINT / SIGTERM


def stop(signum, frame) -> None:
    """Ctrl-C or the lent machine's time-out: train() saves on the KeyboardInterrupt; no further segments."""
    global STOPPED
    STOPPED = True
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="train.out_dir; also gets driver.log and the halves")
    parser.add_argument("--end-s", type=float, default=540, help="finish training this many seconds after start")
    parser.add_argument("--render-s", type=float, default=100, help="seconds for rendering rooms")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--probe", type=int, default=256, help="rooms rendered first, to time rendering")
    parser.add_argument("--max-rooms", type=int, default=6000)
    parser.add_argument("--init", default="assets/m2hmx-demo.safetensors", help="train.init_from")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--workers", type=int, default=8, help="data loader workers")
    parser.add_argument("--render-workers", type=int, default=10, help="processes rendering rooms during training")
    parser.add_argument("--segments", type=int, default=4, help="training segments; rooms are added between them")
    parser.add_argument("--wall-views", type=int, default=0,
                        help="data.wall_views: views close to a wall added to each room (0 through stage 14)")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--sec-per-step", type=float, default=0.0, help="known step time (0: a 40-step timing run)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        train_within_budget(args)
    finally:
        if (args.out / "model.safetensors").exists():
            split_model(args.out)


def train_within_budget(args: argparse.Namespace) -> None:
    def log(msg: str) -> None:
        line = f"[{time.time() - T0:7.1f} s] {msg}"
        print(line, flush=True)
        with open(args.out / "driver.log", "a") as f:
            f.write(line + "\n")

    import torch
    from torch.utils.data import ConcatDataset

    import m2hmx.train as T
    from m2hmx.labels import load_label_space

    log(f"torch {torch.__version__}, {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}")
    base = [f"train.init_from={args.init}", f"train.batch_size={args.batch}", f"train.num_workers={args.workers}",
            f"optim.lr={args.lr}", f"optim.warmup_steps={args.warmup}", "train.threads=null",
            f"data.wall_views={args.wall_views}"]
    cfg = T.load_config("demo", base)
    label_space = load_label_space(T.build_model_config(cfg.model).label_space)

    first, t = args.first_seed, time.time()
    parts, rooms, chunk = [], 0, min(args.probe, args.max_rooms)
    while chunk > 0:
        t_chunk = time.time()
        parts.append(T.build_dataset(dataclasses.replace(cfg.data, seeds=(first + rooms, first + rooms + chunk)),
                                     label_space))
        rooms += chunk
        rate = chunk / (time.time() - t_chunk)
        chunk = min(args.max_rooms - rooms, int((args.render_s - (time.time() - t)) * rate))
        if chunk < min(16, args.max_rooms - rooms):  # too few to be worth a few seconds of process start-up
            break
    log(f"rendered rooms {first}-{first + rooms - 1} in {time.time() - t:.1f} s")

    # The next rooms render while the GPU trains; a segment takes the ones done by its start, in seed order.
    pool = ProcessPoolExecutor(args.render_workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=os.nice, initargs=(10,))
    pending = deque(pool.submit(T.render_room, (seed, cfg.data, label_space))
                    for seed in range(first + rooms, first + args.max_rooms))

    def train_on_rooms_rendered_so_far(what: str, settings: list[str]) -> None:
        nonlocal rooms
        while pending and pending[0].done():
            parts.append(pending.popleft().result())
            rooms += 1
        dataset = ConcatDataset(parts)  # indexes exactly as build_dataset over the whole seed range would
        T.build_dataset = lambda *a, **k: dataset
        run = base + [f"data.seeds=[{first},{first + rooms}]"] + settings
        log(f"{what} on rooms {first}-{first + rooms - 1} ({len(dataset)} frames): m2hmx-train --config demo "
            + " ".join(f"--set {a}" for a in run))
        T.train(T.load_config("demo", run), progress=False)

    try:  # whatever happens, the rooms still queued are dropped, not rendered before the process can end
        sec_per_step = args.sec_per_step
        if not sec_per_step:
            timing = args.out / "timing"
            train_on_rooms_rendered_so_far("timing", ["train.steps=40", f"train.out_dir={timing}",
                                                      "train.log_every=10"])
            rows = list(csv.DictReader(open(timing / "log.csv")))
            sec_per_step = max(float(r["sec_per_step"]) for r in rows[-2:])  # steps 21-40: loaders warm
        overhead = 12 + 8 * args.segments  # loader and model start-up per segment, final save
        steps = int((args.end_s - (time.time() - T0) - overhead) / (sec_per_step * 1.04))
        log(f"{sec_per_step:.3f} s a step, {steps} steps in {args.segments} segments")
        t = time.time()
        for k in range(1, args.segments + 1):
            if STOPPED:  # train() saved and returned on the signal
                break
            train_on_rooms_rendered_so_far(f"segment {k}", [
                f"train.steps={steps}", f"train.out_dir={args.out}", f"train.ckpt_every={steps}",
                f"train.stop_at={steps * k // args.segments}"] + (["train.resume=true"] if k > 1 else []))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if torch.cuda.is_available() else 0.0
    done = "stopped by a signal (the model is saved; log.csv has the steps)" if STOPPED else f"trained {steps} steps"
    log(f"{done} in {time.time() - t:.1f} s, peak GPU memory {peak:.1f} GiB")


def split_model(out: Path) -> None:
    data = (out / "model.safetensors").read_bytes()
    half = len(data) // 2 + 1
    (out / "model.part0").write_bytes(data[:half])
    (out / "model.part1").write_bytes(data[half:])


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    main()
