"""STMamba: forecast shapes, streaming equals the windowed forward, gradients reach every parameter."""

from __future__ import annotations

import pytest
import torch

from stmgt.config import model_config
from stmgt.data.windows import Batch
from stmgt.distributions.mixture import GaussianMixture
from stmgt.errors import DataError
from stmgt.models import DataInfo, build_model
from stmgt.models.stmamba import STMamba, StreamingForecaster

F64 = torch.float64
N, C, W = 5, 2, 3


def graph() -> torch.Tensor:
    src = torch.arange(N)
    return torch.cat([torch.stack([src, (src + 1) % N]), torch.tensor([[0], [3]])], 1)


def make_batch(B=2, T=6, H=4, weather=True, seed=0, dtype=F64) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        x=torch.randn(B, T, N, C, generator=g, dtype=dtype),
        x_mask=torch.rand(B, T, N, generator=g) > 0.2,
        y=torch.randn(B, H, N, generator=g, dtype=dtype),
        y_mask=torch.rand(B, H, N, generator=g) > 0.2,
        tod=torch.rand(B, T + H, generator=g),
        dow=torch.randint(0, 7, (B, T + H), generator=g),
        weather=torch.randn(B, T + H, W, generator=g, dtype=dtype) if weather else None,
        start=torch.zeros(B, dtype=torch.long),
    )


def model(T=6, H=4, weather=True, seed=0, **cfg) -> STMamba:
    torch.manual_seed(seed)
    cfg = model_config("stmamba", hidden=16, heads=4, blocks=2, mixtures=3, d_state=4, **cfg)
    info = DataInfo(num_nodes=N, in_channels=C, weather_dim=W if weather else 0, history=T, horizon=H)
    m = build_model(cfg, info)
    assert isinstance(m, STMamba)
    m = m.double().eval()
    with torch.no_grad():  # larger step sizes than the initial ones, so the recurrent state matters
        for b in m.blocks:
            b.temporal.dt_proj.bias.add_(2.0)
    return m


@pytest.mark.parametrize("T,H", [(6, 4), (3, 7), (5, 5)])
def test_forecast_shapes(T, H):
    m = model(T, H)
    dist = m(make_batch(T=T, H=H), graph())
    assert isinstance(dist, GaussianMixture)
    assert dist.batch_shape == (2, H, N) and dist.means.shape == (2, H, N, 3)
    assert torch.isfinite(dist.mean).all() and (dist.stds > 0).all()


@pytest.mark.parametrize("opts", [{"weather": "document"}, {"weather": "none"}, {"weather_forecast": True},
                                  {"spatial": False}, {"gat_v2": True, "node_embedding": True}])
def test_options(opts):
    m = model(**opts)
    assert m(make_batch(), graph()).batch_shape == (2, 4, N)


def test_without_weather_data():
    m = model(weather=False)
    assert m(make_batch(weather=False), graph()).batch_shape == (2, 4, N)


def assert_same(d1: GaussianMixture, d2: GaussianMixture, atol=1e-5):
    torch.testing.assert_close(d1.means, d2.means, rtol=0, atol=atol)
    torch.testing.assert_close(d1.stds, d2.stds, rtol=0, atol=atol)
    torch.testing.assert_close(d1.log_weights, d2.log_weights, rtol=0, atol=atol)


@pytest.mark.parametrize("opts", [{}, {"weather_forecast": True}, {"weather": "document"}])
def test_streaming_equals_full_window(opts):
    m = model(**opts)
    batch = make_batch()
    full = m(batch, graph())
    assert_same(m.stream_forecast(batch, graph()), full)


def test_streaming_forecaster_longer_stream_and_reset():
    T, H, extra = 6, 4, 3
    m = model(T, H)
    long = make_batch(T=T + extra, H=H, seed=1)  # a stream of T + 3 steps
    s = StreamingForecaster(m, graph(), batch_size=2)
    for t in range(T + extra):
        if t == T - 1:
            with pytest.raises(DataError, match="needs 6"):
                s.forecast(long.tod[:, T + extra:], long.dow[:, T + extra:])
        s.update(long.x[:, t], long.x_mask[:, t], long.tod[:, t], long.dow[:, t], long.weather[:, t])
    # after steps 1..t from a fresh state: forward on the batch whose history is those t steps
    f = s.forecast(long.tod[:, T + extra:], long.dow[:, T + extra:], long.weather[:, T + extra:])
    assert_same(f, m(long, graph()))
    # ... which is not the windowed forward on the last T steps (the state remembers more) ...
    window = Batch(x=long.x[:, extra:], x_mask=long.x_mask[:, extra:], y=long.y, y_mask=long.y_mask,
                   tod=long.tod[:, extra:], dow=long.dow[:, extra:], weather=long.weather[:, extra:],
                   start=long.start + extra)
    assert (f.mean - m(window, graph()).mean).abs().max() > 1e-6
    # ... unless the stream is reset and fed exactly that window
    s.reset()
    for t in range(extra, T + extra):
        s.update(long.x[:, t], long.x_mask[:, t], long.tod[:, t], long.dow[:, t], long.weather[:, t])
    assert_same(s.forecast(long.tod[:, T + extra:], long.dow[:, T + extra:]), m(window, graph()))


def test_encode_continues_from_state():
    m = model()
    b = make_batch(T=9, seed=2)
    h_full = m.encode(b, graph())
    first = Batch(x=b.x[:, :4], x_mask=b.x_mask[:, :4], y=b.y, y_mask=b.y_mask, tod=b.tod, dow=b.dow,
                  weather=b.weather, start=b.start)
    rest = Batch(x=b.x[:, 4:], x_mask=b.x_mask[:, 4:], y=b.y, y_mask=b.y_mask, tod=b.tod[:, 4:],
                 dow=b.dow[:, 4:], weather=b.weather[:, 4:], start=b.start + 4)
    h1, st = m.encode(first, graph(), return_state=True)
    h2 = m.encode(rest, graph(), state=st)
    torch.testing.assert_close(torch.cat([h1, h2], 1), h_full, rtol=0, atol=1e-10)
    with pytest.raises(DataError, match="history of 6"):
        m(first, graph())


def test_gradients_reach_every_parameter():
    m = model(weather_forecast=True, node_embedding=True).train()
    b = make_batch()
    dist = m(b, graph())
    loss = -dist.log_prob(b.y)[b.y_mask].mean()
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    zero = [n for n, p in m.named_parameters() if p.grad.abs().sum() == 0]
    assert not zero


def test_node_chunk_same_forecast():
    b = make_batch()
    assert_same(model(node_chunk=3)(b, graph()), model()(b, graph()), atol=1e-12)


def test_keep_details_spatial_attention():
    m = model()
    m.keep_details = True
    m(make_batch(), graph())
    atts = m.details["spatial_attention"]
    assert len(atts) == 2 and atts[0][1].shape[:2] == (2, 6)
    assert m.details["weather_attention"].shape[:2] == (2, 4 * N)  # [B, H*N, L]


def test_streaming_equals_full_window_float32():
    # measured: 5e-7 to 1e-6 in float32 (3e-15 in float64)
    m = model(weather_forecast=True).float()
    batch = make_batch(dtype=torch.float32)
    assert_same(m.stream_forecast(batch, graph()), m(batch, graph()), atol=1e-5)
