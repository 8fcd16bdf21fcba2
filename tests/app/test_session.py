"""The viewer's model without Qt: a real generated room mapped in-process through the session's depth policy,
its statistics and live ATE, the run state, the label-space choice and loading failures as one line."""
from types import SimpleNamespace

from app.mapping_process import make_update, step_payload
from app.pipeline import to_perception_frame
from app.session import RunState, ViewerOptions, ViewerSession, frame_depth_mode, load
from app.sources import SourceSpec
from m2hmx.labels import load_label_space
from mapping.bridge import MappingBridge

SMALL = (120, 160)


def _result(frame, captured_at: float):
    """What the session reads of a perception result (``app.workers.PerceptionResult``)."""
    return SimpleNamespace(index=frame.index, timestamp=frame.timestamp, captured_at=captured_at, gt_pose=frame.pose,
                           sent_to_mapping=True)


def test_a_generated_room_through_the_session_scores_its_live_ate_and_stats():
    options = ViewerOptions(SourceSpec("demo", demo_seed=0, demo_frames=12), size=SMALL)
    source, predictor, source_error, model_error = load(options)
    assert source is not None and predictor is None and not source_error and not model_error
    session = ViewerSession(options)
    assert session.start(predictor, source.label_space) == []
    assert session.depth_mode == "sensor" and session.mapping_config().depth_mode == "gt"  # no network
    bridge = MappingBridge(session.label_space, session.mapping_config())
    firsts = []
    for i, frame in enumerate(source):
        now = 10.0 + 0.1 * i  # shown at 10 frames/s, 50 ms after capture
        session.on_result(_result(frame, now - 0.05), now)
        mode = frame_depth_mode(session.depth_mode, has_prediction=False, has_sensor_depth=frame.depth is not None)
        pf = to_perception_frame(frame, None, mode, session.label_space.num_classes, pose_prior=i == 0)
        firsts.append(session.on_step(step_payload(bridge.process(pf), bridge, 1.0), now))
    source.close()
    assert firsts == [True] + [False] * 11  # the view's up is set from a map's first pose only
    gt_positions = session.on_map(make_update(bridge.snapshot(), 12, 1.0))
    assert session.ate is not None and session.ate < 0.02 and gt_positions.shape == (12, 3)
    rows = session.stats("demo", drops=2, map_drops=1)
    assert rows["frames"] == "12" and rows["perception_fps"] == "10.0" and rows["mapping_fps"] == "10.0"
    assert rows["latency"] == "50 / 50" and rows["dropped"] == "2 / 1" and rows["tracking"] == "ok"
    assert rows["ate"] == f"{100 * session.ate:.1f} cm over 12 poses" and "vertices" in rows["map_size"]
    assert rows["loops"] == "off" and session.stats("demo", 0, None)["mapping_fps"] == "off"
    # the mapping process dies: its map stays exportable after a restart
    died = session.last_map
    assert session.mapping_died().endswith("vertices") and session.tracking_text.startswith("stopped")
    session.mapping_restarted()
    assert session.last_map is None and session.ate is None and not session.est_t
    assert session.map_to_export() is died and session.stats("demo", 0, 0)["ate"] == "no ground truth"


def test_depth_mode_policy():
    assert frame_depth_mode("pred", has_prediction=False, has_sensor_depth=True) == "gt"  # no network
    assert frame_depth_mode("sensor", has_prediction=True, has_sensor_depth=False) == "pred"
    assert frame_depth_mode("sensor", has_prediction=True, has_sensor_depth=True) == "sensor"
    session = ViewerSession(ViewerOptions(SourceSpec("demo")))
    session.start(SimpleNamespace(label_space=load_label_space("scannet20")), None)
    assert session.depth_mode == "pred" and session.mapping_config().depth_mode == "pred"
    assert session.toggle_depth(source_has_depth=False) == "this source has no sensor depth"
    assert session.depth_mode == "pred"
    assert session.toggle_depth(source_has_depth=True) == "" and session.mapping_config().depth_mode == "sensor"
    assert session.depth_text(have_source=True) == "sensor"
    session.toggle_depth(True)
    assert session.depth_mode == "pred" and session.depth_text(True) == "predicted"
    without = ViewerSession(ViewerOptions(SourceSpec("demo"), depth="pred"))
    without.start(None, None)
    assert without.toggle_depth(True).startswith("no network") and without.depth_text(True) == "sensor (no model)"


def test_label_space_follows_the_model_when_the_request_does_not_fit():
    session = ViewerSession(ViewerOptions(SourceSpec("demo"), labelspace="nyu40"))
    warnings = session.start(SimpleNamespace(label_space=load_label_space("scannet20")), load_label_space("nyu40"))
    assert session.label_space.name == "scannet20" and len(warnings) == 1 and "40 classes" in warnings[0]


def test_run_state_goes_snapshot_drawing_export_done():
    session = ViewerSession(ViewerOptions(SourceSpec("demo")))
    assert session.state is RunState.RUNNING and not session.snapshot_arrived()
    session.state = RunState.SNAPSHOT
    assert session.snapshot_arrived() and session.state is RunState.DRAWING
    assert not session.snapshot_arrived()  # a second snapshot does not finish twice
    session.pending_export = "out"
    assert not session.export_done(["a"])  # an export asked by the user: the run goes on
    session.state = RunState.EXPORT
    assert session.export_done(["m/mesh.ply"]) and session.state is RunState.DONE
    assert session.exported_paths == ["m/mesh.ply"] and session.pending_export is None


def test_failures_are_recorded_as_one_line(tmp_path, capsys):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a checkpoint")
    source, predictor, source_error, model_error = load(
        ViewerOptions(SourceSpec("video", "/nonexistent/clip.mp4"), checkpoint=str(bad)))
    assert source is None and "/nonexistent/clip.mp4" in source_error and "\n" not in source_error
    assert predictor is None and model_error.startswith(f"cannot load the model {bad}") and "\n" not in model_error
    session = ViewerSession(ViewerOptions(SourceSpec("demo")))
    session.error("a note")
    assert not session.run_failed
    session.error(model_error, failure=True)
    assert session.run_failed and list(session.errors) == ["a note", model_error]
    assert capsys.readouterr().err.count("m2hmx-viewer: ") == 2



def test_mode_line_status_line_and_one_time_warnings():
    session = ViewerSession(ViewerOptions(SourceSpec("demo"), checkpoint="runs/best.safetensors"))
    session.start(SimpleNamespace(label_space=load_label_space("scannet20")), None)
    assert session.mode_text(False, "class", True) == "  playing  |  map colours: class  |  depth into map: predicted  "
    assert session.mode_text(True, "rgb", True).startswith("  PAUSED  |  map colours: rgb")
    assert session.mode_text(None, "class", False).startswith("  playing")  # no capture yet
    session.error("no such file", failure=True)
    assert session.mode_text(None, "class", False).startswith("  NO SOURCE  |")
    source = SimpleNamespace(name="room", intrinsics_note="K from a 60 deg field of view")
    assert session.describe_run(source) == ("room: network best.safetensors, label space scannet20",
                                            "K from a 60 deg field of view")
    unmapped = SimpleNamespace(sent_to_mapping=False)
    assert session.nothing_to_map(unmapped, mapping_on=False) == ""
    assert session.nothing_to_map(SimpleNamespace(sent_to_mapping=True), mapping_on=True) == ""
    assert session.nothing_to_map(unmapped, mapping_on=True).startswith("nothing to map: ")
    assert session.nothing_to_map(unmapped, mapping_on=True) == ""  # said once
    assert not session.mapping_dead
    session.mapping_died()
    assert session.mapping_dead and session.mapping_idle
    session.mapping_restarted()
    assert not session.mapping_dead
