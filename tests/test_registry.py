"""The model registry: one list of names, each model's own settings, one-line errors for another model's."""

from __future__ import annotations

import typing

import pytest
import torch
import yaml

from stmgt.cli import main
from stmgt.config import ModelConfig, load_config, make_config, model_config
from stmgt.errors import ConfigError
from stmgt.models import DataInfo, ForecastModel, build_model
from stmgt.registry import MODELS, config_class, model_class, model_names
from stmgt.testing import make_batch, ring_graph


@pytest.mark.parametrize("name", model_names())
def test_every_registered_model_declares_its_settings_and_builds_from_them(name):
    cls = model_class(name)
    assert issubclass(cls, ForecastModel) and cls.name == name and cls.paper
    settings = cls.Config
    assert issubclass(settings, ModelConfig) and settings is not ModelConfig
    assert typing.get_args(settings.model_fields["name"].annotation) == (name,)  # Literal[name]
    assert settings.__doc__ and all(f.description for k, f in settings.model_fields.items() if k != "name")
    cfg = model_config(name)
    assert type(cfg) is settings and cfg == load_config(None, {"model.name": name}).model
    info = DataInfo(num_nodes=4, history=12, horizon=3, steps_per_day=288)
    model = build_model(cfg, info)
    assert type(model) is cls
    dist = model.eval()(make_batch(B=2, T=12, H=3, N=4, W=0), ring_graph(4))
    assert dist.mean.shape == (2, 3, 4) and torch.isfinite(dist.mean).all()


def test_a_setting_of_another_model_is_refused_naming_its_owners(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  name: stid\n  d_state: 8\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value) == (f"{p}: model.d_state: not a setting of stid (it is a setting of stmamba;"
                            " `stmgt models stid` lists stid's)")
    p.write_text("model:\n  heads: 2\n")
    with pytest.raises(ConfigError, match="model.heads: not a setting of gru .it is a setting of stmgt, stmamba"):
        load_config(p, {"model.name": "gru"}, {"model.name": "--model"})
    with pytest.raises(ConfigError, match=r"model.hiden: unknown key \(did you mean hidden\?\)"):
        make_config({"model": {"name": "gwnet", "hiden": 3}})
    with pytest.raises(ConfigError, match="--model: must be 'stmgt', 'stmamba'"):
        load_config(None, {"model.name": "nope"}, {"model.name": "--model"})


def test_settings_reach_the_model():
    """A model-specific setting changes the built model (GRU layers, STID embedding, Graph WaveNet blocks)."""
    info = DataInfo(num_nodes=3, history=12, horizon=2)
    assert build_model(model_config("gru", layers=3, hidden=8), info).gru.num_layers == 3
    assert build_model(model_config("stid", embed_dim=7, hidden=8), info).series_emb.out_features == 7
    gw = build_model(model_config("gwnet", blocks=5, layers=1, hidden=8), info)
    assert gw.dilations == [1] * 5 and gw.receptive_field == 6


def test_a_config_saved_before_per_model_settings_still_loads(tmp_path):
    """Run folders written when every model shared one flat model section hold every model's keys;
    they load with the keys their model read (Graph WaveNet's `blocks` then was STMGT's, unread)."""
    flat = {"name": "gwnet", "hidden": 16, "blocks": 3, "heads": 4, "mixtures": 5, "dropout": 0.3, "drop_edge": 0.05,
            "min_std": 0.01, "max_std": 10.0, "spatial": True, "d_state": 16, "scan": "auto", "checkpoint": False}
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump({"model": flat}))
    with pytest.raises(ConfigError, match="not a setting of gwnet"):
        load_config(p)
    cfg = load_config(p, saved_run=True).model
    assert type(cfg) is config_class("gwnet") and cfg.hidden == 16 and cfg.dropout == 0.3 and cfg.blocks is None
    flat["name"] = "stmamba"
    p.write_text(yaml.safe_dump({"model": flat}))
    cfg = load_config(p, saved_run=True).model
    assert cfg.blocks == 3 and cfg.d_state == 16 and not hasattr(cfg, "checkpoint")


def test_stmgt_models_lists_the_registry_and_each_models_settings(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in MODELS)
    assert main(["models", "gwnet"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[2:]}
    assert rows["residual_channels"] == "32" and rows["blocks"] == "null" and rows["edge_weights"] == "false"
    assert "d_state" not in rows and "name" not in rows
    assert main(["models", "nope"]) == 2
    assert "no model 'nope'" in capsys.readouterr().err


def test_models_yaml_is_a_model_section_that_loads_back(tmp_path, capsys):
    assert main(["models", "stid", "--yaml"]) == 0
    p = tmp_path / "c.yaml"
    p.write_text(capsys.readouterr().out)
    assert load_config(p).model == model_config("stid")
