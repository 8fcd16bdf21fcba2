"""Measuring the network: parameters, GMACs (``torch.utils.flop_counter.FlopCounterMode`` on the meta device,
MACs = FLOPs / 2; the selective scan runs shape only there and is not counted), CPU latency and a per-part
latency breakdown. ``m2hmx-profile`` (``m2hmx.cli.profile``) and ``benchmarks/bench_network.py`` print these."""
from __future__ import annotations

from pathlib import Path

from m2hmx import M2HMXError

TASK_ALIASES = {"edges": "edge", "normal": "normals", "seg": "semseg", "semantics": "semseg"}


class ProfileError(M2HMXError, RuntimeError):
    pass


def resolve_config(model: str, tasks: str | None):
    import dataclasses

    from m2hmx.config import PRESETS, ConfigError, get_preset

    if model in PRESETS:
        config = get_preset(model)
    elif Path(model).is_file():
        from m2hmx.checkpoint import read_checkpoint_info

        config, _ = read_checkpoint_info(model)
    else:
        raise ProfileError(f"--model '{model}' is neither a preset ({', '.join(PRESETS)}) nor a checkpoint file")
    if tasks:
        wanted = tuple(TASK_ALIASES.get(t.strip(), t.strip()) for t in tasks.split(",") if t.strip())
        if model not in PRESETS and set(wanted) != set(config.tasks):
            raise ProfileError(f"--tasks {tasks}: the checkpoint {model} has tasks {','.join(config.tasks)}")
        try:
            config = dataclasses.replace(config, tasks=wanted)
        except ConfigError as exc:
            raise ProfileError(f"--tasks {tasks}: {exc}") from None
    return config


def count_params(config) -> tuple[int, int]:
    import torch

    from m2hmx.model import M2HMX

    with torch.device("meta"):
        model = M2HMX(config)
    return (sum(p.numel() for p in model.parameters()),
            sum(p.numel() for p in model.parameters() if p.requires_grad))


def count_macs(config, height: int, width: int) -> float:
    """GMACs of one eval forward at batch 1 (meta device: no memory, no compute)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from m2hmx.model import M2HMX

    with torch.device("meta"):
        model = M2HMX(config).eval()
        x = torch.zeros(1, 3, height, width)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)  # the scan runs shape only on meta (m2hmx.ssm.scan_backend): the counter does not count it
    return counter.get_total_flops() / 2e9


def measure_latency(model, height: int, width: int, runs: int = 5, warmup: int = 2) -> float:
    """Median seconds of an eval forward on CPU (batch 1) after ``warmup`` forwards."""
    import statistics
    import time

    import torch

    model = model.eval()
    x = torch.randn(1, 3, height, width)
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            t = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append(time.perf_counter() - t)
    return statistics.median(times)


def module_breakdown(model, height: int, width: int, runs: int = 5, outputs=None) -> list[tuple[str, float]]:
    """Median milliseconds of each part of an eval forward on CPU (batch 1), from forward hooks: backbone, HFA,
    each decoder level's register-gated Mamba (its scan block separately), the task branches, each head, and
    the rest (full-size resizes, normalisation, edge refine). ``outputs``: ``M2HMX.forward``'s."""
    import statistics
    import time

    import torch

    model = model.eval()
    parts = {"backbone": model.backbone, "HFA": model.hfa}
    for k, (rgm, stride) in enumerate(zip(model.decoder.rgm, model.hfa.strides)):
        parts[f"decoder level s{stride}: RGM"] = rgm
        parts[f"decoder level s{stride}: Mamba (in RGM)"] = rgm.mamba
    parts["decoder (all)"] = model.decoder
    for task, head in model.heads.items():
        parts[f"head {task}"] = head
    spent: dict[str, float] = {}
    started: dict[str, float] = {}
    handles = []
    for name, module in parts.items():
        handles.append(module.register_forward_pre_hook(
            lambda m, a, n=name: started.__setitem__(n, time.perf_counter())))
        handles.append(module.register_forward_hook(
            lambda m, a, o, n=name: spent.__setitem__(n, spent.get(n, 0.0) + time.perf_counter() - started[n])))
    x = torch.randn(1, 3, height, width)
    samples: dict[str, list[float]] = {}
    try:
        with torch.inference_mode():
            model(x, outputs)
            for _ in range(runs):
                spent.clear()
                t = time.perf_counter()
                model(x, outputs)
                total = time.perf_counter() - t
                rgms = sum(v for k, v in spent.items() if k.endswith(": RGM"))
                spent["decoder task branches"] = spent["decoder (all)"] - rgms
                spent["outputs (resize, normalise, edge refine)"] = total - sum(
                    v for k, v in spent.items() if k in ("backbone", "HFA", "decoder (all)") or k.startswith("head "))
                spent["total"] = total
                for k, v in spent.items():
                    samples.setdefault(k, []).append(1000 * v)
    finally:
        for h in handles:
            h.remove()
    order = [k for k in samples if k.startswith(("backbone", "HFA", "decoder level"))] + [
        "decoder task branches", "decoder (all)"] + [k for k in samples if k.startswith("head ")] + [
        "outputs (resize, normalise, edge refine)", "total"]
    return [(k, statistics.median(samples[k])) for k in order]


def network(model: str, config):
    """The preset with random weights, or the checkpoint's model."""
    from m2hmx.config import PRESETS

    if model in PRESETS:
        from m2hmx.model import M2HMX
        return M2HMX(config)
    from m2hmx.checkpoint import load_model
    return load_model(model)


def profile(model: str, tasks: str | None, height: int, width: int, latency: bool = True, runs: int = 5) -> dict:
    if height <= 0 or width <= 0 or height % 16 or width % 16:
        raise ProfileError(f"--height {height} --width {width}: both must be positive multiples of 16")
    config = resolve_config(model, tasks)
    total, trainable = count_params(config)
    result = {"model": model, "tasks": list(config.tasks), "height": height, "width": width,
              "params_m": round(total / 1e6, 3), "trainable_m": round(trainable / 1e6, 3),
              "gmacs": round(count_macs(config, height, width), 2), "latency_ms": None}
    if latency:
        import torch

        net = network(model, config)
        result["latency_ms"] = round(1000 * measure_latency(net, height, width, runs), 1)
        result["threads"] = torch.get_num_threads()
    return result
