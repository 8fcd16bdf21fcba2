"""``m2hmx-adapt --recording SPEC --out model.safetensors``: fit a model to one RGB-D recording (m2hmx.adapt)."""
from __future__ import annotations

import argparse
import sys
import time

import m2hmx  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
from m2hmx.cli.args import check_input, check_output_file, positive_int, run_reported

EPILOG = """\
record, adapt, view:
  m2hmx-viewer --realsense --record room.bag
  m2hmx-adapt --recording room.bag --out room.safetensors --minutes 15
  m2hmx-viewer --realsense --checkpoint room.safetensors
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="m2hmx-adapt", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Fine-tune a model on one RGB-D recording: the sensor's depth is the target, the starting "
                    "model's own predictions keep its semantics; writes the model and a card beside it.")
    p.add_argument("--recording", required=True, metavar="SPEC",
                   help="an RGB-D recording: ScanNet export or .sens, TUM RGB-D, 7-Scenes, an m2hmx-synth folder, "
                        "synthetic:SEED")
    p.add_argument("--out", required=True, metavar="FILE", help="the adapted model (.safetensors); the card is "
                   "written beside it as <name>.card.md")
    p.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="the model to start from (default: the bundled assets/m2hmx-demo.safetensors)")
    p.add_argument("--frames", default=":", metavar="A:B", help="frames A to B-1 of the recording (default: all)")
    p.add_argument("--holdout", type=float, default=0.1, metavar="FRACTION",
                   help="the last FRACTION of those frames is kept out of training and scored before and after "
                        "(0.1; 0 trains on all)")
    p.add_argument("--minutes", type=float, default=15.0, help="wall-clock budget of the whole command (15)")
    p.add_argument("--steps", type=positive_int, default=None, help="stop after this many steps, even with budget left")
    p.add_argument("--train", default="heads,decoder,hfa", metavar="PARTS",
                   help="comma-separated parts that learn (parameter-name prefixes, e.g. heads.depth,decoder), or "
                        "'all' (heads,decoder,hfa)")
    p.add_argument("--lr", type=float, default=5e-4, help="AdamW learning rate (5e-4), cosine over the budget")
    p.add_argument("--far", type=float, default=5.0, metavar="M",
                   help="sensor depth beyond M metres is not a target (5)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--data-root", default=None, help="root for short specs like scannet/scene0011")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    # Idle OpenMP threads stay PASSIVE (the package default), unlike m2hmx-train: a user adapts while other programs
    # run, and with more busy threads than cores spinning threads made a step 10x slower here (113 s vs 9 s).
    started = time.perf_counter()
    args = build_parser().parse_args(argv)

    from m2hmx.adapt import AdaptConfig, AdaptError, adapt, describe, parse_frames
    from m2hmx.checkpoint import CheckpointError
    from m2hmx.config import bundled_checkpoint
    from m2hmx.data import DatasetError
    from m2hmx.data.sources import open_source

    checkpoint = args.checkpoint or str(bundled_checkpoint())

    def work() -> None:
        check_input(args.recording if args.data_root is None else None, "--recording")  # before any work
        check_input(checkpoint, "--checkpoint", file=True)
        check_output_file(args.out, "--out")
        parts = None if args.train.strip() == "all" else tuple(p.strip() for p in args.train.split(",") if p.strip())
        config = AdaptConfig(minutes=args.minutes, steps=args.steps, frames=parse_frames(args.frames), holdout=args.holdout,
                             parts=parts, lr=args.lr, far=args.far, device=args.device, threads=args.threads)
        source = open_source(args.recording, args.data_root)
        try:
            result = adapt(source, checkpoint, args.out, config, recording=args.recording, started=started,
                           progress=not args.no_progress)
        finally:
            source.close()
        print(describe(result))

    # AdaptError: the options and the recording's fit for them, before training; CheckpointError, DatasetError: a
    # file that does not load, a corrupt frame
    return run_reported("m2hmx-adapt", work, usage=(AdaptError,), failure=(CheckpointError, DatasetError),
                        interrupted="interrupted; nothing written")


if __name__ == "__main__":
    sys.exit(main())
