"""--tasks depth,semseg in m2hmx-viewer and m2hmx-map (no window, no network)."""
from types import SimpleNamespace

import pytest

from app.main import build_parser, options_from_args
from app.map_cli import build_parser as map_parser
from app.session import ViewerOptions


def test_viewer_and_map_take_the_tasks():
    assert options_from_args(build_parser().parse_args(["--tasks", "semseg, depth"])).tasks == ("semseg", "depth")
    assert options_from_args(build_parser().parse_args([])).tasks is None
    args = map_parser().parse_args(["--dataset", "synthetic:0", "--out", "x", "--tasks", "depth,semseg,edge"])
    assert args.tasks == ("depth", "semseg", "edge")


@pytest.mark.parametrize("bad", ["depth", "depth,semseg,colour"])
def test_bad_tasks_are_one_line(bad, capsys):
    for parser, extra in ((build_parser(), []), (map_parser(), ["--dataset", "synthetic:0", "--out", "x"])):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(extra + ["--tasks", bad])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "--tasks" in err and "holds depth and semseg" in err


def test_panels_of_tasks_left_out_say_off():
    from app.session import ViewerSession
    from app.sources import SourceSpec

    session = ViewerSession(ViewerOptions(SourceSpec("demo")))
    session.start(None, None)
    assert session.missing_panel_reason("edges") == "no edges"  # no network
    session.start(SimpleNamespace(model_tasks=("semseg", "depth", "normals", "edge"), tasks=("semseg", "depth")), None)
    assert session.missing_panel_reason("normals") == "normals: off (--tasks)"
    assert session.missing_panel_reason("edges") == "edges: off (--tasks)"
    session.start(SimpleNamespace(model_tasks=("semseg", "depth"), tasks=("semseg", "depth")), None)
    assert session.missing_panel_reason("normals") == "the model has no normals head"
