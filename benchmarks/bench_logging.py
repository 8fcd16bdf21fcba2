"""What Rerun logging and ROS 2 bag writing cost ``m2hmx-map``: wall time per frame and bytes per frame.

Run: ``.venv/bin/python -m benchmarks.bench_logging [--frames N] [--seed S]``. Three ``m2hmx-map`` runs on the
same generated room with the scene's own depth (no network): plain, ``--rerun-save``, ``--rosbag``; the
mapping work is the same, so the differences are the logging (incl. the Rerun map snapshots at the
snapshot rate). Validation seeds (200000+), not the held-out rooms.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
from pathlib import Path


def run(args: list[str], out: Path) -> float:
    from app.map_cli import main

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*args, "--out", str(out), "--no-progress"]) == 0
    wall = time.perf_counter() - t0
    json.loads((out / "metrics.json").read_text())
    return wall


def size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--seed", type=int, default=200003)
    a = p.parse_args()
    base = ["--dataset", f"synthetic:{a.seed}", "--depth", "sensor", "--max-frames", str(a.frames)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run(base + ["--max-frames", "2"], tmp / "warm")  # imports and Open3D start-up out of the timings
        rows = []
        for name, extra, target in (("plain", [], None),
                                    ("--rerun-save", ["--rerun-save", str(tmp / "r.rrd")], tmp / "r.rrd"),
                                    ("--rosbag", ["--rosbag", str(tmp / "bag")], tmp / "bag")):
            wall = run(base + extra, tmp / name.strip("-"))
            rows.append((name, wall, None if target is None else size(target)))
    print(f"# {a.frames} frames, synthetic:{a.seed} 240x320, sensor depth; load average "
          f"{os.getloadavg()[0]:.1f} at the end")
    print("| run | wall s | ms / frame | vs plain | MB written | kB / frame |")
    print("|---|---|---|---|---|---|")
    plain = rows[0][1]
    for name, wall, nbytes in rows:
        mb = "-" if nbytes is None else f"{nbytes / 1e6:.1f}"
        kb = "-" if nbytes is None else f"{nbytes / 1e3 / a.frames:.0f}"
        print(f"| {name} | {wall:.1f} | {1000 * wall / a.frames:.0f} | {wall / plain:.2f}x | {mb} | {kb} |")


if __name__ == "__main__":
    main()
