"""``m2hmx-train --config RECIPE [--set key=value ...] [--resume]``: train a recipe (see m2hmx.train)."""
from __future__ import annotations

import argparse
import os
import sys

import m2hmx
from m2hmx.cli.args import check_input, check_output_folder, run_reported


def prefer_spinning_threads() -> None:
    """Training has the cores to itself, so idle OpenMP threads may spin between the many small ops: a demo
    step takes 0.29 s instead of 0.49 s with the package's PASSIVE (right for the app's threads) on 2 cores.
    Only effective before torch loads, and only if the user did not choose a policy."""
    if not m2hmx.OMP_POLICY_FROM_USER and "torch" not in sys.modules:
        os.environ["OMP_WAIT_POLICY"] = "ACTIVE"


def main(argv: list[str] | None = None) -> int:
    prefer_spinning_threads()
    parser = argparse.ArgumentParser(
        prog="m2hmx-train", description="Train M2H-MX from a recipe (bundled: demo, nyudv2, scannet, cityscapes, "
        "or a YAML path). Multi-GPU: torchrun --nproc_per_node N -m m2hmx.cli.train --config ...")
    parser.add_argument("--config", required=True, help="bundled recipe name or YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=1e-3 --set model.overrides.decoder_dim=64")
    parser.add_argument("--resume", action="store_true", help="continue from <train.out_dir>/last.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log.csv only)")
    args = parser.parse_args(argv)

    from m2hmx.checkpoint import CheckpointError
    from m2hmx.data import DatasetError
    from m2hmx.train import TrainError, load_config, train

    def work() -> None:
        # the recipe, an override and its values (checked again as training sets up, before any step): usage errors
        cfg = load_config(args.config, args.overrides + (["train.resume=true"] if args.resume else []))
        check_input(cfg.train.init_from, "train.init_from", file=True)
        check_output_folder(cfg.train.out_dir, "train.out_dir")
        train(cfg, progress=not args.no_progress)
        print(f"model written to {cfg.train.out_dir}/model.safetensors")

    # a file that does not load, met while working
    return run_reported("m2hmx-train", work, usage=(TrainError,), failure=(CheckpointError, DatasetError))


if __name__ == "__main__":
    sys.exit(main())
