"""m2hmx-profile and the GPU check script (which must exit cleanly without CUDA)."""
import json

import pytest
import torch

from m2hmx.checkpoint import save_checkpoint
from m2hmx.cli import profile
from m2hmx.model import build_model


def test_profile_preset_json(capsys):
    assert profile.main(["--model", "m2hmx-l", "--tasks", "depth,semseg", "--height", "480", "--width", "640",
                         "--no-latency", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["tasks"] == ["semseg", "depth"]
    assert abs(r["params_m"] - 332.03) / 332.03 < 0.01
    assert 600 < r["gmacs"] < 700 and r["latency_ms"] is None  # ViT-L alone is ~440 GMAC at 480x640


def test_profile_checkpoint_with_latency(tmp_path, tiny_config, capsys):
    path = save_checkpoint(tmp_path / "tiny.safetensors", build_model(tiny_config()))
    assert profile.main(["--model", str(path), "--tasks", "semseg,depth,normals,edges", "--runs", "1"]) == 0
    out = capsys.readouterr().out
    assert "input 64x96" in out and "GMACs" in out and "latency" in out
    assert profile.main(["--model", str(path), "--tasks", "depth,semseg", "--no-latency"]) == 2
    assert "the checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--model", "nope"], "neither a preset"),
    (["--model", "m2hmx-demo", "--height", "250", "--width", "320"], "multiples of 16"),
    (["--model", "m2hmx-demo", "--tasks", "depth,flow"], "tasks"),
])
def test_profile_errors_are_one_line(args, message, capsys):
    assert profile.main(args + ["--no-latency"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA exit")
def test_gpu_check_exits_cleanly_without_cuda(capsys):
    from benchmarks import gpu_check

    assert gpu_check.main([]) == 0
    assert "no CUDA device" in capsys.readouterr().out


def test_gpu_check_training_step_runs_the_demo_recipe_on_cpu(capsys):
    """The GPU check's training step (m2hmx-train's module, loss and optimiser on a random batch) also runs on
    CPU, so it cannot rot between GPU sessions; the loss of random 4-task targets is finite and positive."""
    import re

    from benchmarks import gpu_check

    gpu_check.check_train_step(torch.device("cpu"), batch_sizes=(2,), runs=1)
    out = capsys.readouterr().out
    assert "m2hmx-demo, 4 tasks, 144x192" in out
    loss = float(re.search(r"batch\s+2: .* loss ([0-9.]+)", out).group(1))
    assert 0 < loss < 100
