"""``m2hmx-viewer``: the live desktop demo and mapping visualiser.

Imports stay light at module level (argparse only): the mapping process is started with the "spawn"
context, which re-imports the main module, and ``--help`` should not wait for Qt or torch.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from app.pipeline import ODOMETRY_CHOICES, parse_tasks
from m2hmx.cli.args import (FAILURE, USAGE, UsageError, check_input, check_output_file, check_output_folder, intrinsics,
                            positive_int, report)
from m2hmx.data.synthetic import FIRST_HELD_OUT_SEED
from mapping.interface import VIEWER_DEPTH_MODES

EPILOG = """\
examples:
  m2hmx-viewer                                   bundled demo: generated room + bundled model
  m2hmx-viewer --depth sensor                    demo mapped with the scene's own (sensor) depth
  m2hmx-viewer --camera 0                        webcam (K guessed from a 60 deg field of view)
  m2hmx-viewer --realsense                       first RealSense found; its depth shown beside the prediction
  m2hmx-viewer --realsense-bag walk.bag          a RealSense recording (.bag / .db3)
  m2hmx-viewer --realsense --record room.bag     ... and record it, for m2hmx-adapt --recording room.bag
  m2hmx-viewer --dataset scannet/scene0011 --data-root ~/data
  m2hmx-viewer --dataset ~/data/scene0011_00.sens --checkpoint runs/best.safetensors
  m2hmx-viewer --dataset ~/data/rgbd_dataset_freiburg1_desk --labelspace nyu40 --checkpoint nyu.safetensors
  m2hmx-viewer --video hallway.mp4 --depth-scale 1.1
  m2hmx-viewer --dataset runs/bag --rerun        a ROS 2 bag, also logged live to Rerun
  m2hmx-viewer --max-frames 120 --screenshot docs/screenshot.png --export out/map --quit-when-done

keys: Space play/pause, N or Right step, R restart, Ctrl+R reset map, M restart mapping, C colour mode,
      D depth into the map, S screenshot, Ctrl+S screenshot as, E export map, Ctrl+E export as, F1 help, Q quit
"""


OUTPUT_DIR = "m2hmx-output"


def bundled_model() -> Path:
    from m2hmx.config import bundled_checkpoint

    return bundled_checkpoint()


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 240x320, got '{text}'") from None
    if h < 32 or w < 32:
        raise argparse.ArgumentTypeError(f"size {text} is too small (at least 32x32)")
    return h, w


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _tasks(text: str) -> tuple[str, ...]:
    try:
        return parse_tasks(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _DeprecatedDepthSource(argparse.Action):
    """``--depth-source``: sets ``--depth`` and says so on stderr (one vocabulary: mapping.interface.DEPTH_MODES)."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"m2hmx-viewer: {option_string} is deprecated; use --depth {values} (the same values)", file=sys.stderr)
        setattr(namespace, self.dest, values)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="m2hmx-viewer", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Live M2H-MX perception (depth, semantics, normals, edges) and metric-semantic mapping "
                    "in a desktop window. Without a source argument it runs the bundled demo: a generated "
                    "room walked through by a virtual camera, seen by the bundled model.")
    group = p.add_argument_group("source (pick one; default: the generated demo scene)")
    src = group.add_mutually_exclusive_group()
    src.add_argument("--camera", type=int, metavar="N", help="OpenCV camera index (webcam)")
    src.add_argument("--realsense", nargs="?", const="", metavar="SERIAL",
                     help="Intel RealSense camera (optionally by serial); needs the 'realsense' extra")
    src.add_argument("--realsense-bag", metavar="FILE", help="a RealSense recording (.bag, .db3)")
    src.add_argument("--dataset", metavar="SPEC",
                     help="a ScanNet export folder or .sens, TUM RGB-D or 7-Scenes folder, NYUv2 .mat, image "
                          "folder, 'scannet/sceneXXXX' (under --data-root) or 'synthetic:SEED'")
    src.add_argument("--video", metavar="FILE", help="a video file")
    group.add_argument("--intrinsics", type=intrinsics, metavar="FX,FY,CX,CY",
                       help="with --dataset or --video: camera intrinsics in pixels of the recorded images, for a "
                            "recording whose own cannot be inferred (e.g. a TUM folder not named fr1/fr2/fr3)")
    group.add_argument("--record", metavar="FILE.bag",
                       help="with --realsense: also record the camera to this .bag (for m2hmx-adapt)")
    group.add_argument("--demo-seed", type=int, default=FIRST_HELD_OUT_SEED, metavar="SEED",
                       help=f"seed of the generated demo room (from {FIRST_HELD_OUT_SEED} up: rooms the bundled "
                            "model never saw in training)")
    group.add_argument("--data-root", metavar="DIR",
                     help="root for dataset shorthands like scannet/scene0011 (default: $M2HMX_DATA_ROOT)")

    model = p.add_argument_group("model")
    model.add_argument("--checkpoint", metavar="FILE",
                       help="M2H-MX checkpoint (.safetensors); default: the bundled assets/m2hmx-demo.safetensors")
    model.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (cpu)")
    model.add_argument("--labelspace", metavar="NAME|FILE",
                       help="label space for colours and the map: scannet20, nyu40 or a JSON file "
                            "(default: the model's)")
    model.add_argument("--depth", choices=VIEWER_DEPTH_MODES, default=VIEWER_DEPTH_MODES[0],
                       help="depth fused into the map: the network's prediction or the sensor's, as m2hmx-map "
                            "--depth names them (pred)")
    model.add_argument("--depth-source", choices=VIEWER_DEPTH_MODES, action=_DeprecatedDepthSource, dest="depth",
                       help="deprecated: the old name of --depth")
    model.add_argument("--depth-scale", type=_positive_float, default=1.0, metavar="S",
                       help="multiply predicted depth by S (a camera whose focal length differs from the "
                            "training data's sees metric depth off by a constant factor) (1.0)")
    model.add_argument("--odometry", choices=ODOMETRY_CHOICES, default=None,
                       help="sparse keyframe odometry: vio (visual-inertial; vo when the source has no IMU; the "
                            "default for predicted depth) or vo; or dense frame-to-model odometry: point_to_plane (the "
                            "default for sensor depth), hybrid or intensity")
    model.add_argument("--tasks", type=_tasks, default=None, metavar="LIST",
                       help="network outputs to predict, e.g. depth,semseg as the paper deploys it: the normals and "
                            "edge panels say off (default: all of the model's heads)")
    model.add_argument("--loop-closure", action="store_true",
                       help="close loops: place recognition, pose graph, map rebuilt at the corrected poses")
    model.add_argument("--torch-threads", type=positive_int, default=1, metavar="N",
                       help="torch threads for perception; mapping and the GUI need the other cores (1)")

    run = p.add_argument_group("run and output")
    run.add_argument("--size", type=_size, default=(240, 320), metavar="HxW",
                     help="processing size frames are resized to (240x320)")
    run.add_argument("--realtime", action="store_true",
                     help="play a recording or the demo at its own clock, dropping frames to keep latency bounded "
                          "like a live camera (default: every frame is mapped)")
    run.add_argument("--max-frames", type=positive_int, metavar="N", help="stop reading the source after N frames")
    run.add_argument("--loop", type=positive_int, metavar="N",
                     help="play a finite source back and forth for N frames (soak tests)")
    run.add_argument("--output-dir", default=OUTPUT_DIR, metavar="DIR",
                     help="where S / E put screenshots and map exports (./m2hmx-output)")
    run.add_argument("--screenshot", metavar="PATH",
                     help="when the run is done, save the window to PATH and the 3D view to PATH_map.png")
    run.add_argument("--export", metavar="DIR", help="when the run is done, export the map (every format) to DIR")
    run.add_argument("--quit-when-done", action="store_true",
                     help="quit once the source ended (or --max-frames), after --screenshot / --export")
    live = p.add_argument_group("Rerun (the 'rerun' extra)")
    live.add_argument("--rerun", action="store_true", help="also log the run live to a Rerun viewer it spawns")
    live.add_argument("--rerun-connect", metavar="ADDR",
                      help="log to a running Rerun viewer instead (HOST:PORT or a rerun+http:// URL)")
    live.add_argument("--rerun-save", metavar="FILE", help="write the Rerun recording to FILE (.rrd) instead")
    run.add_argument("--snapshot-interval", type=_positive_float, default=1.0, metavar="S",
                     help="seconds of mapping between 3D map refreshes (1.0)")
    return p


def options_from_args(args: argparse.Namespace):
    from app.session import ViewerOptions
    from app.sources import SourceSpec

    if args.camera is not None:
        spec = SourceSpec("camera", str(args.camera))
    elif args.realsense is not None:
        spec = SourceSpec("realsense", args.realsense or None, record=args.record)
    elif args.realsense_bag:
        spec = SourceSpec("realsense-bag", args.realsense_bag)
    elif args.dataset:
        spec = SourceSpec("dataset", args.dataset, data_root=args.data_root, intrinsics=args.intrinsics)
    elif args.video:
        spec = SourceSpec("video", args.video, intrinsics=args.intrinsics)
    else:
        spec = SourceSpec("demo", demo_seed=args.demo_seed)
    spec.realtime = args.realtime
    checkpoint, note = args.checkpoint, ""
    if checkpoint is None:
        bundled = bundled_model()
        if bundled.is_file():
            checkpoint = str(bundled)
        else:
            note = (f"bundled model {bundled.name} not found in {bundled.parent}: no predictions; showing the "
                    "sensor depth and the ground-truth labels (pass --checkpoint FILE)")
    named = {f.name: getattr(args, f.name) for f in dataclasses.fields(ViewerOptions) if hasattr(args, f.name)}
    named.update(  # the options whose flags have other names or shapes
        source=spec, checkpoint=checkpoint, checkpoint_note=note, snapshot_every_s=args.snapshot_interval,
        loop_frames=args.loop, rerun=("save", args.rerun_save) if args.rerun_save else ("connect", args.rerun_connect)
        if args.rerun_connect else ("spawn", None) if args.rerun else None)
    return ViewerOptions(**named)


def check_usage(args: argparse.Namespace) -> None:
    """Inputs that do not exist, outputs that cannot be written, --intrinsics without a recording: ``UsageError``
    before the window opens."""
    if args.intrinsics and not (args.dataset or args.video):
        raise UsageError("--intrinsics goes with --dataset or --video (cameras and generated rooms know their own)")
    if args.intrinsics and args.dataset and args.dataset.startswith("synthetic"):
        raise UsageError(f"--intrinsics: {args.dataset} is a generated room, whose camera is exact")
    check_input(args.dataset if args.data_root is None else None, "--dataset")
    check_input(args.video, "--video", file=True)
    check_input(args.realsense_bag, "--realsense-bag", file=True)
    check_input(args.checkpoint, "--checkpoint", file=True)
    if args.export:
        check_output_folder(args.export, "--export")
    if args.output_dir != OUTPUT_DIR:  # the default is made when S or E first needs it
        check_output_folder(args.output_dir, "--output-dir")
    check_output_file(args.screenshot, "--screenshot")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.record is not None:
        record = Path(args.record)
        if args.realsense is None:
            parser.error("--record needs --realsense (it records the live camera)")
        if record.suffix.lower() != ".bag":
            parser.error(f"--record {record}: the recording must end in .bag")
        if not record.resolve().parent.is_dir():
            parser.error(f"--record {record}: folder {record.resolve().parent} does not exist")
    if args.labelspace:
        from m2hmx.labels import load_label_space

        try:
            load_label_space(args.labelspace)
        except (OSError, ValueError, KeyError) as exc:
            parser.error(f"--labelspace: {exc}")
    if args.realtime and (args.camera is not None or args.realsense is not None):
        parser.error("--realtime is for recordings and the demo (a live camera keeps its own clock)")
    if args.realtime and args.loop:
        parser.error("give one of --realtime, --loop")
    if sum(map(bool, (args.rerun, args.rerun_connect, args.rerun_save))) > 1:
        parser.error("give one of --rerun, --rerun-connect, --rerun-save")
    try:  # a missing extra or an unwritable recording fails before the window opens
        if args.rerun or args.rerun_connect or args.rerun_save:
            from app.rerun_log import check_target

            check_target(args.rerun, args.rerun_connect, args.rerun_save)
    except (RuntimeError, ValueError) as exc:
        parser.error(str(exc))
    try:
        check_usage(args)
    except UsageError as exc:
        return report("m2hmx-viewer", exc, USAGE)
    options = options_from_args(args)
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                                                  or os.environ.get("QT_QPA_PLATFORM")):
        print("m2hmx-viewer: no display ($DISPLAY is not set); on a headless machine run it under "
              "xvfb-run -a -s '-screen 0 1600x1000x24' m2hmx-viewer ..., or use m2hmx-map", file=sys.stderr)
        return USAGE

    import signal

    from PyQt6 import QtCore, QtWidgets, sip

    from app.window import MainWindow

    QtCore.QCoreApplication.setAttribute(QtCore.Qt.ApplicationAttribute.AA_ShareOpenGLContexts)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    app.setApplicationName("m2hmx-viewer")
    window = MainWindow(options)
    window.show()
    # Ctrl+C: close from the event loop, not inside whatever Python callback the signal interrupted (a map poll
    # resumed after the close would read the mapping process's closed queue).
    signal.signal(signal.SIGINT, lambda *_: QtCore.QTimer.singleShot(0, window.close))
    wake = QtCore.QTimer()  # lets Python run its signal handlers while Qt's loop runs
    wake.timeout.connect(lambda: None)
    wake.start(200)
    app.exec()
    window.shutdown()
    code = FAILURE if window.session.run_failed or window.stages.source is None else 0  # a script can tell a failed run
    # Destroy the window (and its OpenGL view) now, while the QApplication exists: left to interpreter exit, the
    # order is arbitrary, and Qt objects that outlive the application can crash the process as it ends.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sip.delete(window)
    return code


if __name__ == "__main__":
    sys.exit(main())
