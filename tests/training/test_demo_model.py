"""The bundled demo model reproduces its model card's held-out numbers (assets/m2hmx-demo.metrics.json),
and m2hmx-eval fails with one line on bad input."""
import json

import pytest

from m2hmx import ASSETS_DIR
from m2hmx.cli.evaluate import main as eval_main
from m2hmx.config import bundled_checkpoint

WEIGHTS = bundled_checkpoint()
CARD_METRICS = ASSETS_DIR / "m2hmx-demo.metrics.json"
KEYS = [("semseg", "miou"), ("semseg", "pixel_acc"), ("depth", "rmse"), ("depth", "abs_rel"),
        ("depth", "delta1"), ("depth", "scale_median_std"), ("normals", "mean"), ("edge", "f_ods")]


def test_bundled_model_reproduces_model_card_numbers(tmp_path, capsys):
    card = json.loads(CARD_METRICS.read_text())["test_subset"]
    out = tmp_path / "eval.json"
    args = ["--checkpoint", str(WEIGHTS), "--dataset", card["dataset"], "--stride", str(card["stride"]),
            "--json", str(out), "--no-progress"]
    assert eval_main(args) == 0
    assert "mIoU" in capsys.readouterr().out
    got = json.loads(out.read_text())
    assert got["frames"] == card["results"]["frames"]
    for section, key in KEYS:
        assert got[section][key] == pytest.approx(card["results"][section][key], abs=2e-3), (section, key)
    assert WEIGHTS.stat().st_size <= 25 * 2 ** 20


def test_eval_pools_several_datasets_into_one_test_set(tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert eval_main(["--checkpoint", str(WEIGHTS), "--dataset", "synthetic:100000", "synthetic:100001",
                      "--stride", "100", "--json", str(out), "--no-progress"]) == 0
    assert "2 datasets as one test set" in capsys.readouterr().out
    got = json.loads(out.read_text())
    assert got["frames"] == 6 and [r["frames"] for r in got["per_source"]] == [3, 3]
    ious = [r["semseg"]["miou"] for r in got["per_source"]]
    assert got["semseg"]["miou"] > sum(ious) / 2 + 0.03  # pooled (0.667 here), not the two rooms' mean (0.593)


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "no/such.safetensors", "--dataset", "synthetic:1"], "--checkpoint no/such.safetensors: no such file"),
    (["--checkpoint", str(WEIGHTS), "--dataset", "no/such/folder"], "no/such/folder"),
    (["--checkpoint", str(WEIGHTS), "--dataset", "synthetic:1", "no/such/folder"], "no/such/folder"),
])
def test_eval_bad_input_is_one_line(args, message, capsys):
    assert eval_main(args + ["--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err
