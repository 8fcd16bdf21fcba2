"""Issue 26's targets for an adapted model: depth on later parts of the 7-Scenes kitchen, mapping with its depth,
and no forgetting on the model card's held-out generated rooms, each against the starting model.

    python -m benchmarks.bench_adapt --adapt runs/rk.safetensors             # adapt on frames 0-299 first (15 min)
    python -m benchmarks.bench_adapt --checkpoint runs/rk.safetensors --only depth map forgetting

Parts (``--only``): ``depth``: ``m2hmx-eval`` on frames 300-599 and 600-999 (every ``--stride``-th); ``map``:
``m2hmx-map --depth pred`` on frames 600-999 with the default odometry (vo: the recording has no IMU);
``forgetting``: the card's command (``benchmarks/eval_demo_model.py``: rooms 100000-100019, stride 20). The frame
ranges are folders of links to the shared recording (``m2hmx-eval`` and ``m2hmx-map`` read whole folders), made in a
temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from m2hmx.config import bundled_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TRAIN = DATA / "7scenes-redkitchen"  # frames 0-299
LATER = DATA / "7scenes-redkitchen-300-999"
BUNDLED = bundled_checkpoint()


def frames_folder(root: Path, first: int, last: int) -> Path:
    """A 7-Scenes folder of links to frames ``first..last`` of ``LATER``."""
    folder = root / f"redkitchen-{first}-{last}"
    folder.mkdir(parents=True, exist_ok=True)
    names = ["camera-intrinsics.txt"] + [f"frame-{i:06d}.{kind}" for i in range(first, last + 1)
                                         for kind in ("color.jpg", "depth.png", "pose.txt")]
    for name in names:
        if not (folder / name).exists():
            os.symlink(LATER / name, folder / name)
    return folder


def run(cmd: list[str]) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", *cmd], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:1])} failed: {(done.stderr or done.stdout).strip().splitlines()[-1]}")
    return done.stdout


def depth(checkpoint: str, folder: Path, stride: int, work: Path) -> dict:
    out = work / f"eval-{Path(checkpoint).stem}-{folder.name}.json"
    run(["m2hmx.cli.evaluate", "--checkpoint", checkpoint, "--dataset", str(folder), "--stride", str(stride),
         "--json", str(out), "--no-progress"])
    return json.loads(out.read_text())["depth"]


def mapping(checkpoint: str, folder: Path, work: Path) -> dict:
    out = work / f"map-{Path(checkpoint).stem}"
    run(["app.map_cli", "--dataset", str(folder), "--depth", "pred", "--checkpoint", checkpoint, "--out", str(out),
         "--no-progress"])
    return json.loads((out / "metrics.json").read_text())


def forgetting(checkpoint: str) -> dict:
    from benchmarks.eval_demo_model import DEFAULT_STRIDE, evaluate_rooms
    from m2hmx.data.splits import SPLITS
    from m2hmx.predictor import Predictor

    rooms = [f"synthetic:{s}" for s in SPLITS["heldout"]]
    r = evaluate_rooms(Predictor.from_checkpoint(checkpoint), rooms, DEFAULT_STRIDE["heldout"])
    return {"miou": r["semseg"]["miou"], "pixel_acc": r["semseg"]["pixel_acc"], "abs_rel": r["depth"]["abs_rel"],
            "delta1": r["depth"]["delta1"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="an adapted model to score")
    parser.add_argument("--adapt", metavar="OUT", help="first adapt the bundled model on frames 0-299 into OUT")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--baseline", default=str(BUNDLED), help="the starting model (bundled)")
    parser.add_argument("--only", nargs="+", default=["depth", "map", "forgetting"],
                        choices=["depth", "map", "forgetting"])
    parser.add_argument("--stride", type=int, default=5, help="every N-th frame for the depth numbers (5)")
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"needs the shared recordings at {DATA}")
    checkpoint = args.checkpoint
    if args.adapt:
        t0 = time.perf_counter()
        print(run(["m2hmx.cli.adapt", "--recording", str(TRAIN), "--out", args.adapt, "--minutes", str(args.minutes),
                   "--no-progress"]).strip())
        print(f"adapted in {time.perf_counter() - t0:.0f} s, load average {os.getloadavg()[0]:.1f}")
        checkpoint = args.adapt
    if not checkpoint:
        raise SystemExit("give --checkpoint or --adapt")
    models = {"bundled": args.baseline, "adapted": checkpoint}
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "checkpoint": checkpoint}
    with tempfile.TemporaryDirectory(prefix="bench-adapt-") as tmp:
        work = Path(tmp)
        ranges = {"300-599": frames_folder(work, 300, 599), "600-999": frames_folder(work, 600, 999)}
        for part in args.only:
            for name, ckpt in models.items():
                t0 = time.perf_counter()
                if part == "depth":
                    value = {r: depth(ckpt, folder, args.stride, work) for r, folder in ranges.items()}
                elif part == "map":
                    value = mapping(ckpt, ranges["600-999"], work)
                else:
                    value = forgetting(ckpt)
                results.setdefault(part, {})[name] = value
                print(f"{part} {name}: {time.perf_counter() - t0:.0f} s, load average {os.getloadavg()[0]:.1f}",
                      flush=True)
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def table(results: dict) -> str:
    lines = [f"{results['date']}, {results['checkpoint']}", "",
             "| measure | bundled | adapted |", "|---|---|---|"]
    for r in ("300-599", "600-999"):
        if "depth" in results:
            b, a = (results["depth"][m][r] for m in ("bundled", "adapted"))
            lines.append(f"| frames {r}: AbsRel / d<1.25 / scale | {b['abs_rel']:.3f} / {b['delta1']:.3f} / "
                         f"{b['scale_median_mean']:.2f} | {a['abs_rel']:.3f} / {a['delta1']:.3f} / "
                         f"{a['scale_median_mean']:.2f} |")
    if "map" in results:
        cells = [f"{m['ate_rmse_m'] * 100:.1f} cm, {m['tracking_failures']} failures"
                 for m in (results["map"]["bundled"], results["map"]["adapted"])]
        lines.append(f"| m2hmx-map --depth pred, frames 600-999: ATE | {cells[0]} | {cells[1]} |")
    if "forgetting" in results:
        b, a = results["forgetting"]["bundled"], results["forgetting"]["adapted"]
        lines.append(f"| held-out rooms 100000-100019: mIoU / AbsRel | {b['miou']:.3f} / {b['abs_rel']:.3f} | "
                     f"{a['miou']:.3f} / {a['abs_rel']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
