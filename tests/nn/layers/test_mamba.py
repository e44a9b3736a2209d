"""The Mamba layer: every scan agrees with the sequential reference, streaming equals forward.

Measured float32 error against the float64 reference (``test_chunked_float32_tolerance``: unit-scale
inputs, ``delta`` in [1e-4, 6], ``A`` in [-17, -0.05], T = 50), as max |error| / max |reference|
over the outputs, the final state and the gradients w.r.t. u, delta, A, B, C, D, h0: sequential
float32 2.2e-7; chunked 2.2e-7 (chunk 1), 4e-7 (4), 7e-7 (8), 2.4e-6 (16 and 32). The tests allow
2e-5. For the whole layer in float32 (unit-scale inputs, default init, outputs up to 0.35) the
error is 8e-8 absolute; the test allows 1e-5. In float64 all scans agree to about 1e-14; the tests
allow 1e-10.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F

from stmgt.errors import ConfigError
from stmgt.nn.layers import mamba as mamba_module
from stmgt.nn.layers.mamba import (
    SCAN_SEGMENT,
    Mamba,
    MambaState,
    auto_chunk,
    get_scan,
    selective_scan_auto,
    selective_scan_chunked,
    selective_scan_compiled,
    selective_scan_cuda,
    selective_scan_mambapy,
    selective_scan_sequential,
)

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


# chunk 1 is the recurrence with a hand-written backward (_SelectiveScanFn), in segments of SCAN_SEGMENT steps
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
    monkeypatch.setattr(mamba_module, "SCAN_SEGMENT", 2)  # T = 5: segments of 2, 2 and 1 steps
    args = scan_inputs(Bp=2, T=5, Di=2, N=3)
    u, delta, A, B, C, D, h0 = [t.requires_grad_(True) for t in args]
    torch.autograd.gradcheck(
        lambda *a: selective_scan_chunked(*a[:6], h0=a[6], return_state=True, chunk=1),
        (u, delta, A, B, C, D, h0))


@pytest.mark.parametrize("segment", [3, SCAN_SEGMENT])
def test_recurrence_gradient_through_final_state_only(monkeypatch, segment):
    # streaming training: the loss sees only h_T (y unused), and the gradient reaches h0
    monkeypatch.setattr(mamba_module, "SCAN_SEGMENT", segment)
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
    monkeypatch.setattr(mamba_module, "_COMPILED_OK", None)

    def broken():
        raise ConfigError("the compiled selective scan could not be built (no g++)")

    import stmgt.kernels

    monkeypatch.setattr(stmgt.kernels, "selective_scan_extension", broken)
    with pytest.warns(UserWarning, match="using the plain-PyTorch scan"):
        y, _ = run(selective_scan_auto, args)  # falls back to the chunked scan
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-10)
    assert mamba_module._COMPILED_OK is False
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


# ---------------------------------------------------------------------------------------- layer
def layer(scan="chunked", d_model=8, seed=0, **kw):
    torch.manual_seed(seed)
    m = Mamba(d_model, d_state=4, scan=scan, **kw).double().eval()
    with torch.no_grad():  # move dt away from its tiny initial range so the state matters
        m.dt_proj.bias.add_(2.0)
    return m


def test_layer_shapes_and_reference_initialisation():
    m = Mamba(40, d_state=16, d_conv=4, expand=2)
    assert m.dt_rank == math.ceil(40 / 16) == 3 and m.d_inner == 80
    assert m.in_proj.out_features == 160 and m.x_proj.out_features == 3 + 32
    torch.testing.assert_close(-torch.exp(m.A_log), -torch.arange(1.0, 17.0).expand(80, 16))
    torch.testing.assert_close(m.D.detach(), torch.ones(80))
    dt = F.softplus(m.dt_proj.bias.detach())  # inverse softplus init: dt in [dt_min, dt_max]
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 1e-1 * (1 + 1e-5)
    x = torch.randn(3, 5, 40)
    assert m(x).shape == (3, 5, 40)
    y, st = m(x, return_state=True)
    assert isinstance(st, MambaState) and st.conv.shape == (3, 80, 3) and st.ssm.shape == (3, 80, 16)


@pytest.mark.parametrize("scan", ["sequential", "mambapy", "compiled"])
def test_layer_scans_agree(scan):
    if scan == "compiled":
        _need_compiled_kernel()
    if scan == "mambapy":
        pytest.importorskip("mambapy", reason="mambapy is not installed (pip install mambapy)")
    x = torch.randn(3, 11, 8, dtype=F64)
    ref = layer("chunked", chunk=4)
    other = layer(scan)
    other.load_state_dict(ref.state_dict())
    torch.testing.assert_close(other(x), ref(x), rtol=0, atol=1e-10)


def test_layer_matches_mambapy_mambablock():
    """An independent implementation of the whole layer, with our weights."""
    mp = pytest.importorskip("mambapy.mamba", reason="mambapy is not installed (pip install mambapy)")
    ours = layer("chunked", d_model=16, chunk=3)
    cfg = mp.MambaConfig(d_model=16, n_layers=1, d_state=4, d_conv=4, expand_factor=2, pscan=False)
    theirs = mp.MambaBlock(cfg).double()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 10, 16, dtype=F64)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-10)


@pytest.mark.parametrize("d_conv", [1, 4])
def test_step_streaming_equals_forward(d_conv):
    m = layer(d_conv=d_conv, chunk=4)
    x = torch.randn(3, 9, 8, dtype=F64)
    y_full, st_full = m(x, return_state=True)
    st = m.init_state(3)
    assert st.conv.dtype == F64
    ys = []
    for t in range(x.shape[1]):
        y_t, st = m.step(x[:, t], st)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y_full, rtol=0, atol=1e-10)
    torch.testing.assert_close(st.conv, st_full.conv, rtol=0, atol=1e-12)
    torch.testing.assert_close(st.ssm, st_full.ssm, rtol=0, atol=1e-10)


@pytest.mark.parametrize("split", [1, 2, 5, 8])  # 1 and 2 are shorter than the conv history (3)
def test_forward_continues_from_returned_state(split):
    m = layer(chunk=3)
    x = torch.randn(2, 9, 8, dtype=F64)
    y_full, st_full = m(x, return_state=True)
    y1, st = m(x[:, :split], return_state=True)
    y2, st2 = m(x[:, split:], state=st, return_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y_full, rtol=0, atol=1e-10)
    torch.testing.assert_close(st2.ssm, st_full.ssm, rtol=0, atol=1e-10)
    # and a zero state is the same as no state
    torch.testing.assert_close(m(x, state=m.init_state(2)), y_full, rtol=0, atol=0)


def test_layer_is_causal():
    m = layer(chunk=4)
    x = torch.randn(2, 12, 8, dtype=F64)
    y = m(x)
    for t in (0, 5, 11):
        x2 = x.clone()
        x2[:, t] += torch.randn(2, 8, dtype=F64)
        y2 = m(x2)
        torch.testing.assert_close(y2[:, :t], y[:, :t], rtol=0, atol=0)
        assert (y2[:, t] - y[:, t]).abs().max() > 1e-6


def test_checkpointed_scan_same_gradients():
    x = torch.randn(2, 10, 8, dtype=F64)
    grads_ = []
    for ckpt in (False, True):
        m = layer(chunk=3, checkpoint=ckpt).train()
        m(x).pow(2).sum().backward()
        grads_.append({n: p.grad.clone() for n, p in m.named_parameters()})
    for n, g in grads_[0].items():
        torch.testing.assert_close(grads_[1][n], g, rtol=0, atol=1e-10)
    assert all(g.abs().sum() > 0 for g in grads_[0].values())


@pytest.mark.parametrize("chunk", [1, 16])
def test_layer_float32_tolerance(chunk):
    torch.manual_seed(3)
    m = Mamba(16, scan="chunked", chunk=chunk).eval()
    ref = Mamba(16, scan="sequential").double().eval()
    ref.load_state_dict(m.state_dict())
    x = torch.randn(4, 40, 16)
    err = (m(x).double() - ref(x.double())).abs().max().item()
    assert err < 1e-5
