"""The viewer window end to end: real source, real mapping process, real Qt and OpenGL (under Xvfb)."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.sources import SourceSpec

EXPORT_FILES = ("mesh.ply", "mesh_rgb.ply", "mesh.glb", "points.ply", "trajectory.tum", "trajectory.csv",
                "scene_graph.json", "labelspace.yaml", "labelspace_colors.csv")
WAIT_MS = 180_000  # generous: CI machines are slow and shared; nothing here asserts speed


def test_scripted_demo_fills_every_panel_screenshots_and_exports(make_window, demo_options, png_pixels, qtbot,
                                                                 tmp_path):
    shot, export = tmp_path / "shot.png", tmp_path / "map"
    window = make_window(demo_options(max_frames=10, screenshot=str(shot), export=str(export),
                                      checkpoint_note="bundled model missing (test)"))
    with qtbot.waitSignal(window.run_finished, timeout=WAIT_MS):
        pass
    assert window.session.frames_shown >= 1 and window.stages.capture.delivered == 10
    for panel in (window.panels.rgb, window.panels.sensor, window.panels.seg, window.panels.normals, window.panels.edges):
        assert panel.has_image(), panel.title()
    assert not window.panels.depth.has_image()  # no network: nothing predicted, and it says so
    assert "GROUND TRUTH" in window.panels.seg.title()
    assert "bundled model missing" in window.error_label.text()
    assert window.panels.legend.present() and window.panels.legend.present() <= set(range(20))
    # the map arrived, with a trajectory that tracks the generated camera (ground truth is known)
    assert window.session.last_map is not None and window.session.last_map.total_vertices > 1000
    assert window.map_view.num_points == len(window.session.last_map.vertices)
    assert window.session.ate is not None and window.session.ate < 0.10
    assert "vertices" in window.stats.value("map_size")
    # screenshots: the window and the 3D view, neither blank
    for path in (shot, tmp_path / "shot_map.png"):
        pixels = png_pixels(path)
        assert pixels.shape[0] > 100 and pixels.std() > 10, f"{path} looks blank"
    map_pixels = png_pixels(tmp_path / "shot_map.png")
    assert len(np.unique(map_pixels.reshape(-1, 3), axis=0)) > 50  # a coloured map, not just the grid
    # the 3D view is a native OpenGL window: the window screenshot must show the map where the view is
    from PyQt6 import QtCore

    corner = window.map_view.mapTo(window, QtCore.QPoint(0, 0))
    h, w = map_pixels.shape[:2]
    region = png_pixels(shot)[corner.y():corner.y() + h, corner.x():corner.x() + w]
    assert region.shape == map_pixels.shape
    assert np.abs(region.astype(int) - map_pixels.astype(int)).mean() < 2.0
    for name in EXPORT_FILES:
        assert (export / name).is_file() and (export / name).stat().st_size > 0, name
    assert all(os.path.isfile(p) for p in window.session.exported_paths)


def test_pause_step_reset_restart(make_window, demo_options, qtbot, tmp_path):
    window = make_window(demo_options())
    qtbot.waitUntil(lambda: window.session.frames_shown >= 3, timeout=WAIT_MS)

    def drained():
        return (window.stages.capture_slot.empty() and window.stages.display_slot.empty() and not window.stages.perception.busy)

    window.toggle_play()
    assert window.stages.capture.paused
    qtbot.waitUntil(drained, timeout=WAIT_MS)
    qtbot.wait(300)
    shown, index = window.session.frames_shown, window.last_result.index
    qtbot.wait(800)
    assert window.session.frames_shown == shown  # paused: nothing new
    window.step()
    qtbot.waitUntil(lambda: window.session.frames_shown == shown + 1, timeout=WAIT_MS)
    assert window.last_result.index == index + 1
    qtbot.wait(500)
    assert window.session.frames_shown == shown + 1  # one step, one frame

    qtbot.waitUntil(lambda: window.session.last_map is not None and window.session.last_map.total_vertices > 0, timeout=WAIT_MS)
    window.reset_map()
    assert window.session.last_map is None and window.map_view.num_points == 0 and not window.session.est_t
    for _ in range(3):
        window.step()
    qtbot.waitUntil(lambda: window.session.last_map is not None and window.session.last_map.total_vertices > 0, timeout=WAIT_MS)
    assert window.session.last_map.frames <= 3  # a new map, built only from frames after the reset

    # Restart while paused, then one step: exactly the first frame of the new run is shown. (Playing instead would
    # let a busy GUI skip frames 0 and 1, since the screen always shows the newest result.)
    window.restart()
    window.step()
    qtbot.waitUntil(lambda: window.last_result.generation == window.stages.capture.generation
                    and window.last_result.index == 0, timeout=WAIT_MS)
    window.toggle_play()
    assert not window.stages.capture.paused
    qtbot.waitUntil(lambda: window.last_result.index >= 2, timeout=WAIT_MS)  # playing again after the restart


@pytest.mark.parametrize("spec, expected", [
    (SourceSpec("video", "/nonexistent/clip.mp4"), "/nonexistent/clip.mp4"),
    (SourceSpec("camera", "99"), "camera 99 could not be opened"),
])
def test_failing_source_shows_error_and_app_stays_up(make_window, demo_options, qtbot, tmp_path, spec, expected):
    window = make_window(demo_options(source=spec))
    qtbot.waitUntil(lambda: expected in window.error_label.text(), timeout=WAIT_MS)
    assert window.isVisible() and window.stages.source is None
    window.save_screenshots(tmp_path / "s.png")  # still usable
    assert (tmp_path / "s.png").is_file()


def test_bad_checkpoint_shows_error_and_runs_on_sensor_depth(make_window, demo_options, qtbot, tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a checkpoint")
    window = make_window(demo_options(checkpoint=str(bad), max_frames=4, quit_when_done=False,
                                      screenshot=str(tmp_path / "s.png")))
    with qtbot.waitSignal(window.run_finished, timeout=WAIT_MS):
        pass
    assert "cannot load the model" in window.error_label.text() and str(bad) in window.error_label.text()
    assert window.session.predictor is None and window.session.frames_shown >= 1 and window.panels.sensor.has_image()


def test_mapping_process_death_keeps_the_map_exportable(make_window, demo_options, qtbot, tmp_path):
    window = make_window(demo_options(source=SourceSpec("demo", demo_frames=300)))
    qtbot.waitUntil(lambda: window.session.last_map is not None and window.session.last_map.total_vertices > 0, timeout=WAIT_MS)
    os.kill(window.stages.mapper.pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: "mapping process died" in window.error_label.text(), timeout=WAIT_MS)
    shown = window.session.frames_shown
    qtbot.waitUntil(lambda: window.session.frames_shown > shown + 1, timeout=WAIT_MS)  # perception goes on
    window.export_map(tmp_path / "after")
    written = {p.name for p in (tmp_path / "after").iterdir() if p.stat().st_size > 0}
    assert {"mesh.ply", "points.ply"} & written  # the last map as sent: a mesh, or its point sample
    assert {"trajectory.tum", "labelspace.yaml"} <= written


def test_network_predictions_reach_every_panel(make_window, demo_options, qtbot, tmp_path, random_checkpoint):
    window = make_window(demo_options(checkpoint=str(random_checkpoint), max_frames=2))
    with qtbot.waitSignal(window.run_finished, timeout=WAIT_MS):
        pass
    assert window.session.predictor is not None and not window.error_label.text()
    for panel in (window.panels.rgb, window.panels.depth, window.panels.sensor, window.panels.seg,
                  window.panels.normals, window.panels.edges):
        assert panel.has_image(), panel.title()
    assert "predicted" in window.panels.seg.title() and "predicted" in window.panels.normals.title()
    r = window.last_result
    assert r.depth_pred.shape == r.rgb.shape[:2] and r.seg_source == "prediction"


def test_source_failing_mid_run_keeps_the_app_and_the_map(make_window, demo_options, qtbot, tmp_path):
    from m2hmx.data.synthetic import write_scene

    scene = tmp_path / "scene"
    write_scene(scene, seed=0, frames=8, height=120, width=160)
    (scene / "color" / "6.jpg").write_bytes(b"corrupt")  # a damaged recording: frame 6 cannot be decoded
    window = make_window(demo_options(source=SourceSpec("dataset", str(scene))))
    qtbot.waitUntil(lambda: "6.jpg" in window.error_label.text(), timeout=WAIT_MS)
    assert window.isVisible() and window.stages.capture.done
    qtbot.waitUntil(lambda: window.session.last_map is not None and window.session.last_map.total_vertices > 0, timeout=WAIT_MS)
    window.export_map(tmp_path / "map")
    qtbot.waitUntil(lambda: len(window.session.exported_paths) > 0, timeout=WAIT_MS)
    assert (tmp_path / "map" / "mesh.ply").is_file()


def test_keyboard_shortcuts_toggle_colour_mode_depth_source_and_pause(make_window, demo_options, qtbot, tmp_path,
                                                                      random_checkpoint):
    from PyQt6 import QtCore

    window = make_window(demo_options(checkpoint=str(random_checkpoint), source=SourceSpec("demo", demo_frames=300)))
    qtbot.waitUntil(lambda: window.session.frames_shown >= 1, timeout=WAIT_MS)
    window.activateWindow()
    qtbot.waitUntil(lambda: window.isActiveWindow(), timeout=10_000)
    assert window.map_view.color_mode == "class"
    qtbot.keyClick(window, QtCore.Qt.Key.Key_C)
    assert window.map_view.color_mode == "rgb"
    assert window.session.depth_mode == "pred" and window.session.mapping_config().odometry_method == "vio"
    generation = window.stages.mapper.generation
    qtbot.keyClick(window, QtCore.Qt.Key.Key_D)
    assert window.session.depth_mode == "sensor" and window.stages.perception.depth_mode == "sensor"
    assert window.session.mapping_config().odometry_method == "point_to_plane"
    assert window.stages.mapper.generation == generation + 1  # a new map for the other depth
    qtbot.keyClick(window, QtCore.Qt.Key.Key_Space)
    assert window.stages.capture.paused and "PAUSED" in window.mode_label.text()
    qtbot.keyClick(window, QtCore.Qt.Key.Key_S)
    shots = list((tmp_path / "out").glob("screenshot-*.png"))
    assert len(shots) == 2  # the window and the 3D view


def test_viewer_command_runs_the_bundled_demo_writes_screenshots_and_exits_0(gl_display, png_pixels, tmp_path):
    """The README's screenshot command as a process: model, window, mapping process, then a clean exit (status 0;
    Qt objects torn down in order, no crash at interpreter exit)."""
    from app.main import bundled_model

    if not bundled_model().is_file():
        pytest.skip("the bundled model is not in this checkout")
    shot = tmp_path / "shot.png"
    done = subprocess.run([sys.executable, "-m", "app.main", "--max-frames", "15", "--screenshot", str(shot),
                           "--quit-when-done"], capture_output=True, text=True, timeout=WAIT_MS // 1000,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    window, view = png_pixels(shot), png_pixels(tmp_path / "shot_map.png")
    assert window.shape[0] > 300 and window.shape[1] > 500 and window.std() > 20
    background = np.median(view.reshape(-1, 3), axis=0)
    mapped = (np.abs(view.astype(int) - background).sum(axis=2) > 60).mean()
    assert mapped > 0.04  # the map covers ~12 % of the 3D view after 15 frames
