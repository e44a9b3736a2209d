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


def _saved_bytes(fn):
    """Bytes of the distinct storages autograd keeps for backward while ``fn`` runs."""
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def test_recomputing_the_feed_forward_gives_the_same_numbers_and_holds_less():
    torch.manual_seed(0)
    plain = TemporalBranch(32, 4, dropout=0.3).train()
    again = TemporalBranch(32, 4, dropout=0.3, recompute_ffn=True).train()
    again.load_state_dict(plain.state_dict())
    x = torch.randn(2, 10, 5, 32, requires_grad=True)  # [B, T, N, D]
    outs, grads, held = [], [], []
    for t in (plain, again):
        torch.manual_seed(1)  # the same dropout masks (checkpoint replays the random state)
        y, nbytes = _saved_bytes(lambda t=t: t(x))
        g = torch.autograd.grad((y * torch.linspace(-1, 1, 32)).sum(), [x, *t.parameters()])
        outs.append(y)
        grads.append(g)
        held.append(nbytes)
    torch.testing.assert_close(outs[1], outs[0])
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b)
    hidden = 2 * 10 * 5 * 4 * 32 * 4  # one [B*N, T, 4D] float32 tensor
    assert held[0] - held[1] >= 2 * hidden, held
