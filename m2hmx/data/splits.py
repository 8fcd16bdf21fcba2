"""Which generated rooms (``synthetic:SEED``) are for what: the one place the ranges are defined.

* training: seeds below ``FIRST_RESERVED_SEED`` (stages 1-14 used seeds up to 19,999); ``m2hmx-train`` refuses
  every seed from ``FIRST_RESERVED_SEED`` up, so none of the ranges below is ever trained on.
* ``heldout`` 100000-100019: the model card's rooms until stage 14. They were scored after every stage and choices
  were made on them, so they are neither validation nor test any more; kept for history and for the demo room.
* ``val`` 200000-200999: every choice (checkpoint, hyper-parameters, mapping settings, post-processing) is made here.
* ``test`` 900000-900119: scored only when a model is bundled (``benchmarks/eval_demo_model.py --range test``);
  the card's numbers. Never used to choose anything.
"""
from __future__ import annotations

FIRST_RESERVED_SEED = 100_000

SPLITS: dict[str, range] = {
    "heldout": range(100_000, 100_020),
    "val": range(200_000, 201_000),
    "test": range(900_000, 900_120),
}


def split_of(seed: int) -> str | None:
    """The name of the range ``seed`` lies in, or None."""
    return next((name for name, seeds in SPLITS.items() if seed in seeds), None)


def describe(name: str) -> str:
    """E.g. 'test rooms (seeds 900000-900119)'."""
    seeds = SPLITS[name]
    return f"{name} rooms (seeds {seeds[0]}-{seeds[-1]})"


def reserved_seeds_in(seeds: range) -> str | None:
    """Why training on ``seeds`` is refused (the first reserved range it reaches), or None if it may."""
    if not seeds or seeds[-1] < FIRST_RESERVED_SEED:
        return None
    hit = [name for name, r in SPLITS.items() if seeds.start <= r[-1] and r[0] <= seeds[-1]]
    what = ", ".join(describe(name) for name in hit) if hit else "no named range yet"
    return (f"seeds from {FIRST_RESERVED_SEED} up are kept for evaluation ({what}); "
            f"train on seeds below {FIRST_RESERVED_SEED}")
