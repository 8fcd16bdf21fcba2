"""Worker hand-offs and panel image helpers (no window)."""
import threading
import time

import numpy as np

from app.workers import Captured, LatestSlot, normals_to_rgb, overlay_labels
from m2hmx.data import Frame
from m2hmx.labels import load_label_space
from mapping.imu import ImuSamples


def test_latest_slot_keeps_the_newest_and_counts_drops():
    slot = LatestSlot()
    for i in range(5):
        slot.put(i)
    assert slot.get() == 4 and slot.dropped == 4
    assert slot.get() is None and slot.empty()


def test_a_dropped_live_frame_hands_its_imu_samples_on():
    def captured(k, generation=0):
        t = (np.arange(6) + 6 * k + 1) / 180.0  # the samples since the previous frame
        imu = ImuSamples(t, np.zeros((6, 3)), np.tile([0, -9.81, 0], (6, 1)))
        return Captured(Frame(rgb=np.zeros((2, 2, 3), np.uint8), K=np.eye(3), timestamp=t[-1], imu=imu), 0.0, generation)

    slot = LatestSlot()
    for k in range(3):
        slot.put(captured(k))
    got = slot.get()
    assert slot.dropped == 2 and len(got.frame.imu) == 18  # frames 0 and 1 dropped: their motion kept
    assert np.allclose(np.diff(got.frame.imu.t), 1 / 180.0)
    slot.put(captured(3))
    slot.put(captured(4, generation=1))  # a restart in between: the old run's samples do not carry over
    assert len(slot.get().frame.imu) == 6


def test_latest_slot_blocking_put_waits_for_the_consumer():
    slot = LatestSlot()
    slot.put("a")
    done = threading.Event()

    def producer():
        slot.put("b", block=True)
        done.set()

    threading.Thread(target=producer, daemon=True).start()
    time.sleep(0.2)
    assert not done.is_set()  # "a" not taken yet: the producer waits, nothing dropped
    assert slot.get() == "a"
    assert done.wait(2.0) and slot.get(timeout=1.0) == "b" and slot.dropped == 0


def test_blocking_put_gives_up_on_stop():
    slot, stop = LatestSlot(), threading.Event()
    slot.put(1)
    stop.set()
    assert slot.put(2, block=True, stop=stop) is False and slot.get() == 1


def test_overlay_colours_known_pixels_only():
    ls = load_label_space("scannet20")
    rgb = np.full((2, 2, 3), 100, np.uint8)
    labels = np.array([[0, 255], [1, 255]], np.uint8)
    out = overlay_labels(rgb, labels, ls, alpha=1.0)
    np.testing.assert_array_equal(out[0, 0], ls.colors[0])
    np.testing.assert_array_equal(out[1, 0], ls.colors[1])
    np.testing.assert_array_equal(out[:, 1], rgb[:, 1])


def test_normals_colours():
    n = np.zeros((1, 3, 3), np.float32)
    n[0, 0] = (0, 0, -1)  # facing the camera
    n[0, 1] = (1, 0, 0)
    out = normals_to_rgb(n)
    np.testing.assert_array_equal(out[0, 0], (127, 127, 255))  # the usual normal-map lavender-blue
    np.testing.assert_array_equal(out[0, 1], (255, 127, 127))
    np.testing.assert_array_equal(out[0, 2], (0, 0, 0))  # unknown


def test_depth_colours_use_a_fixed_metric_range():
    from app.widgets.image_panel import colorize_depth

    lut = np.stack([np.arange(256)] * 3, axis=1).astype(np.uint8)  # grey ramp
    depth = np.array([[0.0, 1.5, 3.0, 9.0]], np.float32)
    out = colorize_depth(depth, lut, max_depth=3.0)
    np.testing.assert_array_equal(out[0, :, 0], [0, 127, 255, 255])  # 0 = invalid -> black; beyond -> top
    # the same depth gets the same colour whatever else is in the frame (no per-frame rescaling)
    np.testing.assert_array_equal(colorize_depth(depth[:, 1:2], lut, 3.0), out[:, 1:2])


def test_mapping_queue_hands_a_dropped_frames_imu_on():
    """A frame the mapper has not taken is replaced by the next (live source): the next one carries its IMU. The
    hand-off of MappingClient, on a plain queue instead of the mapping process's."""
    import queue

    from app.workers import FrameHandoff
    from mapping.interface import PerceptionFrame

    client = FrameHandoff(queue.Queue(maxsize=1))

    def make(k):
        t = (np.arange(6) + 6 * k + 1) / 180.0
        imu = ImuSamples(t, np.zeros((6, 3)), np.tile([0, -9.81, 0], (6, 1)))
        return lambda anchor: PerceptionFrame(t[-1], np.zeros((2, 2, 3), np.uint8), np.ones((2, 2), np.float32),
                                              np.zeros((2, 2), np.uint8), np.eye(3), imu=imu)

    for k in range(3):
        client.submit(make(k))
    generation, anchor, frame = client.frames.get_nowait()
    assert client.dropped == 2 and anchor and len(frame.imu) == 18 and frame.imu.t[0] == 1 / 180.0


def test_a_file_source_is_read_only_when_perception_took_the_last_frame(qtbot):
    """Capture reads a file source's next frame once the slot is empty, so a frame does not wait in the capture
    thread's hand for a whole cycle (its latency counting) while the slot holds the one before it."""
    from app.workers import CaptureThread

    reads = []

    def source():
        for i in range(5):
            reads.append(i)
            yield Frame(rgb=np.zeros((4, 4, 3), np.uint8), K=np.eye(3), timestamp=float(i), index=i)

    slot = LatestSlot()
    capture = CaptureThread(source(), slot, None)
    capture.start()
    try:
        qtbot.waitUntil(lambda: not slot.empty(), timeout=5000)
        time.sleep(0.3)  # a read-ahead would happen meanwhile
        assert reads == [0] and capture.cpu_s >= 0.0
        assert slot.get().frame.index == 0
        qtbot.waitUntil(lambda: not slot.empty(), timeout=5000)
        time.sleep(0.3)
        assert reads == [0, 1] and slot.dropped == 0
    finally:
        capture.stop()
        capture.wait(5000)


def test_a_file_source_waits_for_the_mapper_before_reading(qtbot):
    """With a busy mapper (a frame handed to it not yet taken) the next frame is not read, so it cannot age
    behind the mapper; it is read as soon as the mapper takes its frame."""
    from app.workers import CaptureThread

    reads, mapper_free = [], threading.Event()

    def source():
        for i in range(3):
            reads.append(i)
            yield Frame(rgb=np.zeros((4, 4, 3), np.uint8), K=np.eye(3), timestamp=float(i), index=i)

    slot = LatestSlot()
    capture = CaptureThread(source(), slot, None, downstream_ready=mapper_free.is_set)
    capture.start()
    try:
        time.sleep(0.3)
        assert reads == [] and slot.empty()
        mapper_free.set()
        qtbot.waitUntil(lambda: not slot.empty(), timeout=5000)
        assert reads == [0]
    finally:
        capture.stop()
        capture.wait(5000)
