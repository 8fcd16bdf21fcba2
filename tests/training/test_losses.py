"""Each loss against values computed by hand on tiny tensors."""
import math

import pytest
import torch

from m2hmx import losses


def test_silog_matches_hand_value_and_ignores_invalid():
    pred = torch.tensor([[[[1.0, 2.0], [4.0, 7.0]]]])
    target = torch.tensor([[[[1.0, 1.0], [2.0, 0.0]]]])  # last pixel invalid
    g = [0.0, math.log(2), math.log(2)]
    mean, mean_sq = sum(g) / 3, sum(x * x for x in g) / 3
    expected = 10 * math.sqrt(mean_sq - 0.85 * mean ** 2)
    assert losses.silog_loss(pred, target, 0.1, 10.0).item() == pytest.approx(expected, rel=1e-5)


def test_silog_is_nearly_scale_invariant_but_not_fully():
    target = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    exact = losses.silog_loss(target, target, 0.1, 10.0).item()
    scaled = losses.silog_loss(2 * target, target, 0.1, 10.0).item()
    assert exact == pytest.approx(10 * math.sqrt(1e-8), abs=1e-6)  # clamp floor
    assert scaled == pytest.approx(10 * math.sqrt(0.15) * math.log(2), rel=1e-5)


def test_log_l1_depth():
    pred = torch.tensor([[[[2.0, 1.0]]]])
    target = torch.tensor([[[[1.0, 1.0]]]])
    assert losses.log_l1_depth_loss(pred, target, 0.1, 10).item() == pytest.approx(math.log(2) / 2, rel=1e-6)


def test_semantic_ce_with_ignore():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 5.0]]]])  # B=1, C=2, H=1, W=2
    target = torch.tensor([[[0, 255]]])
    expected = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert losses.semantic_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)
    assert losses.semantic_loss(logits, torch.full((1, 1, 2), 255)).item() == 0.0


def test_cosine_normal_loss_skips_zero_gt():
    pred = torch.zeros(1, 3, 1, 3)
    pred[0, :, 0, 0] = torch.tensor([0.0, 0.0, -1.0])
    pred[0, :, 0, 1] = torch.tensor([1.0, 0.0, 0.0])
    pred[0, :, 0, 2] = torch.tensor([1.0, 0.0, 0.0])
    gt = torch.zeros(1, 3, 1, 3)
    gt[0, :, 0, 0] = torch.tensor([0.0, 0.0, -1.0])  # cos 1 -> 0
    gt[0, :, 0, 1] = torch.tensor([0.0, 0.0, -1.0])  # cos 0 -> 1
    assert losses.cosine_normal_loss(pred, gt).item() == pytest.approx(0.5)


def test_balanced_edge_bce():
    logits = torch.tensor([[[[0.0, 2.0, -1.0]]]])
    target = torch.tensor([[[[1.0, 0.0, 255.0]]]])
    pos = 0.95 * math.log(2)  # y=1, z=0
    neg = 0.05 * math.log(1 + math.exp(2))  # y=0, z=2
    assert losses.balanced_edge_bce(logits, target).item() == pytest.approx((pos + neg) / 2, rel=1e-6)


def test_normals_from_depth_plane_faces_camera():
    K = torch.tensor([[[50.0, 0, 4.0], [0, 50.0, 3.0], [0, 0, 1]]])
    n = losses.normals_from_depth(torch.full((1, 1, 7, 9), 2.0), K)
    assert torch.allclose(n[0, :, 3, 4], torch.tensor([0.0, 0.0, -1.0]), atol=1e-6)
    assert n[0, :, 0, 0].abs().sum() == 0  # border
    # floor plane y = 1 m below the camera (y down): normal points up, i.e. -y
    v = torch.arange(7.0).view(7, 1).expand(7, 9)
    depth = (1.0 * 50.0 / (v - 3.0 + 1e-9)).clamp(0.1, 100)  # rows below the centre see the floor
    n = losses.normals_from_depth(depth.view(1, 1, 7, 9), K)
    assert torch.allclose(n[0, :, 5, 4], torch.tensor([0.0, -1.0, 0.0]), atol=1e-5)


def test_depth_normal_consistency_zero_for_matching_normals_and_one_for_orthogonal():
    K = torch.tensor([[[50.0, 0, 4.0], [0, 50.0, 3.0], [0, 0, 1]]])
    depth = torch.full((1, 1, 7, 9), 2.0)
    normals = torch.zeros(1, 3, 7, 9)
    normals[:, 2] = -1.0
    assert losses.depth_normal_consistency(depth, normals, K).item() == pytest.approx(0.0, abs=1e-6)
    normals = torch.zeros(1, 3, 7, 9)
    normals[:, 0] = 1.0
    ref = torch.zeros_like(depth)
    ref[..., 2:5, 2:5] = 1.0
    assert losses.depth_normal_consistency(depth, normals, K, ref).item() == pytest.approx(1.0, abs=1e-6)


def test_semantic_edge_map_and_consistency():
    logits = torch.zeros(1, 2, 2, 3)
    logits[0, 1, :, 2] = 1.0  # column 2 is class 1
    e = losses.semantic_edge_map(logits)
    assert e[0, 0].tolist() == [[0, 1, 0], [0, 1, 0]]
    edge_logits = torch.zeros(1, 1, 2, 3)  # sigmoid 0.5 everywhere
    assert losses.edge_semantic_consistency(edge_logits, logits).item() == pytest.approx(0.5)


def test_uncertainty_weighting_value_and_gradient_paper_form():
    weigh = losses.UncertaintyWeighting(("semseg", "depth", "normals", "edge"))
    assert weigh.tasks == ("depth", "edge", "normals", "semseg")
    s = torch.tensor([0.3, -0.2, 1.0, 0.0])
    with torch.no_grad():
        weigh.log_vars.copy_(s)
    L = {"depth": torch.tensor(2.0), "edge": torch.tensor(0.5), "normals": torch.tensor(1.5),
         "semseg": torch.tensor(3.0)}
    total = weigh(L)
    factor = {"depth": 0.5, "edge": 1.0, "normals": 0.5, "semseg": 1.0}
    expected = sum(factor[t] * math.exp(-s[i].item()) * L[t].item() + 0.5 * s[i].item()
                   for i, t in enumerate(weigh.tasks))
    assert total.item() == pytest.approx(expected, rel=1e-6)
    total.backward()
    grads = [-factor[t] * math.exp(-s[i].item()) * L[t].item() + 0.5 for i, t in enumerate(weigh.tasks)]
    assert weigh.log_vars.grad.tolist() == pytest.approx(grads, rel=1e-6)


def test_multitask_loss_terms_and_aux_weights():
    torch.manual_seed(0)
    b, c, h, w = 2, 3, 8, 10
    K = torch.tensor([[40.0, 0, 5], [0, 40.0, 4], [0, 0, 1]]).expand(b, 3, 3)
    out = {"semseg": torch.randn(b, c, h, w), "depth": torch.rand(b, 1, h, w) + 1,
           "normals": torch.nn.functional.normalize(torch.randn(b, 3, h, w), dim=1),
           "edge": torch.randn(b, 1, h, w),
           "aux": {"semseg": [torch.randn(b, c, h // 2, w // 2)], "depth": [torch.rand(b, 1, h, w) + 1]}}
    batch = {"semseg": torch.randint(0, c, (b, h, w)), "depth": torch.rand(b, 1, h, w) + 1,
             "normals": torch.nn.functional.normalize(torch.randn(b, 3, h, w), dim=1),
             "edge": (torch.rand(b, 1, h, w) > 0.8).float(), "K": K}
    crit = losses.MultiTaskLoss(("semseg", "depth", "normals", "edge"), 0.1, 10.0)
    crit.eval()
    total, parts = crit(out, batch)
    seg = losses.semantic_loss(out["semseg"], batch["semseg"]) + 0.3 * losses.semantic_loss(
        out["aux"]["semseg"][0], batch["semseg"])
    assert parts["semseg"].item() == pytest.approx(seg.item(), rel=1e-6)
    dep = losses.silog_loss(out["depth"], batch["depth"], 0.1, 10) + 0.3 * losses.silog_loss(
        out["aux"]["depth"][0], batch["depth"], 0.1, 10)
    assert parts["depth"].item() == pytest.approx(dep.item(), rel=1e-6)
    nrm = (losses.cosine_normal_loss(out["normals"], batch["normals"])
           + 0.5 * losses.depth_normal_consistency(out["depth"], out["normals"], K, batch["depth"])
           + 0.5 * losses.depth_normal_consistency(out["depth"], out["normals"], K))
    assert parts["normals"].item() == pytest.approx(nrm.item(), rel=1e-6)
    edg = losses.balanced_edge_bce(out["edge"], batch["edge"]) + 0.2 * losses.edge_semantic_consistency(
        out["edge"], out["semseg"])
    assert parts["edge"].item() == pytest.approx(edg.item(), rel=1e-6)
    assert total.item() == pytest.approx(sum(p.item() for p in parts.values()), rel=1e-6)  # eval: plain sum
    crit.train()
    total_train, _ = crit(out, batch)  # log_vars = 0: 0.5 * regression + 1 * classification
    expected = 0.5 * (dep + nrm) + seg + edg
    assert total_train.item() == pytest.approx(expected.item(), rel=1e-6)
