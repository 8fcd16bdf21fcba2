"""``m2hmx-eval --checkpoint CKPT --dataset SPEC [SPEC ...] [--json OUT] [--grid PNG]``: multi-task metrics."""
from __future__ import annotations

import argparse
import sys

import m2hmx  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
from m2hmx.cli.args import check_input, check_output_file, positive_int, run_reported


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="m2hmx-eval", description="Evaluate a checkpoint on a dataset (NYUDv2 protocol: mIoU, pixel acc, "
        "depth RMSE/AbsRel/delta, normal angles, ODS-like edge F, per-frame depth scale consistency)")
    parser.add_argument("--checkpoint", required=True, help="model .safetensors (e.g. assets/m2hmx-demo.safetensors)")
    parser.add_argument("--dataset", required=True, nargs="+",
                        help="source specs for m2hmx.data.sources.open_source (scene folder, .sens, NYUDv2 .mat, "
                        "synthetic:SEED, ...); several are evaluated as one test set, e.g. synthetic:{100000..100019}")
    parser.add_argument("--data-root", default=None, help="root for short specs like scannet/scene0011")
    parser.add_argument("--max-frames", type=positive_int, default=None,
                        help="evaluate at most this many frames of each")
    parser.add_argument("--stride", type=positive_int, default=1, help="use every N-th frame")
    parser.add_argument("--min-depth", type=float, default=None, help="depth range (default: the model's)")
    parser.add_argument("--max-depth", type=float, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--grid", default=None,
                        help="write a PNG of input / prediction / ground truth here (frames of the first dataset)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.min_depth is not None and args.max_depth is not None and not 0 <= args.min_depth < args.max_depth:
        parser.error(f"--min-depth {args.min_depth} / --max-depth {args.max_depth}: need 0 <= min < max")
    from m2hmx.checkpoint import CheckpointError
    from m2hmx.data import DatasetError
    from m2hmx.evaluate import EvalError, format_report, write_json

    def work() -> None:
        check_input(args.checkpoint, "--checkpoint", file=True)  # inputs and outputs: before any work
        for spec in args.dataset:
            check_input(spec if args.data_root is None else None, "--dataset")
        check_output_file(args.json, "--json")
        check_output_file(args.grid, "--grid")
        results = _evaluate(args)
        results["checkpoint"] = args.checkpoint
        print(format_report(results))
        if args.json:
            write_json(results, args.json)

    # a file that does not load, a corrupt frame; the results file that cannot be written
    return run_reported("m2hmx-eval", work, failure=(CheckpointError, DatasetError, EvalError, OSError))


def _evaluate(args) -> dict:
    from m2hmx.data.sources import open_source
    from m2hmx.evaluate import evaluate
    from m2hmx.predictor import Predictor

    sources = []
    try:
        predictor = Predictor.from_checkpoint(args.checkpoint, args.device)
        config = predictor.model.config
        for spec in args.dataset:
            sources.append(open_source(spec, args.data_root))
        return evaluate(predictor, sources, args.min_depth if args.min_depth is not None else config.min_depth,
                        args.max_depth if args.max_depth is not None else config.max_depth,
                        max_frames=args.max_frames, stride=args.stride, grid_path=args.grid,
                        progress=not args.no_progress)
    finally:
        for source in sources:
            source.close()


if __name__ == "__main__":
    sys.exit(main())
