"""m2hmx-synth: render a synthetic furnished-room walkthrough to a ScanNet-layout folder (IMU in imu0/data.csv)."""
from __future__ import annotations

import argparse
import sys

from m2hmx.cli.args import FAILURE, USAGE, UsageError, check_output_folder, report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="m2hmx-synth", description=__doc__.split(": ", 1)[1])
    p.add_argument("--out", required=True, help="output scene folder (created)")
    p.add_argument("--seed", type=int, default=0, help="scene and trajectory seed (default 0)")
    p.add_argument("--frames", type=int, default=300, help="number of frames at 30 Hz (default 300)")
    p.add_argument("--height", type=int, default=240, help="image height (default 240)")
    p.add_argument("--width", type=int, default=320, help="image width (default 320)")
    p.add_argument("--revisit", action="store_true", help="the walk comes back to where it started (loop closures)")
    args = p.parse_args(argv)
    if args.frames < 1 or args.height < 8 or args.width < 8:
        p.error("--frames must be >= 1 and --height/--width >= 8")
    try:
        check_output_folder(args.out, "--out")
    except UsageError as exc:
        return report("m2hmx-synth", exc, USAGE)
    from m2hmx.data.synthetic import write_scene

    try:
        out = write_scene(args.out, seed=args.seed, frames=args.frames, height=args.height, width=args.width,
                          revisit=args.revisit)
    except OSError as e:
        return report("m2hmx-synth", f"{e.filename or args.out}: {e.strerror}", FAILURE)
    print(f"wrote {args.frames} frames to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
