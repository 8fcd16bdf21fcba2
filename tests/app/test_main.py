"""The viewer's command line (no window)."""
import pytest

from app.main import build_parser, bundled_model, options_from_args


def test_help_lists_sources_groups_examples_and_keys(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for needle in ("--camera", "--realsense", "--realsense-bag", "--dataset", "--video", "--checkpoint", "--device",
                   "--labelspace", "--depth-scale", "--output-dir", "--data-root", "--max-frames", "--screenshot",
                   "--quit-when-done", "--export", "examples:", "Space play/pause", "source (pick one"):
        assert needle in text, needle


def test_sources_are_mutually_exclusive(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--camera", "0", "--video", "a.mp4"])
    assert "not allowed with" in capsys.readouterr().err


def test_options_follow_the_arguments(tmp_path):
    opts = options_from_args(build_parser().parse_args(
        ["--dataset", "scannet/scene0011", "--data-root", str(tmp_path), "--checkpoint", "m.safetensors",
         "--depth", "sensor", "--size", "480x640", "--max-frames", "5", "--depth-scale", "1.2",
         "--odometry", "hybrid"]))
    source = opts.source
    assert (source.kind, source.value, source.data_root) == ("dataset", "scannet/scene0011", str(tmp_path))
    assert opts.checkpoint == "m.safetensors" and opts.depth == "sensor" and opts.size == (480, 640)
    assert opts.max_frames == 5 and opts.depth_scale == 1.2 and opts.odometry == "hybrid"
    assert options_from_args(build_parser().parse_args([])).odometry is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--size", "big"])


def test_demo_uses_the_bundled_model_or_says_it_is_missing():
    opts = options_from_args(build_parser().parse_args([]))
    assert opts.source.kind == "demo"
    if bundled_model().is_file():
        assert opts.checkpoint == str(bundled_model()) and not opts.checkpoint_note
    else:
        assert opts.checkpoint is None and "not found" in opts.checkpoint_note


def test_one_depth_vocabulary_and_the_old_flag_still_works_with_a_notice(capsys):
    from app.map_cli import build_parser as map_parser
    from mapping.bridge import MappingConfig
    from mapping.interface import DEPTH_MODES, VIEWER_DEPTH_MODES

    assert options_from_args(build_parser().parse_args([])).depth == "pred"
    assert options_from_args(build_parser().parse_args(["--depth-source", "sensor"])).depth == "sensor"
    assert "--depth-source is deprecated; use --depth sensor" in capsys.readouterr().err
    for mode in DEPTH_MODES:  # m2hmx-map and the mapping backend take each name; the viewer its two
        assert map_parser().parse_args(["--dataset", "d", "--out", "o", "--depth", mode]).depth == mode
        assert MappingConfig(depth_mode=mode).depth_mode == mode
        if mode in VIEWER_DEPTH_MODES:
            assert build_parser().parse_args(["--depth", mode]).depth == mode
        else:
            with pytest.raises(SystemExit):
                build_parser().parse_args(["--depth", mode])
    with pytest.raises(ValueError):
        MappingConfig(depth_mode="source")


def test_every_flag_reaches_its_option():
    opts = options_from_args(build_parser().parse_args(
        ["--device", "cuda:1", "--labelspace", "nyu40", "--output-dir", "o", "--screenshot", "s.png", "--export", "e",
         "--quit-when-done", "--torch-threads", "2", "--loop-closure", "--snapshot-interval", "2.5", "--loop", "50",
         "--rerun-save", "r.rrd", "--tasks", "depth,semseg"]))
    assert (opts.device, opts.labelspace, opts.output_dir, opts.screenshot, opts.export) == \
        ("cuda:1", "nyu40", "o", "s.png", "e")
    assert opts.quit_when_done and opts.torch_threads == 2 and opts.loop_closure and opts.tasks == ("depth", "semseg")
    assert (opts.snapshot_every_s, opts.loop_frames, opts.rerun) == (2.5, 50, ("save", "r.rrd"))
    assert options_from_args(build_parser().parse_args(["--rerun"])).rerun == ("spawn", None)
