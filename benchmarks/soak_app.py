"""Soak run of the viewer: N frames of the generated room, walked back and forth (a camera looping in a finite
room), with the resident memory of the GUI process and of the mapping process sampled as it goes.

    .venv/bin/python -m benchmarks.soak_app [--frames 5000] [--size 240x320] [--network]

Once the camera has seen the whole room the map stops growing; the question is whether memory stops
growing too. The report compares the memory growth rate over the run's last half with the map's growth
there. Needs an X display with OpenGL (an Xvfb is started when $DISPLAY is unset).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_app import ensure_display, model_checkpoint

SAMPLE_S = 2.0
FLAT_MB_PER_1000 = 5.0  # memory growth below this (per 1000 frames) counts as flat
MIN_JUDGED_FRAMES = 1000  # the second half must be at least this long for a verdict


def rss_mb(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=5000)
    p.add_argument("--size", default="240x320")
    p.add_argument("--scene-frames", type=int, default=300, help="length of one pass through the room (300)")
    p.add_argument("--network", action="store_true",
                   help="run the network too (the bundled model, else random weights of its architecture)")
    args = p.parse_args(argv)
    load = os.getloadavg()[0]
    ensure_display()
    from PyQt6 import QtCore, QtWidgets

    from app.sources import SourceSpec
    from app.session import ViewerOptions
    from app.window import MainWindow

    QtCore.QCoreApplication.setAttribute(QtCore.Qt.ApplicationAttribute.AA_ShareOpenGLContexts)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    tmp = Path(tempfile.mkdtemp(prefix="soak_app_"))
    checkpoint = model_checkpoint(tmp)[0] if args.network else None
    size = tuple(int(v) for v in args.size.split("x"))
    opts = ViewerOptions(source=SourceSpec("demo", demo_frames=args.scene_frames), checkpoint=checkpoint, size=size,
                         loop_frames=args.frames, output_dir=str(tmp))
    window = MainWindow(opts)
    window.resize(1560, 960)
    window.show()
    done = []
    window.run_finished.connect(lambda: done.append(True))
    samples = []  # (seconds, frames read, frames mapped, map vertices, GUI MB, mapping MB)
    t0 = next_sample = time.monotonic()
    while not done:
        app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 50)
        now = time.monotonic()
        if now >= next_sample:
            next_sample = now + SAMPLE_S
            m = window.session.last_map
            delivered = window.stages.capture.delivered if window.stages.capture is not None else 0
            samples.append((now - t0, delivered, len(window.session.est_t) if m is not None else 0,
                            m.total_vertices if m is not None else 0, rss_mb(os.getpid()),
                            rss_mb(window.stages.mapper.pid if window.stages.mapper and window.stages.mapper.alive() else None)))
            if len(samples) % 15 == 0:
                s = samples[-1]
                print(f"  {s[0]:6.0f} s  read {s[1]:5d}  mapped {s[2]:5d}  map {s[3]:8,d} vertices  "
                      f"GUI {s[4]:6.0f} MB  mapping {s[5]:6.0f} MB", file=sys.stderr, flush=True)
    errors = list(window.session.errors)
    ate, lost = window.session.ate, int(sum(1 for ok in (window.session.last_map.tracking_ok if window.session.last_map else []) if not ok))
    window.close()
    window.shutdown()
    a = np.array(samples, np.float64)
    print(f"\nm2hmx-viewer soak: {args.frames} frames of the generated room back and forth ({args.scene_frames}-frame "
          f"passes) at {args.size}, network {'on' if args.network else 'off'}; {a[-1, 0]:.0f} s "
          f"(load average {load:.1f} at the start)")
    print(f"{'time s':>7} {'read':>6} {'mapped':>6} {'map vertices':>12} {'GUI MB':>7} {'mapping MB':>10}")
    for row in a[:: max(1, len(a) // 12)].tolist() + [a[-1].tolist()]:
        print(f"{row[0]:7.0f} {row[1]:6.0f} {row[2]:6.0f} {row[3]:12,.0f} {row[4]:7.0f} {row[5]:10.0f}")
    a = a[:-1] if len(a) > 3 else a  # the last sample may fall in the final snapshot's transient
    half = a[a[:, 1] >= a[-1, 1] / 2]
    span = max(half[-1, 1] - half[0, 1], 1.0)

    def per_1000(col):
        """Growth of the baseline: the minimum of each run of 5 samples (a snapshot's extraction briefly
        allocates tens of MB; those transients are not growth), fitted linearly against frames read."""
        ok = half[np.isfinite(half[:, col])]
        blocks = [ok[i:i + 5] for i in range(0, len(ok) - 4, 5)]
        if len(blocks) < 3:
            return float("nan")
        x = [b[np.argmin(b[:, col]), 1] for b in blocks]
        y = [b[:, col].min() for b in blocks]
        return float(np.polyfit(x, y, 1)[0] * 1000)

    map_growth = (half[-1, 3] - half[0, 3]) / max(half[0, 3], 1.0)
    gui, mapping = per_1000(4), per_1000(5)
    print(f"second half ({span:.0f} frames): map grew {100 * map_growth:.1f}%, GUI memory {gui:+.1f} MB and "
          f"mapping memory {mapping:+.1f} MB per 1000 frames (fit of the baseline RSS)")
    flat = all(v < FLAT_MB_PER_1000 for v in (gui, mapping) if np.isfinite(v))
    if span < MIN_JUDGED_FRAMES:
        print(f"verdict: too short to judge (the RSS baseline wanders by ~25 MB with snapshot transients; run "
              f">= {2 * MIN_JUDGED_FRAMES} frames)")
    else:
        print("verdict: memory " + ("stops growing with the map" if flat else "KEEPS GROWING") +
              f" (threshold {FLAT_MB_PER_1000} MB per 1000 frames)")
    print(f"tracking: {lost} frames lost; ATE RMSE {'-' if ate is None else f'{100 * ate:.1f} cm'}")
    if errors:
        print(f"{len(errors)} messages, last: {errors[-1]}")
    return 0 if flat or span < MIN_JUDGED_FRAMES else 1


if __name__ == "__main__":
    sys.exit(main())
