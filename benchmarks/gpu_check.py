"""Checks for a machine with an NVIDIA GPU (exits cleanly with a message when CUDA is absent).

1. scan: the CUDA selective scan m2hmx.ssm picks (mamba-ssm's kernel when it imports, else the parallel
   PyTorch scan) vs the sequential definition on the same inputs, and a full Mamba block (d_model 256,
   d_state 32, as in M2H-MX-L) on CUDA vs the CPU path with the same weights: relative error must be < 1e-3.
2. latency / compile: M2H-MX-L, 2 heads (depth + semseg), 480x640, batch 1, bf16 autocast (scan in fp32),
   eager and torch.compile, and the demo preset at 240x320 eager (median of timed forwards; random weights).
3. train: one step of the demo recipe (m2hmx-demo, 4 tasks, 144x192, bf16 autocast, AdamW) as m2hmx-train
   runs it, on a random batch, at several batch sizes: ms per step and images per second.

Run: python -m benchmarks.gpu_check [--runs 20] [--parts scan latency compile train]
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


def check_latency(device, runs: int, eager: bool, compile: bool) -> None:
    from m2hmx.config import get_preset
    from m2hmx.model import M2HMX

    model = M2HMX(get_preset("m2hmx-l", tasks=("semseg", "depth"))).to(device).eval()
    x = torch.randn(1, 3, 480, 640, device=device)
    if eager:
        t = latency(model, x, runs, warmup=3)
        print(f"m2hmx-l 2 heads 480x640 bf16 eager:    {1000 * t:8.1f} ms ({1 / t:.1f} fps)")
        demo = M2HMX(get_preset("m2hmx-demo")).to(device).eval()
        t = latency(demo, torch.randn(1, 3, 240, 320, device=device), runs, warmup=3)
        print(f"m2hmx-demo 4 heads 240x320 bf16 eager: {1000 * t:8.1f} ms ({1 / t:.1f} fps)")
    if compile:
        compiled = torch.compile(model)
        t0 = time.perf_counter()
        latency(compiled, x, 1, warmup=0)
        print(f"torch.compile, first call (compiles): {time.perf_counter() - t0:.0f} s")
        t = latency(compiled, x, 1, warmup=0)
        print(f"torch.compile, second call: {1000 * t:.1f} ms")
        t = latency(compiled, x, runs, warmup=0)
        print(f"m2hmx-l 2 heads 480x640 bf16 compiled: {1000 * t:8.1f} ms ({1 / t:.1f} fps)")


def random_batch(config, batch: int, h: int, w: int, device) -> dict:
    """A training batch of the shapes and ranges FrameDataset produces."""
    from m2hmx.data.synthetic import default_intrinsics

    normals = torch.nn.functional.normalize(torch.randn(batch, 3, h, w), dim=1)
    K = torch.as_tensor(default_intrinsics(h, w), dtype=torch.float32).expand(batch, 3, 3).contiguous()
    out = {"image": torch.randn(batch, 3, h, w), "K": K,
           "semseg": torch.randint(0, config.num_classes, (batch, h, w)),
           "depth": torch.rand(batch, 1, h, w) * 4 + 0.5, "normals": normals,
           "edge": (torch.rand(batch, 1, h, w) < 0.1).float()}
    return {k: v.to(device) for k, v in out.items()}


def check_train_step(device, batch_sizes=(4, 16, 64), runs: int = 20) -> None:
    from m2hmx.losses import LossWeights, MultiTaskLoss
    from m2hmx.model import build_model
    from m2hmx.train import TrainModule, build_model_config, load_config, param_groups

    cfg = load_config("demo")
    config = build_model_config(cfg.model)
    h, w = config.image_size
    criterion = MultiTaskLoss(config.tasks, config.min_depth, config.max_depth, LossWeights(**cfg.loss))
    module = TrainModule(build_model(config), criterion, "cuda" if device.type == "cuda" else None).to(device)
    optimizer = torch.optim.AdamW(param_groups(module, cfg.optim), betas=cfg.optim.betas)

    def step(batch):
        loss, _ = module(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        return loss

    print(f"demo train step ({config.name}, {len(config.tasks)} tasks, {h}x{w}, "
          f"{'bf16 autocast' if device.type == 'cuda' else 'fp32'}, AdamW):")
    for bs in batch_sizes:
        batch = random_batch(config, bs, h, w, device)
        for _ in range(3):
            loss = step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            loss = step(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        t = statistics.median(times)
        mem = f", peak {torch.cuda.max_memory_allocated() / 2 ** 30:.1f} GiB" if device.type == "cuda" else ""
        print(f"  batch {bs:3d}: {1000 * t:7.1f} ms/step, {bs / t:7.1f} images/s, loss {loss.item():.3f}{mem}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--parts", nargs="+", choices=["scan", "latency", "compile", "train"],
                        default=["scan", "latency", "compile", "train"])
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing to check.")
        return 0
    device = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    ok = check_scan(device) if "scan" in args.parts else True
    if "latency" in args.parts or "compile" in args.parts:
        check_latency(device, args.runs, "latency" in args.parts, "compile" in args.parts)
    if "train" in args.parts:
        check_train_step(device, runs=args.runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
