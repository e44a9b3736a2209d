import torch

from stmgt.config import model_config
from stmgt.data.windows import PanelData
from stmgt.evaluation.forecast import UNCALIBRATED_KEYS, forecast_split
from stmgt.forecaster import data_info
from stmgt.models import build_model


def test_calibrated_and_uncalibrated_scores_come_from_one_pass(tiny_panel):
    data = PanelData(tiny_panel, 12, 6)
    torch.manual_seed(0)
    model = build_model(model_config("gru", hidden=8), data_info(data))
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    plain, _ = forecast_split(model, data, "val", batch_size=16)
    n_batches = len(calls)

    def widen(dist, batch):
        return dist.scale_spread(2.0)

    cal, fc = forecast_split(model, data, "val", calibration=widen, keep=True, batch_size=16)
    assert len(calls) == 2 * n_batches  # one forward per batch, not two
    assert set(cal["uncalibrated"]) == set(UNCALIBRATED_KEYS)
    for k in UNCALIBRATED_KEYS:
        assert abs(cal["uncalibrated"][k] - plain[k]) <= 1e-6 * max(1.0, abs(plain[k]))
    assert abs(cal["mae_of_mean"]["avg"] - plain["mae_of_mean"]["avg"]) < 1e-6  # the mean is unchanged by the spread
    assert cal["width80"] > 1.9 * plain["width80"] and cal["coverage80"] >= plain["coverage80"]
    # the kept bands are the calibrated ones
    assert abs((fc.hi80 - fc.lo80).mean() - cal["width80"]) < 0.05 * cal["width80"]
