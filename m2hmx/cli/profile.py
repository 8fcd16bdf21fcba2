"""``m2hmx-profile --model NAME --tasks depth,semseg[,normals,edge] --height H --width W [--json]``.

Prints total / trainable parameters, GMACs (``torch.utils.flop_counter.FlopCounterMode`` on the meta device,
MACs = FLOPs / 2; the selective scan is not a counted op; ``m2hmx.profiling`` measures) and the median CPU
latency of one eval forward (batch 1, random weights for a preset) unless ``--no-latency``. NAME is a preset or a checkpoint file.
"""
from __future__ import annotations

import argparse
import json
import sys

from m2hmx.cli.args import positive_int
from m2hmx.profiling import ProfileError, module_breakdown, network, profile, resolve_config


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
        net = network(args.model, config)
        if args.channels_last:
            net = net.to(memory_format=torch.channels_last)
        print(f"per part, median ms of {args.runs} forwards (CPU, {torch.get_num_threads()} threads"
              f"{', channels-last' if args.channels_last else ''}):")
        for name, ms in module_breakdown(net, args.height, args.width, args.runs):
            print(f"  {name:<44} {ms:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
