"""The edge_weights switch of STMGT and STMamba: edge weights as a 1-dim GAT edge attribute."""

from __future__ import annotations

import pytest
import torch

from stmgt.config import model_config
from stmgt.models import DataInfo
from stmgt.models.stmamba import STMamba
from stmgt.models.stmgt import STMGT
from stmgt.testing import make_batch, ring_graph

N, T, H = 6, 5, 3


def _make(cls, edge_weights, **cfg):
    torch.manual_seed(0)
    name = "stmgt" if cls is STMGT else "stmamba"
    cfg = model_config(name, hidden=16, heads=2, blocks=2, mixtures=2, weather="none", edge_weights=bool(edge_weights),
                       **cfg)
    return cls(cfg, DataInfo(num_nodes=N, history=T, horizon=H))


@pytest.mark.parametrize("cls", [STMGT, STMamba])
def test_switch_on_reads_weights_off_ignores_them(cls):
    ei = ring_graph(N)
    w = torch.rand(ei.shape[1], generator=torch.Generator().manual_seed(1)) + 0.1
    b = make_batch(B=2, T=T, H=H, N=N)
    off = _make(cls, None).eval()  # model.edge_weights false (the default): off
    assert not off.edge_weights and not any("lin_edge" in n for n, _ in off.named_parameters())
    on = _make(cls, True).eval()
    assert sum("lin_edge" in n for n, _ in on.named_parameters()) == 2  # one per block
    with torch.no_grad():
        assert torch.equal(off(b, ei, w).mean, off(b, ei).mean)
        unit = on(b, ei).mean  # no weights in the data: unit weights
        torch.testing.assert_close(on(b, ei, torch.ones_like(w)).mean, unit)
        assert not torch.allclose(on(b, ei, w).mean, unit)
    on.train()
    d = on(b, ei, w)
    (-d.log_prob(b.y).mean()).backward()
    for n, p in on.named_parameters():
        if "lin_edge" in n:
            assert p.grad is not None and p.grad.abs().sum() > 0, n


def test_stmgt_checkpointed_blocks_pass_the_weights():
    ei = ring_graph(N)
    w = torch.rand(ei.shape[1]) + 0.1
    b = make_batch(B=3, T=T, H=H, N=N)
    plain = _make(STMGT, True, dropout=0.0, drop_edge=0.0).train()
    ck = _make(STMGT, True, dropout=0.0, drop_edge=0.0, checkpoint=True, checkpoint_chunk=2).train()
    torch.testing.assert_close(ck(b, ei, w).mean, plain(b, ei, w).mean, atol=1e-5, rtol=1e-5)


def test_stmamba_streaming_with_weights_equals_the_windowed_forward():
    ei = ring_graph(N)
    w = torch.rand(ei.shape[1]) + 0.1
    m = _make(STMamba, True).double().eval()
    b = make_batch(B=2, T=T, H=H, N=N)
    b.x, b.y = b.x.double(), b.y.double()
    with torch.no_grad():
        full = m(b, ei, w)
        torch.testing.assert_close(m.stream_forecast(b, ei, w).mean, full.mean, atol=1e-8, rtol=1e-8)
        assert not torch.allclose(m.stream_forecast(b, ei).mean, full.mean)


@pytest.mark.parametrize("cls", [STMGT, STMamba])
def test_switch_on_with_a_graph_without_edges(cls):
    m = _make(cls, True).eval()
    no_edges = torch.zeros(2, 0, dtype=torch.long)
    with torch.no_grad():
        a = m(make_batch(B=2, T=T, H=H, N=N), no_edges, torch.zeros(0)).mean
        b = m(make_batch(B=2, T=T, H=H, N=N), no_edges).mean
    assert torch.isfinite(a).all() and torch.equal(a, b)
