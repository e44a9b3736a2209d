"""Short-budget probes of STMGT variants on Los-loop, scored on the validation split only.

A converged run of the design architecture costs hours on a CPU, so candidate changes are first
compared on a small STMGT (hidden 32, 1 block, 2 heads, node embedding on) trained for 12 epochs
(``--epochs``; one cosine cycle, ``t0`` = epochs, no early stop), same seed, one thread each. The table gives the
validation MAE (the median forecast) per horizon step of the checkpoint chosen on validation.
Probes rank directions; they are not results (nothing here touches the test split).

    python benchmarks/los_loop_probes.py run NAME [key=value ...]   # one probe, appended to the JSON
    python benchmarks/los_loop_probes.py table                      # rebuild the markdown

e.g. ``python benchmarks/los_loop_probes.py run window model.window_embedding=true``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

RESULTS = Path(__file__).parent / "results"
JSON = RESULTS / "los_loop_probes.json"
BASE = {"model.hidden": 32, "model.heads": 2, "model.blocks": 1, "model.node_embedding": True,
        "train.max_epochs": 12, "train.t0": 12, "train.patience": 100, "train.num_threads": 1,
        "train.progress": False}


def run_probe(name: str, overrides: dict, data: str, out: Path, epochs: int = 12) -> dict:
    import torch

    from stmgt.config import load_config
    from stmgt.evaluation.metrics import MetricAccumulator
    from stmgt.training.fit import fit

    cfg = load_config(None, {"data.source": data, **BASE, "train.max_epochs": epochs, "train.t0": epochs, **overrides})
    t = time.perf_counter()
    run = fit(cfg, out / name)
    model, d = run.model(), run.data()
    acc = MetricAccumulator(cfg.data.horizon)
    with torch.no_grad():
        for b in d.loader("val", shuffle=False):
            acc.update(model(b, d.edge_index).affine(d.scaler.target_loc, d.scaler.target_scale), b.y, b.y_mask)
    r = acc.compute()
    return {"name": name, "overrides": overrides, "val_mae_by_step": [round(x, 3) for x in r["mae"]["by_step"]],
            "val_mae": round(r["mae"]["avg"], 3), "best_epoch": run.training()["best_epoch"], "epochs": epochs,
            "minutes": round((time.perf_counter() - t) / 60, 1)}


def table(rows: list[dict]) -> str:
    md = ["# STMGT probes on Los-loop (validation only)", "",
          "Small STMGT (hidden 32, 1 block, 2 heads, node embedding), E epochs (one cosine cycle of E epochs),"
          " seed 0, one thread; validation MAE in mph of the median forecast, checkpoint chosen on validation."
          " Probes rank directions before a converged run; the test split is not touched.", "",
          "| probe | changed | E | step 1 | step 3 | step 6 | step 12 | avg | best epoch | minutes |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["val_mae_by_step"]
        changed = ", ".join(f"`{k}: {v}`" for k, v in r["overrides"].items()) or "—"
        md.append(f"| {r['name']} | {changed} | {r.get('epochs', 12)}"
                  f" | {s[0]:.3f} | {s[2]:.3f} | {s[5]:.3f} | {s[11]:.3f} |"
                  f" **{r['val_mae']:.3f}** | {r['best_epoch']} | {r['minutes']} |")
    md += ["", "`stid_ref` is the harness's STID under the same budget and shared settings (lr 1e-3, dropout 0.2,"
           " 32 features per horizon step to the mixture head). Minutes are wall-clock on a 2-core machine that"
           " two or three such processes shared: compare them within one session only.",
           "", "Regenerate a row: `python benchmarks/los_loop_probes.py run NAME key=value ...`; the table:"
           " `python benchmarks/los_loop_probes.py table`."]
    return "\n".join(md) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("name")
    r.add_argument("overrides", nargs="*", help="key=value (YAML values)")
    r.add_argument("--data", default="../shared/data/los_loop")
    r.add_argument("--out", type=Path, default=Path("runs/probes"))
    r.add_argument("--epochs", type=int, default=12, help="epochs, one cosine cycle (default 12)")
    sub.add_parser("table")
    a = ap.parse_args()
    rows = json.loads(JSON.read_text()) if JSON.exists() else []
    if a.cmd == "run":
        over = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in a.overrides)}
        row = run_probe(a.name, over, a.data, a.out, a.epochs)
        rows = [x for x in rows if x["name"] != a.name] + [row]
        JSON.write_text(json.dumps(rows, indent=1))
        print(json.dumps(row))
    (RESULTS / "los_loop_probes.md").write_text(table(rows))


if __name__ == "__main__":
    main()
