"""Graph WaveNet's weighted supports: the reference's ``doubletransition`` of a weighted adjacency."""

import numpy as np
import pytest
import torch

from stmgt.config import model_config
from stmgt.data.windows import Batch
from stmgt.models import DataInfo
from stmgt.models.gwnet import GraphWaveNet, SparseTransition


def asym_adj(adj: np.ndarray) -> np.ndarray:
    """The reference's ``util.asym_adj`` (nnzhan/Graph-WaveNet): ``D^-1 A`` with ``D`` the row sums."""
    rowsum = adj.sum(1)
    d_inv = np.power(rowsum, -1.0)
    d_inv[np.isinf(d_inv)] = 0.0
    return np.diag(d_inv) @ adj


def weighted_graph(N=9, E=30, seed=0):
    """Distinct random edges (one self-loop among them, to be replaced) with weights in [0.1, 2)."""
    rng = np.random.default_rng(seed)
    pairs = [(i, j) for i in range(N) for j in range(N) if i != j]
    pick = rng.choice(len(pairs), E, replace=False)
    ei = np.array([pairs[k] for k in pick]).T
    ei = np.concatenate([ei, [[3], [3]]], 1)  # a self-loop with weight 5: replaced by the unit one
    w = np.concatenate([rng.uniform(0.1, 2.0, E), [5.0]])
    adj = np.zeros((N, N))
    adj[ei[0, :E], ei[1, :E]] = w[:E]
    np.fill_diagonal(adj, 1.0)  # the reference's adj_mx has a unit diagonal
    return torch.from_numpy(ei), torch.from_numpy(w).float(), adj


@pytest.mark.parametrize("forward", [True, False])
def test_weighted_sparse_transition_equals_the_references_dense_supports(forward):
    N = 9
    ei, w, adj = weighted_graph(N)
    P = asym_adj(adj if forward else adj.T)  # doubletransition: [asym_adj(A), asym_adj(A^T)]
    x = torch.randn(N, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    op = SparseTransition(ei, N, forward, weight=w)
    out = op(x)
    # the reference's nconv: out[w] = sum_v P[v, w] x[v]
    ref = torch.einsum("vw,vblc->wblc", torch.from_numpy(P), x)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-7)  # weights are float32
    g = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(ref, x, g)[0],
                               rtol=1e-6, atol=1e-7)


def test_unit_weights_give_the_unweighted_transition_exactly():
    N = 9
    ei, _, _ = weighted_graph(N)
    x = torch.randn(N, 2, 3, 4)
    for forward in (True, False):
        plain = SparseTransition(ei, N, forward)
        unit = SparseTransition(ei, N, forward, weight=torch.ones(ei.shape[1]))
        assert torch.equal(plain.weight, unit.weight) and torch.equal(plain(x), unit(x))


def _batch(B, T, H, N):
    g = torch.Generator().manual_seed(3)
    return Batch(x=torch.randn(B, T, N, 1, generator=g), x_mask=torch.rand(B, T, N, generator=g) > 0.2,
                 y=torch.zeros(B, H, N), y_mask=torch.ones(B, H, N, dtype=torch.bool),
                 tod=torch.rand(B, T + H, generator=g), dow=torch.zeros(B, T + H, dtype=torch.long),
                 weather=None, start=torch.zeros(B, dtype=torch.long))


def test_gwnet_switch_unit_weights_reproduce_todays_numbers_and_weights_change_them():
    N, T, H = 9, 12, 3
    ei, w, _ = weighted_graph(N)
    cfg = model_config("gwnet", hidden=8, mixtures=2, dropout=0.0)
    info = DataInfo(num_nodes=N, history=T, horizon=H, steps_per_day=24)
    torch.manual_seed(0)
    off = GraphWaveNet(cfg, info).eval()
    assert not off.edge_weights  # model.edge_weights false (the default): off
    on = GraphWaveNet(cfg.model_copy(update={"edge_weights": True}), info).eval()
    on.load_state_dict(off.state_dict())
    b = _batch(2, T, H, N)
    with torch.no_grad():
        today = off(b, ei).mean
        assert torch.equal(off(b, ei, w).mean, today)  # switch off: weights ignored
        assert torch.equal(on(b, ei).mean, today)  # switch on, no weights: unit weights
        assert torch.equal(on(b, ei, torch.ones(ei.shape[1])).mean, today)
        assert not torch.allclose(on(b, ei, w).mean, today)
