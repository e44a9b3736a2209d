import numpy as np
import pytest
import torch

# the tests' tensors are tiny: more threads only add synchronisation (a 400-step test: 6 s on two threads, 0.5 s on one)
torch.set_num_threads(1)


@pytest.fixture
def tiny_panel():
    """A 3-day, 5-node, 5-minute panel with weather and a few gaps (deterministic)."""
    from stmgt.data.panel import Panel

    rng = np.random.default_rng(0)
    T, N = 3 * 288, 5
    t = np.arange(T)
    base = 50 + 10 * np.sin(2 * np.pi * t / 288)[:, None] + rng.normal(0, 1, (T, N))
    mask = rng.random((T, N)) > 0.05
    ts = np.datetime64("2024-01-01T00:00") + np.arange(T) * np.timedelta64(5, "m")
    ei = np.array([[0, 1, 2, 3, 4, 1], [1, 2, 3, 4, 0, 0]])
    cov = np.stack([20 + np.sin(t / 50), rng.random(T), (rng.random(T) > 0.9).astype(float)], 1)
    return Panel(values=np.where(mask, base, np.nan), mask=mask, timestamps=ts, edge_index=ei, covariates=cov,
                 covariate_names=["temperature", "wind_speed", "precipitation"], name="tiny", units="km/h")
