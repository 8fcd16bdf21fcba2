"""The bridge's one stage timer (mapping.timing) on a scripted clock: no wall-clock numbers."""
import pytest

import mapping.timing
from mapping.timing import StageTimes


def test_stage_times_add_up_per_stage_and_count_a_block_that_raises(monkeypatch):
    clock = iter([0.0, 0.5, 1.0, 3.0, 10.0, 10.25])
    monkeypatch.setattr(mapping.timing.time, "perf_counter", lambda: next(clock))
    times = StageTimes(("track", "integrate", "raycast"))
    with times("track"):
        pass
    with pytest.raises(RuntimeError), times("integrate"):
        raise RuntimeError("a failed stage still took its time")
    with times("track"):
        pass
    assert times.seconds == {"track": 0.75, "integrate": 2.0, "raycast": 0.0}
    assert times.milliseconds() == {"track": 750.0, "integrate": 2000.0, "raycast": 0.0}
