"""Checks for a machine with an NVIDIA GPU (exits cleanly with a message when CUDA is absent).

1. Selective scan: mamba-ssm's CUDA kernel (through m2hmx.ssm) vs the pure-PyTorch sequential scan on the
   same inputs, and a full Mamba block (d_model 256, d_state 32, as in M2H-MX-L) on CUDA vs the CPU path
   with the same weights: relative error must be < 1e-3.
2. M2H-MX-L, 2 heads (depth + semseg), 480x640, batch 1, bf16 autocast (scan in fp32): latency with and
   without torch.compile (median of timed forwards after warm-up; random weights).

Run: python -m benchmarks.gpu_check [--runs 20] [--no-compile]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def check_scan(device) -> bool:
    from m2hmx import ssm

    backend = ssm.scan_backend(device)
    print(f"scan backend on {device}: {backend}")
    g = torch.Generator().manual_seed(0)
    b, d, n, length = 1, 512, 32, 4800
    u = torch.randn(b, d, length, generator=g)
    delta = torch.randn(b, d, length, generator=g) - 2.0
    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1)
    B, C = torch.randn(b, n, length, generator=g), torch.randn(b, n, length, generator=g)
    D, z, bias = torch.ones(d), torch.randn(b, d, length, generator=g), torch.zeros(d)
    args = [t.to(device) for t in (u, delta, A, B, C, D, z, bias)]
    fast = ssm.selective_scan(*args[:6], z=args[6], delta_bias=args[7], delta_softplus=True)
    ref = ssm.selective_scan_reference(*args[:6], z=args[6], delta_bias=args[7], delta_softplus=True)
    e1 = rel_err(fast, ref)
    block = ssm.Mamba(256, d_state=32).to(device)
    x = torch.randn(1, 4800, 256, generator=g)
    with torch.no_grad():
        gpu_out = block(x.to(device))
        cpu_out = block.cpu()(x)
    e2 = rel_err(gpu_out, cpu_out)
    ok = e1 < 1e-3 and e2 < 1e-3
    print(f"selective_scan ({backend}) vs sequential reference, L=4800: rel err {e1:.2e}")
    print(f"Mamba block CUDA vs CPU path, same weights, L=4800:        rel err {e2:.2e}")
    print("scan check:", "PASS" if ok else "FAIL")
    return ok


def latency(model, x, runs: int, warmup: int) -> float:
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        for _ in range(warmup):
            model(x)
        torch.cuda.synchronize()
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            model(x)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def check_latency(device, runs: int, compile: bool) -> None:
    from m2hmx.config import get_preset
    from m2hmx.model import M2HMX

    model = M2HMX(get_preset("m2hmx-l", tasks=("semseg", "depth"))).to(device).eval()
    x = torch.randn(1, 3, 480, 640, device=device)
    t = latency(model, x, runs, warmup=3)
    print(f"m2hmx-l 2 heads 480x640 bf16 eager:    {1000 * t:8.1f} ms ({1 / t:.1f} fps)")
    if compile:
        compiled = torch.compile(model)
        t0 = time.perf_counter()
        latency(compiled, x, 1, warmup=2)
        print(f"torch.compile warm-up: {time.perf_counter() - t0:.0f} s")
        t = latency(compiled, x, runs, warmup=1)
        print(f"m2hmx-l 2 heads 480x640 bf16 compiled: {1000 * t:8.1f} ms ({1 / t:.1f} fps)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing to check.")
        return 0
    device = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    ok = check_scan(device)
    check_latency(device, args.runs, not args.no_compile)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
