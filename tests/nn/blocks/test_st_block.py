"""STBlock and GatedFusion: the output alone, or with ``return_attention=True`` the gate and attention too."""

import torch

from stmgt.nn.blocks.gated_fusion import GatedFusion
from stmgt.nn.blocks.st_block import STBlock
from stmgt.testing import ring_graph


def test_gated_fusion_returns_the_gate_only_when_asked():
    torch.manual_seed(0)
    f = GatedFusion(8)
    s, t = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 4, 8)
    out = f(s, t)
    out2, alpha = f(s, t, return_attention=True)
    torch.testing.assert_close(out, out2)
    assert alpha.shape == s.shape and (alpha > 0).all() and (alpha < 1).all()
    torch.testing.assert_close(out, alpha * s + (1 - alpha) * t)


def test_st_block_returns_details_only_when_asked():
    torch.manual_seed(0)
    B, T, N, D = 2, 3, 5, 8
    x = torch.randn(B, T, N, D)
    blk = STBlock(D, heads=2).eval()
    h = blk(x, ring_graph(N))
    h2, (gate, (ei, alpha)) = blk(x, ring_graph(N), return_attention=True)
    torch.testing.assert_close(h, h2)
    assert h.shape == x.shape and gate.shape == x.shape
    assert alpha.shape == (B * T, ei.shape[1], 2)


def test_st_block_without_spatial_branch():
    blk = STBlock(8, heads=2, spatial=False).eval()
    x = torch.randn(1, 2, 3, 8)
    h, details = blk(x, ring_graph(3), return_attention=True)
    assert details == (None, None)
    torch.testing.assert_close(h, blk(x, ring_graph(3)))
