"""The viewer under faults, as a process (exit codes, stderr) and as a window: a failed export, a source that
cannot be opened, a mapping process killed with -9 (then started again)."""
import os
import random
import signal
import subprocess
import sys
from pathlib import Path


from mapping.bridge import EXPORT_FILES

from .conftest import read_only_folder

ROOT = Path(__file__).resolve().parents[2]
WAIT_MS = 180_000


def viewer_process(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "app.main", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_export_to_read_only_folder_finishes_the_run_as_failed(viewer, qtbot, tmp_path, capfd):
    """Before: the export's failure reached a handler that ignored it, and --quit-when-done waited forever."""
    with read_only_folder(tmp_path / "ro") as ro:
        window = viewer(max_frames=3, export=str(ro / "map"))
        with qtbot.waitSignal(window.run_finished, timeout=WAIT_MS):
            pass
    assert window.session.run_failed and not window.session.exported_paths
    err = capfd.readouterr().err
    failed = [line for line in err.splitlines() if "export to" in line]
    assert len(failed) == 1 and str(ro / "map") in failed[0] and "Read-only file system" in failed[0], err
    assert "Traceback" not in err, err


def test_camera_that_cannot_open_still_screenshots_and_exits_1(gl_display, tmp_path):
    shot = tmp_path / "x.png"
    done = viewer_process("--camera", "7", "--screenshot", str(shot), "--quit-when-done", timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "camera 7" in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert shot.is_file() and f"screenshots written: {shot}" in done.stdout, done.stdout


def test_export_and_screenshot_say_where(viewer, qtbot, tmp_path, capfd):
    window = viewer(max_frames=3, export=str(tmp_path / "map"), screenshot=str(tmp_path / "s.png"))
    with qtbot.waitSignal(window.run_finished, timeout=WAIT_MS):
        pass
    out = capfd.readouterr().out
    assert f"files to {tmp_path / 'map'}" in out and f"screenshots written: {tmp_path / 's.png'}" in out, out
    assert {p.name for p in (tmp_path / "map").iterdir()} == set(EXPORT_FILES) and not window.session.run_failed


def test_mapping_process_killed_then_started_again(viewer, qtbot, tmp_path):
    from app.sources import SourceSpec

    kill_at = int(random.Random(os.environ.get("M2HMX_FAULT_SEED", "0")).randint(3, 25))  # a random frame
    window = viewer(source=SourceSpec("demo", demo_seed=0, demo_frames=300))
    qtbot.waitUntil(lambda: window.session.last_map is not None and len(window.session.last_map.vertices) > 0
                    and len(window.session.est_t) >= kill_at, timeout=WAIT_MS)
    os.kill(window.stages.mapper.pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: "mapping process died" in window.error_label.text(), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: "died" in window.stats.value("tracking"), timeout=WAIT_MS)  # the panel's next refresh
    assert window.session.run_failed
    assert window.actions_by_key["restart_mapping"].isEnabled()
    before = window.session.last_map
    window.export_map(tmp_path / "dead")  # the GUI's copy of the last update: the whole mesh and scene graph
    assert {p.name for p in (tmp_path / "dead").iterdir()} == set(EXPORT_FILES)
    import open3d as o3d

    assert len(o3d.io.read_triangle_mesh(str(tmp_path / "dead" / "mesh.ply")).triangles) == before.total_triangles
    window.restart_mapping()
    assert window.stages.mapper.alive() and window.session.last_map is None
    saved = list((tmp_path / "out").glob("map-*-before-restart"))  # the dead map, written before the restart
    assert len(saved) == 1 and {p.name for p in saved[0].iterdir()} == {p.name for p in (tmp_path / "dead").iterdir()}
    qtbot.waitUntil(lambda: window.session.last_map is not None and len(window.session.last_map.timestamps) >= 3, timeout=WAIT_MS)
    assert window.session.last_map is not before and window.stats.value("tracking") != "-"
    assert window.session.last_map.timestamps[0] > before.timestamps[-1]  # a new map, started where the source is now
