"""The Mamba layer: its scans agree, streaming equals forward, it is causal.

For the whole layer in float32 (unit-scale inputs, default init, outputs up to 0.35) the error
against float64 is 8e-8 absolute; the test allows 1e-5. In float64 the scans agree to about
1e-14; the tests allow 1e-10. The scans themselves: ``test_selective_scan.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stmgt.nn.layers.mamba import Mamba, MambaState
from stmgt.nn.layers.selective_scan.compiled import compiled_scan_available

F64 = torch.float64


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
    if scan == "compiled" and not compiled_scan_available():
        pytest.skip("the compiled scan cannot be built here")
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
