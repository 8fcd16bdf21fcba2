"""Property-based fuzz of every reader (hypothesis, derandomized): byte flips, truncation and extension of one
file of a small valid sample give one clear DatasetError line or well-formed frames (a cut-off .sens: exactly
the frames before the cut), never another exception or a hang. CI runs 150 inputs per format;
``python -m benchmarks.fuzz_readers`` runs 1,000 (benchmarks/RESULTS.md)."""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .fuzz import FORMATS, build, check_prefix, damage, read_damaged

EXAMPLES = 150

DAMAGE = st.tuples(st.lists(st.tuples(st.integers(0, 2 ** 31), st.integers(1, 255)), max_size=6),
                   st.one_of(st.none(), st.integers(0, 2 ** 31)),
                   st.one_of(st.just(b""), st.binary(max_size=64)))


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            root = tmp_path_factory.mktemp(name)
            cache[name] = (build(name, root), root)
        return cache[name]

    return get


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_damaged_input_gives_one_line_or_frames_before_the_damage(name, samples):
    sample, root = samples(name)
    data = sample.target.read_bytes()
    assert sample.frames, "the undamaged sample reads"
    seen = set()

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(DAMAGE)
    def fuzz(change):
        flips, cut, extra = change
        outcome, frames = read_damaged(sample, root, damage(data, flips, cut, extra))
        seen.add(outcome)
        if name == "sens" and not flips and not extra:
            check_prefix(sample, frames)

    fuzz()
    assert seen & {"refused", "partial"}, "the damage was never noticed: the fuzz did not reach the reader"
