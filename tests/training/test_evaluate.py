"""evaluate() over real generated frames with predictors whose errors are known exactly."""
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from m2hmx.data.synthetic import SyntheticSource
from m2hmx.evaluate import EvalError, evaluate, format_report, spread_over_sources
from m2hmx.labels import load_label_space


class KnownErrorPredictor:
    """Returns the frame's own ground truth, with depth multiplied by ``depth_scale``."""

    tasks = ("semseg", "depth", "normals", "edge")

    def __init__(self, source, depth_scale=1.0, space="scannet20"):
        self.frames = {f.rgb.tobytes(): f for f in source}
        self.depth_scale = depth_scale
        self.label_space = load_label_space(space)

    def predict(self, rgb):
        f = self.frames[rgb.tobytes()]
        return SimpleNamespace(labels=f.labels, depth=f.depth * self.depth_scale, normals=f.normals,
                               edges=f.edges.astype(np.float32))


@pytest.fixture(scope="module")
def source():
    return SyntheticSource(seed=7, frames=3, height=48, width=64)


def test_perfect_predictions_score_perfectly(source, tmp_path):
    grid = tmp_path / "grid.png"
    r = evaluate(KnownErrorPredictor(source), [source], 0.1, 10.0, grid_path=grid, progress=False)
    assert r["frames"] == 3
    assert r["semseg"]["miou"] == pytest.approx(1.0) and r["semseg"]["pixel_acc"] == pytest.approx(1.0)
    assert r["depth"]["abs_rel"] == pytest.approx(0.0) and r["depth"]["delta1"] == 1.0
    assert r["depth"]["scale_median_std"] == pytest.approx(0.0)
    assert r["normals"]["median"] == pytest.approx(0.0, abs=0.02)
    assert r["edge"]["f_ods"] == pytest.approx(1.0)
    image = cv2.imread(str(grid))
    assert image is not None and image.shape[0] > 100
    text = format_report(r)
    assert "mIoU 1.0000" in text and "wall" in text


def test_scaled_depth_shows_in_absrel_and_scale(source):
    r = evaluate(KnownErrorPredictor(source, depth_scale=1.1), [source], 0.1, 10.0, max_frames=2, progress=False)
    assert r["frames"] == 2
    assert r["depth"]["abs_rel"] == pytest.approx(0.1, abs=2e-3)  # clamping at 10 m barely matters here
    assert r["depth"]["scale_median_mean"] == pytest.approx(1.1, abs=1e-3)
    assert r["depth"]["delta1"] == 1.0


def test_label_space_mismatch_is_one_line_error(source):
    with pytest.raises(EvalError, match="label space"):
        evaluate(KnownErrorPredictor(source, space="nyu40"), [source], 0.1, 10.0, progress=False)


def test_several_sources_are_one_test_set_with_each_one_reported(source):
    other = SyntheticSource(seed=8, frames=2, height=48, width=64)
    predictor = KnownErrorPredictor(source, depth_scale=1.1)
    predictor.frames.update({f.rgb.tobytes(): f for f in other})
    r = evaluate(predictor, [source, other], 0.1, 10.0, progress=False)
    assert r["frames"] == 5 and [s["frames"] for s in r["per_source"]] == [3, 2]
    assert [s["dataset"] for s in r["per_source"]] == [source.name, other.name]
    assert r["semseg"]["miou"] == pytest.approx(1.0)
    assert r["depth"]["scale_median_mean"] == pytest.approx(1.1, abs=1e-3)
    text = format_report(r)
    assert "2 datasets as one test set" in text and other.name in text


def test_spread_over_sources_names_the_worst_one(source):
    other = SyntheticSource(seed=8, frames=2, height=48, width=64)
    predictor = KnownErrorPredictor(source, depth_scale=1.1)
    predictor.frames.update({f.rgb.tobytes(): f for f in other})
    seen = []
    r = evaluate(predictor, iter([source, other]), 0.1, 10.0, progress=False, on_source=seen.append)
    assert [s["dataset"] for s in seen] == [source.name, other.name]  # each as it is done
    spread = r["spread"]["abs_rel"]
    assert spread["median"] == pytest.approx(0.1, abs=2e-3) and spread["worst"] == pytest.approx(0.1, abs=2e-3)
    assert r["spread"]["scale_median_std"]["p90"] == pytest.approx(0.0, abs=1e-6)
    assert "spread over datasets" in format_report(r)


def test_spread_percentiles_on_the_bad_side():
    rooms = [{"dataset": f"room{k}", "depth": {"abs_rel": 0.05 + 0.01 * k, "delta1": 0.99 - 0.01 * k,
                                               "scale_median_std": 0.02}} for k in range(11)]
    rooms[3]["depth"]["abs_rel"] = 0.5  # one room fails outright
    spread = spread_over_sources(rooms)
    assert spread["abs_rel"]["worst"] == 0.5 and spread["abs_rel"]["worst_dataset"] == "room3"
    assert spread["abs_rel"]["median"] == pytest.approx(0.11)  # sorted: .05 .06 .07 .09 .10 .11 ...: the 6th of 11
    assert spread["abs_rel"]["p90"] == pytest.approx(0.15)  # 0.14, 0.15, 0.5 at the top: numpy's linear p90
    assert spread["delta1"]["worst"] == pytest.approx(0.89) and spread["delta1"]["p10"] == pytest.approx(0.90)
    assert "miou" not in spread
