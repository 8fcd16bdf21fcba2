"""Mamba (S6) block and its selective scan, with a fast CPU scan that trains.

Semantics follow state-spaces/mamba: ``mamba_ssm/modules/mamba_simple.py`` (``Mamba``: parameter names,
shapes, initialisation, and the conv1d + ``selective_scan_fn`` forward used when ``causal_conv1d`` is absent)
and ``mamba_ssm/ops/selective_scan_interface.py`` (``selective_scan_fn`` / ``selective_scan_ref``):

    delta = softplus(delta + delta_bias)                        (each step optional)
    h_t   = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t    h: [N] per (batch, channel), h_0 = 0
    y_t   = <h_t, C_t> + D * u_t,   out = y * silu(z)

``selective_scan`` runs mamba_ssm's CUDA kernel for CUDA tensors when ``mamba_ssm`` (optional ``gpu`` extra)
imports; on CPU it runs a numba-compiled recurrence with a hand-written reverse-time backward. The backward
recomputes the states (two [L, N] buffers per worker task) instead of saving them, so training memory is that of
the inputs. On a GPU without mamba_ssm it runs a log-depth parallel scan in plain PyTorch (autograd backward;
memory ~2 log2(L) state tensors of [B, D, N, L]). The scan always runs in fp32 (as mamba_ssm does) and returns
u's dtype.
"""
from __future__ import annotations

import functools
import math

import numba
import numpy as np
import torch
import torch.nn.functional as F
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic
from torch import nn

# ----------------------------------------------------------------------------------------------------------
# Reference


def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Sequential selective scan (the exact definition, any device); fp64 inputs are computed in fp64.

    u, delta [B,D,L]; A [D,N]; B, C [B,N,L]; D [D]; z [B,D,L]; delta_bias [D] -> y [B,D,L] in u's dtype.
    """
    dtype_in = u.dtype
    work = torch.float64 if u.dtype == torch.float64 else torch.float32
    u, delta, A, B, C = (t.to(work) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(work)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    # unbind once: indexing x[:, :, t] inside the loop gives a backward quadratic in L (docs/design/stack.md).
    for d_t, u_t, b_t, c_t in zip(delta.unbind(2), u.unbind(2), B.unbind(2), C.unbind(2)):
        h = torch.exp(d_t[:, :, None] * A) * h + (d_t * u_t)[:, :, None] * b_t[:, None, :]
        ys.append((h * c_t[:, None, :]).sum(-1))
    y = torch.stack(ys, dim=2) if ys else u.new_zeros(u.shape)
    if D is not None:
        y = y + u * D.to(work)[:, None]
    if z is not None:
        y = y * F.silu(z.to(work))
    return y.to(dtype_in)


# ----------------------------------------------------------------------------------------------------------
# CPU kernels: float32, C-contiguous. u, delta, y [Bt,D,L]; A [D,N]; Bl, Cl [Bt,L,N] (time-major for locality).
# Loops over the state index n are written so that LLVM vectorises them (fastmath stays off: sums over n run in
# a fixed order); that needs an exp that vectorises, since numba has no vector libm here (no SVML).


@intrinsic
def _int32_bits_as_float32(typingctx, bits):
    if bits != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@njit(inline="always", fastmath=False)
def _exp32(x):
    """float32 exp, max relative error 6e-8 on [-87, 88] (Cephes expf: Cody-Waite reduction by ln 2, degree-6
    polynomial, S. Moshier); inputs are clamped to [-87, 88], so exp(-1000) gives 1.6e-38 instead of 0."""
    x = min(max(x, np.float32(-87.0)), np.float32(88.0))
    k = math.floor(x * np.float32(1.4426950408889634) + np.float32(0.5))
    r = x - k * np.float32(0.693359375) - k * np.float32(-2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * (r * r) + r + np.float32(1.0)
    # 2**k from its IEEE-754 bits: biased exponent (k + 127) in bits 23..30.
    return p * _int32_bits_as_float32(np.int32((k + np.float32(127.0)) * np.float32(8388608.0)))


@njit(parallel=True, cache=True, fastmath=False, nogil=True)
def _scan_forward_kernel(u, delta, A, Bl, Cl, y):
    n_batch, n_chan, length = u.shape
    n_state = A.shape[1]
    for i in prange(n_batch * n_chan):
        b = i // n_chan
        d = i % n_chan
        A_d = A[d]
        h = np.zeros(n_state, np.float32)
        hc = np.empty(n_state, np.float32)
        for t in range(length):
            dt = delta[b, d, t]
            du = dt * u[b, d, t]
            B_t = Bl[b, t]
            C_t = Cl[b, t]
            for n in range(n_state):  # vectorised
                h[n] = _exp32(dt * A_d[n]) * h[n] + du * B_t[n]
                hc[n] = h[n] * C_t[n]
            acc = np.float32(0.0)
            for n in range(n_state):
                acc += hc[n]
            y[b, d, t] = acc


@njit(parallel=True, cache=True, fastmath=False, nogil=True)
def _scan_backward_kernel(u, delta, A, Bl, Cl, gy, gu, gdelta, gA_part, gB_part, gC_part):
    """Gradients of y = scan(u, delta, A, B, C). Channels are split into G = gB_part.shape[1] groups; each
    (batch, group) task owns its slice of the gB/gC partial sums ([Bt,G,L,N], summed over G by the caller)
    and of gA_part [Bt,D,N] (summed over batch by the caller), so tasks never write the same memory."""
    n_batch, n_chan, length = u.shape
    n_state = A.shape[1]
    n_groups = gB_part.shape[1]
    for task in prange(n_batch * n_groups):
        b = task // n_groups
        g = task % n_groups
        gB = gB_part[b, g]
        gC = gC_part[b, g]
        hs = np.zeros((length + 1, n_state), np.float32)  # hs[t + 1] = h_t (recomputed), hs[0] = h_{-1} = 0
        decay = np.empty((length, n_state), np.float32)  # exp(delta_t * A)
        gh = np.empty(n_state, np.float32)
        g_dt_n = np.empty(n_state, np.float32)
        g_u_n = np.empty(n_state, np.float32)
        gA_acc = np.empty(n_state, np.float64)
        for d in range(g, n_chan, n_groups):
            A_d = A[d]
            # Recompute the forward states with the forward kernel's arithmetic.
            for t in range(length):
                dt = delta[b, d, t]
                du = dt * u[b, d, t]
                B_t = Bl[b, t]
                for n in range(n_state):
                    e = _exp32(dt * A_d[n])
                    decay[t, n] = e
                    hs[t + 1, n] = e * hs[t, n] + du * B_t[n]
            # Reverse time; gh holds dLoss/dh_t, including the path through h_{t+1}.
            gh[:] = 0.0
            gA_acc[:] = 0.0
            for t in range(length - 1, -1, -1):
                g_out = gy[b, d, t]
                dt = delta[b, d, t]
                ut = u[b, d, t]
                B_t = Bl[b, t]
                C_t = Cl[b, t]
                for n in range(n_state):  # vectorised
                    ghn = gh[n] + g_out * C_t[n]
                    gC[t, n] += g_out * hs[t + 1, n]
                    g_exponent = ghn * hs[t, n] * decay[t, n]  # dLoss/d(delta_t * A[d, n])
                    gA_acc[n] += g_exponent * dt
                    g_dt_n[n] = g_exponent * A_d[n] + ghn * ut * B_t[n]
                    g_u_n[n] = ghn * B_t[n]
                    gB[t, n] += ghn * dt * ut
                    gh[n] = ghn * decay[t, n]
                g_dt = np.float32(0.0)
                g_u = np.float32(0.0)
                for n in range(n_state):
                    g_dt += g_dt_n[n]
                    g_u += g_u_n[n]
                gdelta[b, d, t] = g_dt
                gu[b, d, t] = g_u * dt
            for n in range(n_state):
                gA_part[b, d, n] = gA_acc[n]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


# Tasks per thread: prange hands out chunks dynamically, so a thread slowed by other processes on the machine
# does not hold up the whole scan (a static split into one chunk per thread would).
_TASKS_PER_THREAD = 4


def _use_torch_thread_count() -> int:
    """Run the kernels on torch.get_num_threads() threads, so one setting governs the whole model."""
    n_threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n_threads)
    return n_threads


def scan_core_forward(u, delta, A, Bl, Cl):
    y = torch.empty_like(u)
    n_tasks = u.shape[0] * u.shape[1]
    with numba.parallel_chunksize(max(1, n_tasks // (_TASKS_PER_THREAD * _use_torch_thread_count()))):
        _scan_forward_kernel(_np(u), _np(delta), _np(A), _np(Bl), _np(Cl), y.numpy())
    return y


@torch.library.custom_op("m2hmx::cpu_scan_forward", mutates_args=())
def cpu_scan_forward_op(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, Bl: torch.Tensor,
                         Cl: torch.Tensor) -> torch.Tensor:
    """The inference scan (no states kept) as one opaque torch op, so ``torch.compile`` traces the model
    around it instead of breaking its graph at the numba call."""
    return scan_core_forward(u.contiguous(), delta.contiguous(), A.contiguous(), Bl.contiguous(), Cl.contiguous())


@cpu_scan_forward_op.register_fake
def _(u, delta, A, Bl, Cl):
    return torch.empty_like(u, memory_format=torch.contiguous_format)


class _ScanCore(torch.autograd.Function):
    """y_t = <h_t, C_t>, h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t on CPU fp32 (B, C time-major)."""

    @staticmethod
    def forward(ctx, u, delta, A, Bl, Cl):
        ctx.save_for_backward(u, delta, A, Bl, Cl)
        return scan_core_forward(u, delta, A, Bl, Cl)

    @staticmethod
    def backward(ctx, gy):
        u, delta, A, Bl, Cl = ctx.saved_tensors
        n_batch, n_chan, length = u.shape
        n_state = A.shape[1]
        # Enough (batch, channel-group) tasks to balance the threads; each group adds a [L,N] partial sum.
        groups = max(1, min(n_chan, -(-_TASKS_PER_THREAD * _use_torch_thread_count() // max(n_batch, 1))))
        gu, gdelta = torch.empty_like(u), torch.empty_like(delta)
        gA_part = u.new_empty(n_batch, n_chan, n_state)
        gB_part = u.new_zeros(n_batch, groups, length, n_state)
        gC_part = u.new_zeros(n_batch, groups, length, n_state)
        with numba.parallel_chunksize(1):
            _scan_backward_kernel(_np(u), _np(delta), _np(A), _np(Bl), _np(Cl), _np(gy), gu.numpy(),
                                  gdelta.numpy(), gA_part.numpy(), gB_part.numpy(), gC_part.numpy())
        return gu, gdelta, gA_part.sum(0), gB_part.sum(1), gC_part.sum(1)


def _selective_scan_cpu(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    dtype_in = u.dtype
    with torch.autocast(device_type=u.device.type, enabled=False):
        u, delta, A = u.float(), delta.float(), A.float()
        if delta_bias is not None:
            delta = delta + delta_bias.float()[:, None]
        if delta_softplus:
            delta = F.softplus(delta)
        Bl, Cl = B.float().transpose(1, 2).contiguous(), C.float().transpose(1, 2).contiguous()
        u, delta = u.contiguous(), delta.contiguous()
        inputs = (u, delta, A, Bl, Cl)
        if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
            y = _ScanCore.apply(u, delta, A.contiguous(), Bl, Cl)
        else:
            y = cpu_scan_forward_op(u, delta, A, Bl, Cl)
        if D is not None:
            y = y + u * D.float()[:, None]
        if z is not None:
            y = y * F.silu(z.float())
    return y.to(dtype_in)


def selective_scan_parallel(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """The scan as a Hillis-Steele prefix scan over time of the affine maps h -> a_t h + b_t, composed as
    (a1, b1) then (a2, b2) = (a1 a2, a2 b1 + b2): ceil(log2 L) rounds of elementwise work on [B,D,N,L]
    tensors instead of L sequential steps (a GPU runs the L-step loop launch-bound)."""
    dtype_in = u.dtype
    work = torch.float64 if u.dtype == torch.float64 else torch.float32
    u, delta, A, B, C = (t.to(work) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(work)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    a = torch.exp(delta[:, :, None, :] * A[None, :, :, None])  # [B,D,N,L]
    b = (delta * u)[:, :, None, :] * B[:, None, :, :]  # [B,D,N,L]; after the rounds, b_t = h_t
    step = 1
    while step < u.shape[2]:
        b = torch.cat([b[..., :step], a[..., step:] * b[..., :-step] + b[..., step:]], dim=-1)
        a = torch.cat([a[..., :step], a[..., step:] * a[..., :-step]], dim=-1)
        step *= 2
    y = (b * C[:, None, :, :]).sum(2)
    if D is not None:
        y = y + u * D.to(work)[:, None]
    if z is not None:
        y = y * F.silu(z.to(work))
    return y.to(dtype_in)


# ----------------------------------------------------------------------------------------------------------
# Dispatch


@functools.cache
def mamba_ssm_scan_fn():
    """mamba_ssm's ``selective_scan_fn`` when it imports with its CUDA extension built, else None."""
    try:
        from mamba_ssm.ops import selective_scan_interface as ssi
    except Exception:  # absent, or present without triton/CUDA extension: both mean "not available"
        return None
    # Since mamba_ssm #977 the module imports without the extension and the call raises instead.
    if getattr(ssi, "selective_scan_cuda", None) is None:
        return None
    return ssi.selective_scan_fn


def scan_backend(device: torch.device | str) -> str:
    """Which implementation ``selective_scan`` uses for tensors on ``device``: "mamba_ssm", "cpu" (numba),
    "torch" (the parallel scan) or, on the meta device, "shape" (an output of the right shape and no values:
    meta tensors carry no data, and the FLOP count of ``m2hmx.profiling`` does not count the scan)."""
    device = torch.device(device)
    if device.type == "meta":
        return "shape"
    if device.type == "cpu":
        return "cpu"
    if device.type == "cuda" and mamba_ssm_scan_fn() is not None:
        return "mamba_ssm"
    return "torch"


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """``mamba_ssm`` ``selective_scan_fn`` semantics (real A; input-dependent B, C of shape [B,N,L]).

    u, delta [B,D,L]; A [D,N]; B, C [B,N,L]; D [D]; z [B,D,L]; delta_bias [D] -> y [B,D,L] in u's dtype.
    Backends (see ``scan_backend``): mamba_ssm's CUDA kernel, the numba CPU scan, shape only on the meta
    device, or elsewhere the log-depth parallel scan in PyTorch.
    """
    if u.dim() != 3 or delta.shape != u.shape or A.dim() != 2 or A.shape[0] != u.shape[1]:
        raise ValueError(f"selective_scan: expected u, delta [B,D,L] and A [D,N]; got u {tuple(u.shape)}, "
                         f"delta {tuple(delta.shape)}, A {tuple(A.shape)}")
    expected_bc = (u.shape[0], A.shape[1], u.shape[2])
    if tuple(B.shape) != expected_bc or tuple(C.shape) != expected_bc:
        raise ValueError(f"selective_scan: expected B, C of shape {expected_bc} [B,N,L]; "
                         f"got {tuple(B.shape)} and {tuple(C.shape)}")
    if A.is_complex():
        raise ValueError("selective_scan: complex A is not supported (Mamba uses a real A)")
    backend = scan_backend(u.device)
    if backend == "shape":
        return torch.empty_like(u)
    if backend == "cpu":
        return _selective_scan_cpu(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    if backend == "mamba_ssm":
        return mamba_ssm_scan_fn()(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return selective_scan_parallel(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


# ----------------------------------------------------------------------------------------------------------
# Block


class Mamba(nn.Module):
    """Mamba-1 block with ``mamba_ssm.modules.mamba_simple.Mamba``'s parameter names, shapes and init, so
    state dicts load both ways with strict=True. forward(u [B,L,d_model]) -> [B,L,d_model]."""

    def __init__(self, d_model, d_state=16, d_conv=4, expand=2, dt_rank="auto", dt_min=0.001, dt_max=0.1,
                 dt_init="random", dt_scale=1.0, dt_init_floor=1e-4, conv_bias=True, bias=False):
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.in_proj = nn.Linear(d_model, self.d_inner * 2, bias=bias)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner,
                                padding=d_conv - 1, bias=conv_bias)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        dt_init_std = self.dt_rank ** -0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, dt_init_std)
        elif dt_init == "random":
            nn.init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
        else:
            raise ValueError(f"Mamba: dt_init must be 'random' or 'constant', got {dt_init!r}")
        # dt bias: inverse softplus of dt ~ exp(U[log dt_min, log dt_max]), floored (mamba_simple.py).
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)  # S4D-real init
        # A_log and D take no weight decay: m2hmx.train.param_groups excludes them by name
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def forward(self, u):
        L = u.shape[1]
        x, z = self.in_proj(u).transpose(1, 2).chunk(2, dim=1)  # [B,d_inner,L] each
        x = F.silu(self.conv1d(x)[..., :L])  # causal depthwise conv: padding d_conv-1, keep the first L
        dt, Bm, Cm = self.x_proj(x.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = (dt @ self.dt_proj.weight.t()).transpose(1, 2)  # dt_proj's bias is added inside the scan
        A = -torch.exp(self.A_log.float())
        y = selective_scan(x, delta, A, Bm.transpose(1, 2), Cm.transpose(1, 2), self.D.float(), z=z,
                           delta_bias=self.dt_proj.bias.float(), delta_softplus=True)
        return self.out_proj(y.transpose(1, 2))
