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


def _one_line_error(tmp_path, text: str, message: str):
    """The config ``text`` refused by ``load_config`` with ``message`` on one line; the file's path."""
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert message in str(e.value) and "\n" not in str(e.value)
    return p


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
    _one_line_error(tmp_path, text, message)


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


@pytest.mark.parametrize("text, message", [
    ("model: [1, 2]\n", "bad.yaml: model: must be a section of `key: value` lines, not a list ([1, 2])"),
    ("data: 3\n", "bad.yaml: data: must be a section of `key: value` lines, not a number (3)"),
    ("data:\n  synthetic: [8]\n", "bad.yaml: data.synthetic: must be a section of `key: value` lines, not a list"),
    ("42\n", "bad.yaml: the top level must be a mapping with data, model and train sections, not a number"),
    ("just words\n", "the top level must be a mapping with data, model and train sections, not a string"),
    ("- 1\n- 2\n", "the top level must be a mapping with data, model and train sections, not a list"),
    ("trian:\n  lr: 0.01\n", "bad.yaml: trian: unknown section (the sections are data, model, train)"),
    ("model:\n  hiden: 64\n", "model.hiden: unknown key (did you mean hidden?)"),
    ("train: [1, 2\nmodel:\n  hidden: 8\n", "bad.yaml: not valid YAML at line 2, column 6: expected ',' or ']'"),
    ("model:\n\thidden: 8\n", "bad.yaml: not valid YAML at line 2, column 1: found character '\\t'"),
    ("model: {hidden: 16\n", "bad.yaml: not valid YAML at line 2 (the end of the file): expected ',' or '}'"),
    ("data:\n  horizon: 0\n", "bad.yaml: data.horizon: must be >= 1 (got 0)"),
    ("model:\n  dropout: 1\n", "bad.yaml: model.dropout: must be < 1 (got 1)"),
])
def test_malformed_sections_and_yaml_give_one_line_messages(tmp_path, text, message):
    p = _one_line_error(tmp_path, text, message)
    # the same with command-line overrides on top (they used to crash on a list or scalar section)
    with pytest.raises(ConfigError) as e:
        load_config(p, {"model.name": "gru", "data.synthetic.nodes": 8}, {"model.name": "--model"})
    assert "\n" not in str(e.value) and str(p) in str(e.value)


def test_non_utf8_config_names_the_line(tmp_path):
    p = tmp_path / "latin1.yaml"
    p.write_bytes("model:\n  name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml: not UTF-8 text \(byte 0xe9 at line 2\); save it as UTF-8"):
        load_config(p)


def test_config_that_is_a_folder(tmp_path):
    with pytest.raises(ConfigError, match="is a folder; give the config file"):
        load_config(tmp_path)


@pytest.mark.parametrize("text", ["", "data:\n", "data:\nmodel:\ntrain:\n", "data:\n  synthetic:\n"])
def test_empty_file_and_empty_sections_are_the_defaults(tmp_path, text):
    p = tmp_path / "empty.yaml"
    p.write_text(text)
    assert load_config(p) == make_config()
    c = load_config(p, {"data.horizon": 3, "data.synthetic.nodes": 8, "model.name": "gru"})
    assert (c.data.horizon, c.data.synthetic.nodes, c.model.name) == (3, 8, "gru")


OPTIONS = {"data.horizon": "--horizon", "train.batch_size": "--batch-size", "data.synthetic.nodes": "--nodes"}


def test_a_bad_command_line_value_is_blamed_on_the_option_not_the_file(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text("data:\n  horizon: 6\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, {"data.horizon": 0}, OPTIONS)
    assert str(e.value) == "--horizon: must be >= 1 (got 0)"
    with pytest.raises(ConfigError) as e:
        load_config(None, {"data.synthetic.nodes": 1}, OPTIONS)
    assert str(e.value) == "--nodes: must be >= 2 (got 1)"
    # a value from the file is the file's, even when other options were given
    p.write_text("data:\n  horizon: 0\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, {"train.batch_size": 4, "data.horizon": None}, OPTIONS)
    assert str(e.value) == f"{p}: data.horizon: must be >= 1 (got 0)"
    # both at once: each named where it came from
    with pytest.raises(ConfigError) as e:
        load_config(p, {"train.batch_size": 0}, OPTIONS)
    assert str(e.value) == f"--batch-size: must be >= 1 (got 0); {p}: data.horizon: must be >= 1 (got 0)"
    # without options (the Python API) the dotted key is named
    with pytest.raises(ConfigError, match=r"^config: data.horizon: must be >= 1 \(got 0\)$"):
        load_config(None, {"data.horizon": 0})


@pytest.mark.parametrize("text, says", [
    ("train:\n  batch_size: true\n", "train.batch_size: expected a number, got a boolean"),
    ("train:\n  limit_train_batches: true\n", "train.limit_train_batches: expected a number, got a boolean"),
    ("train:\n  max_minutes: false\n", "train.max_minutes: expected a number, got a boolean"),
    ("train:\n  betas: [0.9, true]\n", "train.betas: expected numbers, got a boolean"),
    ("data:\n  split: [0.7, true, 0.2]\n", "data.split: expected numbers, got a boolean"),
    ("data:\n  synthetic:\n    nodes: true\n", "data.synthetic.nodes: expected a number, got a boolean"),
    ("model:\n  max_std: true\n", "model.max_std: expected a number, got a boolean"),
    ("model:\n  checkpoint_chunk: true\n", "model.checkpoint_chunk: expected a number, got a boolean"),
    ("train:\n  lr: .inf\n", "train.lr: must be a finite number (got inf)"),
    ("train:\n  lr: .nan\n", "train.lr: must be a finite number (got nan)"),
    ("model:\n  min_std: -.inf\n", "model.min_std: must be a finite number (got -inf)"),
])
def test_yaml_booleans_and_non_finite_numbers_are_refused_everywhere(tmp_path, text, says):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value) == f"{p}: {says}"


def test_every_number_field_refuses_booleans():
    """The rule covers every int/float field of every section, nested ones included (and overrides)."""
    from stmgt.config import Config, _Section
    from stmgt.registry import config_class, model_names

    def numbers(cls, prefix=""):
        for name, f in cls.model_fields.items():
            ann = f.annotation
            if isinstance(ann, type) and issubclass(ann, _Section):
                yield from numbers(ann, f"{prefix}{name}.")
            elif ("int" in str(ann) or "float" in str(ann)) and "bool" not in str(ann):
                yield f"{prefix}{name}"

    keys = list(numbers(Config))
    assert {"train.batch_size", "data.synthetic.nodes", "train.betas", "data.split"} <= set(keys)
    for key in keys:
        with pytest.raises(ConfigError, match=f"{key}: expected a number"):
            load_config(None, {key: True})
    for name in model_names():  # each model's own settings
        model_keys = list(numbers(config_class(name), "model."))
        assert "model.min_std" in model_keys
        for key in model_keys:
            with pytest.raises(ConfigError, match=f"{key}: expected a number"):
                load_config(None, {"model.name": name, key: True})


def test_numpy_values_read_as_plain_numbers_in_messages():
    import numpy as np

    from stmgt.data.synthetic import synthetic_city
    from stmgt.errors import DataError

    with pytest.raises(ConfigError) as e:
        load_config(None, {"train.batch_size": np.int64(0)})
    assert str(e.value) == "config: train.batch_size: must be >= 1 (got 0)"
    with pytest.raises(ConfigError) as e:
        synthetic_city(num_nodes=np.int64(1))
    assert "np." not in str(e.value) and "got 1" in str(e.value)
    msg = str(DataError(f"node {np.str_('a(1)')!r} at {np.float64(2.5)!r}, {np.int64(3)!r}, {np.True_!r}"))
    assert msg == "node 'a(1)' at 2.5, 3, True"
