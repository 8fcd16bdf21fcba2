"""--intrinsics for recordings whose own cannot be inferred, and every run saying which intrinsics it assumed and
where they came from (flag, camera.yaml, the folder's name, a default)."""
import json
import warnings

import numpy as np
import pytest

from app.map_cli import main as map_main
from app.sources import SourceSpec, open_viewer_source
from m2hmx.data import DatasetError
from m2hmx.data.sources import describe_intrinsics, open_source
from tests.data.helpers import write_tum


def test_map_cli_takes_intrinsics_and_says_where_they_came_from(tmp_path, capsys):
    folder = tmp_path / "my_recording"  # a TUM folder whose name says neither fr1, fr2 nor fr3
    write_tum(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # given intrinsics: no warning about the folder's name
        code = map_main(["--dataset", str(folder), "--out", str(tmp_path / "m"), "--gt-poses", "--max-frames", "2",
                         "--intrinsics", "400,410,4.5,3.5", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0, err
    said = "intrinsics fx, fy, cx, cy = 400, 410, 4.5, 3.5 (from --intrinsics)"
    assert said in err and json.loads((tmp_path / "m" / "metrics.json").read_text())["intrinsics"] == said

    with pytest.warns(UserWarning, match="--intrinsics"):
        assert map_main(["--dataset", str(folder), "--out", str(tmp_path / "d"), "--gt-poses", "--max-frames", "2",
                         "--no-progress"]) == 0
    assert "525, 525, 319.5, 239.5 (from the TUM benchmark's default (the folder name says neither" \
        in capsys.readouterr().err


def test_every_origin_is_named(tmp_path):
    tum = tmp_path / "rgbd_dataset_freiburg2_desk"
    write_tum(tum)
    assert describe_intrinsics(open_source(str(tum))).endswith("(from the folder name (fr2: the TUM benchmark's "
                                                               "calibration))")
    (tum / "camera.yaml").write_text("fx: 600.0\nfy: 601.0\ncx: 320.0\ncy: 240.0\n")
    assert describe_intrinsics(open_source(str(tum))) == \
        f"intrinsics fx, fy, cx, cy = 600, 601, 320, 240 (from {tum / 'camera.yaml'})"
    images = tmp_path / "images"
    images.mkdir()
    import cv2

    for i in range(2):
        cv2.imwrite(str(images / f"{i}.png"), np.zeros((30, 40, 3), np.uint8))
    assert "60 deg horizontal field of view" in describe_intrinsics(open_source(str(images)))
    src = open_viewer_source(SourceSpec("dataset", str(images), intrinsics=(50.0, 51.0, 19.5, 14.5)))
    assert src.intrinsics_note == "intrinsics fx, fy, cx, cy = 50, 51, 19.5, 14.5 (from --intrinsics)"
    for frame in (src[1], next(iter(src))):  # random access and iteration both carry them
        np.testing.assert_allclose(frame.K, [[50, 0, 19.5], [0, 51, 14.5], [0, 0, 1]])


def test_a_source_with_its_own_calibration_refuses_intrinsics():
    with pytest.raises(DatasetError, match="--intrinsics"):
        open_source("synthetic:0", intrinsics=(500.0, 500.0, 160.0, 120.0))


def test_viewer_says_which_intrinsics(viewer, qtbot, tmp_path, capfd):
    folder = tmp_path / "my_recording"
    write_tum(folder)
    window = viewer(source=SourceSpec("dataset", str(folder), intrinsics=(400.0, 410.0, 4.5, 3.5)), size=(64, 80))
    said = "intrinsics fx, fy, cx, cy = 400, 410, 4.5, 3.5 (from --intrinsics)"
    qtbot.waitUntil(lambda: said in window.statusBar().currentMessage(), timeout=60_000)
    assert said in capfd.readouterr().out


def test_a_generated_room_says_nothing_about_intrinsics():
    assert describe_intrinsics(open_source("synthetic:0")) == ""
