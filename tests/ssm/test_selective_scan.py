"""The CPU and parallel selective scans against the float64 sequential definition: values, gradients, modes,
dispatch."""
import importlib.util
from unittest import mock

import pytest
import torch

from m2hmx import ssm
from m2hmx.ssm import scan_backend, selective_scan, selective_scan_reference

OPTION_SETS = {
    "plain": {},
    "D_z": {"D": True, "z": True},
    "bias_softplus": {"delta_bias": True, "delta_softplus": True},
    "all": {"D": True, "z": True, "delta_bias": True, "delta_softplus": True},
}


def make_inputs(batch, chans, length, states, options, seed=0):
    """float64 leaf tensors in Mamba's ranges: delta > 0 after softplus, A < 0 with per-state spread."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)
    softplus = options.get("delta_softplus", False)
    inputs = {
        "u": randn(batch, chans, length),
        # Without softplus the scan takes delta as is: keep it positive and O(0.01..1) as Mamba's would be.
        "delta": randn(batch, chans, length) - 1.0 if softplus else torch.rand(batch, chans, length, generator=g,
                                                                                 dtype=torch.float64) + 0.01,
        "A": -torch.exp(randn(chans, states)),
        "B": randn(batch, states, length),
        "C": randn(batch, states, length),
        "D": randn(chans) if options.get("D") else None,
        "z": randn(batch, chans, length) if options.get("z") else None,
        "delta_bias": randn(chans) * 0.5 if options.get("delta_bias") else None,
    }
    for t in inputs.values():
        if t is not None:
            t.requires_grad_(True)
    return inputs, softplus


def call(fn, inputs, softplus, dtype=None):
    args = {k: (v if v is None or dtype is None else v.to(dtype)) for k, v in inputs.items()}
    return fn(args["u"], args["delta"], args["A"], args["B"], args["C"], args["D"], z=args["z"],
              delta_bias=args["delta_bias"], delta_softplus=softplus)


def rel_err(a, b):
    """||a - b|| / ||b||; 0 when both are exactly zero (e.g. dL/dA at length 1, where h_{-1} = 0)."""
    diff, ref = (a.double() - b.double()).norm().item(), b.double().norm().item()
    return 0.0 if diff == 0.0 else diff / ref


@pytest.mark.parametrize("length", [1, 7, 257, 1000])
@pytest.mark.parametrize("name", list(OPTION_SETS))
def test_forward_matches_float64_reference(length, name):
    inputs, softplus = make_inputs(2, 5, length, 16, OPTION_SETS[name])
    with torch.no_grad():
        expected = call(selective_scan_reference, inputs, softplus)
        got = call(selective_scan, inputs, softplus, dtype=torch.float32)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert rel_err(got, expected) < 1e-5


def test_reference_is_the_recurrence():
    """The float64 reference itself against the textbook recurrence written out with scalars."""
    inputs, _ = make_inputs(1, 2, 5, 3, {})
    u, delta, A, B, C = (inputs[k].detach() for k in "u delta A B C".split())
    y = selective_scan_reference(u, delta, A, B, C)
    for d in range(2):
        h = [0.0, 0.0, 0.0]
        for t in range(5):
            h = [torch.exp(delta[0, d, t] * A[d, n]).item() * h[n] + (delta[0, d, t] * B[0, n, t] * u[0, d, t]).item()
                 for n in range(3)]
            assert y[0, d, t].item() == pytest.approx(sum(h[n] * C[0, n, t].item() for n in range(3)), rel=1e-12)


@pytest.mark.parametrize("batch", [1, 3])  # one batch splits channels into groups whose partial sums are added
@pytest.mark.parametrize("length", [1, 7, 257])
@pytest.mark.parametrize("name", ["plain", "all"])
def test_gradients_match_float64_autograd(batch, length, name):
    inputs, softplus = make_inputs(batch, 6, length, 8, OPTION_SETS[name], seed=1)
    leaves = [v for v in inputs.values() if v is not None]
    grad_out = torch.randn(batch, 6, length, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    expected = torch.autograd.grad(call(selective_scan_reference, inputs, softplus), leaves, grad_out)
    got = torch.autograd.grad(call(selective_scan, inputs, softplus, dtype=torch.float32), leaves, grad_out.float())
    names = [k for k, v in inputs.items() if v is not None]
    for key, g, e in zip(names, got, expected):
        assert g.shape == e.shape, key
        assert rel_err(g, e) < 1e-4, key


def test_gradient_for_a_subset_of_inputs():
    inputs, softplus = make_inputs(2, 4, 33, 8, {})
    u = inputs["u"].float().detach().requires_grad_(True)
    rest = [inputs[k].float().detach() for k in "delta A B C".split()]
    selective_scan(u, *rest).sum().backward()
    u64 = inputs["u"].detach().requires_grad_(True)
    selective_scan_reference(u64, *[inputs[k].detach() for k in "delta A B C".split()]).sum().backward()
    assert rel_err(u.grad, u64.grad) < 1e-4


def test_inference_mode_gives_identical_values_and_no_graph():
    inputs, softplus = make_inputs(2, 4, 50, 8, OPTION_SETS["all"])
    with_grad = call(selective_scan, inputs, softplus, dtype=torch.float32)
    assert with_grad.requires_grad
    with torch.inference_mode():
        frozen = call(selective_scan, inputs, softplus, dtype=torch.float32)
    assert not frozen.requires_grad
    assert torch.equal(with_grad.detach(), frozen)


def test_non_contiguous_inputs():
    inputs, _ = make_inputs(2, 4, 20, 8, {})
    u, delta, A, B, C = (inputs[k].detach().float() for k in "u delta A B C".split())
    u_t = u.transpose(1, 2).contiguous().transpose(1, 2)  # same values, strided layout
    B_t = B.transpose(1, 2).contiguous().transpose(1, 2)
    assert not u_t.is_contiguous() and not B_t.is_contiguous()
    assert torch.equal(selective_scan(u_t, delta, A, B_t, C), selective_scan(u, delta, A, B, C))


def test_low_precision_inputs_are_scanned_in_fp32():
    inputs, softplus = make_inputs(1, 4, 40, 8, OPTION_SETS["all"])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = call(selective_scan, inputs, softplus, dtype=torch.bfloat16)
    with torch.no_grad():
        rounded = {k: None if v is None else v.to(torch.bfloat16).float() for k, v in inputs.items()}
        full = call(selective_scan, rounded, softplus)
    assert low.dtype == torch.bfloat16
    assert torch.equal(low, full.to(torch.bfloat16))


def test_large_decays_underflow_to_zero_contribution():
    """delta*A far below the float32 exp range (decay ~ 0): the state forgets, nothing overflows."""
    inputs, _ = make_inputs(1, 3, 30, 4, {})
    u, B, C = (inputs[k].detach() for k in "u B C".split())
    delta = torch.full((1, 3, 30), 50.0, dtype=torch.float64)
    A = torch.full((3, 4), -100.0, dtype=torch.float64)  # delta*A = -5000
    expected = selective_scan_reference(u, delta, A, B, C)
    got = selective_scan(u.float(), delta.float(), A.float(), B.float(), C.float())
    assert torch.isfinite(got).all()
    assert rel_err(got, expected) < 1e-5


def test_bad_shapes_raise_one_line_errors():
    u = torch.zeros(1, 4, 10)
    A = -torch.ones(4, 8)
    with pytest.raises(ValueError, match=r"B, C of shape \(1, 8, 10\)"):
        selective_scan(u, u, A, torch.zeros(1, 10, 8), torch.zeros(1, 10, 8))
    with pytest.raises(ValueError, match="A \\[D,N\\]"):
        selective_scan(u, u, -torch.ones(5, 8), torch.zeros(1, 8, 10), torch.zeros(1, 8, 10))


def test_cpu_tensors_use_the_compiled_scan_not_the_loop():
    inputs, _ = make_inputs(1, 4, 16, 8, {})
    args = [inputs[k].detach().float() for k in "u delta A B C".split()]
    assert scan_backend("cpu") == "cpu"
    with mock.patch.object(ssm, "selective_scan_reference", side_effect=AssertionError("loop used")):
        selective_scan(*args)


@pytest.mark.parametrize("length", [1, 2, 7, 257])
@pytest.mark.parametrize("name", ["plain", "all"])
def test_parallel_scan_matches_float64_reference_values_and_gradients(length, name):
    """The GPU fallback (log-depth prefix scan), run here on CPU tensors: same values and gradients."""
    inputs, softplus = make_inputs(2, 5, length, 8, OPTION_SETS[name], seed=3)
    leaves = [v for v in inputs.values() if v is not None]
    expected = call(selective_scan_reference, inputs, softplus)
    got = call(ssm.selective_scan_parallel, inputs, softplus, dtype=torch.float32)
    assert got.dtype == torch.float32 and rel_err(got, expected) < 1e-5
    grad_out = torch.randn(expected.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    want = torch.autograd.grad(expected, leaves, grad_out)
    have = torch.autograd.grad(got, leaves, grad_out.float(), materialize_grads=True)  # L=1: A unused
    for key, g, e in zip([k for k, v in inputs.items() if v is not None], have, want):
        assert rel_err(g, e) < 1e-4, key


def test_cuda_dispatch(monkeypatch):
    if importlib.util.find_spec("mamba_ssm") is None:
        assert scan_backend("cuda") == "torch"  # no mamba_ssm: the parallel PyTorch scan
    monkeypatch.setattr(ssm, "mamba_ssm_scan_fn", lambda: selective_scan_reference)
    assert scan_backend("cuda") == "mamba_ssm"
    assert scan_backend("cpu") == "cpu"
