"""The ONNX Runtime engine (m2hmx/onnx_forward.py): the torch model's answers, the cache, and a fallback to torch."""
import logging
import sys

import numpy as np
import pytest
import torch

from m2hmx.model import build_model
from m2hmx.onnx_forward import OnnxForward, cache_dir
from m2hmx.predictor import Predictor, PredictorError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("M2HMX_CACHE", str(tmp_path / "cache"))


def _image(seed: int, shape=(100, 150, 3)) -> np.ndarray:  # resized and padded on the way in and out
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _close(a, b, atol=1e-4):
    np.testing.assert_allclose(a.depth, b.depth, rtol=0, atol=atol)
    np.testing.assert_allclose(a.confidence, b.confidence, rtol=0, atol=atol)
    assert (a.labels == b.labels).mean() > 0.999  # a near-tie may flip with another summation order
    for x, y in ((a.normals, b.normals), (a.edges, b.edges)):
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_allclose(x, y, rtol=0, atol=atol)


def test_onnx_engine_gives_the_torch_answers(tiny_config):
    model = build_model(tiny_config())
    reference = build_model(tiny_config())
    reference.load_state_dict(model.state_dict())
    fast, plain = Predictor(model), Predictor(reference, engine="torch")
    two = Predictor(model, tasks=("depth", "semseg"))
    assert fast.engine == two.engine == "onnxruntime" and plain.engine == "torch"
    for seed in range(2):
        rgb = _image(seed)
        a = fast.predict(rgb)
        _close(a, plain.predict(rgb))
        b = two.predict(rgb)
        assert b.normals is None and b.edges is None
        np.testing.assert_allclose(b.depth, a.depth, rtol=0, atol=1e-6)
    assert not model.training  # exporting left the model in eval mode (LoRA dropout stays off)
    _close(fast.predict(_image(5, (64, 64, 3))), plain.predict(_image(5, (64, 64, 3))))  # a second size


def test_raw_outputs_and_probabilities_match_torch(tiny_config):
    """``OnnxForward.__call__`` (the model's outputs, used for ``return_probs``) against the torch model."""
    model = build_model(tiny_config())
    predictor, engine = Predictor(model), OnnxForward(model.eval())
    for shape in ((1, 3, 64, 96), (1, 3, 64, 64)):
        x = torch.randn(shape)
        with torch.inference_mode():
            expected = model(x)
        got = engine(x)
        assert sorted(got) == sorted(k for k in expected if k in ("semseg", "depth", "normals", "edge"))
        for k, v in got.items():
            np.testing.assert_allclose(v.numpy(), expected[k].numpy(), rtol=0, atol=1e-4)
    assert engine.shapes == {(1, 3, 64, 96), (1, 3, 64, 64)}  # one set of sessions per input shape
    rgb = _image(3)
    with_probs, plain = predictor.predict(rgb, return_probs=True), predictor.predict(rgb)
    assert with_probs.probs.shape[0] == model.config.num_classes and plain.probs is None
    _close(with_probs, plain)


def test_second_predictor_loads_the_cache_and_a_damaged_file_is_exported_again(tiny_config, monkeypatch):
    model = build_model(tiny_config())
    rgb = _image(1)
    first = Predictor(model).predict(rgb)
    files = sorted(cache_dir().glob("*.onnx"))
    assert [f.name.split("-")[0] for f in files] == ["encode", "heads", "level1", "level2", "level3"]

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache holds the graphs")
    with monkeypatch.context() as m:
        m.setattr(torch.onnx, "export", no_export)
        again = Predictor(model)
        np.testing.assert_array_equal(again.predict(rgb).depth, first.depth)
        assert again.engine == "onnxruntime"
    files[0].write_bytes(b"not an onnx file")
    repaired = Predictor(model)
    np.testing.assert_array_equal(repaired.predict(rgb).depth, first.depth)
    assert repaired.engine == "onnxruntime" and files[0].stat().st_size > 1000


def test_without_onnxruntime_the_predictor_runs_torch_and_says_so(tiny_config, monkeypatch, caplog):
    model = build_model(tiny_config())
    expected = Predictor(model, engine="torch").predict(_image(2))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # an import that fails
    with caplog.at_level(logging.WARNING, logger="m2hmx"):
        predictor = Predictor(model)
    assert predictor.engine == "torch"
    assert [r.getMessage() for r in caplog.records] == [
        "m2hmx: ONNX Runtime not used (ModuleNotFoundError: import of onnxruntime halted; None in sys.modules); "
        "running the network in torch"]
    _close(predictor.predict(_image(2)), expected, atol=1e-5)


def test_engine_choices(tiny_config):
    model = build_model(tiny_config())
    assert Predictor(model, compile=True).engine == "torch"  # compile is a torch option
    with pytest.raises(PredictorError, match="engine 'tensorrt' is not onnxruntime or torch"):
        Predictor(model, engine="tensorrt")
    with pytest.raises(PredictorError, match="engine onnxruntime runs on CPU in fp32 without compile"):
        Predictor(model, amp="bf16", engine="onnxruntime")
