"""Selective scan and Mamba block on CPU: the numba scan vs the sequential loop (and mambapy when installed).

Run: .venv/bin/python -m benchmarks.bench_ssm [--repeats 5]
Prints median milliseconds per call; compare ratios (absolute numbers depend on the machine's load).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from unittest import mock

import numba
import torch

from m2hmx import ssm


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (numba compile or cache load, allocator)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _scan_inputs(batch, d_inner, d_state, length, grad):
    g = torch.Generator().manual_seed(0)
    u = torch.randn(batch, d_inner, length, generator=g)
    delta = torch.randn(batch, d_inner, length, generator=g) - 2.0
    A = -torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)
    B = torch.randn(batch, d_state, length, generator=g)
    C = torch.randn(batch, d_state, length, generator=g)
    D = torch.ones(d_inner)
    z = torch.randn(batch, d_inner, length, generator=g)
    bias = torch.zeros(d_inner)
    tensors = [u, delta, A, B, C, D, z, bias]
    for t in tensors:
        t.requires_grad_(grad)
    return tensors


def _scan_call(fn, tensors, backward):
    u, delta, A, B, C, D, z, bias = tensors

    def run():
        y = fn(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True)
        if backward:
            y.sum().backward()
    return run


def _block_call(block, x, backward):
    def run():
        if backward:
            block(x).sum().backward()
        else:
            with torch.inference_mode():
                block(x)
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    load_before = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    rows = []

    for backward in (False, True):
        tensors = _scan_inputs(1, 128, 16, 4800, grad=backward)
        what = "scan fwd+bwd" if backward else "scan fwd"
        shape = "B1 D128 N16 L4800"
        ref = _median_ms(_scan_call(ssm.selective_scan_reference, tensors, backward), args.repeats)
        fast = _median_ms(_scan_call(ssm.selective_scan, tensors, backward), args.repeats)
        rows.append((what, shape, "sequential loop (fp32)", ref, 1.0))
        rows.append((what, shape, "numba scan", fast, ref / fast))

    try:
        from mambapy.mamba import MambaBlock, MambaConfig
    except ImportError:
        MambaBlock = None
    for d_model, d_state, length in ((64, 16, 4800), (256, 32, 1200)):
        block = ssm.Mamba(d_model, d_state=d_state)
        x = torch.randn(1, length, d_model)
        shape = f"B1 d_model{d_model} N{d_state} L{length}"
        for backward in (False, True):
            what = "Mamba fwd+bwd" if backward else "Mamba fwd (inference)"
            with mock.patch.object(ssm, "selective_scan", ssm.selective_scan_reference):
                ref = _median_ms(_block_call(block, x, backward), args.repeats)
            rows.append((what, shape, "sequential loop (fp32)", ref, 1.0))
            if MambaBlock is not None:
                other = MambaBlock(MambaConfig(d_model=d_model, n_layers=1, d_state=d_state, pscan=True))
                other.load_state_dict(block.state_dict())
                t = _median_ms(_block_call(other, x, backward), args.repeats)
                rows.append((what, shape, "mambapy (Blelloch pscan)", t, ref / t))
            fast = _median_ms(_block_call(block, x, backward), args.repeats)
            rows.append((what, shape, "numba scan", fast, ref / fast))

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"torch {torch.__version__}, numba {numba.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, load average {load} (before: {load_before}); median of {args.repeats}")
    print(f"{'what':<22} {'shape':<26} {'implementation':<26} {'ms':>10} {'speed-up':>9}")
    for what, shape, impl, ms, speedup in rows:
        print(f"{what:<22} {shape:<26} {impl:<26} {ms:>10.1f} {speedup:>8.1f}x")


if __name__ == "__main__":
    main()
