"""The viewer run's stages and the hand-offs between them: the source, the capture thread, the perception
thread and the mapping process (``app.workers``), started, asked and stopped together."""
from __future__ import annotations

from app.messages import one_line
from app.workers import CaptureThread, LatestSlot, MappingClient, PerceptionThread


class Stages:
    """Owns the source and the workers. Capture -> ``capture_slot`` -> perception -> ``display_slot`` (the
    window's) and -> the mapping process; each slot holds one item."""

    def __init__(self):
        self.source = None
        self.capture: CaptureThread | None = None
        self.perception: PerceptionThread | None = None
        self.mapper: MappingClient | None = None
        self.capture_slot, self.display_slot = LatestSlot(), LatestSlot()
        self._old_mappers: list[MappingClient] = []  # clients of dead mapping processes, closed at shutdown
        self._perception: dict = {}

    def start_mapping(self, label_space, config, snapshot_every_s: float) -> str:
        """A new mapping process (the old one, if any, is kept to be closed at shutdown); an error line or ""."""
        if self.mapper is not None:
            self.mapper.stopped = True  # its queues stay open: the perception thread may be handing it a frame
            self._old_mappers.append(self.mapper)
        try:
            self.mapper = MappingClient(label_space, config, snapshot_every_s)
        except Exception as exc:
            self.mapper = None
            return f"mapping process could not start: {one_line(exc)}"
        if self.perception is not None:
            self.perception.mapper = self.mapper
        return ""

    def start(self, source, size, max_frames, perception: dict, parent, capture_failed, source_finished) -> None:
        """Create the capture thread for ``source`` (its signals to ``capture_failed(message)`` and
        ``source_finished(frames)``) and start perception (``perception``: the ``PerceptionThread`` keywords
        predictor, label_space, depth_mode, depth_lut, and ``failed``, its error slot). Capture starts when the
        mapping process is ready (``start_capture``), or at once without one."""
        self.source, self._perception = source, dict(perception)
        self.capture = CaptureThread(source, self.capture_slot, size, max_frames, parent,
                                     downstream_ready=self._mapper_can_take)
        self.capture.failed.connect(capture_failed)
        self.capture.finished_source.connect(source_finished)
        self.new_perception(parent)
        if self.mapper is None:
            self.capture.start()
        # else: Open3D takes seconds to import in the mapping process; frames read meanwhile would all be
        # dropped but one, and tracking would start with a large jump

    def new_perception(self, parent) -> None:
        kw = dict(self._perception)
        failed = kw.pop("failed")
        self.perception = PerceptionThread(self.capture_slot, self.display_slot, mapper=self.mapper, parent=parent,
                                           live=bool(getattr(self.source, "live", False)), **kw)
        self.perception.failed.connect(failed)
        self.perception.start()

    def set_depth_mode(self, mode: str) -> None:
        self._perception["depth_mode"] = mode
        if self.perception is not None:
            self.perception.depth_mode = mode

    def restart(self, parent) -> bool:
        """The source from its first frame (perception started again if it had stopped); False without one."""
        if self.capture is None:
            return False
        self.capture.restart()
        self.display_slot.clear()
        if self.perception is not None and not self.perception.isRunning():
            self.new_perception(parent)
        return True

    def start_capture(self) -> None:
        if self.capture is not None and not self.capture.isRunning():
            self.capture.start()

    def _mapper_can_take(self) -> bool:
        return self.mapper is None or self.mapper.can_take()

    def mapping_alive(self) -> bool:
        return self.mapper is not None and self.mapper.alive()

    def dropped(self) -> tuple[int, int | None]:
        """(frames dropped before the screen, frames dropped before mapping or None without mapping)."""
        return (self.capture_slot.dropped + self.display_slot.dropped,
                self.mapper.dropped if self.mapper is not None else None)

    def is_idle(self, mapping_idle: bool) -> bool:
        """Every frame captured so far has been shown and mapped (or dropped)."""
        if self.capture is None or not self.capture.done:
            return False
        if not self.capture_slot.empty() or not self.display_slot.empty():
            return False
        if self.perception is not None and self.perception.isRunning() and self.perception.busy:
            return False
        if self.mapping_alive():
            return mapping_idle and self.mapper.frames.empty()
        return True

    def shutdown(self, loader=None) -> None:
        """Stop the threads, the mapping processes and the source (idempotent)."""
        for thread in (self.capture, self.perception):
            if thread is not None:
                thread.stop()
        for thread in (self.capture, self.perception, loader):
            if thread is not None:
                thread.wait(5000)
        if self.mapper is not None:
            self.mapper.stop()
        for mapper in self._old_mappers:  # marked stopped only to keep the perception thread off them
            mapper.stopped = False
            mapper.stop()
        self._old_mappers = []
        if self.source is not None:
            try:
                self.source.close()
            except Exception:
                pass
