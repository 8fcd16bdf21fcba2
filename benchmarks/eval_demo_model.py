"""Held-out metrics of a demo checkpoint, as the model card reports them: ``m2hmx-eval``'s evaluation on generated
rooms the training recipe may not use (seeds from ``FIRST_HELD_OUT_SEED`` up), one run per room, and the mean over
rooms.

Run: ``.venv/bin/python -m benchmarks.eval_demo_model [--checkpoint CKPT] [--write]``. ``--write`` also rewrites
``assets/m2hmx-demo.metrics.json`` (with the 10-frame subset that ``tests/training/test_demo_model.py``
reproduces) and the prediction grid ``docs/demo_predictions.png``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from m2hmx.data.sources import open_source
from m2hmx.data.synthetic import FIRST_HELD_OUT_SEED
from m2hmx.evaluate import evaluate, write_json
from m2hmx.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]
ROOMS = range(FIRST_HELD_OUT_SEED, FIRST_HELD_OUT_SEED + 20)
STRIDE = 20  # 15 frames of each room's 300
SUBSET = {"dataset": f"synthetic:{FIRST_HELD_OUT_SEED}", "stride": 30}
MEAN_KEYS = [("semseg", "miou", "mIoU"), ("semseg", "pixel_acc", "pix acc"), ("depth", "rmse", "RMSE m"),
             ("depth", "abs_rel", "AbsRel"), ("depth", "delta1", "d<1.25"), ("depth", "scale_median_mean", "scale"),
             ("depth", "scale_median_std", "scale std"), ("normals", "mean", "nrm mean"),
             ("normals", "median", "nrm med"), ("edge", "f_ods", "edge F")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "assets" / "m2hmx-demo.safetensors"))
    parser.add_argument("--write", action="store_true", help="rewrite the bundled model's metrics file and grid")
    args = parser.parse_args()
    report(Predictor.from_checkpoint(args.checkpoint), args.write)


def evaluate_room(predictor: Predictor, dataset: str, stride: int, grid: str | None = None) -> dict:
    source = open_source(dataset)
    config = predictor.model.config
    try:
        return evaluate(predictor, source, config.min_depth, config.max_depth, stride=stride, grid_path=grid,
                        progress=False)
    finally:
        source.close()


def report(predictor: Predictor, write: bool) -> None:
    grid = str(ROOT / "docs" / "demo_predictions.png") if write else None
    rooms = {str(seed): evaluate_room(predictor, f"synthetic:{seed}", STRIDE, grid if seed == ROOMS[0] else None)
             for seed in ROOMS}
    mean = {f"{s}.{k}": sum(r[s][k] for r in rooms.values()) / len(rooms) for s, k, _ in MEAN_KEYS}
    print(f"\n{'room':>8}" + "".join(f"{label:>10}" for _, _, label in MEAN_KEYS))
    for seed, r in rooms.items():
        print(f"{seed:>8}" + "".join(f"{r[s][k]:10.4f}" for s, k, _ in MEAN_KEYS))
    print(f"{'mean':>8}" + "".join(f"{v:10.4f}" for v in mean.values()))
    names = next(iter(rooms.values()))["class_names"]
    print("\nper-class IoU, mean over the rooms that have the class (rooms):")
    for c, name in enumerate(names):
        ious = [r["semseg"]["iou_per_class"][c] for r in rooms.values() if r["semseg"]["iou_per_class"][c] is not None]
        if ious:
            print(f"  {name:16s} {sum(ious) / len(ious):.3f} ({len(ious)})")
    if write:
        subset = evaluate_room(predictor, SUBSET["dataset"], SUBSET["stride"])
        doc = {"model": "m2hmx-demo",
               "note": f"m2hmx-eval --checkpoint assets/m2hmx-demo.safetensors --dataset synthetic:SEED --stride "
                       f"{STRIDE} on held-out rooms {ROOMS[0]}-{ROOMS[-1]}, means over rooms "
                       "(benchmarks/eval_demo_model.py); test_subset is what tests/training/test_demo_model.py "
                       "reproduces",
               "heldout_mean": mean, "heldout": rooms, "test_subset": {**SUBSET, "results": subset}}
        write_json(doc, ROOT / "assets" / "m2hmx-demo.metrics.json")


if __name__ == "__main__":
    main()
