"""Inference speed-ups keep the answers: channels-last, a subset of outputs (--tasks), the plain normalisation and
edge refine, the scan as one torch op."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from m2hmx.model import build_model, unit
from m2hmx.predictor import Predictor, PredictorError
from m2hmx.ssm import cpu_scan_forward_op, selective_scan_reference


def _image(seed: int, shape=(64, 96, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_two_outputs_are_the_four_output_answers(tiny_config):
    model = build_model(tiny_config()).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        full = model(x)
        two = model(x, ("depth", "semseg"))
    assert set(full) == {"semseg", "depth", "normals", "edge"} and set(two) == {"depth", "semseg"}
    for task in two:
        torch.testing.assert_close(two[task], full[task], rtol=0, atol=1e-6)
    assert model.needed_heads(("depth", "semseg")) == ("semseg", "depth", "edge")  # semseg refines with edges
    with pytest.raises(ValueError, match="need depth and semseg"):
        model(x, ("depth", "normals"))


def test_predictor_tasks_skip_outputs_not_answers(tiny_config):
    model = build_model(tiny_config())
    full, two = Predictor(model), Predictor(model, tasks=("semseg", "depth"))
    assert two.tasks == ("semseg", "depth") and two.model_tasks == full.tasks == ("semseg", "depth", "normals", "edge")
    rgb = _image(3, (100, 150, 3))  # resized and padded on the way in and out
    a, b = full.predict(rgb), two.predict(rgb)
    assert b.normals is None and b.edges is None and a.normals is not None and a.edges is not None
    np.testing.assert_allclose(b.depth, a.depth, rtol=0, atol=1e-6)
    np.testing.assert_allclose(b.confidence, a.confidence, rtol=0, atol=1e-6)
    assert (b.labels == a.labels).all()
    with pytest.raises(PredictorError, match="need depth and semseg"):
        Predictor(model, tasks=("depth",))
    with pytest.raises(PredictorError, match="from this model's semseg,depth"):
        Predictor(build_model(tiny_config(tasks=("semseg", "depth"))), tasks=("semseg", "depth", "edge"))


def test_predictor_matches_the_plain_computation(tiny_config):
    """Channels-last, the top-class confidence from the logits and ``unit`` against the contiguous model,
    softmax and F.normalize (what the predictor computed before)."""
    model = build_model(tiny_config()).eval()
    plain = build_model(tiny_config()).eval()
    plain.load_state_dict(model.state_dict())
    predictor = Predictor(model, engine="torch")  # the ONNX Runtime engine: tests/network/test_onnx_forward.py
    assert next(p for p in model.parameters() if p.dim() == 4).is_contiguous(memory_format=torch.channels_last)
    rgb = _image(4)
    x = (torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255 - torch.tensor([0.485, 0.456, 0.406])
         .view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.inference_mode():
        out = plain(x)
    probs = torch.softmax(out["semseg"][0], dim=0)
    conf, labels = probs.max(dim=0)
    p = predictor.predict(rgb)
    np.testing.assert_allclose(p.depth, out["depth"][0, 0].clamp_min(0.1).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(p.confidence, conf.numpy(), rtol=0, atol=1e-5)
    assert (p.labels == labels.numpy()).mean() > 0.999  # a near-tie may flip with another summation order
    np.testing.assert_allclose(p.normals, F.normalize(out["normals"], dim=1)[0].permute(1, 2, 0).numpy(), atol=1e-5)
    np.testing.assert_allclose(p.edges, torch.sigmoid(out["edge"][0, 0]).numpy(), atol=1e-5)


def test_unit_is_f_normalize_with_zero_vectors():
    x = torch.randn(2, 3, 5, 7)
    x[0, :, 1, 1] = 0.0
    torch.testing.assert_close(unit(x), F.normalize(x, dim=1), rtol=1e-6, atol=1e-7)
    assert (unit(x)[0, :, 1, 1] == 0).all()


def test_edge_refine_is_the_1x1_convolution(tiny_config):
    head = build_model(tiny_config()).heads["semseg"]
    logits, edges = torch.randn(1, 5, 8, 12), torch.randn(1, 1, 8, 12)
    e = torch.sigmoid((torch.sigmoid(edges) - head.EDGE_THRESHOLD) * 10.0)
    expected = logits + head.EDGE_STRENGTH * F.conv2d(e, head.edge_refine.weight, head.edge_refine.bias)
    torch.testing.assert_close(head.refine_with_edges(logits, edges), expected, rtol=1e-6, atol=1e-6)


def test_scan_op_is_the_scan_and_traceable():
    """The inference scan is one registered torch op (Dynamo traces around it rather than breaking the graph at
    the numba call): its fake kernel, schema and result are checked."""
    g = torch.Generator().manual_seed(0)
    u, delta = torch.randn(1, 6, 40, generator=g), torch.rand(1, 6, 40, generator=g) * 0.5
    A = -torch.rand(6, 4, generator=g) - 0.5
    B, C = torch.randn(1, 4, 40, generator=g), torch.randn(1, 4, 40, generator=g)
    y = cpu_scan_forward_op(u, delta, A, B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous())
    torch.testing.assert_close(y, selective_scan_reference(u, delta, A, B, C), rtol=1e-5, atol=1e-5)
    torch.library.opcheck(cpu_scan_forward_op, (u, delta, A, B.transpose(1, 2).contiguous(),
                                                 C.transpose(1, 2).contiguous()),
                          test_utils=("test_schema", "test_faketensor"))


def test_module_breakdown_names_every_part(tiny_config):
    from m2hmx.profiling import module_breakdown

    rows = dict(module_breakdown(build_model(tiny_config()), 64, 96, runs=1))
    assert {"backbone", "HFA", "decoder level s4: Mamba (in RGM)", "decoder task branches", "head semseg",
            "head normals", "outputs (resize, normalise, edge refine)", "total"} <= set(rows)
    assert all(ms >= 0 for ms in rows.values())
    parts = rows["backbone"] + rows["HFA"] + rows["decoder (all)"] + sum(v for k, v in rows.items() if "head " in k)
    assert parts <= rows["total"] + 1e-6
