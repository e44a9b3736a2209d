import torch

from stmgt.nn.blocks.temporal_branch import TemporalBranch


def test_attention_equals_nn_multiheadattention():
    torch.manual_seed(0)
    t = TemporalBranch(32, 4, dropout=0.0).eval()
    x = torch.randn(6, 10, 32)
    ref, _ = t.attention(x, x, x, need_weights=False)
    torch.testing.assert_close(t.attend(x), ref, atol=1e-5, rtol=1e-5)


def test_branch_processes_each_node_independently():
    torch.manual_seed(0)
    t = TemporalBranch(16, 2, dropout=0.0).eval()
    x = torch.randn(2, 5, 3, 16)  # [B, T, N, D]
    out = t(x)
    assert out.shape == x.shape
    x2 = x.clone()
    x2[:, :, 1] += 1.0  # change node 1 only
    out2 = t(x2)
    torch.testing.assert_close(out[:, :, [0, 2]], out2[:, :, [0, 2]])
    assert not torch.allclose(out[:, :, 1], out2[:, :, 1])


def test_training_path_equals_sdpa_when_the_dropout_mask_keeps_everything(monkeypatch):
    import stmgt.nn.blocks.temporal_branch as temporal

    torch.manual_seed(0)
    t = TemporalBranch(32, 4, dropout=0.2)
    x = torch.randn(6, 10, 32, requires_grad=True)
    t.eval()
    ref = t.attend(x)
    monkeypatch.setattr(temporal, "fast_dropout", lambda a, p: a)  # keep-all mask, no rescale
    t.train()
    torch.testing.assert_close(t.attend(x), ref, atol=1e-5, rtol=1e-5)
    g1 = torch.autograd.grad(t.attend(x).sum(), x)[0]
    t.eval()
    g2 = torch.autograd.grad(t.attend(x).sum(), x)[0]
    torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-5)
