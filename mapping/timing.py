"""Wall-clock seconds per named stage: the one timer the mapping bridge's stages share."""
from __future__ import annotations

import time
from contextlib import contextmanager


class StageTimes:
    """``with times("track"): ...`` adds the block's wall-clock seconds to that stage (also when it raises)."""

    def __init__(self, stages):
        self.seconds = dict.fromkeys(stages, 0.0)

    @contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start

    def milliseconds(self) -> dict:
        return {k: 1000 * v for k, v in self.seconds.items()}
