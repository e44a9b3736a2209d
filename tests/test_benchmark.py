"""``stmgt benchmark`` end to end on a tiny synthetic city (statistical models and a tiny GRU)."""

import json

from stmgt.cli import main


def test_benchmark_writes_json_and_mean_std_table(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {synthetic: {nodes: 5, days: 2}}\nmodel: {hidden: 8, heads: 2}\n"
                   "train: {batch_size: 32, num_threads: 1}\n")
    argv = ["benchmark", "--models", "last_value", "historical_average", "gru", "--seeds", "2", "--max-epochs", "1",
            "--config", str(cfg), "--out", str(tmp_path), "--name", "tiny"]
    assert main(argv) == 0
    res = json.loads((tmp_path / "tiny.json").read_text())
    assert set(res["runs"]) == {f"{m}/seed{s}" for m in ("last_value", "historical_average", "gru") for s in (0, 1)}
    md = (tmp_path / "tiny.md").read_text()
    assert "chronological 70/10/20" in md and "checkpoint chosen on validation" in md
    assert "gru (n=2)" in md and "±" in md
    # statistical models do not depend on the seed
    lv = [res["runs"][f"last_value/seed{s}"]["mae"]["avg"] for s in (0, 1)]
    assert lv[0] == lv[1]
    # resumable: a second call trains nothing new and keeps the results
    assert main(argv) == 0
    assert json.loads((tmp_path / "tiny.json").read_text())["runs"] == res["runs"]
