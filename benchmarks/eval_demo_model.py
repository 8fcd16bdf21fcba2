"""Held-out metrics of a demo checkpoint, as the model card reports them: ``m2hmx-eval`` on the generated rooms
that the training recipe may not use (seeds from ``FIRST_HELD_OUT_SEED`` up), all together one test set, as

    m2hmx-eval --checkpoint CKPT --dataset synthetic:{100000..100019} --stride 20

Run: ``.venv/bin/python -m benchmarks.eval_demo_model [--checkpoint CKPT] [--write]``. ``--write`` also rewrites
``assets/m2hmx-demo.metrics.json`` (with the 10-frame subset that ``tests/training/test_demo_model.py``
reproduces) and the prediction grid ``docs/demo_predictions.png``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from m2hmx.data.sources import open_source
from m2hmx.data.synthetic import FIRST_HELD_OUT_SEED
from m2hmx.evaluate import evaluate, format_report, write_json
from m2hmx.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]
ROOMS = range(FIRST_HELD_OUT_SEED, FIRST_HELD_OUT_SEED + 20)
STRIDE = 20  # 15 frames of each room's 300
SUBSET = {"dataset": f"synthetic:{FIRST_HELD_OUT_SEED}", "stride": 30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "assets" / "m2hmx-demo.safetensors"))
    parser.add_argument("--write", action="store_true", help="rewrite the bundled model's metrics file and grid")
    args = parser.parse_args()
    predictor = Predictor.from_checkpoint(args.checkpoint)
    heldout = evaluate_rooms(predictor, [f"synthetic:{seed}" for seed in ROOMS], STRIDE,
                             str(ROOT / "docs" / "demo_predictions.png") if args.write else None)
    print(format_report(heldout))
    if args.write:
        subset = evaluate_rooms(predictor, [SUBSET["dataset"]], SUBSET["stride"])
        doc = {"model": "m2hmx-demo",
               "note": f"m2hmx-eval --checkpoint assets/m2hmx-demo.safetensors --dataset synthetic:{{{ROOMS[0]}.."
                       f"{ROOMS[-1]}}} --stride {STRIDE} (benchmarks/eval_demo_model.py): the held-out rooms as one "
                       "test set, and per_source each room's own numbers; test_subset is what "
                       "tests/training/test_demo_model.py reproduces",
               "heldout": heldout, "test_subset": {**SUBSET, "results": subset}}
        write_json(doc, ROOT / "assets" / "m2hmx-demo.metrics.json")


def evaluate_rooms(predictor: Predictor, specs: list[str], stride: int, grid: str | None = None) -> dict:
    sources = [open_source(spec) for spec in specs]
    config = predictor.model.config
    try:
        return evaluate(predictor, sources, config.min_depth, config.max_depth, stride=stride, grid_path=grid,
                        progress=False)
    finally:
        for source in sources:
            source.close()


if __name__ == "__main__":
    main()
