import numpy as np
import pytest

from stmgt.data.panel import Panel
from stmgt.errors import DataError


def _ts(T, minutes=5):
    return np.datetime64("2024-01-01T00:00") + np.arange(T) * np.timedelta64(minutes, "m")


def _panel(**kw):
    T, N = 20, 3
    args = dict(values=np.ones((T, N)), timestamps=_ts(T), edge_index=np.array([[0, 1], [1, 2]]))
    args.update(kw)
    return Panel(**args)


def test_valid_panel_normalises_shapes_and_masks_nan():
    v = np.ones((20, 3))
    v[3, 1] = np.nan
    p = _panel(values=v)
    assert p.values.shape == (20, 3, 1) and p.mask.shape == (20, 3, 1)
    assert not p.mask[3, 1, 0] and p.values[3, 1, 0] == 0
    assert p.node_ids == ["0", "1", "2"] and p.interval_minutes == 5


def test_summary_line():
    v = np.ones((20, 3))
    v[0, 0] = np.nan
    assert _panel(values=v, name="c").summary() == (
        "c: 20 steps x 3 nodes x 1 channels, every 5 min from 2024-01-01 00:00:00; 2 edges; 98.3% observed;"
        " covariates: none")


@pytest.mark.parametrize("kw, message", [
    (dict(values=np.ones((20,))), "values must be"),
    (dict(values=np.ones((20, 3)), mask=np.ones((20, 2), bool)), "mask has shape"),
    (dict(timestamps=_ts(19)), "19 timestamps for 20"),
    (dict(timestamps=_ts(20)[::-1]), "timestamps must increase; step 1"),
    (dict(timestamps=np.concatenate([_ts(10), _ts(10)[-1] + np.timedelta64(10, "m") + (_ts(10) - _ts(10)[0])])),
     "timestamps are irregular; the gap after step 9"),
    (dict(edge_index=np.array([[0, 1], [1, 7]])), "edge 1 (1 -> 7) names a node outside 0..2"),
    (dict(edge_index=np.array([[0.0, np.nan], [1.0, 2.0]])), "edge_index contains NaN"),
    (dict(edge_index=np.array([0, 1, 2])), "edge_index must have shape [2, E]"),
    (dict(edge_weight=np.array([1.0, np.nan])), "edge weight 1 is NaN"),
    (dict(edge_weight=np.array([1.0])), "1 edge weights for 2 edges"),
    (dict(node_ids=["a", "b", "a"]), "node id 'a' appears more than once"),
    (dict(covariates=np.ones((19, 2))), "covariates must be [T=20, W]"),
    (dict(covariates=np.where(np.arange(20)[:, None] == 4, np.nan, 1.0)), "covariate 0 is NaN at step 4"),
    (dict(values=np.ones((20, 3)), mask=np.ones((20, 3), bool) & (np.arange(3) != 9),
          timestamps=np.array(["2024-01-01"] * 20)), "timestamps must increase"),
])
def test_bad_input_gives_one_line_message(kw, message):
    with pytest.raises(DataError) as e:
        _panel(**kw)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_observed_nan_is_refused():
    v = np.ones((20, 3))
    v[2, 0] = np.nan
    with pytest.raises(DataError, match="step 2, node 0.*marked observed"):
        _panel(values=v, mask=np.ones((20, 3), bool))


def test_save_load_round_trip(tmp_path, tiny_panel):
    tiny_panel.save(tmp_path)
    q = Panel.load(tmp_path)
    np.testing.assert_array_equal(q.values, tiny_panel.values)
    np.testing.assert_array_equal(q.mask, tiny_panel.mask)
    np.testing.assert_array_equal(q.timestamps, tiny_panel.timestamps)
    np.testing.assert_array_equal(q.edge_index, tiny_panel.edge_index)
    np.testing.assert_array_equal(q.covariates, tiny_panel.covariates)
    assert q.node_ids == tiny_panel.node_ids and q.units == "km/h"
    with pytest.raises(DataError, match="no panel.npz"):
        Panel.load(tmp_path / "nothing")


def test_calendar_features():
    p = _panel(timestamps=np.datetime64("2024-01-01T06:00") + np.arange(20) * np.timedelta64(5, "m"))
    tod, dow = p.calendar()
    assert np.isclose(tod[0], 0.25) and dow[0] == 0  # 2024-01-01 was a Monday


def test_day_classes_only_use_days_the_training_split_contains():
    from stmgt.data.panel import day_classes

    assert day_classes(range(7)) == (0, 1, 2, 3, 4, 5, 6)
    # Los-loop: training runs Thursday to Monday; Tuesday and Wednesday are weekdays it never saw
    assert day_classes([3, 4, 5, 6, 0]) == (0, 0, 0, 0, 0, 1, 1)
    assert day_classes([0, 1, 2]) == (0,) * 7  # weekdays only: no day information to learn
    assert day_classes([]) == (0,) * 7


def test_los_loop_style_split_gets_weekday_weekend_embeddings(tmp_path):
    """A 7-day panel starting on a Thursday, split 70/10/20: the run records weekday/weekend classes and
    the model's day-of-week embedding has two rows, both trained."""

    from stmgt.config import model_config
    from stmgt.data.synthetic import synthetic_city
    from stmgt.data.windows import PanelData
    from stmgt.forecaster import data_info
    from stmgt.models import build_model

    panel = synthetic_city(num_nodes=4, days=7, seed=0, start="2012-03-01")  # a Thursday
    data = PanelData(panel, 12, 12, (0.7, 0.1, 0.2), 8)
    info = data_info(data)
    assert info.day_classes == (0, 0, 0, 0, 0, 1, 1)
    model = build_model(model_config("stmgt", hidden=8, heads=2, blocks=1), info)
    assert model.embedding.dow.weight.shape == (2, 8)
    batch = data.batch_at(data.starts["train"][:4])
    model(batch, data.edge_index).mean.sum().backward()
    assert model.embedding.dow.weight.grad.abs().sum() > 0
    test = data.batch_at(data.starts["test"][:2])
    assert set(test.dow.unique().tolist()) <= {1, 2}  # Tuesday and Wednesday, mapped to "weekday"
    assert model(test, data.edge_index).mean.isfinite().all()
