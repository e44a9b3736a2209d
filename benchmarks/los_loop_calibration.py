"""Calibration on Los-loop: a trained STMGT run (by default the converged table's seed 0), `stmgt calibrate`,
then the test split evaluated once with and without the stored calibration (CRPS, NLL, coverage, width).

    python benchmarks/los_loop_calibration.py --run benchmarks/results/runs/los_loop_converged/stmgt/seed0

The run is trained by ``stmgt benchmark`` (the command in ``results/los_loop_converged.md``).

Writes ``results/los_loop_calibration.json`` and ``.md`` and copies the run's report figures to
``results/los_loop_figures/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

HERE = Path(__file__).parent


def main() -> None:
    from stmgt.evaluation.forecast import UNCALIBRATED_KEYS
    from stmgt.evaluation.run_evaluation import evaluate_run
    from stmgt.forecaster import TrainedRun, calibrate_run

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=str(HERE / "results" / "runs" / "los_loop_converged" / "stmgt" / "seed0"))
    ap.add_argument("--out", default=str(HERE / "results"))
    a = ap.parse_args()
    run = Path(os.path.relpath(a.run))  # as the tables show it
    if not (run / "model.safetensors").exists():
        raise SystemExit(f"{run}: no trained run; train it with the command in results/los_loop_converged.md")
    cfg = TrainedRun(run).config()
    a.seed = cfg.train.seed
    cal = calibrate_run(run)
    res = evaluate_run(run, plots=True)
    before, after = res["uncalibrated"], {k: res[k] for k in UNCALIBRATED_KEYS}
    out = Path(a.out)
    summary = {"run": str(run), "seed": a.seed, "factors": cal["factors"], "method": cal["method"],
               "mae": res["mae"], "before": before, "after": after}
    (out / "los_loop_calibration.json").write_text(json.dumps(summary, indent=1))
    rows = [("CRPS (mph)", "crps", "{:.4f}", 1), ("CRPS / sum abs y", "crps_normalised", "{:.5f}", 1),
            ("NLL", "nll", "{:.4f}", 1), ("coverage 80%", "coverage80", "{:.1f}%", 100),
            ("coverage 90%", "coverage90", "{:.1f}%", 100), ("width 80% (mph)", "width80", "{:.2f}", 1),
            ("width 90% (mph)", "width90", "{:.2f}", 1)]
    md = ["# Calibration on Los-loop (STMGT)", "",
          f"STMGT seed {a.seed}, run `{run}` (its settings in the run's `config.yaml`; 70/10/20 chronological,"
          " 12 -> 12, checkpoint chosen on validation MAE). `stmgt calibrate` fits one spread factor per horizon"
          " step on the validation split (so that the 80% and 90% intervals cover 80% and 90% there); the test split is"
          " evaluated once, before and after. Test MAE avg "
          f"{res['mae']['avg']:.3f} (h3 {res['mae']['3']:.3f}, h6 {res['mae']['6']:.3f}, h12 {res['mae']['12']:.3f});"
          " calibration keeps the mean.", "",
          "Spread factors by step: " + ", ".join(f"{f:.2f}" for f in cal["factors"]), "",
          "| test split | before | after |", "|---|---|---|"]
    for label, k, fmt, scale in rows:
        md.append(f"| {label} | {fmt.format(before[k] * scale)} | {fmt.format(after[k] * scale)} |")
    md += ["", f"Regenerate: `python benchmarks/los_loop_calibration.py --run {run}`.",
           "Figures of this run (forecast bands, error by horizon and time of day, per-sensor error map,"
           " gate, PIT): `los_loop_figures/`."]
    (out / "los_loop_calibration.md").write_text("\n".join(md) + "\n")
    figs = out / "los_loop_figures"
    figs.mkdir(exist_ok=True)
    for f in (run / "figures").glob("*.png"):
        shutil.copy(f, figs / f.name)
    print("\n".join(md))


if __name__ == "__main__":
    main()
