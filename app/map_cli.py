"""``m2hmx-map``: run the mapping pipeline headless and write the map's exports plus ``metrics.json``.

Example: ``m2hmx-map --dataset synthetic:0 --depth sensor --out runs/map0 --max-frames 100``. On generated rooms
(``synthetic:SEED``) ``metrics.json`` also scores the scene graph's objects against the room's own
(``mapping.scene_graph.score_objects``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.pipeline import ODOMETRY_CHOICES, parse_tasks
from m2hmx.cli.args import (FAILURE, INTERRUPTED, USAGE, UsageError, check_input, check_output_folder, intrinsics,
                            positive_int, report)
from mapping.interface import DEPTH_MODES


VOXEL_RANGE = (0.002, 0.5)  # metres: below 2 mm a room's TSDF exhausts memory, above 0.5 m nothing is left of it


def _voxel_size(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of metres, got '{text}'") from None
    if not VOXEL_RANGE[0] <= value <= VOXEL_RANGE[1]:
        raise argparse.ArgumentTypeError(f"must be between {VOXEL_RANGE[0]} and {VOXEL_RANGE[1]} m, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="m2hmx-map", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True, help="source spec for m2hmx.data.sources.open_source "
                   "(a folder written by m2hmx-synth, a 7-Scenes / TUM / ScanNet folder, synthetic:SEED, ...)")
    p.add_argument("--depth", choices=tuple(DEPTH_MODES), default="sensor",
                   help="; ".join(f"{k}: {v}" for k, v in DEPTH_MODES.items()) + " (sensor)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--checkpoint", default=None, help="network for --depth pred / labels "
                   "(default assets/m2hmx-demo.safetensors with --depth pred)")
    p.add_argument("--tasks", type=_tasks, default=None, metavar="LIST",
                   help="network outputs to predict (default: all of the model's); mapping uses depth and semseg "
                        "only, and 'depth,semseg' skips the other heads' prediction layers with the same answers")
    p.add_argument("--intrinsics", type=intrinsics, default=None, metavar="FX,FY,CX,CY",
                   help="camera intrinsics in pixels of the recorded images, for a folder, video or image sequence "
                        "whose own cannot be inferred (e.g. a TUM folder not named fr1/fr2/fr3)")
    p.add_argument("--max-frames", type=positive_int, default=None)
    p.add_argument("--realtime", action="store_true",
                   help="play the recording at its own clock: a frame whose successor is already due when the "
                        "mapper is ready is skipped, like a live camera (default: every frame is mapped)")
    p.add_argument("--stride", type=positive_int, default=1, help="use every K-th frame")
    p.add_argument("--gt-poses", action="store_true", help="use ground-truth poses instead of tracking")
    p.add_argument("--odometry", choices=ODOMETRY_CHOICES, default=None,
                   help="vio/vo: sparse keyframe visual(-inertial) odometry (vio runs as vo without IMU; the frames it "
                        "loses go to the dense hybrid tracker); point_to_plane/hybrid/intensity: dense frame-to-model; "
                        "default vio with --depth pred, point_to_plane otherwise")
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
        check_usage(args)
    except UsageError as exc:
        return report("m2hmx-map", exc, USAGE)
    try:
        return _run(args)
    except KeyboardInterrupt:  # a second Ctrl+C, during the export: the previous export stays whole
        print("m2hmx-map: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as exc:  # one line for the user, no traceback
        return report("m2hmx-map", exc, FAILURE)


def check_usage(args) -> None:
    """Every value wrong on its face, before any work (``UsageError``): inputs that do not exist, outputs that
    cannot be written, option combinations, missing extras."""
    from m2hmx.config import bundled_checkpoint

    if sum(map(bool, (args.rerun, args.rerun_connect, args.rerun_save))) > 1:
        raise UsageError("give one of --rerun, --rerun-connect, --rerun-save")
    check_input(args.dataset, "--dataset")
    if args.intrinsics and args.dataset.startswith("synthetic"):
        raise UsageError(f"--intrinsics: {args.dataset} is a generated room, whose camera is exact")
    if args.depth == "pred" or args.checkpoint:
        check_input(args.checkpoint or str(bundled_checkpoint()), "--checkpoint", file=True)
    check_output_folder(args.out, "--out")
    try:  # unwritable outputs and missing extras fail before the run starts
        if args.rerun or args.rerun_connect or args.rerun_save:
            from app.rerun_log import check_target

            check_target(args.rerun, args.rerun_connect, args.rerun_save)
        if args.rosbag:
            from app.rosbag_io import check_bag_target

            check_bag_target(args.rosbag)
    except (RuntimeError, ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None


def _run(args) -> int:
    from app.map_run import load_predictor, map_sequence
    from mapping.bridge import MappingConfig
    from mapping.export import atomic_write_text

    predictor = load_predictor(args.checkpoint, args.tasks) if args.depth == "pred" or args.checkpoint else None
    config = MappingConfig(depth_mode=args.depth, use_pose_prior=args.gt_poses, voxel_size=args.voxel_size,
                           odometry=args.odometry, loop_closure=args.loops)
    observers = []

    def observe(bridge, label_space):
        observers.append(_observer(args, bridge, label_space))
        return observers[0]

    run = map_sequence(args.dataset, config, predictor, args.max_frames, args.stride, not args.no_progress, observe,
                       args.intrinsics, args.realtime)
    out = Path(args.out)
    written = run.export(out)
    metrics = run.metrics()
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1))
    extra = _close_observer(observers[0], run.snapshot())  # after the exports: a failed recording keeps the map
    _print_summary(run, metrics, len(written) + 1, out, extra)
    if run.interrupted:
        print(f"m2hmx-map: {run.error} (map up to that frame exported)", file=sys.stderr)
        return INTERRUPTED
    if run.error:
        print(f"m2hmx-map: error: {run.error} (map up to that frame exported)", file=sys.stderr)
        return FAILURE
    return 0


def _print_summary(run, metrics: dict, files: int, out: Path, extra: str) -> None:
    ate, rpe, objects = metrics["ate_rmse_m"], metrics["rpe_1s_trans_m"], metrics.get("objects")
    realtime = metrics.get("realtime")
    if run.intrinsics:
        print(f"m2hmx-map: {run.intrinsics}", file=sys.stderr)
    if run.bridge.odometry_note:
        print(f"m2hmx-map: {run.bridge.odometry_note}", file=sys.stderr)
    print(f"{run.frames} frames, {run.failures} tracking failures"
          + (f", ATE RMSE {ate * 100:.2f} cm ({metrics['ate_sim3_rmse_m'] * 100:.2f} cm with scale "
             f"{metrics['ate_sim3_scale']:.3f})" if ate is not None else "")
          + (f", RPE over 1 s {rpe * 100:.2f} cm / {metrics['rpe_1s_rot_deg']:.2f} deg" if rpe is not None else "")
          + (f", objects {objects['matched']} of {objects['true_objects']} found by {objects['nodes']} nodes"
             if objects else "")
          + (f", real time: {realtime['skipped_frames']} frames skipped, latency p50 {realtime['latency_ms_p50']:.0f}"
             f" / p95 {realtime['latency_ms_p95']:.0f} ms" if realtime else "")
          + f"; wrote {files} files to {out}" + extra)


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
