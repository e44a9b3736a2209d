"""The flat horizon projection: every history step of a node into every horizon step of that node."""

import torch

from stmgt.nn.blocks.horizon_projection import FlatHorizonProjection


def test_flat_decoder_reads_every_history_step_into_every_horizon_step():
    torch.manual_seed(0)
    proj = FlatHorizonProjection(history=5, horizon=3, hidden=8, reduced=2)
    x = torch.randn(2, 5, 4, 8, requires_grad=True)
    out = proj(x)
    assert out.shape == (2, 3, 4, 8)
    # node 1's horizon step 2 depends on each of node 1's history steps and on no other node
    g = torch.autograd.grad(out[0, 2, 1].sum(), x)[0]
    assert (g[0, :, 1].abs().sum(-1) > 0).all()
    assert g[0, :, [0, 2, 3]].abs().sum() == 0 and g[1].abs().sum() == 0
    # the same numbers as the formula written out: W2 flatten_t(W1 x_t)
    z = torch.einsum("btnd,rd->bntr", x, proj.reduce.weight) + proj.reduce.bias  # [B, N, T, r]
    ref = (z.reshape(2, 4, 10) @ proj.out.weight.T + proj.out.bias).view(2, 4, 3, 8).transpose(1, 2)
    torch.testing.assert_close(out, ref)
