"""``m2hmx-map``: run the mapping pipeline headless and write the map's exports plus ``metrics.json``.

Example: ``m2hmx-map --dataset synthetic:0 --depth sensor --out runs/map0 --max-frames 100``. On generated rooms
(``synthetic:SEED``) ``metrics.json`` also scores the scene graph's objects against the room's own
(``mapping.scene_graph.score_objects``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from app.pipeline import ODOMETRY_CHOICES, parse_tasks
from m2hmx.cli.args import positive_int


VOXEL_RANGE = (0.002, 0.5)  # metres: below 2 mm a room's TSDF exhausts memory, above 0.5 m nothing is left of it


def _voxel_size(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of metres, got '{text}'") from None
    if not VOXEL_RANGE[0] <= value <= VOXEL_RANGE[1]:
        raise argparse.ArgumentTypeError(f"must be between {VOXEL_RANGE[0]} and {VOXEL_RANGE[1]} m, got {text}")
    return value


def check_writable(folder: Path) -> None:
    """Fail at once, not after mapping the whole sequence, when --out cannot be written: an existing folder gets
    a probe file written and removed; a new one is not created yet (a bad --dataset must leave nothing), its
    nearest existing parent must be a writable folder."""
    import os
    import tempfile

    try:
        if folder.is_dir():
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".m2hmx-probe-"):
                return
        parent = folder.parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise OSError(f"{parent} is not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OSError(f"cannot create folders in {parent}")
    except OSError as exc:
        raise OSError(f"--out {folder} is not writable: {exc.strerror or exc}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="m2hmx-map", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True, help="source spec for m2hmx.data.sources.open_source "
                   "(a folder written by m2hmx-synth, a 7-Scenes / TUM / ScanNet folder, synthetic:SEED, ...)")
    p.add_argument("--depth", choices=("sensor", "gt", "pred"), default="sensor",
                   help="sensor/gt: the source's own depth; pred: the network's depth")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--checkpoint", default=None, help="network for --depth pred / labels "
                   "(default assets/m2hmx-demo.safetensors with --depth pred)")
    p.add_argument("--tasks", type=_tasks, default=None, metavar="LIST",
                   help="network outputs to predict (default: all of the model's); mapping uses depth and semseg "
                        "only, and 'depth,semseg' skips the other heads' prediction layers with the same answers")
    p.add_argument("--max-frames", type=positive_int, default=None)
    p.add_argument("--stride", type=positive_int, default=1, help="use every K-th frame")
    p.add_argument("--gt-poses", action="store_true", help="use ground-truth poses instead of tracking")
    p.add_argument("--odometry", choices=ODOMETRY_CHOICES, default=None,
                   help="vio/vo: sparse keyframe visual(-inertial) odometry (vio runs as vo without IMU); "
                        "point_to_plane/hybrid/intensity: dense frame-to-model; default hybrid with --depth pred, "
                        "point_to_plane otherwise")
    p.add_argument("--voxel-size", type=_voxel_size, default=None,
                   help=f"TSDF voxel (m, {VOXEL_RANGE[0]}-{VOXEL_RANGE[1]}); default by image width")
    p.add_argument("--loops", action="store_true",
                   help="loop closure: place recognition, pose graph, map rebuilt; writes pose_graph.g2o")
    p.add_argument("--no-progress", action="store_true")
    live = p.add_argument_group("Rerun and ROS 2 (extras 'rerun' and 'ros')")
    live.add_argument("--rerun", action="store_true", help="log the run live to a Rerun viewer it spawns")
    live.add_argument("--rerun-connect", metavar="ADDR",
                      help="log to a running Rerun viewer instead (HOST:PORT or a rerun+http:// URL)")
    live.add_argument("--rerun-save", metavar="FILE", help="write the Rerun recording to FILE (.rrd) instead")
    live.add_argument("--rosbag", metavar="DIR", help="also write the perception, poses and TF as a ROS 2 bag "
                      "(MCAP) in the new folder DIR, topics as mono-hydra-pp / Hydra expect them")
    return p


def _tasks(text: str) -> tuple[str, ...]:
    try:
        return parse_tasks(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:  # a second Ctrl+C, during the export: the previous export stays whole
        print("m2hmx-map: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for the user, no traceback
        print(f"m2hmx-map: error: {exc}".splitlines()[0], file=sys.stderr)
        return 1


def _run(args) -> int:
    if args.stride < 1:
        raise ValueError("--stride must be >= 1")
    if sum(map(bool, (args.rerun, args.rerun_connect, args.rerun_save))) > 1:
        raise ValueError("give one of --rerun, --rerun-connect, --rerun-save")
    if args.rerun_save:  # unwritable outputs and missing extras fail before the run starts
        from app.rerun_log import check_rrd_target

        check_rrd_target(args.rerun_save)
    elif args.rerun_connect:
        from app.rerun_log import require_rerun

        require_rerun()
    elif args.rerun:
        from app.rerun_log import check_spawn

        check_spawn()
    if args.rosbag:
        from app.rosbag_io import check_bag_target

        check_bag_target(args.rosbag)
    from app.pipeline import run_mapping
    from m2hmx.data.sources import open_source
    from m2hmx.labels import load_label_space
    from mapping.bridge import MappingBridge, MappingConfig
    from mapping.scene_graph import score_objects
    from mapping.trajectory import TrajectoryError, ate_rmse, ate_with_scale, rpe_rmse

    check_writable(Path(args.out))
    source = open_source(args.dataset)
    predictor = None
    if args.depth == "pred" or args.checkpoint:
        from m2hmx import ASSETS_DIR
        from m2hmx.predictor import Predictor

        ckpt = Path(args.checkpoint) if args.checkpoint else ASSETS_DIR / "m2hmx-demo.safetensors"
        if not ckpt.is_file():
            raise FileNotFoundError(f"checkpoint not found: {ckpt}")
        predictor = Predictor.from_checkpoint(str(ckpt), "cpu", tasks=args.tasks)
    label_space = (predictor.label_space if predictor is not None else None) or source.label_space \
        or load_label_space("scannet20")
    config = MappingConfig(depth_mode=args.depth, use_pose_prior=args.gt_poses, voxel_size=args.voxel_size,
                           odometry=args.odometry, loop_closure=args.loops)
    bridge = MappingBridge(label_space, config)
    observer = _observer(args, bridge, label_space)
    t0 = time.perf_counter()
    try:
        run = run_mapping(source, bridge, predictor, args.depth, args.max_frames, not args.no_progress,
                          stride=args.stride, gt_poses=args.gt_poses, on_frame=observer)
    finally:
        source.close()
    wall = time.perf_counter() - t0
    out = Path(args.out)
    t1 = time.perf_counter()
    if bridge.loops is not None:
        bridge.loops.finish_rebuild()  # a staged map rebuild after the last loop closure
    snapshot = bridge.snapshot()
    written = bridge.export(out, snapshot)
    export_s = time.perf_counter() - t1
    n = max(run["frames"], 1)
    metrics = {
        "dataset": args.dataset, "depth": args.depth, "gt_poses": args.gt_poses, "frames": run["frames"],
        "tracking_failures": run["failures"], "voxel_size_m": bridge.voxel_size,
        "odometry": None if args.gt_poses else bridge.odometry_mode, "odometry_note": bridge.odometry_note,
        "keyframes": bridge.keyframe_count,
        "scale_alignment": config.scale_alignment, "map_scale": bridge.map_scale,
        "mean_ms": {k: 1000 * v / n for k, v in bridge.timing_totals.items()},
        "wall_s": wall, "export_s": export_s, "error": run["error"], "ate_rmse_m": None,
        "ate_sim3_rmse_m": None, "ate_sim3_scale": None, "rpe_1s_trans_m": None, "rpe_1s_rot_deg": None,
    }
    if bridge.loops is not None:
        metrics["loops"] = {"accepted": len(bridge.loops.corrections), "rejected": bridge.loops.rejected,
                            "keyframes": len(bridge.loops.graph), "seconds": bridge.loop_seconds,
                            "correction_s": [c.seconds for c in bridge.loops.corrections],
                            "correction_later_s": [c.later_seconds for c in bridge.loops.corrections]}
    if run["gt"] is not None and run["frames"] >= 3:
        gt, est = run["gt"], bridge.trajectory()
        try:
            metrics["ate_rmse_m"] = ate_rmse(gt, est, max_diff=0.02)
            metrics["ate_sim3_rmse_m"], metrics["ate_sim3_scale"] = ate_with_scale(gt, est, max_diff=0.02)
        except (TrajectoryError, np.linalg.LinAlgError) as exc:
            metrics["ate_error"] = str(exc)
        try:
            metrics["rpe_1s_trans_m"], metrics["rpe_1s_rot_deg"] = rpe_rmse(gt, est, delta_s=1.0, max_diff=0.02)
        except (TrajectoryError, np.linalg.LinAlgError):  # under a second of poses: the RPE stays None
            pass
    if hasattr(source, "visible_objects") and run["gt"] is not None:  # generated rooms know their objects
        truth = [(o.class_id, o.aabb_min, o.aabb_max) for o in source.visible_objects(run["gt"][1])]
        metrics["objects"] = score_objects(snapshot.objects, truth)
    from mapping.export import atomic_write_text

    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1))
    extra = _close_observer(observer, snapshot)  # after the exports: a failing recording never costs the map
    ate, rpe, objects = metrics["ate_rmse_m"], metrics["rpe_1s_trans_m"], metrics.get("objects")
    if bridge.odometry_note:
        print(f"m2hmx-map: {bridge.odometry_note}", file=sys.stderr)
    print(f"{run['frames']} frames, {run['failures']} tracking failures"
          + (f", ATE RMSE {ate * 100:.2f} cm ({metrics['ate_sim3_rmse_m'] * 100:.2f} cm with scale "
             f"{metrics['ate_sim3_scale']:.3f})" if ate is not None else "")
          + (f", RPE over 1 s {rpe * 100:.2f} cm / {metrics['rpe_1s_rot_deg']:.2f} deg" if rpe is not None else "")
          + (f", objects {objects['matched']} of {objects['true_objects']} found by {objects['nodes']} nodes"
             if objects else "") + f"; wrote {len(written) + 1} files to {out}" + extra)
    if run["interrupted"]:
        print(f"m2hmx-map: {run['error']} (map up to that frame exported)", file=sys.stderr)
        return 130
    if run["error"]:
        print(f"m2hmx-map: error: {run['error']} (map up to that frame exported)", file=sys.stderr)
        return 1
    return 0


def _observer(args, bridge, label_space):
    """The Rerun logger and/or ROS 2 bag writer fed with every mapped frame (None without those options)."""
    if not (args.rerun or args.rerun_connect or args.rerun_save or args.rosbag):
        return None
    from app.rerun_log import MapRunLogger, RerunLogger

    bag = None
    if args.rosbag:
        from app.rosbag_io import RosbagWriter

        bag = RosbagWriter(args.rosbag, label_space)
    rerun = None
    if args.rerun or args.rerun_connect or args.rerun_save:
        rerun = RerunLogger(label_space, save=args.rerun_save, connect=args.rerun_connect)
    return MapRunLogger(bridge, rerun, bag)


def _close_observer(observer, snapshot) -> str:
    """Log the final map, finish the recording and the bag; the summary's tail naming what was written."""
    if observer is None:
        return ""
    parts = []
    if observer.rerun is not None:
        observer.log_snapshot(snapshot)
        path = observer.rerun.close()
        parts.append(f"Rerun recording {path}" if path else "logged to Rerun")
    if observer.bag is not None:
        path = observer.bag.close()
        parts.append(f"ROS 2 bag {path}" if path else "no ROS 2 bag (no frame mapped)")
    return "; " + ", ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
