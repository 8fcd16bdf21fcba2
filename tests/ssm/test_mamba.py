"""The Mamba block: mamba_ssm's parameter layout and init, and outputs/gradients equal to mambapy's block."""
import math

import pytest
import torch

from m2hmx.ssm import Mamba

# mamba_ssm.modules.mamba_simple.Mamba(d_model=256, d_state=32) (docs/design/network.md section 6).
MAMBA_SSM_256_32 = {
    "in_proj.weight": (1024, 256),
    "conv1d.weight": (512, 1, 4),
    "conv1d.bias": (512,),
    "x_proj.weight": (80, 512),
    "dt_proj.weight": (512, 16),
    "dt_proj.bias": (512,),
    "A_log": (512, 32),
    "D": (512,),
    "out_proj.weight": (256, 512),
}


def test_parameter_names_and_shapes_equal_mamba_ssm():
    block = Mamba(256, d_state=32)
    assert {k: tuple(v.shape) for k, v in block.state_dict().items()} == MAMBA_SSM_256_32
    assert sum(p.numel() for p in block.parameters()) == 462_336


def test_initialisation_follows_mamba_simple():
    torch.manual_seed(0)
    block = Mamba(64, d_state=16, dt_min=0.001, dt_max=0.1)
    assert block.dt_rank == 4
    assert torch.equal(block.A_log, torch.log(torch.arange(1.0, 17.0)).repeat(128, 1))
    assert torch.equal(block.D, torch.ones(128))
    dt = torch.nn.functional.softplus(block.dt_proj.bias)
    assert dt.min() >= 0.001 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    # log-uniform in [1e-3, 0.1]: the median of log10(dt) sits near -2.
    assert abs(torch.log10(dt).median().item() + 2.0) < 0.3
    bound = 4 ** -0.5
    assert block.dt_proj.weight.abs().max() <= bound and block.dt_proj.weight.abs().max() > 0.8 * bound
    constant = Mamba(64, dt_init="constant", dt_scale=2.0)
    assert torch.all(constant.dt_proj.weight == 2.0 * bound)
    with pytest.raises(ValueError, match="dt_init"):
        Mamba(64, dt_init="uniform")


def test_dt_init_floor_clamps_small_dt():
    block = Mamba(32, dt_min=1e-6, dt_max=2e-6, dt_init_floor=1e-4)
    assert torch.allclose(torch.nn.functional.softplus(block.dt_proj.bias), torch.full((64,), 1e-4), rtol=1e-4)


def _pair(d_model, d_state, seed):
    from mambapy.mamba import MambaBlock, MambaConfig
    torch.manual_seed(seed)
    ours = Mamba(d_model, d_state=d_state)
    with torch.no_grad():  # move the parameters off their structured init so every term matters
        for p in ours.parameters():
            p.add_(0.05 * torch.randn_like(p))
    theirs = MambaBlock(MambaConfig(d_model=d_model, n_layers=1, d_state=d_state, pscan=False))
    theirs.load_state_dict(ours.state_dict(), strict=True)
    ours_again = Mamba(d_model, d_state=d_state)
    ours_again.load_state_dict(theirs.state_dict(), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), ours_again.state_dict().values()))
    return ours, theirs


@pytest.mark.parametrize("length", [1, 37])
def test_outputs_and_gradients_equal_mambapy(length):
    pytest.importorskip("mambapy")
    ours, theirs = _pair(64, 16, seed=length)
    x = torch.randn(2, length, 64)
    y_ours, y_theirs = ours(x), theirs(x)
    assert y_ours.shape == (2, length, 64)
    assert (y_ours - y_theirs).abs().max() <= 1e-5 * y_theirs.abs().max()
    g = torch.randn_like(y_ours)
    y_ours.backward(g)
    y_theirs.backward(g)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        assert (p.grad - q.grad).norm() <= 1e-4 * q.grad.norm(), name


def test_eval_outputs_identical_under_inference_mode():
    torch.manual_seed(0)
    block = Mamba(32, d_state=8).eval()
    x = torch.randn(2, 50, 32)
    y = block(x)
    with torch.inference_mode():
        y_frozen = block(x)
    assert torch.equal(y.detach(), y_frozen)


def test_bf16_autocast_forward_is_finite_and_close():
    torch.manual_seed(0)
    block = Mamba(32, d_state=8)
    x = torch.randn(1, 64, 32)
    with torch.no_grad():
        y32 = block(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y16 = block(x)
    assert y16.dtype == torch.bfloat16
    assert (y16.float() - y32).norm() <= 0.05 * y32.norm()


def test_block_is_causal():
    torch.manual_seed(0)
    block = Mamba(16, d_state=4)
    x = torch.randn(1, 20, 16)
    x2 = x.clone()
    x2[:, 12:] += 1.0
    with torch.no_grad():
        assert torch.equal(block(x)[:, :12], block(x2)[:, :12])
        assert not torch.allclose(block(x)[:, 12:], block(x2)[:, 12:])


def test_dt_rank_auto_is_ceil_d_model_over_16():
    assert Mamba(100).dt_rank == math.ceil(100 / 16) == 7
    assert Mamba(100, dt_rank=3).x_proj.weight.shape == (3 + 32, 200)
