import numpy as np
import pytest
import torch

from stmgt.data.windows import PanelData, Scaler, chronological_splits, window_starts
from stmgt.errors import DataError


def test_chronological_splits_cover_the_series_in_order():
    b = chronological_splits(1000)
    assert b == {"train": (0, 700), "val": (700, 800), "test": (800, 1000)}
    with pytest.raises(DataError, match="summing to 1"):
        chronological_splits(100, (0.5, 0.2, 0.2))


def test_windows_stay_inside_their_split():
    s = window_starts(700, 800, 12, 12)
    assert s[0] == 700 and s[-1] + 24 == 800
    with pytest.raises(DataError, match="the val split has 20 steps but one window needs 24"):
        window_starts(0, 20, 12, 12, "val")


def test_scaler_uses_training_observations_only(tiny_panel):
    data = PanelData(tiny_panel, 12, 12)
    lo, hi = data.bounds["train"]
    v, m = tiny_panel.values[lo:hi, :, 0], tiny_panel.mask[lo:hi, :, 0]
    assert np.isclose(data.scaler.mean[0], v[m].mean(), rtol=1e-5)
    assert np.isclose(data.scaler.std[0], v[m].std(), rtol=1e-4)
    # the test part does not influence the scaler
    other = tiny_panel.slice(0, tiny_panel.num_steps)
    other.values[hi + 200:] += 1000
    assert np.isclose(PanelData(other, 12, 12).scaler.mean[0], data.scaler.mean[0])


def test_batches_are_views_of_the_panel(tiny_panel):
    data = PanelData(tiny_panel, history=12, horizon=6, batch_size=4)
    batch = next(iter(data.loader("test", shuffle=False)))
    s = int(data.starts["test"][0])
    assert batch.x.shape == (4, 12, 5, 1) and batch.y.shape == (4, 6, 5)
    assert batch.tod.shape == (4, 18) and batch.weather.shape == (4, 18, 3)
    expect_y = np.where(tiny_panel.mask[s + 12:s + 18, :, 0], tiny_panel.values[s + 12:s + 18, :, 0], 0)
    np.testing.assert_allclose(batch.y[0].numpy(), expect_y)
    scaled = data.scaler.transform(tiny_panel.values[s:s + 12])
    np.testing.assert_allclose(batch.x[0].numpy(), np.where(tiny_panel.mask[s:s + 12], scaled, 0), rtol=1e-6)
    np.testing.assert_array_equal(batch.y_mask[0].numpy(), tiny_panel.mask[s + 12:s + 18, :, 0])
    # the dataset holds only start positions, not windows
    assert data.loader("train").dataset.starts.dtype == np.int64
    assert torch.equal(batch.start, torch.as_tensor(data.starts["test"][:4]))


def test_history_longer_than_the_data(tiny_panel):
    with pytest.raises(DataError, match="longer than the data"):
        PanelData(tiny_panel, history=10_000, horizon=12)
    with pytest.raises(DataError, match="the val split"):
        PanelData(tiny_panel, history=200, horizon=12)


def test_scaler_needs_observations():
    with pytest.raises(DataError, match="no observed value"):
        Scaler.fit(np.zeros((3, 2, 1)), np.zeros((3, 2, 1), bool))
