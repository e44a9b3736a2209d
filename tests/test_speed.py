"""``stmgt speed`` for every registered model: trained models report training and inference figures,
the statistical baselines inference figures only; a model-specific option on another model is a
one-line error."""

from __future__ import annotations

import functools
import json
import math

import pytest
import torch

import stmgt.speed
from stmgt.cli import main
from stmgt.config import model_config, settings_of
from stmgt.errors import ConfigError
from stmgt.models import DataInfo, build_model
from stmgt.registry import model_class, model_names
from stmgt.speed import TRAIN_KEYS, bench

TINY = {"nodes": 8, "batch": 2, "history": 12, "horizon": 3, "steps": 1}
TINY_ARGS = ["--nodes", "8", "--batch", "2", "--history", "12", "--horizon", "3", "--steps", "1"]
CONSUMED = ("model", "history", "train_step_ms", "train_samples_per_s", "infer_samples_per_s", "peak_memory_mb",
            "train_gflop_per_sample")
"""The keys ``benchmarks/speed.py`` and ``benchmarks/stmamba_scaling.py`` read."""
INFER_KEYS = ("infer_samples_per_s", "infer_latency_ms_b1", "peak_memory_mb", "peak_gflops")
WITHOUT_CHECKPOINT = [n for n in model_names() if n not in settings_of("checkpoint")]


@pytest.fixture(autouse=True)
def small_peak(monkeypatch):
    """A 256-sized matmul for the machine's peak (the 2048 one takes seconds on one thread)."""
    monkeypatch.setattr(stmgt.speed, "matmul_peak_gflops",
                        functools.partial(stmgt.speed.matmul_peak_gflops, n=256, repeats=2))


def _positive(res: dict, keys) -> None:
    for k in keys:
        assert isinstance(res[k], (int, float)) and math.isfinite(res[k]) and res[k] > 0, (k, res[k])


def _check(res: dict, name: str) -> None:
    assert set(CONSUMED) <= set(res) and set(TRAIN_KEYS) <= set(res)
    assert res["model"] == name and res["nodes"] == 8 and res["batch"] == 2
    _positive(res, INFER_KEYS)
    if model_class(name).trainable:
        assert res["trainable"] is True
        _positive(res, (*TRAIN_KEYS, "params"))
    else:
        assert res["trainable"] is False
        assert all(res[k] is None for k in TRAIN_KEYS)


@pytest.mark.parametrize("name", model_names())
def test_speed_reports_every_registered_model(name):
    _check(bench(name, **TINY), name)


@pytest.mark.parametrize("name", ["gru", "last_value"])
def test_speed_command_prints_json_for_a_trained_and_a_fitted_model(name, capsys):
    assert main(["speed", "--model", name, *TINY_ARGS, "--precision", "both", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    results = [json.loads(line) for line in lines]
    assert [r["precision"] for r in results] == ["32", "bf16-mixed"]
    for r in results:
        _check(r, name)


def test_speed_text_says_not_trained_for_a_fitted_model(capsys):
    assert main(["speed", "--model", "historical_average", *TINY_ARGS]) == 0
    out = dict(line.split(": ", 1) for line in capsys.readouterr().out.strip().splitlines())
    assert out["trainable"] == "False"
    assert all(out[k] == "not trained" for k in TRAIN_KEYS)
    assert float(out["infer_samples_per_s"]) > 0


@pytest.mark.parametrize("name", [n for n in model_names() if not model_class(n).trainable])
def test_a_fitted_model_is_fitted_on_random_data_and_forecasts_finite_values(name):
    from stmgt.data.synthetic import synthetic_graph
    from stmgt.testing import make_batch

    model = build_model(model_config(name), DataInfo(num_nodes=8, weather_dim=3, history=12, horizon=3))
    graph = synthetic_graph(8, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stmgt.speed._fit_on_random(model, graph, history=12, horizon=3)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # fitted
    dist = model.eval()(make_batch(B=2, T=12, H=3, N=8), torch.from_numpy(graph.edge_index))
    assert dist.mean.shape == (2, 3, 8) and torch.isfinite(dist.mean).all() and torch.isfinite(dist.stddev).all()


def test_checkpoint_is_applied_where_the_model_has_it():
    assert "stmgt" in settings_of("checkpoint")
    res = bench("stmgt", checkpoint=True, cfg=model_config("stmgt", hidden=16, heads=2, blocks=1), **TINY)
    assert res["checkpoint"] is True
    _positive(res, TRAIN_KEYS)


@pytest.mark.parametrize("name", WITHOUT_CHECKPOINT)
def test_checkpoint_on_a_model_without_it_is_a_one_line_error(name, capsys):
    assert main(["speed", "--model", name, *TINY_ARGS, "--checkpoint"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("stmgt: error: --checkpoint:") and f"the {name} model" in err
    with pytest.raises(ConfigError, match=f"--checkpoint: the {name} model has no checkpoint setting"):
        bench(name, checkpoint=True, **TINY)
