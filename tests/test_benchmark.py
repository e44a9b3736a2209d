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


def test_benchmark_leaves_a_run_another_process_holds_and_merges_results(tmp_path):
    """Parallel ``stmgt benchmark`` processes share one results file: a run whose folder another
    process has claimed is skipped, and runs written meanwhile by others are kept."""
    from stmgt.benchmark import _claim

    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {synthetic: {nodes: 4, days: 2}}\ntrain: {num_threads: 1}\n")
    argv = ["benchmark", "--models", "last_value", "--seeds", "2", "--config", str(cfg), "--out", str(tmp_path),
            "--name", "par"]
    (tmp_path / "par.json").write_text(json.dumps({"runs": {"other/seed0": {"mae": {"avg": 1.0}}}}))
    held = _claim(tmp_path / "runs" / "par" / "last_value" / "seed1")  # as if another process trains it
    assert held is not None
    assert main(argv) == 0
    assert set(json.loads((tmp_path / "par.json").read_text())["runs"]) == {"other/seed0", "last_value/seed0"}
    held.close()  # that process ends (or crashes): the next call takes the run up
    assert main(argv) == 0
    assert set(json.loads((tmp_path / "par.json").read_text())["runs"]) == {
        "other/seed0", "last_value/seed0", "last_value/seed1"}
    # the table holds models with different numbers of seeds: one command per group, no "± 0.00" for one run
    md = (tmp_path / "par.md").read_text()
    assert "--models other --seeds 1" in md and "--models last_value --seeds 2" in md
    other = next(line for line in md.splitlines() if line.startswith("| other (n=1) |"))
    assert "1.00" in other and "±" not in other
