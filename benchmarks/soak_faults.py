"""Fault soak of the viewer: the generated room walked back and forth for N frames while the mapping process is
killed (SIGKILL) at K seeded random frames; after each death the viewer starts mapping again (the "M" action),
which first exports the dead map. Every export is read back and compared with the map the window held.

    .venv/bin/python -m benchmarks.soak_faults [--frames 3000] [--kills 3] [--first 300] [--size 120x160] [--seed 0]

Needs an X display with OpenGL (an Xvfb is started when $DISPLAY is unset). Not a CI test: it runs for minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_app import ensure_display


def verify_export(folder: Path, update, live: bool = False) -> tuple[int, str]:
    """(files, problem or "") for an export of the window's ``MapUpdate``, every file read back: all 11 files; the
    mesh (and ``points.ply``, the mesh's vertices) with the update's whole-map counts, exactly for a dead map
    (written from the update), at least 90 % of them for ``live`` (written by the running process, whose map has
    grown since); both trajectories as long as the update's; both spark-dsg files with the scene graph's objects
    and places."""
    import open3d as o3d
    import spark_dsg

    from mapping.bridge import EXPORT_FILES
    from mapping.trajectory import read_hydra_csv, read_tum

    names = {p.name for p in folder.iterdir()}
    if names != set(EXPORT_FILES):
        return len(names), f"files {sorted(names ^ set(EXPORT_FILES))} differ from a whole export"
    mesh = o3d.io.read_triangle_mesh(str(folder / "mesh.ply"))
    points = len(o3d.io.read_point_cloud(str(folder / "points.ply")).points)
    counts = (len(mesh.vertices), len(mesh.triangles), points)
    whole = (update.total_vertices, update.total_triangles, update.total_vertices)
    if (min(c / max(w, 1) for c, w in zip(counts, whole)) < 0.9) if live else counts != whole:
        return len(names), f"mesh / points counts {counts} differ from the map's {whole}"
    for t, _ in (read_tum(folder / "trajectory.tum"), read_hydra_csv(folder / "trajectory.csv")):
        if len(t) < len(update.timestamps) or (not live and len(t) != len(update.timestamps)):
            return len(names), "trajectory length differs"
    graph = json.loads((folder / "scene_graph.json").read_text())
    if not live and update.graph is not None and len(graph["places"]) != len(update.graph.places):
        return len(names), "scene_graph.json places differ from the map's"
    for name in ("dsg.json", "dsg.sparkdsg"):
        dsg = spark_dsg.DynamicSceneGraph.load(str(folder / name))
        if (dsg.get_layer(spark_dsg.DsgLayers.OBJECTS).num_nodes(), dsg.get_layer(spark_dsg.DsgLayers.PLACES).num_nodes()) \
                != (len(graph["objects"]), len(graph["places"])):
            return len(names), f"{name} objects / places differ from scene_graph.json"
    return len(names), ""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=3000)
    p.add_argument("--kills", type=int, default=3)
    p.add_argument("--size", default="120x160")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--first", type=int, default=300, help="no kill before this frame (300)")
    args = p.parse_args(argv)
    load = os.getloadavg()[0]
    ensure_display()
    from PyQt6 import QtCore, QtWidgets

    from app.sources import SourceSpec
    from app.session import ViewerOptions
    from app.window import MainWindow

    rng = np.random.default_rng(args.seed)
    span = (args.frames - args.first) // args.kills  # one kill at a random frame of each span, none in its last half
    kill_at = sorted(int(args.first + k * span + rng.integers(0, max(span // 2, 1))) for k in range(args.kills))
    QtCore.QCoreApplication.setAttribute(QtCore.Qt.ApplicationAttribute.AA_ShareOpenGLContexts)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    tmp = Path(tempfile.mkdtemp(prefix="soak_faults_"))
    size = tuple(int(v) for v in args.size.split("x"))
    window = MainWindow(ViewerOptions(source=SourceSpec("demo", demo_seed=0, demo_frames=300), checkpoint=None,
                                      size=size, loop_frames=args.frames, output_dir=str(tmp / "out"),
                                      snapshot_every_s=1.0))
    window.resize(1200, 800)
    window.show()
    done = []
    window.run_finished.connect(lambda: done.append(True))
    rows = []  # (kill, frame read at the kill, poses mapped by that process, poses in its last snapshot, files, problem)
    t0 = time.monotonic()

    said = [time.monotonic()]

    def pump(until, limit_s=600.0):
        end = time.monotonic() + limit_s
        while not until() and time.monotonic() < end:
            app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 50)
            if time.monotonic() - said[0] > 60 and window.capture is not None:  # a line a minute: it is alive
                said[0] = time.monotonic()
                print(f"  {time.monotonic() - t0:.0f} s: frame {window.capture.delivered}, load average "
                      f"{os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
        return until()

    for k, frame in enumerate(kill_at, 1):
        if not pump(lambda: window.stages.capture is not None and window.stages.capture.delivered >= frame or done, 3600):
            break
        if done:
            break
        pump(lambda: window.session.last_map is not None, 120)
        read, mapped = window.stages.capture.delivered, len(window.session.est_t)
        os.kill(window.stages.mapper.pid, signal.SIGKILL)
        pump(lambda: window.mapping_dead_reported, 60)
        last = window.session.last_map
        before = set((tmp / "out").glob("map-*-before-restart")) if (tmp / "out").exists() else set()
        window.restart_mapping()
        saved = sorted(set((tmp / "out").glob("map-*-before-restart")) - before)
        files, problem = verify_export(saved[0], last) if saved and last is not None else (0, "no export written")
        rows.append((k, read, mapped, len(last.timestamps) if last is not None else 0, files, problem))
        print(f"  kill {k} at frame {read}: {mapped} poses mapped, {rows[-1][3]} in the exported map, "
              f"{files} files, {problem or 'read back whole'}", file=sys.stderr, flush=True)
    pump(lambda: bool(done), 3600)
    final = window.session.last_map
    window.export_map(tmp / "final")
    pump(lambda: window.session.pending_export is None, 300)
    files, problem = verify_export(tmp / "final", final, live=True) if final is not None else (0, "no map")
    rows.append(("end", window.stages.capture.delivered, len(window.session.est_t), len(final.timestamps) if final else 0, files,
                 problem))
    window.close()
    window.shutdown()
    print(f"\nfault soak: {args.frames} frames of generated room 0 back and forth at {args.size}, no network, mapping "
          f"process killed at frames {kill_at} (seed {args.seed}); {time.monotonic() - t0:.0f} s, load average "
          f"{load:.1f} at the start")
    print(f"{'kill':>5} {'frame':>6} {'poses mapped':>12} {'poses exported':>14} {'files':>5}  read back")
    for r in rows:
        print(f"{r[0]!s:>5} {r[1]:6d} {r[2]:12d} {r[3]:14d} {r[4]:5d}  {r[5] or 'whole'}")
    ok = len(rows) == args.kills + 1 and not any(r[5] for r in rows)
    print("verdict: " + ("every map exported whole and read back" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
