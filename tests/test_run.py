import shutil

import pytest

from stmgt.cli import main
from stmgt.errors import RunError
from stmgt.run import Run


def test_run_finds_its_data_from_any_folder_and_says_when_it_is_gone(tmp_path, monkeypatch):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(work)
    assert main(["data", "synth", "--out", "city", "--nodes", "5", "--days", "2", "--seed", "1"]) == 0
    assert main(["train", "--model", "last_value", "--data", "city", "--out", "run"]) == 0  # relative path
    assert Run("run").config().data.source == str((work / "city").resolve())
    monkeypatch.chdir(elsewhere)
    assert Run(work / "run").data().num_nodes == 5
    shutil.rmtree(work / "city")
    with pytest.raises(RunError, match="the data this run was trained on") as e:
        Run(work / "run").data()
    assert "\n" not in str(e.value)
