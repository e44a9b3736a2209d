import torch

from stmgt.nn.layers.mixture_head import GaussianMixtureHead, last_observed


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


def test_std_bound_is_exact_below_it_and_holds_against_the_variance_regulariser():
    torch.manual_seed(0)
    h = torch.randn(2, 4, 5, 8)
    bounded, free = GaussianMixtureHead(8, 3, max_std=10.0), GaussianMixtureHead(8, 3, max_std=None)
    free.load_state_dict(bounded.state_dict())
    torch.testing.assert_close(bounded(h).stds, free(h).stds)  # stds near 1: the document's head
    with torch.no_grad():
        bounded.output_layer.bias.view(3, 3)[:, 1] = 50.0  # raw log std 50
    assert torch.allclose(bounded(h).stds, torch.tensor(10.01), atol=1e-4)

    # a component with ~zero weight, trained by the full objective: unbounded it drifts far away
    from stmgt.training.loss import mixture_loss

    y, mask = torch.randn(2, 4, 5), torch.ones(2, 4, 5, dtype=torch.bool)
    for head, limit in ((free, None), (bounded, 10.01)):
        torch.manual_seed(1)
        head.output_layer.reset_parameters()
        with torch.no_grad():
            head.output_layer.bias.view(3, 3)[0, 2] = -30.0  # component 0: weight ~e^-30
        opt = torch.optim.Adam(head.parameters(), lr=0.05)
        for _ in range(120):
            loss, _ = mixture_loss(head(h), y, mask)
            opt.zero_grad()
            loss.backward()
            opt.step()
        dead = head(h).stds[..., 0].detach()
        if limit is None:
            assert dead.median() > 100
        else:
            assert dead.max() <= limit + 1e-4
