"""--realtime: a recording played at its clock like a live camera (app.sources.RealtimePlayback)."""
import json
import time

import numpy as np
import pytest

from app.sources import RealtimePlayback, SourceSpec, open_viewer_source
from m2hmx.data import Frame
from m2hmx.data.synthetic import SyntheticSource
from mapping.imu import ImuSamples

FPS = 20.0


class Recording:
    """A file-like source that only iterates (no frame times up front), 20 frames/s, 4 IMU samples a frame."""

    live = False

    def __init__(self, n: int):
        self.num_frames, self.name, self.label_space = n, "recording", None

    def __len__(self):
        return self.num_frames

    def __iter__(self):
        for i in range(self.num_frames):
            t = i / FPS
            imu_t = t - np.arange(3, -1, -1) / (4 * FPS)
            yield Frame(rgb=np.zeros((4, 4, 3), np.uint8), K=np.eye(3), timestamp=t, index=i,
                        imu=ImuSamples(imu_t, np.zeros((4, 3)), np.zeros((4, 3))))

    def close(self):
        pass


def _play(source, work_s: float):
    """Frames handed out to a consumer that works ``work_s`` on each: (frames, wall time of each hand-out)."""
    frames, at = [], []
    for frame in source:
        at.append(time.monotonic())
        frames.append(frame)
        time.sleep(work_s)
    return frames, at


def test_a_fast_reader_gets_every_frame_at_the_recording_clock():
    play = RealtimePlayback(Recording(10))
    frames, at = _play(play, 0.0)
    kept = [f.index for f in frames]
    assert kept[0] == 0 and kept[-1] == 9 and play.skipped == 10 - len(kept) <= 2  # a busy machine may skip one
    for f, t in zip(frames, at):  # never before its time on the recording's clock, and not much after
        assert play.due[f.index] - 0.001 <= t <= play.due[f.index] + 0.25
    assert play.due[9] - play.due[0] == pytest.approx(9 / FPS)


def test_a_slow_reader_gets_the_newest_frame_and_loses_no_imu():
    play = RealtimePlayback(Recording(40))
    frames, at = _play(play, 3 / FPS + 0.005)  # about 3.3 frame periods per frame
    kept = [f.index for f in frames]
    assert kept[0] == 0 and kept[-1] == 39 and len(kept) + play.skipped == 40
    assert 6 <= len(kept) <= 15 and play.skipped >= 24
    assert np.diff(kept)[:-1].min() >= 2  # never a stale frame after a slow step (the last may follow closely)
    for f in frames:  # the handed-out frame is the newest one due when it was asked for
        assert play.due[f.index] <= at[kept.index(f.index)] + 0.002
    samples = np.concatenate([f.imu.t for f in frames])
    np.testing.assert_allclose(samples, (np.arange(4 * (kept[-1] + 1)) - 3) / (4 * FPS))  # every sample, once


def test_a_source_that_knows_its_frame_times_skips_without_rendering():
    scene = SyntheticSource(seed=3, frames=30, height=24, width=32)
    rendered = []
    render = scene.view
    scene.view = lambda pose, index: rendered.append(index) or render(pose, index)
    play = RealtimePlayback(scene)
    frames, _ = _play(play, 0.1)  # 3 frame periods of the 30 frames/s scene per frame
    kept = [f.index for f in frames]
    assert rendered == kept and play.skipped == 30 - len(kept) - 0 and len(kept) <= 14
    samples = np.concatenate([f.imu.t for f in frames])
    np.testing.assert_array_equal(samples, scene.imu.t[scene.imu.t <= frames[-1].timestamp])


def test_viewer_spec_wraps_files_and_the_demo_only():
    spec = SourceSpec("demo", demo_seed=3, demo_frames=5, realtime=True)
    source = open_viewer_source(spec, (24, 32))
    assert isinstance(source, RealtimePlayback) and source.live and source.num_frames == 5
    assert source.name == "synthetic-3 (real time)" and source.label_space is not None
    source.close()
    assert not isinstance(open_viewer_source(SourceSpec("demo", demo_frames=5), (24, 32)), RealtimePlayback)


def test_viewer_rejects_realtime_for_a_camera_and_with_loop(capsys):
    from app.main import main

    for argv in (["--camera", "0", "--realtime"], ["--realtime", "--loop", "10"]):
        with pytest.raises(SystemExit):
            main(argv)
    err = capsys.readouterr().err
    assert "--realtime is for recordings and the demo" in err and "give one of --realtime, --loop" in err


def test_map_command_realtime_reports_skipped_frames_and_latency(tmp_path, capsys):
    from app.map_cli import main

    assert main(["--dataset", "synthetic:0", "--depth", "gt", "--max-frames", "4", "--no-progress", "--realtime",
                 "--out", str(tmp_path / "map")]) == 0
    metrics = json.loads((tmp_path / "map" / "metrics.json").read_text())
    assert metrics["frames"] == 4 and metrics["realtime"]["skipped_frames"] >= 0
    assert 0 <= metrics["realtime"]["latency_ms_p50"] <= metrics["realtime"]["latency_ms_p95"] < 60_000
    assert "real time:" in capsys.readouterr().out
