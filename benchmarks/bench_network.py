"""M2H-MX network on CPU: parameters, GMACs and eval-forward latency (batch 1, random weights, 2 threads).

Run: .venv/bin/python -m benchmarks.bench_network [--b-runs 2] [--skip-b]
GMACs are counted with torch.utils.flop_counter on the meta device (MACs = FLOPs / 2; the selective scan is
not counted). "ms" is the median wall time of timed forwards after warm-up at 2 threads (it depends on the
machine's load); "1-thread CPU ms" is the median process CPU time of a forward at 1 thread, which other
processes on a shared machine barely change (a quiet-machine single-thread latency estimate).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from m2hmx.cli.profile import count_macs, count_params, measure_latency
from m2hmx.config import get_preset
from m2hmx.model import M2HMX


def cpu_time_1_thread(model, h: int, w: int, runs: int) -> float:
    """Median process CPU seconds of an eval forward with 1 torch thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    x = torch.randn(1, 3, h, w)
    times = []
    try:
        with torch.inference_mode():
            model.eval()(x)
            for _ in range(runs):
                t = time.process_time()
                model(x)
                times.append(time.process_time() - t)
    finally:
        torch.set_num_threads(threads)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo-runs", type=int, default=10)
    parser.add_argument("--b-runs", type=int, default=2, help="m2hmx-b is slow on CPU: a few runs suffice")
    parser.add_argument("--skip-b", action="store_true", help="only the demo preset")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    rows = [("m2hmx-demo", ("semseg", "depth", "normals", "edge"), 240, 320, args.demo_runs, 3),
            ("m2hmx-demo", ("semseg", "depth"), 240, 320, args.demo_runs, 3)]
    if not args.skip_b:
        rows.append(("m2hmx-b", ("semseg", "depth", "normals", "edge"), 480, 640, args.b_runs, 1))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 1, fp32, random weights")
    print(f"{'model':<12} {'tasks':<24} {'input':>9} {'params M':>9} {'train M':>8} {'GMACs':>8} "
          f"{'ms':>8} {'fps':>6} {'1-thread CPU ms':>16}")
    for name, tasks, h, w, runs, warmup in rows:
        config = get_preset(name, tasks=tasks)
        total, trainable = count_params(config)
        gmacs = count_macs(config, h, w)
        model = M2HMX(config)
        seconds = measure_latency(model, h, w, runs=runs, warmup=warmup)
        cpu = cpu_time_1_thread(model, h, w, runs)
        print(f"{name:<12} {','.join(tasks):<24} {f'{h}x{w}':>9} {total / 1e6:>9.2f} {trainable / 1e6:>8.2f} "
              f"{gmacs:>8.2f} {1000 * seconds:>8.1f} {1 / seconds:>6.2f} {1000 * cpu:>16.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
