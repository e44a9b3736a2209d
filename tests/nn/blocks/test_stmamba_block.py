"""STMambaBlock: layout, pivots, node-relabelling equivariance, causality, streaming, memory mode."""

from __future__ import annotations

import pytest
import torch

from stmgt.errors import ConfigError
from stmgt.nn.blocks.stmamba_block import STMambaBlock, pivot_to_space, pivot_to_time

F64 = torch.float64


def ring(N: int) -> torch.Tensor:
    """A directed ring plus a few chords: ``[2, E]``."""
    src = torch.arange(N)
    chords = torch.tensor([[0, 2], [N - 1, 1]]).T if N > 3 else torch.empty(2, 0, dtype=torch.long)
    return torch.cat([torch.stack([src, (src + 1) % N]), chords], 1)


def block(seed=0, **kw) -> STMambaBlock:
    torch.manual_seed(seed)
    kw = {"hidden": 16, "heads": 4, "d_state": 4, **kw}
    b = STMambaBlock(**kw).double().eval()
    with torch.no_grad():  # larger step sizes than the initial ones, so the recurrent state matters
        b.temporal.dt_proj.bias.add_(2.0)
    return b


def test_pivots_change_no_values():
    B, T, N, F = 2, 5, 7, 3
    x = torch.randn(B, T, N, F)
    p = pivot_to_time(x)
    assert p.shape == (B * N, T, F)
    for b in range(B):
        for n in range(N):
            assert torch.equal(p[b * N + n], x[b, :, n])
    assert torch.equal(pivot_to_space(p, B, N), x)
    assert pivot_to_space(p, B, N).is_contiguous()


@pytest.mark.parametrize("shape", [(2, 5, 7, 16), (2, 1, 7, 16), (1, 9, 3, 16)])
def test_shape_and_layout_preserved(shape):
    B, T, N, F = shape
    blk = block()
    x = torch.randn(*shape, dtype=F64)
    out = blk(x, ring(N))
    assert out.shape == shape and torch.isfinite(out).all()
    out, (ei, alpha) = blk(x, ring(N), return_attention=True)
    assert alpha.shape == (B, T, ei.shape[1], 4)
    # attention of every target node sums to one
    s = torch.zeros(B, T, N, 4, dtype=F64).index_add_(2, ei[1], alpha)
    torch.testing.assert_close(s, torch.ones_like(s))


def test_layout_is_batch_time_nodes_features():
    # a block whose GAT and Mamba are switched off is the identity up to the LayerNorms, so the
    # output must keep each (b, t, n) in place; T != N catches any mix-up of the two axes
    blk = block()
    with torch.no_grad():
        for m in (blk.spatial, blk.temporal.out_proj):
            for p in m.parameters():
                p.zero_()
    x = torch.randn(2, 5, 7, 16, dtype=F64)
    ln = torch.nn.functional.layer_norm
    torch.testing.assert_close(blk(x, ring(7)), ln(ln(x, (16,)), (16,)))


def test_equivariant_to_node_relabelling():
    B, T, N, F = 2, 6, 7, 16
    blk = block(gat_v2=False)
    x = torch.randn(B, T, N, F, dtype=F64)
    ei = ring(N)
    perm = torch.randperm(N)  # new node i is old node perm[i]
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(N)
    out = blk(x, ei)
    out_p = blk(x[:, :, perm], inv[ei])
    torch.testing.assert_close(out_p, out[:, :, perm], rtol=0, atol=1e-12)


@pytest.mark.parametrize("gat_v2", [False, True])
def test_causal_in_time(gat_v2):
    blk = block(gat_v2=gat_v2)
    x = torch.randn(2, 8, 5, 16, dtype=F64)
    out = blk(x, ring(5))
    for t in (0, 3, 7):
        x2 = x.clone()
        x2[:, t] += torch.randn(2, 5, 16, dtype=F64)
        out2 = blk(x2, ring(5))
        torch.testing.assert_close(out2[:, :t], out[:, :t], rtol=0, atol=0)
        assert (out2[:, t] - out[:, t]).abs().max() > 1e-6


def test_gat_variant_selectable():
    assert not STMambaBlock(16, 4).spatial.v2  # the document's GAT by default
    assert STMambaBlock(16, 4, gat_v2=True).spatial.v2
    with pytest.raises(ConfigError, match="divisible"):
        STMambaBlock(18, 4)


def test_step_streaming_equals_forward():
    B, T, N = 2, 7, 5
    blk = block()
    x = torch.randn(B, T, N, 16, dtype=F64)
    ei = ring(N)
    out, st_full = blk(x, ei, return_state=True)
    st = blk.init_state(B, N, dtype=F64)
    steps = []
    for t in range(T):
        y, st = blk.step(x[:, t], ei, st)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), out, rtol=0, atol=1e-10)
    torch.testing.assert_close(st.ssm, st_full.ssm, rtol=0, atol=1e-10)
    # forward can also continue a stream
    out1, st1 = blk(x[:, :3], ei, return_state=True)
    out2 = blk(x[:, 3:], ei, state=st1)
    torch.testing.assert_close(torch.cat([out1, out2], 1), out, rtol=0, atol=1e-10)


@pytest.mark.parametrize("chunks", [{"node_chunk": 3}, {"graph_chunk": 5},
                                    {"node_chunk": 4, "graph_chunk": 1}])
def test_memory_mode_same_output_and_gradients(chunks):
    x = torch.randn(2, 6, 5, 16, dtype=F64)
    ei = ring(5)
    results = []
    for kw in ({}, chunks):  # e.g. 10 node series in chunks of 3, 3, 3, 1; 12 graphs in chunks of 5, 5, 2
        blk = block(**kw, dropout=0.0, drop_edge=0.0).train()
        xx = x.clone().requires_grad_(True)
        out = blk(xx, ei)
        out.pow(2).sum().backward()
        results.append((out.detach(), xx.grad, {n: p.grad for n, p in blk.named_parameters()}))
    (o0, gx0, gp0), (o1, gx1, gp1) = results
    torch.testing.assert_close(o1, o0, rtol=0, atol=1e-12)
    torch.testing.assert_close(gx1, gx0, rtol=0, atol=1e-10)
    for n in gp0:
        torch.testing.assert_close(gp1[n], gp0[n], rtol=0, atol=1e-10)
    with torch.no_grad():
        ref = block(dropout=0.0, drop_edge=0.0)
        torch.testing.assert_close(blk.eval()(x, ei), ref(x, ei), rtol=0, atol=1e-12)


def test_dropout_only_in_training():
    blk = block(dropout=0.5)
    x = torch.randn(1, 4, 5, 16, dtype=F64)
    torch.testing.assert_close(blk(x, ring(5)), blk(x, ring(5)))
    blk.train()
    assert not torch.allclose(blk(x, ring(5)), blk(x, ring(5)))


def test_without_spatial_phase_nodes_are_independent():
    blk = block(spatial=False)
    assert blk.spatial is None
    x = torch.randn(2, 5, 7, 16, dtype=F64)
    out, att = blk(x, ring(7), return_attention=True)
    assert att is None
    x2 = x.clone()
    x2[:, :, 3] += 1.0
    out2 = blk(x2, ring(7))
    keep = [n for n in range(7) if n != 3]
    torch.testing.assert_close(out2[:, :, keep], out[:, :, keep], rtol=0, atol=0)
    st = blk.init_state(2, 7, dtype=F64)
    y, st = blk.step(x[:, 0], ring(7), st)
    torch.testing.assert_close(y, out[:, 0], rtol=0, atol=1e-10)
