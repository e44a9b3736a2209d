import torch

from stmgt.nn.layers.dropout import FastDropout, fast_dropout


def test_drop_rate_and_scaling():
    torch.manual_seed(0)
    x = torch.ones(400_000)
    y = fast_dropout(x, 0.2)
    assert abs(float((y == 0).float().mean()) - 0.2) < 0.005
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1.25))
    assert abs(float(y.mean()) - 1.0) < 0.01  # unbiased


def test_identity_in_eval_and_reproducible_by_seed():
    d = FastDropout(0.3)
    x = torch.randn(3, 5, 7)
    assert torch.equal(d.eval()(x), x)
    d.train()
    torch.manual_seed(1)
    a = d(x)
    torch.manual_seed(1)
    assert torch.equal(a, d(x)) and a.shape == x.shape


def test_gradient_is_the_scaled_mask():
    torch.manual_seed(2)
    x = torch.randn(1000, requires_grad=True)
    y = fast_dropout(x, 0.4)
    y.sum().backward()
    kept = y.detach() != 0
    torch.testing.assert_close(x.grad, kept.float() / 0.6)
    torch.testing.assert_close(y.detach()[kept], x.detach()[kept] / 0.6)
