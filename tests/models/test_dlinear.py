"""DLinear against hand computations: the decomposition, the forecast from its weights, and learning."""

import numpy as np
import pytest
import torch

from stmgt.config import model_config
from stmgt.data.windows import Batch
from stmgt.models import DataInfo, build_model
from stmgt.models.dlinear import moving_average


def _batch(x: torch.Tensor, H: int) -> Batch:
    B, T, N = x.shape
    return Batch(x=x.unsqueeze(-1), x_mask=torch.ones(B, T, N, dtype=torch.bool), y=torch.zeros(B, H, N),
                 y_mask=torch.ones(B, H, N, dtype=torch.bool), tod=torch.zeros(B, T + H),
                 dow=torch.zeros(B, T + H, dtype=torch.long), weather=None, start=torch.arange(B))


@pytest.mark.parametrize("T, k", [(12, 25), (12, 5), (7, 3), (30, 25)])
def test_moving_average_is_a_centred_mean_with_the_ends_repeated(T, k):
    x = np.random.default_rng(0).normal(size=(3, T))
    pad = (k - 1) // 2
    padded = np.concatenate([np.repeat(x[:, :1], pad, 1), x, np.repeat(x[:, -1:], pad, 1)], axis=1)
    ref = np.stack([np.convolve(row, np.ones(k) / k, mode="valid") for row in padded])
    out = moving_average(torch.from_numpy(x), k).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-12)


def test_forecast_is_the_two_linear_maps_of_trend_and_remainder():
    torch.manual_seed(0)
    T, H, B, N = 12, 4, 2, 3
    m = build_model(model_config("dlinear", kernel_size=5), DataInfo(num_nodes=N, history=T, horizon=H))
    x = torch.randn(B, T, N, dtype=torch.float64)
    m = m.double()
    dist = m(_batch(x, H), torch.zeros(2, 0, dtype=torch.long))
    s = x.permute(0, 2, 1).numpy()  # [B, N, T]
    pad = np.concatenate([np.repeat(s[..., :1], 2, -1), s, np.repeat(s[..., -1:], 2, -1)], -1)
    trend = np.stack([pad[..., i:i + T] for i in range(5)]).mean(0)  # [B, N, T]
    W = {k: (v.detach().numpy()) for k, v in m.state_dict().items()}
    mean = (s - trend) @ W["seasonal.weight"].T + W["seasonal.bias"] + trend @ W["trend.weight"].T + W["trend.bias"]
    log_std = ((s - trend) @ W["seasonal_scale.weight"].T + W["seasonal_scale.bias"]
               + trend @ W["trend_scale.weight"].T + W["trend_scale.bias"])
    np.testing.assert_allclose(dist.mean.detach().numpy(), mean.transpose(0, 2, 1), rtol=1e-10)
    np.testing.assert_allclose(dist.stddev.detach().numpy(), np.exp(log_std).transpose(0, 2, 1) + 0.01, rtol=1e-10)


def test_learns_to_extrapolate_a_ramp():
    """A linear map of the history continues any ramp exactly; a few hundred Adam steps on the squared
    error of the mean (the paper's loss) find one."""
    torch.manual_seed(0)
    T, H, N = 12, 3, 4
    m = build_model(model_config("dlinear"), DataInfo(num_nodes=N, history=T, horizon=H))
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    steps = torch.arange(T + H, dtype=torch.float32)

    def ramps(B):
        a, b = torch.randn(B, 1, N), torch.randn(B, 1, N) * 0.2
        return a + b * steps.view(1, -1, 1)  # [B, T + H, N]

    for _ in range(400):
        r = ramps(32)
        batch = _batch(r[:, :T], H)
        loss = (m(batch, torch.zeros(2, 0, dtype=torch.long)).mean - r[:, T:]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    r = ramps(64)
    err = (m(_batch(r[:, :T], H), torch.zeros(2, 0, dtype=torch.long)).mean - r[:, T:]).abs().mean()
    assert err < 0.05 * r[:, T:].abs().mean()


def test_even_kernel_is_refused():
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        build_model(model_config("dlinear", kernel_size=4), DataInfo(num_nodes=2))
