"""LastValue against a hand-computed numpy oracle on a tiny panel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stmgt.config import model_config
from stmgt.data.panel import Panel
from stmgt.data.windows import PanelData
from stmgt.models import DataInfo, build_model
from stmgt.models.last_value import LastValue

T_ALL, N, HIST, HOR = 40, 3, 4, 3


def tiny_panel(seed: int = 0) -> Panel:
    rng = np.random.default_rng(seed)
    values = rng.normal(50, 10, (T_ALL, N)).astype(np.float32)
    mask = rng.random((T_ALL, N)) > 0.25
    mask[28:36, 2] = False  # node 2 silent over a whole test window's history
    mask[5:9, 1] = False  # a gap in the training part
    values[~mask] = np.nan
    ts = np.datetime64("2024-01-01T00:00") + np.arange(T_ALL) * np.timedelta64(1, "h")
    return Panel(values=values, mask=mask, timestamps=ts, edge_index=np.array([[0, 1], [1, 2]]))


def oracle(panel: Panel, train_hi: int):
    v, m = panel.values[..., 0].astype(np.float64), panel.mask[..., 0]
    obs = v[:train_hi][m[:train_hi]]
    loc, scale = obs.mean(), obs.std()
    z = (v - loc) / scale
    node_mean = np.array([z[:train_hi, n][m[:train_hi, n]].mean() for n in range(N)])
    std = []
    for h in range(1, HOR + 1):
        d = [z[t + h, n] - z[t, n] for t in range(train_hi - h) for n in range(N) if m[t, n] and m[t + h, n]]
        std.append(np.sqrt(np.mean(np.square(d))))
    return z, m, node_mean, np.array(std)


def fitted(panel: Panel):
    data = PanelData(panel, HIST, HOR, fractions=(0.5, 0.25, 0.25), batch_size=64)
    info = DataInfo(num_nodes=N, history=HIST, horizon=HOR, steps_per_day=24)
    model = build_model(model_config("last_value"), info)
    model.fit(data)
    return data, model


def test_registry_and_no_parameters():
    _, model = fitted(tiny_panel())
    assert isinstance(model, LastValue) and not model.trainable
    assert list(model.parameters()) == []
    assert set(model.state_dict()) == {"node_mean", "step_std"}


def test_statistics_match_oracle():
    panel = tiny_panel()
    data, model = fitted(panel)
    assert data.bounds["train"] == (0, 20)
    _, _, node_mean, std = oracle(panel, 20)
    np.testing.assert_allclose(model.node_mean.numpy(), node_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.step_std.numpy(), std, rtol=1e-5)


@pytest.mark.parametrize("split", ["train", "test"])
def test_forecast_matches_oracle(split):
    panel = tiny_panel()
    data, model = fitted(panel)
    z, m, node_mean, std = oracle(panel, 20)
    starts = data.starts[split]
    batch = data.batch_at(starts)
    dist = model(batch, data.edge_index)
    assert tuple(dist.batch_shape) == (len(starts), HOR, N)
    want = np.zeros((len(starts), N))
    for b, s in enumerate(starts):
        for n in range(N):
            seen = [t for t in range(s, s + HIST) if m[t, n]]
            want[b, n] = z[seen[-1], n] if seen else node_mean[n]
    np.testing.assert_allclose(dist.mean.numpy(), np.repeat(want[:, None], HOR, 1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dist.stddev.numpy(), np.broadcast_to(std[None, :, None], dist.mean.shape),
                               rtol=1e-5)
    if split == "test":  # the window starting at 30 has no observation of node 2: training mean
        b = int(np.flatnonzero(starts == 30)[0])
        assert dist.mean[b, 0, 2].item() == pytest.approx(node_mean[2], rel=1e-5)


def test_uses_training_split_only():
    panel = tiny_panel()
    _, model = fitted(panel)
    other = tiny_panel()
    other.values[20:] += 1000.0  # change validation and test readings only
    _, model2 = fitted(other)
    torch.testing.assert_close(model.step_std, model2.step_std)
    torch.testing.assert_close(model.node_mean, model2.node_mean)
