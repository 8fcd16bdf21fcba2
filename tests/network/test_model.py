"""Output shapes and values of the whole network (eval and train), module options, parameter counts."""
import dataclasses

import pytest
import torch

from m2hmx.config import ConfigError, get_preset
from m2hmx.model import build_model

CHANNELS = {"semseg": 5, "depth": 1, "normals": 3, "edge": 1}


@pytest.mark.parametrize("tasks", [("semseg", "depth"), ("semseg", "depth", "normals", "edge")])
@pytest.mark.parametrize("size", [(480, 640), (256, 336)])  # 256x336: 250x330 padded to 16 (16x21 patches)
def test_output_shapes_eval_and_train(tasks, size, tiny_config):
    model = build_model(tiny_config(tasks=tasks))
    x = torch.randn(1, 3, *size)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert set(out) == set(tasks)
    for t in tasks:
        assert out[t].shape == (1, CHANNELS[t], *size)
        assert torch.isfinite(out[t]).all()
    if "normals" in tasks:
        torch.testing.assert_close(out["normals"].norm(dim=1), torch.ones(1, *size))
    model.train()
    out = model(x)
    n_aux = {"semseg": 2, "depth": 2, "normals": 2, "edge": 1}
    assert set(out["aux"]) == set(tasks)
    for t in tasks:
        assert out[t].shape == (1, CHANNELS[t], *size)
        assert [a.shape for a in out["aux"][t]] == [(1, CHANNELS[t], *size)] * n_aux[t]
    h4, w4 = size[0] // 4, size[1] // 4
    assert out["depth_bin_logits"].shape == (1, 8, h4, w4)
    edges = out["depth_bin_edges"]
    assert edges.shape == (1, 8)
    assert (edges.diff(dim=1) > 0).all() and edges[:, -1].allclose(torch.full((1,), 10.0))
    assert out["depth_coarse"].shape == out["depth_offset"].shape == (1, 1, *size)
    torch.testing.assert_close(out["depth"], out["depth_coarse"] + out["depth_offset"], atol=1e-4, rtol=1e-4)
    # the bin expectation lies inside the depth range
    assert out["depth_coarse"].min() >= 0.1 - 1e-4 and out["depth_coarse"].max() <= 10.0 + 1e-4


def test_demo_preset_shapes_and_gradients():
    model = build_model("m2hmx-demo").train()
    x = torch.randn(1, 3, 240, 320)
    out = model(x)
    assert out["semseg"].shape == (1, 20, 240, 320)
    assert out["depth_bin_logits"].shape == (1, 64, 30, 40)  # demo heads run at stride 8
    loss = sum(o.float().mean() for o in out.values() if torch.is_tensor(o))
    loss = loss + sum(a.mean() for aux in out["aux"].values() for a in aux)
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []  # every trainable parameter is used (the demo trains its ViT from scratch)


def test_head_order_is_asymmetric(tiny_config):
    """Depth is a pure source: perturbing the semseg decoder branch leaves depth untouched but not edges."""
    model = build_model(tiny_config()).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        before = model(x)
        model.decoder.branches["semseg"][3][0][0].weight.mul_(3.0)
        after = model(x)
    assert torch.equal(before["depth"], after["depth"])
    for t in ("edge", "normals", "semseg"):
        assert not torch.allclose(before[t], after[t])


@pytest.mark.parametrize("source,used", [("fused", True), ("deepest", False)])
def test_hfa_p16_source(source, used, tiny_config):
    """'deepest' (released code) feeds only the last layer downstream; 'fused' (paper) uses all four."""
    model = build_model(tiny_config(hfa_p16_source=source, tasks=("semseg", "depth"))).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        before = model(x)["depth"]
        model.hfa.proj[0][0].weight.mul_(2.0)
        after = model(x)["depth"]
    assert torch.allclose(before, after) != used


def test_segnext_msca_variant_runs_and_differs(tiny_config):
    model = build_model(tiny_config(msca_variant="segnext")).eval()
    assert hasattr(model.heads["semseg"].msca, "strips")
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96))
    assert torch.isfinite(out["semseg"]).all()


def test_config_validation_and_json_round_trip():
    cfg = get_preset("m2hmx-demo")
    assert type(cfg).from_dict(__import__("json").loads(cfg.to_json())) == cfg
    assert get_preset("m2hmx-l", tasks=("depth", "semseg")).tasks == ("semseg", "depth")  # canonical order
    with pytest.raises(ConfigError, match="tasks"):
        get_preset("m2hmx-l", tasks=("depth", "normals"))
    with pytest.raises(ConfigError, match="unknown model preset 'm2hmx-xl'"):
        get_preset("m2hmx-xl")
    with pytest.raises(ConfigError, match="layer_indices"):
        dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, layer_indices=(1, 2, 9, 5)))


# Table III of the paper (arXiv 2603.29236): #P in millions.
@pytest.mark.parametrize("preset,tasks,paper_m", [
    ("m2hmx-b", ("semseg", "depth", "normals", "edge"), 134.26),
    ("m2hmx-l", ("semseg", "depth"), 332.03),
    ("m2hmx-l", ("semseg", "depth", "normals", "edge"), 353.53),
])
def test_parameter_counts_match_table_iii(preset, tasks, paper_m):
    with torch.device("meta"):
        model = build_model(get_preset(preset, tasks=tasks))
    total = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(total - paper_m) / paper_m < 0.01, total


def test_module_parameter_counts_match_spec():
    """docs/design/network.md section 11 (ViT-L, 4 heads): HFA 5.45 M, decoder 12.48 M, heads 7.42/7.59/7.36/7.45 M."""
    with torch.device("meta"):
        model = build_model("m2hmx-l")
    count = lambda m: sum(p.numel() for p in m.parameters()) / 1e6  # noqa: E731
    assert count(model.hfa) == pytest.approx(5.45, abs=0.01)
    assert count(model.decoder) == pytest.approx(12.48, abs=0.01)
    for task, spec in (("depth", 7.42), ("edge", 7.59), ("normals", 7.36), ("semseg", 7.45)):
        assert count(model.heads[task]) == pytest.approx(spec, abs=0.01), task
    assert count(model.decoder.rgm[0].mamba) * 1e6 == 462_336  # section 6
