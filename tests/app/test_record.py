"""``m2hmx-viewer --realsense --record room.bag``: argument handling and one-line errors, without a camera (no
RealSense hardware or pyrealsense2 here, so the recording itself is not exercised)."""
import sys
import types

import pytest

from app.main import build_parser, main, options_from_args
from app.sources import SourceError, SourceSpec, open_viewer_source


def test_record_goes_with_the_realsense_source(tmp_path):
    opts = options_from_args(build_parser().parse_args(["--realsense", "--record", str(tmp_path / "room.bag")]))
    assert (opts.source.kind, opts.source.value, opts.source.record) == ("realsense", None, str(tmp_path / "room.bag"))
    assert options_from_args(build_parser().parse_args(["--realsense"])).source.record is None


@pytest.mark.parametrize("argv, message", [
    (["--record", "room.bag"], "--record needs --realsense"),
    (["--camera", "0", "--record", "room.bag"], "--record needs --realsense"),
    (["--realsense", "--record", "room.mp4"], "must end in .bag"),
    (["--realsense", "--record", "/no/such/folder/room.bag"], "does not exist"),
])
def test_bad_record_arguments_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].startswith("m2hmx-viewer: error:")


def test_recording_without_pyrealsense2_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pyrealsense2", None)  # import fails as when the extra is not installed
    with pytest.raises(SourceError, match=r"pip install 'm2hmx\[realsense\]'"):
        open_viewer_source(SourceSpec("realsense", record=str(tmp_path / "room.bag")))


def test_recording_without_a_camera_says_so_in_one_line(monkeypatch, tmp_path):
    """pyrealsense2 present but no device plugged in: librealsense's context lists no devices."""
    rs = types.SimpleNamespace(pipeline=lambda: object(), config=lambda: object(),
                               context=lambda: types.SimpleNamespace(query_devices=lambda: []))
    monkeypatch.setitem(sys.modules, "pyrealsense2", rs)
    with pytest.raises(SourceError, match="no RealSense camera found") as exc:
        open_viewer_source(SourceSpec("realsense", record=str(tmp_path / "room.bag")))
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "room.bag").exists()
