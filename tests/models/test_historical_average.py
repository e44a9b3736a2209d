"""HistoricalAverage against a hand-computed numpy oracle on a tiny panel (6-hour steps, 4 slots a day)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stmgt.config import model_config
from stmgt.data.panel import Panel
from stmgt.data.windows import PanelData
from stmgt.models import DataInfo, build_model
from stmgt.models.historical_average import HistoricalAverage

DAYS, SPD, N, HIST, HOR = 21, 4, 3, 3, 2
T_ALL = DAYS * SPD  # 84 steps from Monday 2024-01-01 00:00; the training split is steps 0..58


def calendar():
    t = np.arange(T_ALL)
    return t % SPD, (t // SPD) % 7  # slot, day of week (0 = Monday)


def tiny_panel() -> Panel:
    rng = np.random.default_rng(1)
    slot, dow = calendar()
    values = (40 + 10 * slot[:, None] + 3 * dow[:, None] + rng.normal(0, 2, (T_ALL, N))).astype(np.float32)
    mask = rng.random((T_ALL, N)) > 0.2
    mask[:, 0] = True
    mask[(dow == 0) & (slot == 1), 1] = False  # node 1 never seen on Monday slot 1: slot fallback
    mask[slot == 3, 2] = False  # node 2 never seen at slot 3: node fallback
    values[~mask] = np.nan
    ts = np.datetime64("2024-01-01T00:00") + np.arange(T_ALL) * np.timedelta64(6, "h")
    return Panel(values=values, mask=mask, timestamps=ts, edge_index=np.zeros((2, 0), dtype=np.int64))


def oracle(panel: Panel, hi: int, floor: float, classes=tuple(range(7))):
    v, m = panel.values[:hi, :, 0].astype(np.float64), panel.mask[:hi, :, 0]
    obs = v[m]
    z = (v - obs.mean()) / obs.std()
    slot, dow = calendar()
    slot, dow = slot[:hi], dow[:hi]
    mean, std = np.zeros((7, SPD, N)), np.zeros((7, SPD, N))
    for n in range(N):
        node = [z[t, n] for t in range(hi) if m[t, n]]
        for s in range(SPD):
            at_slot = [z[t, n] for t in range(hi) if m[t, n] and slot[t] == s]
            for d in range(7):
                cell = [z[t, n] for t in range(hi) if m[t, n] and slot[t] == s and classes[dow[t]] == classes[d]]
                mean[d, s, n] = np.mean(next(c for c in (cell, at_slot, node) if len(c) >= 1))
                std[d, s, n] = np.std(next(c for c in (cell, at_slot, node) if len(c) >= 2), ddof=1)
    return mean, np.maximum(std, floor)


def fitted(panel: Panel, classes=tuple(range(7))):
    data = PanelData(panel, HIST, HOR, batch_size=64)
    info = DataInfo(num_nodes=N, history=HIST, horizon=HOR, steps_per_day=SPD, day_classes=classes)
    model = build_model(model_config("historical_average"), info)
    model.fit(data)
    return data, model


def test_registry_and_no_parameters():
    _, model = fitted(tiny_panel())
    assert isinstance(model, HistoricalAverage) and not model.trainable
    assert list(model.parameters()) == []
    assert model.mean.shape == model.std.shape == (7, SPD, N)


def test_statistics_match_oracle():
    panel = tiny_panel()
    data, model = fitted(panel)
    hi = data.bounds["train"][1]
    assert hi == 59
    mean, std = oracle(panel, hi, model.floor)
    np.testing.assert_allclose(model.mean.numpy(), mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.std.numpy(), std, rtol=1e-5, atol=1e-5)
    # the fallbacks were exercised: Monday slot 1 of node 1 is the slot mean over all days
    at_slot = mean[:, 1, 1][1:]
    assert mean[0, 1, 1] == pytest.approx(oracle_slot_mean(panel, hi, 1, 1), rel=1e-6)
    assert not np.allclose(at_slot, mean[0, 1, 1])


def test_days_of_one_category_are_pooled():
    """Where the training split lacks some days of the week the calendar has categories (weekday/weekend):
    every weekday then reads the mean of all training weekdays at its slot."""
    panel = tiny_panel()
    classes = (0, 0, 0, 0, 0, 1, 1)
    data, model = fitted(panel, classes)
    mean, std = oracle(panel, data.bounds["train"][1], model.floor, classes)
    np.testing.assert_allclose(model.mean.numpy(), mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.std.numpy(), std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.mean.numpy()[1], model.mean.numpy()[3])  # Tuesday = Thursday
    assert not np.allclose(model.mean.numpy()[1], model.mean.numpy()[5])  # but not Saturday


def oracle_slot_mean(panel: Panel, hi: int, s: int, n: int) -> float:
    v, m = panel.values[:hi, :, 0].astype(np.float64), panel.mask[:hi, :, 0]
    obs = v[m]
    z = (v - obs.mean()) / obs.std()
    slot, _ = calendar()
    return float(np.mean([z[t, n] for t in range(hi) if m[t, n] and slot[t] == s]))


@pytest.mark.parametrize("split", ["val", "test"])
def test_forecast_reads_horizon_calendar(split):
    panel = tiny_panel()
    data, model = fitted(panel)
    mean, std = oracle(panel, data.bounds["train"][1], model.floor)
    slot, dow = calendar()
    starts = data.starts[split]
    dist = model(data.batch_at(starts), data.edge_index)
    assert tuple(dist.batch_shape) == (len(starts), HOR, N)
    t = starts[:, None] + HIST + np.arange(HOR)  # [B, H] panel step of each horizon step
    want_mean = mean[dow[t], slot[t]]  # [B, H, N]
    want_std = std[dow[t], slot[t]]
    np.testing.assert_allclose(dist.mean.numpy(), want_mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dist.stddev.numpy(), want_std, rtol=1e-5, atol=1e-5)


def test_uses_training_split_only():
    _, model = fitted(tiny_panel())
    other = tiny_panel()
    other.values[59:] *= 3.0
    _, model2 = fitted(other)
    torch.testing.assert_close(model.mean, model2.mean)
    torch.testing.assert_close(model.std, model2.std)
