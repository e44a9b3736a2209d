"""STMamba through the command line: train, predict, and streaming predict give the same forecast."""

import numpy as np
import pandas as pd
import pytest

from stmgt.cli import main

TINY = """
model: {name: stmamba, hidden: 16, heads: 2, blocks: 1, mixtures: 2, d_state: 4}
train: {batch_size: 16, max_epochs: 1, progress: false}
"""


@pytest.mark.slow
def test_train_predict_and_stream(tmp_path):
    assert main(["data", "synth", "--out", str(tmp_path / "city"), "--nodes", "6", "--days", "1.5"]) == 0
    (tmp_path / "c.yaml").write_text(TINY)
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--data", str(tmp_path / "city"),
                 "--history", "24", "--horizon", "6", "--out", str(tmp_path / "run")]) == 0
    from stmgt.data.panel import Panel
    from stmgt.forecaster import TrainedRun
    from stmgt.predict import write_recent_observations

    recent = write_recent_observations(TrainedRun(tmp_path / "run"), Panel.load(tmp_path / "city"), tmp_path / "r.csv")
    assert main(["predict", str(tmp_path / "run"), "--input", str(recent), "--output", str(tmp_path / "a.csv")]) == 0
    assert main(["predict", str(tmp_path / "run"), "--input", str(recent), "--output", str(tmp_path / "b.csv"),
                 "--stream"]) == 0
    a, b = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
    assert len(a) == 6 * 6
    np.testing.assert_allclose(a["mean"], b["mean"], atol=1e-3)
    np.testing.assert_allclose(a["q90"], b["q90"], atol=1e-3)
