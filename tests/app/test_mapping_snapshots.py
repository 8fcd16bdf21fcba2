"""When the mapping process sends map snapshots (app/mapping_process.py): a short gap between a file source's
frames does not trigger one; a longer idle, or the cost-bounded interval, does."""
import time

from app.mapping_process import IDLE_SNAPSHOT_S, _MappingLoop
from m2hmx.labels import load_label_space
from mapping.bridge import MappingConfig


class _Results(list):
    def put(self, item):
        self.append(item)


def test_snapshot_out_of_turn_only_after_a_real_idle():
    results = _Results()
    loop = _MappingLoop(load_label_space("scannet20"), MappingConfig(), results, snapshot_every_s=1.0)
    kinds = lambda: [kind for kind, _ in results]  # noqa: E731
    loop.dirty, loop.idle_sent = True, False
    loop.last_snapshot = time.monotonic() - 0.5  # before: any idle moment 0.25 s after a snapshot sent one
    loop.on_idle()  # the first empty poll after a frame (a gap between frames)
    assert kinds() == ["idle"] and loop.dirty
    loop.on_idle()
    assert "snapshot" not in kinds()
    loop.idle_since = time.monotonic() - IDLE_SNAPSHOT_S  # nothing came for a while: show the map now
    loop.on_idle()
    assert kinds() == ["idle", "snapshot"] and not loop.dirty
    loop.dirty, loop.idle_since = True, None
    loop.last_snapshot = time.monotonic() - loop.interval  # the regular interval has passed
    loop.on_idle()
    assert kinds() == ["idle", "snapshot", "snapshot"]
