"""The input embedding: the window embedding and the optional LayerNorm."""

import torch

from stmgt.nn.blocks.input_embedding import InputEmbedding


def test_window_embedding_adds_the_flattened_window_to_every_step():
    torch.manual_seed(0)
    emb = InputEmbedding(in_channels=1, hidden=6, window=4)
    x, mask = torch.randn(2, 4, 3, 1), torch.rand(2, 4, 3) > 0.2
    out = emb(x, mask)
    feats = torch.cat([x, mask.unsqueeze(-1).float()], -1)  # [B, T, N, 2]
    win = feats.permute(0, 2, 1, 3).reshape(2, 3, 8) @ emb.window.weight.T + emb.window.bias  # [B, N, D]
    ref = emb.norm(emb.linear(feats) + win.unsqueeze(1))
    torch.testing.assert_close(out, ref)


def test_input_norm_off_keeps_the_token_linear_in_the_reading():
    """With LayerNorm a reading and twice it give nearly the same token far from 0 (saturation);
    without, the token moves by exactly the linear map of the difference."""
    torch.manual_seed(0)
    mask = torch.ones(1, 4, 3, dtype=torch.bool)
    x = torch.full((1, 4, 3, 1), 1000.0)
    for norm in (True, False):
        emb = InputEmbedding(in_channels=1, hidden=6, norm=norm)
        a, b = emb(x, mask), emb(2 * x, mask)
        if norm:
            torch.testing.assert_close(a, b, atol=1e-2, rtol=0)  # saturated: the scale is lost
        else:
            torch.testing.assert_close(b - a, (1000.0 * emb.linear.weight[:, 0]).expand_as(a))


def test_the_adaptive_embedding_is_one_learned_vector_per_history_step_and_road():
    from stmgt.nn.blocks.input_embedding import InputEmbedding

    torch.manual_seed(0)
    emb = InputEmbedding(1, 8, adaptive=(12, 5)).eval()
    assert emb.adaptive.shape == (12, 5, 8) and emb.adaptive.requires_grad
    x, mask = torch.randn(2, 12, 5, 1), torch.ones(2, 12, 5, dtype=torch.bool)
    before = emb(x, mask)
    with torch.no_grad():
        emb.adaptive[3, 2] += torch.randn(8)  # (a constant shift would vanish in the LayerNorm)
    changed = (emb(x, mask) - before).abs().amax(-1) > 1e-6  # [B, T, N]
    want = torch.zeros(12, 5, dtype=torch.bool)
    want[3, 2] = True
    assert torch.equal(changed, want.expand(2, 12, 5))  # that step of that road, in every window
    assert InputEmbedding(1, 8).adaptive is None  # off by default
