"""Fixtures for the service tests: one tiny synthetic city and tiny trained runs, made once per session."""

import pytest

TINY_STMGT = """
model: {name: stmgt, hidden: 16, blocks: 1, heads: 2, mixtures: 3}
train: {batch_size: 16, max_epochs: 1, progress: false}
"""


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """``{"city": folder, "gru": run (calibrated), "stmgt": run}``: 8 nodes, 3 days, one epoch each.

    ``STMGT_SERVE_TEST_RUNS=DIR`` reuses a folder made by an earlier session (city/, gru/, stmgt/)
    to iterate on the service without retraining.
    """
    import os
    from pathlib import Path

    from stmgt.cli import main

    reuse = os.environ.get("STMGT_SERVE_TEST_RUNS")
    if reuse and all((Path(reuse) / f).is_dir() for f in ("city", "gru", "stmgt")):
        d = Path(reuse)
        return {"dir": d, "city": d / "city", "gru": d / "gru", "stmgt": d / "stmgt"}
    d = tmp_path_factory.mktemp("serve")
    assert main(["data", "synth", "--out", str(d / "city"), "--nodes", "8", "--days", "3"]) == 0
    assert main(["train", "--data", str(d / "city"), "--out", str(d / "gru"), "--model", "gru",
                 "--max-epochs", "1"]) == 0
    assert main(["calibrate", str(d / "gru")]) == 0
    (d / "tiny.yaml").write_text(TINY_STMGT)
    assert main(["train", "--config", str(d / "tiny.yaml"), "--data", str(d / "city"), "--out",
                 str(d / "stmgt")]) == 0
    return {"dir": d, "city": d / "city", "gru": d / "gru", "stmgt": d / "stmgt"}


@pytest.fixture(scope="session")
def panel(served):
    """The synthetic city the runs were trained on."""
    from stmgt.data.panel import Panel

    return Panel.load(served["city"])


@pytest.fixture(scope="session")
def rows(panel):
    """``rows(lo, hi)``: API rows of steps ``lo:hi`` of the city (Python slice semantics)."""
    from stmgt.serve.replay import step_rows

    def make(lo, hi=None):
        return [r for t in range(panel.num_steps)[lo:hi] for r in step_rows(panel, t)]

    return make
