"""End-to-end speed of the viewer on the demo: frames/s shown, latency (capture -> on screen), mapping rate,
and the longest GUI stall (a 5 ms QTimer heartbeat: the largest gap between its ticks beyond 5 ms, after
the first 5 frames are on screen: start-up imports in worker threads hold the GIL for seconds).

    .venv/bin/python -m benchmarks.bench_app [--frames 60] [--size 240x320] [--realtime]

``--realtime`` plays the demo's ``--frames`` frames at their 30 frames/s clock (``m2hmx-viewer --realtime``):
frames that are late are skipped at the source or replaced in the hand-offs, so latency stays bounded and
"shown" is what kept up; without it every frame is shown and mapped (the file-source behaviour).

Runs the real window (needs an X display with OpenGL; without $DISPLAY an Xvfb is started). Configurations:
no network (sensor depth + ground-truth labels: capture, GUI and mapping only), then the network with 1 and
2 torch threads (the bundled model, or the m2hmx-demo architecture with random weights when the bundled
file is missing: same compute, but its depth is meaningless, so the mapper integrates little).
"""
from __future__ import annotations

import argparse
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HEARTBEAT_MS = 5


def ensure_display() -> None:
    """Start an Xvfb for this process when there is no display (the 3D view needs OpenGL)."""
    if os.environ.get("DISPLAY"):
        return
    if not shutil.which("Xvfb"):
        sys.exit("no $DISPLAY and no Xvfb: run under xvfb-run -a -s '-screen 0 1600x1000x24'")
    for n in range(91, 140):
        if not Path(f"/tmp/.X{n}-lock").exists():
            break
    proc = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(proc.terminate)
    os.environ["DISPLAY"] = f":{n}"
    time.sleep(1.0)


def model_checkpoint(tmp: Path) -> tuple[str, str]:
    """(checkpoint path, description): the bundled model, else the demo architecture with random weights."""
    from app.main import bundled_model

    if bundled_model().is_file():
        return str(bundled_model()), "bundled model"
    import torch

    from m2hmx.checkpoint import save_checkpoint
    from m2hmx.model import build_model

    torch.manual_seed(0)
    path = tmp / "random-demo.safetensors"
    save_checkpoint(path, build_model("m2hmx-demo"))
    return str(path), "demo architecture, random weights"


def run_viewer(options, timeout_s: float = 600.0) -> dict:
    """Run one scripted viewer session; returns its measurements."""
    from PyQt6 import QtCore, QtWidgets

    from app.window import MainWindow

    app = QtWidgets.QApplication.instance()
    window = MainWindow(options)
    window.resize(1560, 960)
    window.show()
    shown_at, predict_ms = [], []
    original = window.session.on_result

    def show(result, now):
        original(result, now)
        shown_at.append(time.monotonic())
        predict_ms.append(result.predict_ms)

    window.session.on_result = show
    steps, extracts, gui_ms = [], [], {"result": 0.0, "map": 0.0}
    on_step = window.session.on_step

    def step(payload, now):
        steps.append(payload)
        return on_step(payload, now)

    window.session.on_step = step
    for name, owner, attr in (("result", window, "_show_result"), ("map", window.map_view, "show_update")):
        def timed(*a, f=getattr(owner, attr), n=name):
            t = time.perf_counter()
            f(*a)
            gui_ms[n] += 1000 * (time.perf_counter() - t)
            if n == "map":
                extracts.append(a[0].extract_ms)
        setattr(owner, attr, timed)
    cpu_at = {}
    beats = []
    heartbeat = QtCore.QTimer()
    heartbeat.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
    heartbeat.timeout.connect(lambda: beats.append(time.perf_counter()))
    heartbeat.start(HEARTBEAT_MS)
    done = []
    window.run_finished.connect(lambda: done.append(True))
    deadline = time.monotonic() + timeout_s
    while not done and time.monotonic() < deadline:
        app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.001)
        if not cpu_at and len(shown_at) > 5:  # steady state: the CPU counters from here
            cpu_at = cpu_counters(window, len(shown_at), len(steps), sum(gui_ms.values()))
    end = cpu_counters(window, len(shown_at), len(steps), sum(gui_ms.values()))
    heartbeat.stop()
    first_shown = 5 if len(shown_at) > 10 else 1  # skip warm-up (first predictions, map start)
    span = shown_at[-1] - shown_at[first_shown] if len(shown_at) > first_shown + 1 else float("nan")
    # GUI stalls in steady state (start-up imports of torch / Open3D in worker threads hold the GIL for seconds)
    beats = np.array(beats)
    if len(shown_at) > first_shown:
        t0 = time.perf_counter() - (time.monotonic() - shown_at[first_shown])
        beats = beats[beats >= t0]
    gaps = np.diff(beats) * 1000 - HEARTBEAT_MS if len(beats) > 2 else np.zeros(1)
    lat = np.array(list(window.session.latencies)[first_shown:]) if len(window.session.latencies) > first_shown else np.zeros(1)
    m = window.session.mapping_times
    out = {
        "shown": len(shown_at), "fps": (len(shown_at) - 1 - first_shown) / span if span > 0 else float("nan"),
        "predict_ms": float(np.mean(predict_ms[first_shown:])) if len(predict_ms) > first_shown else 0.0,
        "map_fps": (len(m) - 1) / (m[-1] - m[0]) if len(m) > 2 else 0.0,
        "lat50": float(np.percentile(lat, 50)), "lat95": float(np.percentile(lat, 95)),
        "stall_max": float(gaps.max()), "stalls_50": int((gaps > 50).sum()),
        "dropped": window.stages.capture_slot.dropped + window.stages.display_slot.dropped,
        "map_dropped": window.stages.mapper.dropped if window.stages.mapper else 0,
        "skipped": getattr(window.stages.source, "skipped", 0),
        "ate": window.session.ate, "finished": bool(done), "errors": list(window.session.errors),
        "stages": stage_profile(cpu_at, end, steps, extracts),
    }
    window.close()
    window.shutdown()
    app.processEvents()
    return out


def _process_cpu_s(pid: int | None) -> float:
    """utime + stime of a process (all its threads) from /proc, seconds; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, TypeError):
        return 0.0


def cpu_counters(window, shown: int, mapped: int, gui_ms: float) -> dict:
    stages = window.stages
    return {"t": time.monotonic(), "shown": shown, "mapped": mapped, "gui_ms": gui_ms,
            "process": _process_cpu_s(os.getpid()),
            "mapper": _process_cpu_s(stages.mapper.pid) if stages.mapper else 0.0,
            "capture": getattr(stages.capture, "cpu_s", 0.0),  # getattr: also runs on older app code
            "perception": getattr(stages.perception, "cpu_s", 0.0),
            "waited": getattr(stages.mapper, "waited_s", 0.0)}


def stage_profile(a: dict, b: dict, steps: list, extracts: list) -> dict:
    """Milliseconds per shown frame in steady state (from the 6th frame shown to the end) of each stage:
    CPU of the capture and perception threads, the rest of the GUI process's CPU (GUI thread: drawing, Qt,
    software OpenGL), the mapping process's CPU, and wall times: perception waiting for the mapper to take its
    frame, the mapper's step and snapshots (mesh extraction; per mapped frame, the same as per shown frame for
    file sources), the GUI thread in its result/map handlers."""
    if not a:
        return {}
    n = max(1, b["shown"] - a["shown"])
    per = {k: 1000 * (b[k] - a[k]) / n for k in ("capture", "perception", "waited", "mapper")}
    per["gui process rest"] = 1000 * (b["process"] - a["process"]) / n - per["capture"] - per["perception"]
    per["gui handlers"] = (b["gui_ms"] - a["gui_ms"]) / n
    later = steps[a["mapped"]:]
    per["map step"] = float(np.mean([s["total_ms"] for s in later])) if later else 0.0
    keys = sorted({k for s in later for k in (s.get("timings_ms") or {})})
    for k in keys:
        per[f"  map: {k}"] = float(np.mean([s["timings_ms"].get(k, 0.0) for s in later]))
    per["map snapshots (per mapped frame)"] = float(np.sum(extracts)) / max(1, len(steps))
    per["wall per shown frame"] = 1000 * (b["t"] - a["t"]) / n
    return per


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--size", default="240x320")
    p.add_argument("--skip", default="", help="comma list of configurations to leave out: sensor, 1t, 1th, 2t, 1t2 "
                   "(no network; 1 / 2 torch threads; 1 thread with the dense hybrid odometry instead of the default "
                   "vio; 1 thread with --tasks depth,semseg)")
    p.add_argument("--realtime", action="store_true", help="play the demo at its clock, dropping late frames")
    args = p.parse_args(argv)
    ensure_display()
    from PyQt6 import QtCore, QtWidgets

    from app.sources import SourceSpec
    from app.session import ViewerOptions

    QtCore.QCoreApplication.setAttribute(QtCore.Qt.ApplicationAttribute.AA_ShareOpenGLContexts)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])  # noqa: F841 (kept alive)
    size = tuple(int(v) for v in args.size.split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="bench_app_"))
    checkpoint, what = model_checkpoint(tmp)
    configs = [("sensor", "no network (sensor depth, GT labels)", None, 1, None, None),
               ("1t", f"{what}, 1 torch thread", checkpoint, 1, None, None),
               ("1th", f"{what}, 1 thread, hybrid odometry", checkpoint, 1, None, "hybrid"),
               ("1t2", f"{what}, 1 thread, depth,semseg", checkpoint, 1, ("depth", "semseg"), None),
               ("2t", f"{what}, 2 torch threads", checkpoint, 2, None, None)]
    configs = [c for c in configs if c[0] not in args.skip.split(",")]
    load = os.getloadavg()[0]  # other work on the machine slows every stage: reported with the table
    rows = []
    for key, name, ckpt, threads, tasks, odometry in configs:
        spec = SourceSpec("demo", demo_frames=max(args.frames, 2), realtime=args.realtime)
        opts = ViewerOptions(source=spec, checkpoint=ckpt, size=size, max_frames=None if args.realtime else args.frames,
                             torch_threads=threads, output_dir=str(tmp), tasks=tasks,
                             odometry=odometry)
        r = run_viewer(opts)
        rows.append((key, name, r))
        print(f"done: {name}: {r['shown']} frames" + (f"; errors: {r['errors'][-1]}" if r["errors"] else ""),
              file=sys.stderr)
    print(f"\nm2hmx-viewer end to end, demo scene at {args.size}, {args.frames} frames, {os.cpu_count()} CPUs "
          f"(load average {load:.1f} before the runs, {os.getloadavg()[0]:.1f} after)"
          + (", played at 30 frames/s (--realtime)" if args.realtime else ""))
    head = (f"{'configuration':<46} {'shown':>5} {'frames/s':>8} {'net ms':>7} {'map f/s':>7} "
            f"{'lat p50':>7} {'lat p95':>7} {'GUI max stall':>13} {'>50ms':>5} {'dropped':>11} {'ATE cm':>6}")
    print(head)
    print("-" * len(head))
    for _, name, r in rows:
        ate = "-" if r["ate"] is None else f"{100 * r['ate']:.1f}"
        print(f"{name:<46} {r['shown']:>5} {r['fps']:>8.1f} {r['predict_ms']:>7.0f} {r['map_fps']:>7.1f} "
              f"{r['lat50']:>7.0f} {r['lat95']:>7.0f} {r['stall_max']:>10.0f} ms {r['stalls_50']:>5} "
              f"{r['skipped']:>3}/{r['dropped']:>3}/{r['map_dropped']:<3} {ate:>6}")
    print("\nwhere the time goes, ms per shown frame in steady state (CPU: thread or process CPU time; else wall)")
    names = list(dict.fromkeys(k for _, _, r in rows for k in r["stages"]))
    print(f"{'stage':<40} " + " ".join(f"{key:>10}" for key, _, _ in rows))
    for k in names:
        print(f"{k:<40} " + " ".join(f"{r['stages'].get(k, float('nan')):>10.1f}" for _, _, r in rows))
    print("latency: capture -> on screen (ms); dropped: skipped at the source (--realtime) / capture+display / "
          "mapping hand-offs; file sources wait instead of dropping, so frames/s is that of the slowest stage")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
