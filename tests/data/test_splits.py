"""The generated rooms' ranges: training, validation, test and the old held-out rooms never overlap."""
import pytest

from m2hmx.data.splits import FIRST_RESERVED_SEED, SPLITS, describe, reserved_seeds_in, split_of
from m2hmx.data.synthetic import FIRST_HELD_OUT_SEED


def test_ranges_are_disjoint_and_above_every_training_seed():
    assert FIRST_HELD_OUT_SEED == FIRST_RESERVED_SEED == 100_000
    names = list(SPLITS)
    for i, a in enumerate(names):
        assert SPLITS[a][0] >= FIRST_RESERVED_SEED
        for b in names[i + 1:]:
            assert not set(SPLITS[a]) & set(SPLITS[b]), (a, b)
    assert len(SPLITS["test"]) >= 100  # the card's test set, as the issue asks
    assert len(SPLITS["val"]) >= 300


@pytest.mark.parametrize("seed, name", [(99_999, None), (100_000, "heldout"), (100_019, "heldout"),
                                        (100_020, None), (200_000, "val"), (200_999, "val"), (900_000, "test"),
                                        (900_119, "test"), (900_120, None)])
def test_split_of(seed, name):
    assert split_of(seed) == name


def test_reserved_seeds_name_the_ranges_they_reach():
    assert reserved_seeds_in(range(0, 100_000)) is None and reserved_seeds_in(range(0)) is None
    assert describe("test") == "test rooms (seeds 900000-900119)"
    why = reserved_seeds_in(range(199_990, 900_001))
    assert "val rooms" in why and "test rooms" in why and "heldout" not in why and "below 100000" in why
