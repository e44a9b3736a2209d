"""The one seam from a model's scaled output to the forecast users read (:mod:`stmgt.forecaster`)."""

import re
from pathlib import Path

import numpy as np
import torch

from stmgt.calibration import spread_calibrator
from stmgt.config import model_config
from stmgt.data.windows import PanelData
from stmgt.forecaster import Forecaster, data_info, window_batch
from stmgt.models import build_model

SRC = Path(__file__).resolve().parents[1] / "src" / "stmgt"


def _model(data, name="gru"):
    torch.manual_seed(0)
    return build_model(model_config(name, hidden=8), data_info(data)).eval()


def test_forecast_is_the_scaled_mixture_in_data_units_then_calibrated(tiny_panel):
    data = PanelData(tiny_panel, 12, 6)
    model = _model(data)
    batch = data.batch_at([0, 40])
    loc, scale = data.scaler.target_loc, data.scaler.target_scale
    with torch.no_grad():
        scaled = model(batch, data.edge_index, data.edge_weight)
        raw = Forecaster.for_data(model, data).forecast(batch)
        factors = torch.linspace(0.5, 2.0, 6)
        cal = Forecaster.for_data(model, data, spread_calibrator(factors)).forecast(batch)
    # by hand: every component's mean and std in data units, the weights unchanged
    assert torch.allclose(raw.means, loc + scale * scaled.means, atol=1e-4)
    assert torch.allclose(raw.stds, scale * scaled.stds, rtol=1e-5)
    assert torch.allclose(raw.mean, loc + scale * scaled.mean, atol=1e-4)
    # the calibration widens each step about the unchanged mean by its factor
    assert torch.allclose(cal.mean, raw.mean, atol=1e-4)
    ratio = cal.stddev / raw.stddev  # [B, H, N]
    assert torch.allclose(ratio, factors.view(1, -1, 1).expand_as(ratio), rtol=1e-4)


def test_a_window_batch_from_recent_observations_equals_the_training_batch(tiny_panel):
    data = PanelData(tiny_panel, 12, 6)
    s = 500
    recent = tiny_panel.slice(s, s + 12)  # what `stmgt predict` or the service holds: the history steps only
    b = window_batch(recent, data.scaler, data.cov_scaler, 6, tiny_panel.interval_minutes)
    ref = data.batch_at([s])  # the training path's gather of the same window
    assert torch.equal(b.x_mask, ref.x_mask)
    assert torch.allclose(torch.where(b.x_mask[..., None], b.x, 0), torch.where(ref.x_mask[..., None], ref.x, 0))
    assert torch.allclose(b.tod, ref.tod) and torch.equal(b.dow, ref.dow)  # the horizon's calendar from the clock
    assert torch.allclose(b.weather[:, :12], ref.weather[:, :12])
    assert torch.allclose(b.weather[:, 12:], ref.weather[:, 11:12].expand(-1, 6, -1))  # held at the last step
    assert not b.y_mask.any()  # nothing of the future is known
    model = _model(data)
    with torch.no_grad():
        f = Forecaster.for_data(model, data)
        assert torch.allclose(f.forecast(b).mean, f.forecast(ref).mean, atol=1e-5)


def test_the_scaled_to_data_conversion_is_written_once():
    found = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py") for i, line in
             enumerate(p.read_text().splitlines(), 1) if re.search(r"\.affine\(", line) and "def affine" not in line]
    assert found == ["forecaster.py:" + str(next(i for i, line in enumerate(
        (SRC / "forecaster.py").read_text().splitlines(), 1) if ".affine(" in line))], found


def test_a_bare_model_and_its_forecaster_score_the_same(tiny_panel):
    from stmgt.evaluation.forecast import forecast_split

    data = PanelData(tiny_panel, 12, 6)
    model = _model(data)
    a, _ = forecast_split(model, data, "val", batch_size=32)
    b, _ = forecast_split(Forecaster.for_data(model, data), data, "val", batch_size=32)
    assert np.isclose(a["mae"]["avg"], b["mae"]["avg"]) and np.isclose(a["crps"], b["crps"])
