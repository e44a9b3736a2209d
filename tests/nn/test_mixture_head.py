import torch

from stmgt.nn.mixture_head import GaussianMixtureHead, last_observed


def test_last_observed_carries_forward_over_gaps():
    x = torch.tensor([[[1.0, 5.0], [2.0, 6.0], [3.0, 7.0]]])  # [B=1, T=3, N=2]
    mask = torch.tensor([[[True, False], [True, False], [False, False]]])
    torch.testing.assert_close(last_observed(x, mask), torch.tensor([[2.0, 0.0]]))


def test_head_shapes_std_floor_and_anchor():
    head = GaussianMixtureHead(8, 3, min_std=0.05)
    h = torch.randn(2, 4, 5, 8)
    d = head(h)
    assert d.batch_shape == (2, 4, 5) and (d.stds >= 0.05).all()
    torch.testing.assert_close(d.weights.sum(-1), torch.ones(2, 4, 5))
    anchored = head(h, torch.full((2, 5), 3.0))
    torch.testing.assert_close(anchored.mean, d.mean + 3.0)
