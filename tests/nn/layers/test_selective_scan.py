"""The selective scans: every implementation agrees with the sequential reference.

Measured float32 error against the float64 reference (``test_chunked_float32_tolerance``: unit-scale
inputs, ``delta`` in [1e-4, 6], ``A`` in [-17, -0.05], T = 50), as max |error| / max |reference|
over the outputs, the final state and the gradients w.r.t. u, delta, A, B, C, D, h0: sequential
float32 2.2e-7; chunked 2.2e-7 (chunk 1), 4e-7 (4), 7e-7 (8), 2.4e-6 (16 and 32). The tests allow
2e-5. In float64 all scans agree to about 1e-14; the tests allow 1e-10.
"""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

from stmgt.errors import ConfigError
from stmgt.nn.layers.mamba import Mamba
from stmgt.nn.layers.selective_scan import compiled, recurrence
from stmgt.nn.layers.selective_scan.chunked import auto_chunk, selective_scan_chunked
from stmgt.nn.layers.selective_scan.compiled import selective_scan_compiled
from stmgt.nn.layers.selective_scan.dispatch import get_scan, selective_scan_auto
from stmgt.nn.layers.selective_scan.external import selective_scan_cuda, selective_scan_mambapy
from stmgt.nn.layers.selective_scan.recurrence import SCAN_SEGMENT
from stmgt.nn.layers.selective_scan.reference import selective_scan_sequential

F64 = torch.float64


def scan_inputs(Bp=2, T=13, Di=6, N=4, dtype=F64, seed=0, delta_scale=1.0, h0=True):
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=F64)

    u, B, C, D = r(Bp, T, Di), r(Bp, T, N), r(Bp, T, N), r(Di)
    delta = F.softplus(2 * r(Bp, T, Di) - 2) * delta_scale
    A = -torch.exp(r(Di, N))  # negative, spread over ~[-20, -0.05]
    hh = r(Bp, Di, N) if h0 else None
    out = [u, delta, A, B, C, D, hh]
    return [None if t is None else t.to(dtype) for t in out]


def run(scan, args, **kw):
    u, delta, A, B, C, D, h0 = args
    return scan(u, delta, A, B, C, D, h0=h0, return_state=True, **kw)


def grads(scan, args, w_y, w_h, **kw):
    leaves = [None if t is None else t.detach().clone().requires_grad_(True) for t in args]
    y, h = run(scan, leaves, **kw)
    loss = (y * w_y).sum() + (h * w_h).sum()
    return torch.autograd.grad(loss, [t for t in leaves if t is not None])


# ---------------------------------------------------------------------------------------- scans
@pytest.mark.parametrize("chunk", [1, 2, 4, 5, 13, 32])
def test_chunked_equals_sequential_forward_and_gradients_float64(chunk):
    # T = 13 is divided by none of 2, 4, 5; 32 > T is one short chunk
    args = scan_inputs()
    y0, h0 = run(selective_scan_sequential, args)
    y1, h1 = run(selective_scan_chunked, args, chunk=chunk)
    torch.testing.assert_close(y1, y0, rtol=0, atol=1e-10)
    torch.testing.assert_close(h1, h0, rtol=0, atol=1e-10)
    w_y, w_h = torch.randn_like(y0), torch.randn_like(h0)
    # gradients w.r.t. u, delta, A, B, C, D and the initial state
    for g1, g0 in zip(grads(selective_scan_chunked, args, w_y, w_h, chunk=chunk),
                      grads(selective_scan_sequential, args, w_y, w_h)):
        torch.testing.assert_close(g1, g0, rtol=0, atol=1e-10 * max(1.0, g0.abs().max().item()))


def test_chunked_gradcheck():
    args = scan_inputs(Bp=1, T=5, Di=2, N=3)
    u, delta, A, B, C, D, h0 = [t.requires_grad_(True) for t in args]
    torch.autograd.gradcheck(
        lambda *a: selective_scan_chunked(*a[:6], h0=a[6], return_state=True, chunk=3),
        (u, delta, A, B, C, D, h0))


@pytest.mark.parametrize("chunk", [1, 4, 16, 32])
def test_chunked_float32_tolerance(chunk):
    args64 = scan_inputs(Bp=4, T=50, Di=32, N=16, seed=1)
    args32 = [t.float() for t in args64]
    y_ref, h_ref = run(selective_scan_sequential, args64)
    y, h = run(selective_scan_chunked, args32, chunk=chunk)
    assert (y.double() - y_ref).abs().max() <= 2e-5 * y_ref.abs().max()
    assert (h.double() - h_ref).abs().max() <= 2e-5 * h_ref.abs().max()
    w_y, w_h = torch.randn_like(y_ref), torch.randn_like(h_ref)
    for g, g_ref in zip(grads(selective_scan_chunked, args32, w_y.float(), w_h.float(), chunk=chunk),
                        grads(selective_scan_sequential, args64, w_y, w_h)):
        assert (g.double() - g_ref).abs().max() <= 2e-5 * g_ref.abs().max()


def test_chunked_is_stable_for_huge_decays():
    # delta * A down to about -1e4 per step: exp(S_t) of a cumulative sum alone would underflow to 0
    # and exp(-S_s) overflow; only differences S_t - S_s <= 0 are exponentiated
    args = scan_inputs(Bp=2, T=40, Di=4, N=4, delta_scale=500.0)
    y0, h0 = run(selective_scan_sequential, args)
    y1, h1 = run(selective_scan_chunked, args, chunk=32)
    torch.testing.assert_close(y1, y0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(h1, h0, rtol=1e-9, atol=1e-9)
    y32 = selective_scan_chunked(*[t.float() for t in args[:6]], chunk=32)
    assert torch.isfinite(y32).all()
    g = grads(selective_scan_chunked, [t.float() for t in args], torch.ones_like(y32), torch.ones(2, 4, 4),
              chunk=32)
    assert all(torch.isfinite(x).all() for x in g)


# chunk 1 is the recurrence with a hand-written backward (SelectiveScanFn), in segments of SCAN_SEGMENT steps
@pytest.mark.parametrize("T", [1, SCAN_SEGMENT // 2 + 1, SCAN_SEGMENT, 2 * SCAN_SEGMENT + 5])
@pytest.mark.parametrize("with_h0", [True, False])
def test_recurrence_equals_sequential_forward_and_gradients(T, with_h0):
    args = scan_inputs(T=T, h0=with_h0, seed=T)
    y_ref, h_ref = run(selective_scan_sequential, args)
    w_y, w_h = torch.randn_like(y_ref), torch.randn_like(h_ref)
    g_ref = grads(selective_scan_sequential, args, w_y, w_h)
    # float64: the same arithmetic as the reference, to rounding
    y, h = run(selective_scan_chunked, args, chunk=1)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-10)
    g = grads(selective_scan_chunked, args, w_y, w_h, chunk=1)
    assert len(g) == len(g_ref) == (7 if with_h0 else 6)  # u, delta, A, B, C, D (, h0)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10 * max(1.0, b.abs().max().item()))
    # float32 against the float64 reference
    args32 = [None if t is None else t.float() for t in args]
    y, h = run(selective_scan_chunked, args32, chunk=1)
    assert y.dtype == h.dtype == torch.float32
    assert (y.double() - y_ref).abs().max() <= 2e-5 * y_ref.abs().max()
    assert (h.double() - h_ref).abs().max() <= 2e-5 * h_ref.abs().max()
    for a, b in zip(grads(selective_scan_chunked, args32, w_y.float(), w_h.float(), chunk=1), g_ref):
        assert a.dtype == torch.float32
        assert (a.double() - b).abs().max() <= 2e-5 * b.abs().max()


def test_recurrence_gradcheck(monkeypatch):
    monkeypatch.setattr(recurrence, "SCAN_SEGMENT", 2)  # T = 5: segments of 2, 2 and 1 steps
    args = scan_inputs(Bp=2, T=5, Di=2, N=3)
    u, delta, A, B, C, D, h0 = [t.requires_grad_(True) for t in args]
    torch.autograd.gradcheck(
        lambda *a: selective_scan_chunked(*a[:6], h0=a[6], return_state=True, chunk=1),
        (u, delta, A, B, C, D, h0))


@pytest.mark.parametrize("segment", [3, SCAN_SEGMENT])
def test_recurrence_gradient_through_final_state_only(monkeypatch, segment):
    # streaming training: the loss sees only h_T (y unused), and the gradient reaches h0
    monkeypatch.setattr(recurrence, "SCAN_SEGMENT", segment)
    args = scan_inputs(T=11)
    w_h = torch.randn(2, 6, 4, dtype=F64)
    ref, new = ([t.detach().clone().requires_grad_(True) for t in args] for _ in range(2))
    _, h_ref = run(selective_scan_sequential, ref)
    _, h = run(selective_scan_chunked, new, chunk=1)
    (h_ref * w_h).sum().backward()
    (h * w_h).sum().backward()
    for a, b in zip(new, ref):
        if b.grad is None:  # C and D enter y only
            assert a.grad is None or a.grad.abs().max() == 0
        else:
            torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-10 * max(1.0, b.grad.abs().max().item()))
    assert ref[6].grad.abs().max() > 0
    # and only some inputs requiring gradients
    u, delta, A, B, C, D, h0 = args
    h0 = h0.clone().requires_grad_(True)
    _, h = selective_scan_chunked(u, delta, A, B, C, D, h0=h0, return_state=True, chunk=1)
    (g,) = torch.autograd.grad((h * w_h).sum(), [h0])
    torch.testing.assert_close(g, ref[6].grad, rtol=0, atol=1e-10 * max(1.0, g.abs().max().item()))


@pytest.mark.parametrize("scan", [selective_scan_sequential, selective_scan_chunked])
def test_single_step_and_zero_initial_state(scan):
    args = scan_inputs(T=1)
    u, delta, A, B, C, D, h0 = args
    y, h = run(scan, args)
    h_expected = torch.exp(delta[:, 0, :, None] * A) * h0 + (delta * u)[:, 0, :, None] * B[:, 0, None, :]
    torch.testing.assert_close(h, h_expected)
    torch.testing.assert_close(y[:, 0], torch.einsum("bdn,bn->bd", h_expected, C[:, 0]) + D * u[:, 0])
    # no h0 is a zero state
    zero = scan(u, delta, A, B, C, D, h0=torch.zeros_like(h0))
    torch.testing.assert_close(scan(u, delta, A, B, C, D), zero)


def test_auto_chunk():
    assert auto_chunk(496, 192, 16, 96, "cpu") == 1
    L = auto_chunk(496, 192, 16, 96, "cuda")
    assert 1 <= L <= 16 and 496 * L * (L - 1) / 2 * 192 * 16 <= 2**23
    assert auto_chunk(1, 8, 4, 5, "cuda") == 5  # never longer than the sequence
    assert auto_chunk(10**6, 512, 64, 96, "cuda") == 1


def test_mambapy_backend_equals_reference():
    pytest.importorskip("mambapy", reason="mambapy is not installed (pip install mambapy)")
    args = scan_inputs(T=13)  # not a power of two: mambapy pads
    y0, h0 = run(selective_scan_sequential, args)
    y1, h1 = run(selective_scan_mambapy, args)
    torch.testing.assert_close(y1, y0, rtol=0, atol=1e-10)
    torch.testing.assert_close(h1, h0, rtol=0, atol=1e-10)
    w_y, w_h = torch.randn_like(y0), torch.randn_like(h0)
    for g1, g0 in zip(grads(selective_scan_mambapy, args, w_y, w_h),
                      grads(selective_scan_sequential, args, w_y, w_h)):
        torch.testing.assert_close(g1, g0, rtol=0, atol=1e-9 * max(1.0, g0.abs().max().item()))


def _need_compiled_kernel():
    from stmgt.kernels import selective_scan_extension

    try:
        selective_scan_extension()
    except ConfigError as e:  # no compiler here: the kernel is optional
        pytest.skip(f"the compiled scan cannot be built here: {e}")


@pytest.mark.parametrize("T", [1, 2, 13, 70])
@pytest.mark.parametrize("with_h0", [True, False])
def test_compiled_kernel_equals_sequential_forward_and_gradients(T, with_h0):
    _need_compiled_kernel()
    args = scan_inputs(T=T, h0=with_h0, seed=100 + T, Bp=3, Di=5, N=16)
    y_ref, h_ref = run(selective_scan_sequential, args)
    w_y, w_h = torch.randn_like(y_ref), torch.randn_like(h_ref)
    g_ref = grads(selective_scan_sequential, args, w_y, w_h)
    y, h = run(selective_scan_compiled, args)  # float64: rounding only (fast-math reorders sums)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-10 * max(1.0, y_ref.abs().max().item()))
    torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-10 * max(1.0, h_ref.abs().max().item()))
    g = grads(selective_scan_compiled, args, w_y, w_h)
    assert len(g) == len(g_ref) == (7 if with_h0 else 6)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10 * max(1.0, b.abs().max().item()))
    args32 = [None if t is None else t.float() for t in args]  # float32 against the float64 reference
    y, h = run(selective_scan_compiled, args32)
    assert y.dtype == h.dtype == torch.float32
    assert (y.double() - y_ref).abs().max() <= 2e-5 * y_ref.abs().max()
    assert (h.double() - h_ref).abs().max() <= 2e-5 * h_ref.abs().max()
    for a, b in zip(grads(selective_scan_compiled, args32, w_y.float(), w_h.float()), g_ref):
        assert a.dtype == torch.float32 and (a.double() - b).abs().max() <= 2e-5 * b.abs().max()


def test_compiled_kernel_gradcheck_and_threads():
    _need_compiled_kernel()
    args = scan_inputs(Bp=2, T=4, Di=2, N=3)
    leaves = [t.requires_grad_(True) for t in args]
    torch.autograd.gradcheck(lambda *a: selective_scan_compiled(*a[:6], h0=a[6], return_state=True), leaves)
    # the gradient of A is summed over sequences split between threads: same result with 1 and 2
    big = scan_inputs(Bp=9, T=7, Di=4, N=16, seed=5)
    w_y, w_h = torch.randn(9, 7, 4, dtype=F64), torch.randn(9, 4, 16, dtype=F64)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        g1 = grads(selective_scan_compiled, big, w_y, w_h)
        torch.set_num_threads(2)
        g2 = grads(selective_scan_compiled, big, w_y, w_h)
    finally:
        torch.set_num_threads(n)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_loading_the_kernel_keeps_subnormal_numbers():
    # built with -ffast-math: the flag must not reach the link step, where it would switch the whole
    # process to flush-to-zero
    _need_compiled_kernel()
    tiny = torch.tensor([1e-40], dtype=torch.float32)  # subnormal in float32
    assert (tiny * 1.0).item() > 0 and (torch.tensor([1e-310], dtype=F64) / 2).item() > 0


def test_auto_scan_uses_the_kernel_or_falls_back_with_a_warning(monkeypatch):
    args = scan_inputs(T=9)
    y_ref, _ = run(selective_scan_sequential, args)
    monkeypatch.setattr(compiled, "_COMPILED_OK", None)

    def broken():
        raise ConfigError("the compiled selective scan could not be built (no g++)")

    import stmgt.kernels

    monkeypatch.setattr(stmgt.kernels, "selective_scan_extension", broken)
    with pytest.warns(UserWarning, match="using the plain-PyTorch scan"):
        y, _ = run(selective_scan_auto, args)  # falls back to the chunked scan
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-10)
    assert compiled._COMPILED_OK is False
    with pytest.raises(ConfigError, match="no g\\+\\+"):
        get_scan("compiled")  # asked for by name: an error, not a fallback


def test_cuda_backend_equals_reference():
    if not torch.cuda.is_available():
        pytest.skip("the mamba-ssm backend needs a CUDA device")
    pytest.importorskip("mamba_ssm", reason="mamba-ssm is not installed (pip install mamba-ssm)")
    args = [t.float().cuda() for t in scan_inputs(T=37, h0=False)[:6]] + [None]
    y0, h0 = run(selective_scan_sequential, args)
    y1, h1 = run(selective_scan_cuda, args)
    torch.testing.assert_close(y1, y0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(h1, h0, rtol=1e-4, atol=1e-4)


def test_unavailable_backends_raise_one_line_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mambapy", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "mambapy.pscan", None)
    with pytest.raises(ConfigError, match="pip install mambapy") as e:
        Mamba(8, scan="mambapy")
    assert "\n" not in str(e.value)
    monkeypatch.setitem(sys.modules, "mamba_ssm", None)
    monkeypatch.setitem(sys.modules, "mamba_ssm.ops.selective_scan_interface", None)
    with pytest.raises(ConfigError, match="pip install mamba-ssm"):
        get_scan("cuda")
    with pytest.raises(ConfigError, match="unknown Mamba scan"):
        Mamba(8, scan="fast")
