"""Loop-closure benchmarks (issue 21). Prints tables; not a timed test.

    PYTHONPATH=$PWD python benchmarks/bench_loops.py false-loops [--rooms 100000-100019] [--seven-scenes DIR ...]
                                                             [--revisit] [--details]
    PYTHONPATH=$PWD python benchmarks/bench_loops.py revisit [--rooms 100000-100004] [--depth pred|gt] [--stride 1]
                                                             [--odometry hybrid|vio|...] [--cache DIR]
    PYTHONPATH=$PWD python benchmarks/bench_loops.py cost [--keyframes 300]
    PYTHONPATH=$PWD python benchmarks/bench_loops.py gui [--keyframes 300]
    PYTHONPATH=$PWD python benchmarks/bench_loops.py viewer [--room 100000] [--depth pred|sensor] [--after 30]

false-loops: every 10th frame of each walk (no revisit) is a keyframe at its true pose; place recognition is queried
with the frame's depth (exact for generated rooms, sensor depth for 7-Scenes) and its loops checked on depth
(``LoopCloser.confirm``). A verified loop is false when its
relative pose is more than 10 cm or 5 deg off the truth. Counted before the robust optimiser (the verification's
own false loops) and after it (with the true poses as odometry).

revisit: the room's revisit walk (450 frames) is mapped twice in lockstep from the same perception frames (the
bundled model's depth and labels with --depth pred): the bridge as it is, and with loop closure. ATE (SE(3)-aligned,
evo's definition), the fraction of mesh vertices farther than 5 cm from the room's true surfaces, loops accepted and
the cost of each map correction. ``--cache DIR`` keeps the network's predictions of each room in DIR (one .npz a
room: depth, labels, confidence) and reuses them on the next run; ``--odometry`` picks the odometry of both bridges
(default: the bridge's own default for the depth).
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from mapping.loops import LoopCloser, LoopConfig


def _rooms(text: str) -> list[int]:
    a, _, b = text.partition("-")
    return list(range(int(a), int(b or a) + 1))


def _error(edge, poses) -> tuple[float, float]:
    """(cm, deg) of a loop edge's relative pose against the truth."""
    truth = np.linalg.inv(poses[edge.i]) @ poses[edge.j]
    cos = (np.trace(truth[:3, :3].T @ edge.i_T_j[:3, :3]) - 1) / 2
    cm = 100 * float(np.linalg.norm(truth[:3, 3] - edge.i_T_j[:3, 3]))
    return cm, float(np.degrees(np.arccos(np.clip(cos, -1, 1))))


def _wrong(edge, poses) -> bool:
    cm, deg = _error(edge, poses)
    return cm > 10.0 or deg > 5.0


# per PnP-verified loop: walk, i, j, inliers, disagreement deg, error cm, deg, after the depth check cm, deg
DETAILS: list[tuple] = []


def false_loops(name: str, frames) -> tuple:
    closer, poses, verified, wrong_verified = None, [], 0, 0
    for f in frames:
        if closer is None:
            closer = LoopCloser(f.K, f.depth.shape)
        poses.append(f.pose)
        depth = np.where(np.isfinite(f.depth), f.depth, 0).astype(np.float32)
        index = closer.graph.add_keyframe(f.pose)
        kf = closer.places.describe(index, f.rgb, depth)
        edge = closer.places.query(kf, depth)
        closer.places.add(kf)
        labels = f.labels if f.labels is not None else np.full(depth.shape, 255, np.uint8)
        closer.store.add(f.timestamp, f.rgb, depth, labels, None, f.K)
        if edge is not None:
            confirmed = closer.confirm(edge)
            after = (float("nan"),) * 2 if confirmed is None else _error(confirmed, poses)
            DETAILS.append((name, edge.i, edge.j, edge.inliers, edge.disagreement_deg, *_error(edge, poses), *after))
            edge = confirmed
        if edge is not None:
            verified += 1
            wrong_verified += _wrong(edge, poses)
            closer.graph.add_loop(edge)
    if closer.graph.loops:
        closer.graph.optimize()
    accepted = [e for e, ok in zip(closer.graph.loops, closer.graph.accepted) if ok]
    wrong_accepted = sum(_wrong(e, poses) for e in accepted)
    return name, len(poses), verified, wrong_verified, len(accepted), wrong_accepted


def run_false_loops(args) -> None:
    from m2hmx.data.sources import open_source
    from m2hmx.data.synthetic import SyntheticSource

    print(f"# false loops, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()[0]:.1f}")
    print("| walk | keyframes | verified loops | false (verified) | accepted by GNC | false (accepted) |")
    print("|---|---|---|---|---|---|")
    total = np.zeros(4, int)
    for seed in _rooms(args.rooms):
        src = open_source(f"synthetic:{seed}?revisit") if args.revisit else SyntheticSource(seed, frames=300)
        row = false_loops(f"synthetic:{seed}" + "?revisit" * args.revisit, (src[i] for i in range(0, len(src), 10)))
        total += row[2:]
        print("| " + " | ".join(map(str, row)) + " |", flush=True)
    for folder in args.seven_scenes:
        src = open_source(folder)
        row = false_loops(Path(folder).name, (src[i] for i in range(0, len(src), 10)))
        total += row[2:]
        print("| " + " | ".join(map(str, row)) + " |", flush=True)
    print(f"| total | | {total[0]} | {total[1]} | {total[2]} | {total[3]} |")
    if args.details:
        print("\n| walk | keyframes i-j | inliers | both-ways disagreement deg | PnP error cm | deg | "
              "after the depth check cm (nan: dropped) | deg |")
        print("|---|---|---|---|---|---|---|---|")
        for name, i, j, n, dis, cm, deg, icm, ideg in DETAILS:
            print(f"| {name} | {i}-{j} | {n} | {dis:.2f} | {cm:.1f} | {deg:.2f} | {icm:.1f} | {ideg:.2f} |")


def run_revisit(args) -> None:
    from app.pipeline import to_perception_frame
    from m2hmx.data.sources import open_source
    from mapping.bridge import MappingBridge, MappingConfig
    from mapping.trajectory import ate_rmse

    predictor = None
    if args.depth == "pred":
        from m2hmx import ASSETS_DIR
        from m2hmx.predictor import Predictor

        predictor = Predictor.from_checkpoint(str(ASSETS_DIR / "m2hmx-demo.safetensors"), "cpu")
    config = MappingConfig(depth_mode=args.depth, odometry=args.odometry)
    print(f"# revisit, depth {args.depth}, odometry {config.odometry_method}, stride {args.stride}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()[0]:.1f}")
    print("| room | frames | ATE no loops (cm) | ATE loops (cm) | ratio | verts > 5 cm, no loops | with loops | "
          "loops accepted / rejected | keyframes | correction s (each: at once + later stages) | "
          "failed frames, no loops / "
          "loops | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for seed in _rooms(args.rooms):
        src = open_source(f"synthetic:{seed}?revisit")
        label_space = predictor.label_space if predictor is not None else src.label_space
        plain = MappingBridge(label_space, config)
        loops = MappingBridge(label_space, replace(config, loop_closure=True))
        predictions = _Predictions(predictor, args.cache, seed)
        times, truth = [], []
        for i in range(0, len(src), args.stride):
            f = src[i]
            pred = predictions.get(i, f.rgb)
            pf = to_perception_frame(f, pred, args.depth, label_space.num_classes, pose_prior=not times)
            times.append(f.timestamp)
            truth.append(f.pose)
            plain.process(pf)
            loops.process(pf)
        predictions.save()
        gt = (np.array(times), np.array(truth))
        rs = src.scene.raycasting_scene()
        row = [seed, len(times)]
        ates, far = [], []
        loops.loops.finish_rebuild()  # a staged rebuild after the last correction
        for b in (plain, loops):
            ates.append(100 * ate_rmse(gt, b.trajectory()))
            v = b.snapshot(with_objects=False).vertices
            import open3d.core as o3c

            d = rs.compute_distance(o3c.Tensor(v.astype(np.float32))).numpy()
            far.append(float((d > 0.05).mean()))
        lc = loops.loops
        row += [f"{ates[0]:.1f}", f"{ates[1]:.1f}", f"{ates[1] / ates[0]:.2f}", f"{far[0]:.3f}", f"{far[1]:.3f}",
                f"{len(lc.corrections)} / {lc.rejected}", len(lc.graph),
                ", ".join(f"{c.seconds:.1f}+{c.later_seconds:.1f}" for c in lc.corrections) or "-",
                f"{plain.failures} / {loops.failures}", f"{os.getloadavg()[0]:.1f}"]
        print("| " + " | ".join(map(str, row)) + " |", flush=True)


class _Predictions:
    """The predictor's output per frame index, read from / written to ``cache/room-SEED.npz`` when a cache is given."""

    def __init__(self, predictor, cache: str | None, seed: int):
        self.predictor = predictor
        self.path = None if cache is None or predictor is None else Path(cache) / f"room-{seed}.npz"
        self.stored = {}
        self.new = 0  # predictions not yet written
        if self.path is not None and self.path.exists():
            with np.load(self.path) as z:
                for i, d, l, c in zip(z["index"], z["depth"], z["labels"], z["confidence"]):
                    self.stored[int(i)] = (d, l, c)

    def get(self, i: int, rgb: np.ndarray):
        from m2hmx.predictor import Prediction

        if self.predictor is None:
            return None
        if i not in self.stored:
            p = self.predictor.predict(rgb)
            self.stored[i] = (p.depth, p.labels, p.confidence.astype(np.float16))
            self.new += 1
            if self.new >= 100:  # a run stopped part way keeps most of its predictions
                self.save()
        d, l, c = self.stored[i]
        return Prediction(depth=d, labels=l, confidence=c.astype(np.float32))

    def save(self) -> None:
        if self.path is None or not self.new:
            return
        from mapping.atomic import atomic_path

        keys = sorted(self.stored)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, index=np.array(keys), depth=np.stack([self.stored[k][0] for k in keys]),
                         labels=np.stack([self.stored[k][1] for k in keys]),
                         confidence=np.stack([self.stored[k][2] for k in keys]))
        self.new = 0


def run_cost(args) -> None:
    """One map correction with ``--keyframes`` keyframes: GNC over the graph, then the staged rebuild (its first
    stage, and each later stage the bridge runs after a frame), against the full rebuild of every keyframe."""
    from m2hmx.data.synthetic import SyntheticSource
    from mapping.bridge import MappingConfig
    from mapping.pose_graph import LoopEdge

    src = SyntheticSource(args.room, frames=args.keyframes)
    closer = LoopCloser(src.K, (src.height, src.width))
    for i in range(args.keyframes):
        f = src[i]
        closer.graph.add_keyframe(src.poses[i])
        closer.store.add(f.timestamp, f.rgb, f.depth, f.labels, None, f.K)
    closer.graph.add_loop(LoopEdge(0, args.keyframes - 1, np.linalg.inv(src.poses[0]) @ src.poses[-1]))
    cfg, classes, size = MappingConfig(depth_mode="gt"), src.label_space.num_classes, (src.height, src.width)

    def timed(fn):
        load, w, c = os.getloadavg()[0], time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - w, time.process_time() - c, load

    lc = closer.config
    print(f"# correction cost, {args.keyframes} keyframes (room {args.room}, 240x320 frames stored at half "
          f"resolution, {closer.store.nbytes / 1e6:.1f} MB), staged rebuild {lc.rebuild_now} now + "
          f"{lc.rebuild_per_frame} a frame, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| GNC wall / CPU s | first stage wall / CPU s | later stage per frame wall / CPU s (frames) | "
          "full rebuild wall / CPU s | load (1 min) before each |")
    print("|---|---|---|---|---|")
    for _ in range(args.repeats):
        gnc = timed(closer.graph.optimize)
        first = timed(lambda: closer.rebuild(cfg, classes, 0.02, src.K, size))
        later = []
        while closer.rebuilding:
            later.append(timed(closer.continue_rebuild))
        full = timed(lambda: closer.store.reintegrate(closer.graph.optimized, cfg, classes, 0.02, src.K, size))
        lw, lc_ = (np.mean([x[i] for x in later]) if later else 0.0 for i in (0, 1))
        print(f"| {gnc[0]:.2f} / {gnc[1]:.2f} | {first[0]:.2f} / {first[1]:.2f} | {lw:.3f} / {lc_:.3f} "
              f"({len(later)}) | {full[0]:.2f} / {full[1]:.2f} | {gnc[2]:.1f}, {first[2]:.1f}, {full[2]:.1f} |",
              flush=True)


def _correcting_process(keyframes: int, room: int, pipe) -> None:
    """The mapping process's part of ``gui``: at the viewer's mapping priority (``app.mapping_process.NICE``),
    store ``keyframes`` keyframes, then on "go" run one correction (GNC, the rebuild's first stage, then its later
    stages back to back, the worst case) and send back its wall seconds."""
    from app.mapping_process import NICE
    from m2hmx.data.synthetic import SyntheticSource
    from mapping.bridge import MappingConfig
    from mapping.pose_graph import LoopEdge

    os.nice(NICE)
    src = SyntheticSource(room, frames=keyframes)
    closer = LoopCloser(src.K, (src.height, src.width))
    for i in range(keyframes):
        f = src[i]
        closer.graph.add_keyframe(src.poses[i])
        closer.store.add(f.timestamp, f.rgb, f.depth, f.labels, None, f.K)
    closer.graph.add_loop(LoopEdge(0, keyframes - 1, np.linalg.inv(src.poses[0]) @ src.poses[-1]))
    pipe.send("ready")
    pipe.recv()
    t0 = time.perf_counter()
    closer.graph.optimize()
    closer.rebuild(MappingConfig(depth_mode="gt"), src.label_space.num_classes, 0.02, src.K, (src.height, src.width))
    t1 = time.perf_counter()
    while closer.rebuilding:
        closer.continue_rebuild()
    pipe.send((t1 - t0, time.perf_counter() - t1))


def run_gui(args) -> None:
    """The GUI's stall while the mapping process corrects its map: a Qt event loop with a 5 ms heartbeat (as in
    ``benchmarks/bench_app.py``) in this process, a correction of ``--keyframes`` keyframes in a child process started
    like the viewer's mapping process (spawn, lower priority). Gaps are compared between ``--idle`` seconds with the
    child waiting and the correction itself."""
    import multiprocessing as mp

    from PyQt6 import QtCore

    from benchmarks.bench_app import HEARTBEAT_MS

    app = QtCore.QCoreApplication.instance() or QtCore.QCoreApplication([])
    ours, theirs = mp.get_context("spawn").Pipe()
    child = mp.get_context("spawn").Process(target=_correcting_process, args=(args.keyframes, args.room, theirs))
    child.start()
    while not ours.poll(1.0):
        if not child.is_alive():
            raise SystemExit("the correcting process died")
    ours.recv()
    beats, marks = [], {}
    heartbeat = QtCore.QTimer()
    heartbeat.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
    heartbeat.timeout.connect(lambda: beats.append(time.perf_counter()))
    heartbeat.start(HEARTBEAT_MS)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    result = None
    while result is None:
        app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 20)
        now = time.perf_counter()
        if "go" not in marks and now - start > args.idle:
            marks["go"] = now
            ours.send("go")
        if "go" in marks and ours.poll():
            result = ours.recv()
            marks["done"] = time.perf_counter()
        time.sleep(0.001)
    heartbeat.stop()
    child.join()
    beats = np.array(beats)
    gaps, at = np.diff(beats) * 1000 - HEARTBEAT_MS, beats[1:]
    idle, busy = gaps[at <= marks["go"]], gaps[(at > marks["go"]) & (at <= marks["done"])]
    print(f"# GUI heartbeat while the mapping process corrects {args.keyframes} keyframes (room {args.room}), "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {load:.1f} before, {os.getloadavg()[0]:.1f} "
          f"after; correction wall: first stage {result[0]:.2f} s (GNC + {LoopConfig().rebuild_now}"
          f" keyframes), later stages back to back {result[1]:.2f} s")
    print("| span | seconds | heartbeats | GUI max stall ms | p99 ms | stalls > 50 ms |")
    print("|---|---|---|---|---|---|")
    for name, g, secs in (("child idle", idle, marks["go"] - start), ("correction", busy, marks["done"] - marks["go"])):
        print(f"| {name} | {secs:.1f} | {len(g)} | {g.max():.0f} | {np.percentile(g, 99):.0f} | "
              f"{int((g > 50).sum())} |")


def run_viewer(args) -> None:
    """The GUI's stall in the real viewer while its mapping process corrects the map: ``m2hmx-viewer --dataset
    synthetic:ROOM?revisit --loop-closure`` (the real window, its perception threads and mapping process; an Xvfb
    when there is no display) with a 5 ms QTimer heartbeat, as ``benchmarks/bench_app.py`` measures the viewer.
    A correction is located from the mapping process's messages: the first map update that shows a new loop, and
    before it the mapped frame that took longest since the previous update (the frame whose keyframe closed the
    loop; its "step" arrives when the correction's first stage is done, ``total_ms`` after it began). Rows: the
    correction frame itself (from its start to its step's arrival), the next ``--after`` mapped frames (the staged
    rebuild's later stages run after each), the frames before the first correction, and the whole run after warm-up."""
    from PyQt6 import QtCore, QtWidgets

    from app.main import build_parser, options_from_args
    from app.window import MainWindow
    from benchmarks.bench_app import HEARTBEAT_MS, ensure_display

    ensure_display()
    QtCore.QCoreApplication.setAttribute(QtCore.Qt.ApplicationAttribute.AA_ShareOpenGLContexts)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    argv = ["--dataset", f"synthetic:{args.room}?revisit", "--loop-closure", "--depth", args.depth,
            "--output-dir", "/tmp/m2hmx-bench-loops"]
    window = MainWindow(options_from_args(build_parser().parse_args(argv)))
    window.resize(1560, 960)
    window.show()
    steps, updates = [], []  # (arrival, total_ms); (arrival, loops)
    on_step, on_map = window.session.on_step, window.session.on_map

    def step(s, now):
        steps.append((time.perf_counter(), s["total_ms"]))
        return on_step(s, now)

    def update(u):
        updates.append((time.perf_counter(), len(u.loop_lines)))
        return on_map(u)

    window.session.on_step, window.session.on_map = step, update
    beats, done = [], []
    heartbeat = QtCore.QTimer()
    heartbeat.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
    heartbeat.timeout.connect(lambda: beats.append(time.perf_counter()))
    heartbeat.start(HEARTBEAT_MS)
    window.run_finished.connect(lambda: done.append(True))
    load, start = os.getloadavg()[0], time.perf_counter()
    while not done and time.perf_counter() - start < args.timeout:
        app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.001)
    heartbeat.stop()
    window.close()
    window.shutdown()
    app.processEvents()
    beats = np.array(beats)
    gaps, at = np.diff(beats) * 1000 - HEARTBEAT_MS, beats[1:]
    arrival = np.array([s[0] for s in steps])
    spans, seen, last_update = [], 0, start
    for t, n in updates:
        if n > seen:  # a new loop since the previous update: its frame is the slowest one mapped in between
            between = [k for k, (a, _) in enumerate(steps) if last_update < a <= t]
            if between:
                k = max(between, key=lambda k: steps[k][1])
                end_after = arrival[min(k + args.after, len(steps) - 1)]
                spans.append((k, arrival[k] - steps[k][1] / 1000, arrival[k], end_after))
            seen = n
        last_update = t
    warm = arrival[min(5, len(arrival) - 1)] if len(arrival) else start

    def row(name, a, b):
        g = gaps[(at > a) & (at <= b)]
        if len(g) == 0:
            return f"| {name} | {b - a:.2f} | 0 | - | - | - |"
        return (f"| {name} | {b - a:.2f} | {len(g)} | {g.max():.0f} | {np.percentile(g, 99):.0f} | "
                f"{int((g > 50).sum())} |")

    print(f"# m2hmx-viewer --dataset synthetic:{args.room}?revisit --loop-closure --depth {args.depth}: "
          f"{len(steps)} frames mapped, {seen} loops shown, finished {bool(done)}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {load:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after; errors: {list(window.session.errors)[-1:] or 'none'}")
    print("| span | seconds | heartbeats | GUI max stall ms | p99 ms | stalls > 50 ms |")
    print("|---|---|---|---|---|---|")
    for k, a, b, c in spans:
        print(row(f"correction at frame {k} (first stage, {1000 * (b - a):.0f} ms in the mapping process)", a, b))
        print(row(f"the {args.after} frames after it (later stages)", b, c))
    if len(arrival):
        if spans:  # the same viewer before any correction: what the GUI stalls by without one
            print(row(f"frames 5-{spans[0][0]}, before the first correction", warm, spans[0][1]))
        print(row("whole run after 5 frames", warm, arrival[-1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("false-loops")
    f.add_argument("--rooms", default="100000-100019")
    f.add_argument("--seven-scenes", nargs="*", default=[])
    f.add_argument("--revisit", action="store_true", help="the rooms' revisit walks (450 frames) instead")
    f.add_argument("--details", action="store_true", help="one row per verified loop: its checks and its error")
    r = sub.add_parser("revisit")
    r.add_argument("--rooms", default="100000-100004")
    r.add_argument("--depth", choices=("pred", "gt"), default="pred")
    r.add_argument("--stride", type=int, default=1)
    r.add_argument("--odometry", default=None, help="hybrid, vio, ... (default: the bridge's for the depth)")
    r.add_argument("--cache", default=None, help="folder for the network's predictions per room")
    c = sub.add_parser("cost")
    c.add_argument("--keyframes", type=int, default=300)
    c.add_argument("--room", type=int, default=200003)
    c.add_argument("--repeats", type=int, default=2)
    g = sub.add_parser("gui")
    g.add_argument("--keyframes", type=int, default=300)
    g.add_argument("--room", type=int, default=200003)
    g.add_argument("--idle", type=float, default=20.0, help="seconds of heartbeat before the correction starts")
    v = sub.add_parser("viewer")
    v.add_argument("--room", type=int, default=100000)
    v.add_argument("--depth", choices=("pred", "sensor"), default="pred")
    v.add_argument("--after", type=int, default=30, help="mapped frames after a correction counted as its later "
                   "stages (30 covers 300 keyframes at 10 a frame)")
    v.add_argument("--timeout", type=float, default=1500.0, help="seconds before the run is cut short")
    args = p.parse_args(argv)
    {"false-loops": run_false_loops, "revisit": run_revisit, "cost": run_cost, "gui": run_gui,
     "viewer": run_viewer}[args.cmd](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
