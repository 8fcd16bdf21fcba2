"""Metrics of a demo checkpoint on one range of generated rooms (``m2hmx.data.splits``), all together one test set,
with the spread over rooms: what ``m2hmx-eval --dataset synthetic:{FIRST..LAST} --stride S`` prints, but opening
one room at a time (a few hundred rooms at once hold a ray caster each) and writing each room's numbers as it goes.

    --range val      choices (checkpoints, settings, fixes): 200000-200999, e.g. --rooms 300 --stride 60
    --range test     the model card's numbers, scored only when a model is bundled: 900000-900119 at stride 30
    --range heldout  the card's rooms up to stage 14 (100000-100019), scored after every stage: history only

Run: ``.venv/bin/python -m benchmarks.eval_demo_model --range test [--checkpoint CKPT] [--write]``.
``--rooms-out F`` appends a JSON line per room while it runs; ``--json F`` writes the whole result. ``--write``
(test range only, the bundled model) puts the result into ``assets/m2hmx-demo.metrics.json`` under ``test``,
keeping the older ``heldout`` numbers as history; ``--from-json F`` takes it from an earlier run's ``--json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from m2hmx.config import bundled_checkpoint
from m2hmx.data.sources import open_source
from m2hmx.data.splits import SPLITS, describe
from m2hmx.evaluate import evaluate, format_report, write_json
from m2hmx.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = bundled_checkpoint()
CARD_METRICS = ROOT / "assets" / "m2hmx-demo.metrics.json"
DEFAULT_STRIDE = {"val": 60, "test": 30, "heldout": 20}  # of each room's 300 frames
SUBSET = {"dataset": "synthetic:100000", "stride": 30}  # what tests/training/test_demo_model.py reproduces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--range", required=True, choices=sorted(SPLITS), help="which rooms (m2hmx.data.splits)")
    parser.add_argument("--checkpoint", default=str(BUNDLED))
    parser.add_argument("--rooms", type=int, default=None, help="the range's first N rooms (default: all)")
    parser.add_argument("--stride", type=int, default=None,
                        help="every N-th frame (default: val 60, test 30, heldout 20)")
    parser.add_argument("--rooms-out", type=Path, default=None, help="append each room's numbers here (JSONL)")
    parser.add_argument("--json", type=Path, default=None, help="write the whole result here")
    parser.add_argument("--write", action="store_true", help="put the test range's numbers into the card's file")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="with --write: take the numbers from an earlier run's --json instead of scoring again")
    args = parser.parse_args()
    if args.write and (args.range != "test" or Path(args.checkpoint).resolve() != BUNDLED.resolve()):
        sys.exit("eval_demo_model: error: --write is for the bundled model on --range test")
    seeds = SPLITS[args.range][:args.rooms]
    stride = args.stride or DEFAULT_STRIDE[args.range]
    predictor = Predictor.from_checkpoint(args.checkpoint)
    if args.from_json:
        if not args.write:
            sys.exit("eval_demo_model: error: --from-json is for --write")
        results = json.loads(args.from_json.read_text())
        run = (results.get("range"), results.get("seeds"), results.get("stride"))
        if run != (args.range, [seeds[0], seeds[-1]], stride):
            sys.exit(f"eval_demo_model: error: {args.from_json} is range/seeds/stride {run}, not "
                     f"{(args.range, [seeds[0], seeds[-1]], stride)}")
        write_card_metrics(results, predictor)
        return
    print(f"{describe(args.range)}: scoring {len(seeds)} rooms {seeds[0]}-{seeds[-1]} at stride {stride}",
          flush=True)
    t0 = time.time()

    def log_room(result: dict) -> None:
        d = result.get("depth", {})
        print(f"{result['dataset']:<18} AbsRel {d.get('abs_rel', float('nan')):.4f}  d<1.25 "
              f"{d.get('delta1', float('nan')):.4f}  scale std {d.get('scale_median_std', float('nan')):.4f}  "
              f"mIoU {result.get('semseg', {}).get('miou', float('nan')):.4f}  ({time.time() - t0:.0f} s)",
              flush=True)
        if args.rooms_out:
            with open(args.rooms_out, "a") as f:
                f.write(json.dumps(compact(result)) + "\n")

    results = evaluate_rooms(predictor, [f"synthetic:{seed}" for seed in seeds], stride, on_source=log_room)
    results.update(checkpoint=args.checkpoint, range=args.range, seeds=[seeds[0], seeds[-1]])
    print(format_report(results))
    print(f"{len(seeds)} rooms in {time.time() - t0:.0f} s")
    if args.json:
        write_json(compact(results), args.json)
    if args.write:
        write_card_metrics(results, predictor)


def write_card_metrics(results: dict, predictor: Predictor) -> None:
    """The test range's ``results`` into the card's metrics file, beside the older ``heldout`` numbers."""
    first, last = results["seeds"]
    doc = json.loads(CARD_METRICS.read_text())
    doc["test"] = compact(results)
    doc["note"] = (f"test: m2hmx-eval --checkpoint assets/m2hmx-demo.safetensors --dataset synthetic:{{{first}.."
                   f"{last}}} --stride {results['stride']} (benchmarks/eval_demo_model.py --range test), the model "
                   "card's numbers, with per_source each room's and spread their distribution; heldout: the "
                   "card's rooms 100000-100019 up to stage 14, scored after every stage (history); test_subset "
                   "is what tests/training/test_demo_model.py reproduces")
    doc["test_subset"] = {**SUBSET, "results": evaluate_rooms(predictor, [SUBSET["dataset"]], SUBSET["stride"])}
    write_json(doc, CARD_METRICS)


def compact(results: dict) -> dict:
    """``results`` without the class names repeated in every room (the top level keeps them)."""
    out = {k: v for k, v in results.items() if k != "per_source"}
    if "per_source" in results:
        out["per_source"] = [{k: v for k, v in r.items() if k != "class_names"} for r in results["per_source"]]
    return out


def evaluate_rooms(predictor: Predictor, specs: list[str], stride: int, grid: str | None = None,
                   on_source=None) -> dict:
    """``evaluate`` over ``specs``, each opened when its turn comes and closed when it is done."""
    def opened():
        for spec in specs:
            source = open_source(spec)
            try:
                yield source
            finally:
                source.close()

    config = predictor.model.config
    return evaluate(predictor, opened(), config.min_depth, config.max_depth, stride=stride, grid_path=grid,
                    progress=False, on_source=on_source)


if __name__ == "__main__":
    main()
