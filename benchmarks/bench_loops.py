"""Loop-closure benchmarks (issue 21). Prints tables; not a timed test.

    PYTHONPATH=$PWD python benchmarks/bench_loops.py false-loops [--rooms 100000-100019] [--seven-scenes DIR ...]
    PYTHONPATH=$PWD python benchmarks/bench_loops.py revisit [--rooms 100000-100004] [--depth pred|gt] [--stride 1]
    PYTHONPATH=$PWD python benchmarks/bench_loops.py cost [--keyframes 300]

false-loops: every 10th frame of each walk (no revisit) is a keyframe at its true pose; place recognition is queried
with the frame's depth (exact for generated rooms, sensor depth for 7-Scenes). A verified loop is false when its
relative pose is more than 10 cm or 5 deg off the truth. Counted before the robust optimiser (the verification's
own false loops) and after it (with the true poses as odometry).

revisit: the room's revisit walk (450 frames) is mapped twice in lockstep from the same perception frames (the
bundled model's depth and labels with --depth pred): the bridge as it is, and with loop closure. ATE (SE(3)-aligned,
evo's definition), the fraction of mesh vertices farther than 5 cm from the room's true surfaces, loops accepted and
the cost of each map correction.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from mapping.loops import LoopCloser


def _rooms(text: str) -> list[int]:
    a, _, b = text.partition("-")
    return list(range(int(a), int(b or a) + 1))


def _wrong(edge, poses) -> bool:
    truth = np.linalg.inv(poses[edge.i]) @ poses[edge.j]
    cos = (np.trace(truth[:3, :3].T @ edge.i_T_j[:3, :3]) - 1) / 2
    return bool(np.linalg.norm(truth[:3, 3] - edge.i_T_j[:3, 3]) > 0.10 or
                np.degrees(np.arccos(np.clip(cos, -1, 1))) > 5.0)


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
        src = SyntheticSource(seed, frames=300)
        row = false_loops(f"synthetic:{seed}", (src[i] for i in range(0, 300, 10)))
        total += row[2:]
        print("| " + " | ".join(map(str, row)) + " |", flush=True)
    for folder in args.seven_scenes:
        src = open_source(folder)
        row = false_loops(Path(folder).name, (src[i] for i in range(0, len(src), 10)))
        total += row[2:]
        print("| " + " | ".join(map(str, row)) + " |", flush=True)
    print(f"| total | | {total[0]} | {total[1]} | {total[2]} | {total[3]} |")


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
    print(f"# revisit, depth {args.depth}, stride {args.stride}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"load {os.getloadavg()[0]:.1f}")
    print("| room | frames | ATE no loops (cm) | ATE loops (cm) | ratio | verts > 5 cm, no loops | with loops | "
          "loops accepted / rejected | keyframes | correction s (each) | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for seed in _rooms(args.rooms):
        src = open_source(f"synthetic:{seed}?revisit")
        label_space = predictor.label_space if predictor is not None else src.label_space
        plain = MappingBridge(label_space, MappingConfig(depth_mode=args.depth))
        loops = MappingBridge(label_space, MappingConfig(depth_mode=args.depth, loop_closure=True))
        times, truth = [], []
        for i in range(0, len(src), args.stride):
            f = src[i]
            pred = predictor.predict(f.rgb) if predictor is not None else None
            pf = to_perception_frame(f, pred, args.depth, label_space.num_classes, pose_prior=not times)
            times.append(f.timestamp)
            truth.append(f.pose)
            plain.process(pf)
            loops.process(pf)
        gt = (np.array(times), np.array(truth))
        rs = src.scene.raycasting_scene()
        row = [seed, len(times)]
        ates, far = [], []
        for b in (plain, loops):
            ates.append(100 * ate_rmse(gt, b.trajectory()))
            v = b.snapshot(with_objects=False).vertices
            import open3d.core as o3c

            d = rs.compute_distance(o3c.Tensor(v.astype(np.float32))).numpy()
            far.append(float((d > 0.05).mean()))
        lc = loops.loops
        row += [f"{ates[0]:.1f}", f"{ates[1]:.1f}", f"{ates[1] / ates[0]:.2f}", f"{far[0]:.3f}", f"{far[1]:.3f}",
                f"{len(lc.corrections)} / {lc.rejected}", len(lc.graph),
                ", ".join(f"{c.seconds:.1f}" for c in lc.corrections) or "-", f"{os.getloadavg()[0]:.1f}"]
        print("| " + " | ".join(map(str, row)) + " |", flush=True)


def run_cost(args) -> None:
    """One map correction with ``--keyframes`` keyframes: GNC over the graph + the rebuild of TSDF and evidence."""
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
    cfg = MappingConfig(depth_mode="gt")
    rows = []
    for _ in range(args.repeats):
        load = os.getloadavg()[0]
        w0, c0 = time.perf_counter(), time.process_time()
        closer.graph.optimize()
        w1, c1 = time.perf_counter(), time.process_time()
        closer.rebuild(cfg, src.label_space.num_classes, 0.02, src.K, (src.height, src.width))
        w2, c2 = time.perf_counter(), time.process_time()
        rows.append((w1 - w0, c1 - c0, w2 - w1, c2 - c1, load))
    print(f"# correction cost, {args.keyframes} keyframes (room {args.room}, 240x320 frames stored at half "
          f"resolution, {closer.store.nbytes / 1e6:.1f} MB), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| GNC wall s | GNC CPU s | rebuild wall s | rebuild CPU s (all threads) | load before |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(f"{x:.2f}" if i < 4 else f"{x:.1f}" for i, x in enumerate(r)) + " |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("false-loops")
    f.add_argument("--rooms", default="100000-100019")
    f.add_argument("--seven-scenes", nargs="*", default=[])
    r = sub.add_parser("revisit")
    r.add_argument("--rooms", default="100000-100004")
    r.add_argument("--depth", choices=("pred", "gt"), default="pred")
    r.add_argument("--stride", type=int, default=1)
    c = sub.add_parser("cost")
    c.add_argument("--keyframes", type=int, default=300)
    c.add_argument("--room", type=int, default=200003)
    c.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    {"false-loops": run_false_loops, "revisit": run_revisit, "cost": run_cost}[args.cmd](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
