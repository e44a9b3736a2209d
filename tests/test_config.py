import pytest

from stmgt.config import load_config, make_config
from stmgt.errors import ConfigError


def test_defaults_are_the_design_documents():
    c = make_config()
    m, t = c.model, c.train
    assert (m.hidden, m.blocks, m.heads, m.mixtures, m.dropout, m.drop_edge) == (96, 3, 4, 5, 0.2, 0.05)
    assert (t.batch_size, t.lr, t.weight_decay, t.max_epochs, t.patience, t.grad_clip) == (32, 1e-3, 1e-4, 100, 10, 1.0)
    assert (t.t0, t.t_mult, t.eta_min, t.var_reg, t.entropy_reg) == (10, 2, 1e-6, 0.01, 0.001)
    assert c.data.split == (0.7, 0.1, 0.2) and (c.data.history, c.data.horizon) == (12, 12)


def test_yaml_round_trip_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  hidden: 64\ntrain:\n  lr: 0.01\n")
    c = load_config(p, {"train.seed": 3, "data.history": 24, "model.name": None})
    assert c.model.hidden == 64 and c.train.lr == 0.01 and c.train.seed == 3 and c.data.history == 24
    c.save(tmp_path / "out.yaml")
    assert load_config(tmp_path / "out.yaml") == c


@pytest.mark.parametrize("text, message", [
    ("train:\n  lr: -1\n", "train.lr: must be > 0 (got -1)"),
    ("model:\n  hiden: 64\n", "model.hiden: unknown key"),
    ("model:\n  hidden: 90\n  heads: 4\n", "must be divisible by model.heads"),
    ("model:\n  name: transformerx\n", "model.name"),
    ("data:\n  split: [0.5, 0.5, 0.5]\n", "summing to 1"),
    ("train: [1, 2\n", "not valid YAML"),
    ("- 1\n- 2\n", "top level must be a mapping"),
])
def test_bad_config_gives_one_line_message(tmp_path, text, message):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("key, value, says", [
    ("train.lr", float("inf"), "train.lr: must be a finite number"),
    ("train.lr", float("nan"), "train.lr: must be a finite number"),
    ("train.batch_size", True, "train.batch_size: expected a number, got a boolean"),
    ("model.dropout", False, "model.dropout: expected a number, got a boolean"),
])
def test_non_finite_numbers_and_booleans_for_numbers_are_refused(key, value, says):
    from stmgt.config import load_config
    from stmgt.errors import ConfigError

    with pytest.raises(ConfigError, match=says):
        load_config(None, {key: value})


def test_evaluate_prints_the_horizons_a_short_horizon_run_has():
    from stmgt.cli import _by_horizon

    assert _by_horizon({"3": 1.234, "6": 2.0, "avg": 1.5, "by_step": [1.0]}, 2) == "h3 1.23  h6 2.00  avg 1.50"
