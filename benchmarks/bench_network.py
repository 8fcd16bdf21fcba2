"""M2H-MX network on CPU: parameters, GMACs and eval-forward latency (batch 1), and the bundled demo model as the
viewer runs it (``Predictor``: 240x320 in, resized to its 144x192, outputs back at 240x320).

Run: .venv/bin/python -m benchmarks.bench_network [--rounds 10] [--skip-b] [--accuracy]
GMACs are counted with torch.utils.flop_counter on the meta device (MACs = FLOPs / 2; the selective scan is
not counted). Variants of one table are timed interleaved (one forward of each in turn, ``--rounds`` times) on
1 torch thread, so that other work on a shared machine slows them alike: "ms" is the median wall time, "CPU ms"
the median process CPU time, "ratio" the CPU time against the table's first row. The load average is printed.
``--accuracy`` evaluates the deployed predictor on the model card's held-out rooms (as
``benchmarks/eval_demo_model.py`` does) and prints the change against ``assets/m2hmx-demo.metrics.json``
(allowed: 0.005 mIoU, 0.002 AbsRel).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import m2hmx  # noqa: F401,I001  (first: it sets OMP_WAIT_POLICY=PASSIVE before torch loads OpenMP, as the apps do)
import torch

from m2hmx.profiling import count_macs, count_params, measure_latency
from m2hmx.config import bundled_checkpoint, get_preset
from m2hmx.model import M2HMX

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = bundled_checkpoint()


def interleaved(variants: dict, rounds: int, warmup: int = 2) -> dict:
    """{name: (median wall s, median CPU s)} of ``variants`` ({name: callable}) called in turn ``rounds`` times."""
    for call in variants.values():
        for _ in range(warmup):
            call()
    wall = {k: [] for k in variants}
    cpu = {k: [] for k in variants}
    for _ in range(rounds):
        for name, call in variants.items():
            t, c = time.perf_counter(), time.process_time()
            call()
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in variants}


def print_timing(rows: dict) -> None:
    base_cpu = next(iter(rows.values()))[1]
    print(f"{'variant':<52} {'ms':>8} {'CPU ms':>8} {'ratio':>6}")
    for name, (wall, cpu) in rows.items():
        print(f"{name:<52} {1000 * wall:>8.1f} {1000 * cpu:>8.1f} {cpu / base_cpu:>6.2f}")
    print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}", flush=True)


def forward_call(model, x):
    def call():
        with torch.inference_mode():
            model(x)
    return call


def preset_table(rounds: int) -> None:
    """The demo architecture (random weights) at 240x320, the issue's target size: 4 and 2 heads, the forward as
    it was (contiguous) and as the Predictor runs it now (channels-last)."""
    print("\nm2hmx-demo preset, random weights, 240x320, 1 torch thread, forward only")
    variants = {}
    for tasks in (("semseg", "depth", "normals", "edge"), ("semseg", "depth")):
        config = get_preset("m2hmx-demo", tasks=tasks)
        torch.manual_seed(0)
        model = M2HMX(config).eval()
        x = torch.randn(1, 3, 240, 320)
        print(f"  {len(tasks)} heads: {count_params(config)[0] / 1e6:.2f} M params, "
              f"{count_macs(config, 240, 320):.2f} GMACs")
        variants[f"{len(tasks)} heads, contiguous"] = forward_call(model, x)
        fast = M2HMX(config).eval()
        fast.load_state_dict(model.state_dict())
        fast.to(memory_format=torch.channels_last)
        variants[f"{len(tasks)} heads, channels-last"] = forward_call(fast, x.contiguous(
            memory_format=torch.channels_last))
    print_timing(interleaved(variants, rounds))


def bundled_predictors() -> dict:
    from m2hmx.predictor import Predictor

    two = ("depth", "semseg")
    return {"torch (channels-last), 4 outputs": Predictor.from_checkpoint(BUNDLED, engine="torch"),
            "onnxruntime (5 graphs + post), 4 outputs (default)": Predictor.from_checkpoint(BUNDLED),
            "torch (channels-last), depth,semseg": Predictor.from_checkpoint(BUNDLED, engine="torch", tasks=two),
            "onnxruntime (5 graphs + post), depth,semseg": Predictor.from_checkpoint(BUNDLED, tasks=two)}


def bundled_table(rounds: int) -> None:
    """The bundled model through the Predictor, on rendered frames of a validation room (seed 200000): the
    torch and ONNX Runtime engines, 4 and 2 outputs (the first predict exports or loads the ONNX graphs: warm-up)."""
    from m2hmx.data.sources import open_source

    source = open_source("synthetic:200000")
    frames = [source[i].rgb for i in range(0, 300, 30)]
    source.close()
    print("\nbundled model, Predictor.predict on 240x320 frames (network at 144x192), 1 torch thread")
    variants = {}
    for name, predictor in bundled_predictors().items():
        state = {"i": 0}

        def call(p=predictor, s=state):
            p.predict(frames[s["i"] % len(frames)])
            s["i"] += 1
        variants[name] = call
    print_timing(interleaved(variants, rounds))


def accuracy(tasks: tuple[str, ...] | None) -> None:
    from benchmarks.eval_demo_model import DEFAULT_STRIDE, evaluate_rooms
    from m2hmx.data.splits import SPLITS
    from m2hmx.predictor import Predictor

    ROOMS, STRIDE = SPLITS["heldout"], DEFAULT_STRIDE["heldout"]

    card = json.loads((ROOT / "assets" / "m2hmx-demo.metrics.json").read_text())["heldout"]
    t = time.perf_counter()
    r = evaluate_rooms(Predictor.from_checkpoint(BUNDLED, tasks=tasks), [f"synthetic:{s}" for s in ROOMS], STRIDE)
    d_miou = r["semseg"]["miou"] - card["semseg"]["miou"]
    d_absrel = r["depth"]["abs_rel"] - card["depth"]["abs_rel"]
    ok = abs(d_miou) <= 0.005 and abs(d_absrel) <= 0.002
    print(f"\nheld-out rooms {ROOMS[0]}-{ROOMS[-1]} (stride {STRIDE}, {r['frames']} frames), outputs "
          f"{','.join(tasks) if tasks else 'all'}: mIoU {r['semseg']['miou']:.5f} (card {card['semseg']['miou']:.5f}, "
          f"{d_miou:+.5f}), AbsRel {r['depth']['abs_rel']:.5f} (card {card['depth']['abs_rel']:.5f}, "
          f"{d_absrel:+.5f}): {'within' if ok else 'OUTSIDE'} 0.005 / 0.002 ({time.perf_counter() - t:.0f} s)",
          flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--b-runs", type=int, default=2, help="m2hmx-b is slow on CPU: a few runs suffice")
    parser.add_argument("--skip-b", action="store_true", help="leave out m2hmx-b")
    parser.add_argument("--accuracy", action="store_true", help="also the held-out check (minutes)")
    parser.add_argument("--only-accuracy", action="store_true", help="only the held-out check")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, batch 1, fp32; load average before: "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}", flush=True)
    if not args.only_accuracy:
        if BUNDLED.is_file():  # first: after the preset table's torch models, ONNX Runtime ran 2x slower (17:38)
            bundled_table(args.rounds)
        preset_table(args.rounds)
        if not args.skip_b:
            torch.set_num_threads(2)
            config = get_preset("m2hmx-b")
            seconds = measure_latency(M2HMX(config), 480, 640, runs=args.b_runs, warmup=1)
            print(f"\nm2hmx-b, 4 heads, 480x640, 2 threads: {count_params(config)[0] / 1e6:.2f} M params, "
                  f"{count_macs(config, 480, 640):.1f} GMACs, {1000 * seconds:.0f} ms")
    if (args.accuracy or args.only_accuracy) and BUNDLED.is_file():
        accuracy(None)
        accuracy(("depth", "semseg"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
