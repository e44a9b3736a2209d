import math

import torch

from stmgt.distributions.mixture import GaussianMixture
from stmgt.training.loss import mixture_loss


def _doc_loss(y, means, stds, weights):
    """The design document's loss written out (section 9.4.1), as an oracle."""
    K = means.shape[-1]
    lp = []
    for k in range(K):
        lpk = -0.5 * ((y - means[..., k]) / stds[..., k]) ** 2 - torch.log(stds[..., k]) - 0.5 * math.log(2 * math.pi)
        lp.append(lpk + torch.log(weights[..., k]))
    nll = -torch.logsumexp(torch.stack(lp, -1), -1).mean()
    var_reg = -torch.log(stds).mean()
    entropy = -(weights * torch.log(weights + 1e-8)).sum(-1).mean()
    return nll + 0.01 * var_reg + 0.001 * (-entropy)


def test_equals_the_design_documents_loss_without_mask():
    torch.manual_seed(0)
    means, stds, logits = torch.randn(2, 3, 4, 5), torch.rand(2, 3, 4, 5) + 0.1, torch.randn(2, 3, 4, 5)
    y = torch.randn(2, 3, 4)
    loss, parts = mixture_loss(GaussianMixture(means, stds, logits), y, torch.ones_like(y, dtype=torch.bool))
    expect = _doc_loss(y, means, stds, torch.softmax(logits, -1))
    torch.testing.assert_close(loss, expect, atol=1e-5, rtol=1e-5)


def test_masked_targets_do_not_contribute():
    torch.manual_seed(0)
    d = GaussianMixture(torch.randn(4, 2, 3, 2), torch.rand(4, 2, 3, 2) + 0.1, torch.randn(4, 2, 3, 2))
    y = torch.randn(4, 2, 3)
    mask = torch.rand(4, 2, 3) > 0.5
    y_bad = torch.where(mask, y, torch.full_like(y, float("nan")))
    a, pa = mixture_loss(d, y, mask)
    b, pb = mixture_loss(d, y_bad, mask)
    torch.testing.assert_close(a, b)
    assert torch.isfinite(b)


def test_mae_term_adds_the_masked_mae_of_the_mean():
    import torch

    from stmgt.distributions.mixture import GaussianMixture
    from stmgt.training.loss import mixture_loss

    torch.manual_seed(0)
    d = GaussianMixture(torch.randn(2, 3, 4, 5), torch.rand(2, 3, 4, 5) + 0.5, torch.randn(2, 3, 4, 5))
    y = torch.randn(2, 3, 4)
    mask = torch.rand(2, 3, 4) > 0.3
    base, _ = mixture_loss(d, y, mask)
    with_mae, parts = mixture_loss(d, y, mask, mae_weight=0.5)
    expect = (d.mean - y).abs()[mask].mean()
    torch.testing.assert_close(parts["mae"], expect)
    torch.testing.assert_close(with_mae, base + 0.5 * expect)
