"""Bad values get one clear line before any work starts (exit 2 for usage errors, 1 for failures), and damaged
TUM ground truth is refused naming the file and line."""
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from app.map_cli import main as map_main
from m2hmx.cli.evaluate import main as eval_main
from m2hmx.cli.train import main as train_main
from m2hmx.data import DatasetError
from m2hmx.data.sources import open_source
from tests.data.helpers import write_tum

from .conftest import read_only_folder

ROOT = Path(__file__).resolve().parents[2]


def _usage_error(main, argv, capsys, *words):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error:" in err and all(w in err for w in words), err


@pytest.mark.parametrize("flag, value, words", [
    ("--max-frames", "0", ("--max-frames", ">= 1")), ("--max-frames", "-5", ("--max-frames", ">= 1")),
    ("--stride", "0", ("--stride", ">= 1")), ("--voxel-size", "0", ("--voxel-size", "between")),
    ("--voxel-size", "2", ("--voxel-size", "between")), ("--voxel-size", "nan", ("--voxel-size", "between")),
])
def test_map_cli_refuses_bad_values_before_work(flag, value, words, tmp_path, capsys):
    _usage_error(map_main, ["--dataset", "synthetic:0", "--out", str(tmp_path / "m"), flag, value], capsys, *words)
    assert not (tmp_path / "m").exists()


def test_map_cli_refuses_an_unwritable_out_before_mapping(tmp_path, capsys):
    with read_only_folder(tmp_path / "ro") as ro:
        t0 = time.perf_counter()
        assert map_main(["--dataset", "synthetic:0", "--out", str(ro / "map"), "--no-progress"]) == 2  # usage
        took = time.perf_counter() - t0
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--out" in err and str(ro / "map") in err, err
    assert took < 60.0  # before the room's 300 frames are rendered and mapped (minutes on 2 cores)


def test_eval_stride_0_is_a_usage_error(capsys):
    _usage_error(eval_main, ["--checkpoint", "x.safetensors", "--dataset", "synthetic:0", "--stride", "0"], capsys,
                 "--stride", ">= 1")


@pytest.mark.parametrize("override, words", [
    ("train.batch_size=abc", ("train.batch_size", "integer", "'abc'")),
    ("train.steps=0", ("train.steps", "> 0")),
    ("optim.lr=nan", ("optim.lr", "finite")),
    ("data.size=[8,8]", ("data.size",)),
])
def test_train_refuses_a_bad_override_before_rendering(override, words, tmp_path, capsys):
    assert train_main(["--config", "demo", "--set", f"train.out_dir={tmp_path / 'run'}", "--set", override,
                       "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and all(w in err for w in words), err
    assert not (tmp_path / "run").exists()  # no config.yaml left behind


def test_train_refuses_a_recipe_that_is_not_a_mapping(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("- buy milk\n- train a model\n")
    assert train_main(["--config", str(notes), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(notes) in err and "mapping" in err, err


@pytest.mark.parametrize("line, words", [
    ("1305031102.0020 0.0 0 xyz 0 0 0.7071068 0.7071068", ("line 2", "field 4", "'xyz'")),
    ("1305031102.0020 0.0 0 1.5 0 0 0 0", ("line 2", "quaternion", "zero")),
    ("1305031102.0020 nan 0 1.5 0 0 0.7071068 0.7071068", ("line 2", "field 2", "finite")),
    ("1305031102.0020 0.0 0 1.5 inf 0 0.7071068 0.7071068", ("line 2", "field 5", "finite")),
])
def test_tum_ground_truth_bad_values_name_file_and_line(tmp_path, line, words):
    folder = tmp_path / "rgbd_dataset_freiburg1_xyz"
    write_tum(folder)
    gt = folder / "groundtruth.txt"
    lines = gt.read_text().splitlines()
    lines[1] = line
    gt.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as info:
        open_source(str(folder))
    message = str(info.value)
    assert "\n" not in message and str(gt) in message and all(w in message for w in words), message


def test_tum_intrinsics_from_camera_yaml_or_a_warning(tmp_path):
    folder = tmp_path / "my_recording"
    write_tum(folder)
    with pytest.warns(UserWarning, match="neither fr1, fr2 nor fr3.*525.0, 525.0, 319.5, 239.5.*camera.yaml"):
        src = open_source(str(folder))
    assert np.allclose(src.K, [[525, 0, 319.5], [0, 525, 239.5], [0, 0, 1]])
    (folder / "camera.yaml").write_text("fx: 600.0\nfy: 601.0\ncx: 320.0\ncy: 240.0\n")
    src = open_source(str(folder))
    assert np.allclose(src.K, [[600, 0, 320], [0, 601, 240], [0, 0, 1]])
    (folder / "camera.yaml").write_text("fx: -1\nfy: 1\ncx: 2\ncy: 3\n")
    with pytest.raises(DatasetError, match="camera.yaml"):
        open_source(str(folder))


def test_ctrl_c_on_map_cli_exports_the_map_so_far(tmp_path):
    """Ctrl+C during a run played at the camera's clock (``--realtime``: 300 frames take at least 10 s, so the
    signal arrives mid-run). The child gets SIGINT's default action back: started from a shell's background job,
    the test inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler (the run finished with
    exit 0 that way)."""
    out = tmp_path / "map"
    proc = subprocess.Popen([sys.executable, "-m", "app.map_cli", "--dataset", "synthetic:0", "--gt-poses",
                             "--out", str(out), "--voxel-size", "0.05", "--realtime"], cwd=ROOT, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen, chunks = threading.Event(), []

    def read():
        for chunk in iter(lambda: proc.stderr.read1(4096), b""):
            chunks.append(chunk)
            if re.search(rb" ([3-9]|\d\d+)/300 ", b"".join(chunks)[-400:]):
                seen.set()

    threading.Thread(target=read, daemon=True).start()
    assert seen.wait(240), b"".join(chunks)[-1000:]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(120) == 130
    err = b"".join(chunks).decode(errors="replace")
    assert "Traceback" not in err and "interrupted at frame" in err and "map up to that frame exported" in err
    frames = int(re.search(r"interrupted at frame (\d+)", err).group(1))
    assert frames >= 3 and (out / "mesh.ply").is_file() and (out / "metrics.json").is_file()
    assert len((out / "trajectory.tum").read_text().splitlines()) == frames + 1  # a header and one line a frame
