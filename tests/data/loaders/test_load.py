"""``load``: format detection, ``format=`` forcing, option checking, and the unknown-folder message."""

from __future__ import annotations

import numpy as np
import pytest

from stmgt.data.loaders import FORMATS, LOADERS, detect_format, load
from stmgt.data.panel import Panel
from stmgt.errors import ConfigError, DataError


def test_formats_registry():
    assert set(FORMATS) == set(LOADERS) == {
        "panel", "tgcn", "metr", "pems", "hcmc", "i94", "city", "montevideo"
    }


def test_panel_npz_round_trip(tmp_path):
    ts = np.datetime64("2024-01-01") + np.arange(4) * np.timedelta64(5, "m")
    p = Panel(values=np.arange(12.0).reshape(4, 3), timestamps=ts, edge_index=[[0, 1], [1, 2]], name="toy")
    p.save(tmp_path)
    assert detect_format(tmp_path) == detect_format(tmp_path / "panel.npz") == "panel"
    q = load(tmp_path / "panel.npz")
    assert q.name == "toy" and np.array_equal(q.values, p.values)
    assert np.array_equal(q.edge_index, p.edge_index)


def test_detect_single_files(tmp_path):
    (tmp_path / "observations.csv").write_text("timestamp,node_id,value\n")
    (tmp_path / "abc_speed.csv").write_text("a\n1\n")
    assert detect_format(tmp_path / "observations.csv") == "city"
    assert detect_format(tmp_path / "abc_speed.csv") == "tgcn"
    assert detect_format(tmp_path) == "city"  # observations win over a stray T-GCN file


def test_unknown_folder_lists_formats(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError) as e:
        load(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "found: notes.txt" in msg
    for name in FORMATS:
        assert f"{name}: " in msg
    with pytest.raises(DataError, match="no such file or folder"):
        load(tmp_path / "nope")
    with pytest.raises(DataError, match="unknown file type"):
        load(tmp_path / "notes.txt")


def test_forced_format_and_options(tmp_path):
    with pytest.raises(ConfigError, match="format='csv' is unknown; choose one of panel, city"):
        load(tmp_path, format="csv")
    with pytest.raises(DataError, match="no observations.csv"):
        load(tmp_path, format="city")
    with pytest.raises(ConfigError, match="the city loader has no option 'speed'; its options are: interval"):
        load(tmp_path, format="city", speed=3)
