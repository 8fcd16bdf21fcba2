"""``m2hmx-profile --model NAME --tasks depth,semseg[,normals,edge] --height H --width W [--json]``.

Prints total / trainable parameters, GMACs (``torch.utils.flop_counter.FlopCounterMode`` on the meta device,
MACs = FLOPs / 2; the selective scan is not a counted op) and the median CPU latency of one eval forward
(batch 1, random weights for a preset) unless ``--no-latency``. NAME is a preset or a checkpoint file.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from m2hmx.cli.args import positive_int

TASK_ALIASES = {"edges": "edge", "normal": "normals", "seg": "semseg", "semantics": "semseg"}


class ProfileError(RuntimeError):
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
    from unittest import mock

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from m2hmx.model import M2HMX

    def shape_only_scan(u, *args, **kwargs):  # the counter ignores the scan; on meta it would loop over L
        return torch.empty_like(u)

    with torch.device("meta"):
        model = M2HMX(config).eval()
        x = torch.zeros(1, 3, height, width)
    with torch.no_grad(), FlopCounterMode(display=False) as counter, \
            mock.patch("m2hmx.ssm.selective_scan", shape_only_scan):
        model(x)
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


def _network(model: str, config):
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

        net = _network(model, config)
        result["latency_ms"] = round(1000 * measure_latency(net, height, width, runs), 1)
        result["threads"] = torch.get_num_threads()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="m2hmx-profile", description=__doc__.split("\n\n")[1])
    parser.add_argument("--model", required=True, help="preset (m2hmx-l/-b/-s/-demo) or checkpoint file")
    parser.add_argument("--tasks", default=None, help="comma list from semseg,depth,normals,edge (default: all "
                        "of the preset / the checkpoint's)")
    parser.add_argument("--height", type=int, default=None, help="input height (default: training size)")
    parser.add_argument("--width", type=int, default=None, help="input width (default: training size)")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads for the latency")
    parser.add_argument("--runs", type=positive_int, default=5, help="timed forwards after 2 warm-up ones")
    parser.add_argument("--no-latency", action="store_true", help="only parameters and GMACs")
    parser.add_argument("--breakdown", action="store_true", help="also the latency of each part of the network")
    parser.add_argument("--channels-last", action="store_true", help="run channels-last, as the Predictor does on CPU")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        if args.height is None or args.width is None:
            h, w = resolve_config(args.model, args.tasks).image_size
            args.height, args.width = args.height or h, args.width or w
        r = profile(args.model, args.tasks, args.height, args.width, not args.no_latency, args.runs)
    except Exception as exc:  # one line for the user
        from m2hmx.cli.args import FAILURE, USAGE, report
        from m2hmx.config import ConfigError

        # a preset, size or task list wrong on its face: usage; a checkpoint file that does not load: failure
        return report("m2hmx-profile", exc, USAGE if isinstance(exc, (ProfileError, ConfigError)) else FAILURE)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"model {r['model']}  tasks {','.join(r['tasks'])}  input {r['height']}x{r['width']}")
        print(f"params     {r['params_m']:.2f} M ({r['trainable_m']:.2f} M trainable)")
        print(f"GMACs      {r['gmacs']:.2f}")
        if r["latency_ms"] is not None:
            print(f"latency    {r['latency_ms']:.1f} ms (CPU, {r['threads']} threads, median of {args.runs})")
    if args.breakdown:
        import torch

        config = resolve_config(args.model, args.tasks)
        net = _network(args.model, config)
        if args.channels_last:
            net = net.to(memory_format=torch.channels_last)
        print(f"per part, median ms of {args.runs} forwards (CPU, {torch.get_num_threads()} threads"
              f"{', channels-last' if args.channels_last else ''}):")
        for name, ms in module_breakdown(net, args.height, args.width, args.runs):
            print(f"  {name:<44} {ms:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
