"""Schedule sweeps of STMGT on Los-loop (validation only): collect runs, and the table.

    python benchmarks/schedules.py collect RUNS_DIR OUT.json   # (called by benchmarks/schedules.sh)
    python benchmarks/schedules.py                            # benchmarks/results/gpu_schedules.md

The table reads every ``benchmarks/results/gpu_schedules/*.json`` (one per sweep, written by
``benchmarks/schedules.sh``) with the sweep's configs in ``benchmarks/configs/schedules/<sweep>/``.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).parent
RESULTS = HERE / "results" / "gpu_schedules"
CONFIGS = HERE / "configs" / "schedules"


def collect(runs: Path, out: str) -> None:
    res = {}
    for d in sorted(runs.iterdir()):
        t, h = d / "training.json", d / "history.csv"
        res[d.name] = {"complete": t.is_file(),
                       "training": json.loads(t.read_text()) if t.is_file() else None,
                       "history": list(csv.DictReader(h.open())) if h.is_file() else []}
    Path(out).write_text(json.dumps(res, indent=1))


def _setting(cfg: dict) -> str:
    t, m = cfg.get("train", {}), cfg.get("model", {})
    if t.get("schedule", "warm_restarts") == "one_cycle":
        s = f"one cycle of {t.get('cycle_epochs')} epochs (1 warm-up), peak lr {t['lr']:g}"
    else:
        s = f"warm restarts T0={t.get('t0', 10)} Tmult={t.get('t_mult', 2)}, lr {t.get('lr', 1e-3):g}"
    if t.get("ema"):
        s += f", EMA {t['ema']}"
    if t.get("batch_size", 32) != 32:
        s += f", batch {t['batch_size']}"
    if "dropout" in m:
        s += f", dropout {m['dropout']}"
    return s


def table() -> str:
    lines = ["# STMGT schedules on Los-loop, validation only", "",
             "Design architecture (hidden 96, 3 blocks, 4 heads, K=5, node embedding), bf16 autocast, seed 0,",
             "standard protocol (70/10/20, 12 -> 12); validation MAE of the median in mph, the early-stopping",
             " criterion.",
             "Each sweep ran its configs side by side on one NVIDIA H200 (torch 2.11+cu130; 8 processes in sweep1,",
             "4 in sweep2, so the minutes are shared-GPU wall-clock). The test split was not read.",
             "Regenerate: `bash benchmarks/schedules.sh benchmarks/configs/schedules/SWEEP ../shared/data/los_loop gpu",
             "benchmarks/results/gpu_schedules/SWEEP.json`, then `python benchmarks/schedules.py`.", ""]
    marks = (10, 15, 20, 24, 30, 40, 50, 60)
    lines += ["| sweep | run | setting | epochs | stop | best val MAE (epoch) | minutes | " +
              " | ".join(f"ep {e}" for e in marks) + " |",
              "|---|---|---|---|---|---|---|" + "---|" * len(marks)]
    for f in sorted(RESULTS.glob("*.json")):
        for name, r in json.loads(f.read_text()).items():
            cfg = yaml.safe_load((CONFIGS / f.stem / f"{name}.yaml").read_text())
            tr = r["training"] or {}
            val = [float(h["val_mae"]) for h in r["history"]]
            best = min(range(len(val)), key=val.__getitem__) if val else None
            cells = [f"{min(val[:e]):.3f}" if len(val) >= e else "" for e in marks]
            lines.append(f"| {f.stem} | {name} | {_setting(cfg)} | {tr.get('epochs', len(val))} | "
                         f"{tr.get('stop_reason', 'killed')} | "
                         f"{'' if best is None else f'{val[best]:.3f} ({best + 1})'} | "
                         f"{tr.get('train_seconds', 0) / 60:.1f} | " + " | ".join(cells) + " |")
    lines += ["", "`ep k`: the best validation MAE up to epoch k.", ""]
    notes = RESULTS / "notes.md"
    if notes.is_file():
        lines += [notes.read_text().strip(), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "collect":
        collect(Path(sys.argv[2]), sys.argv[3])
    else:
        (HERE / "results" / "gpu_schedules.md").write_text(table())
        print(HERE / "results" / "gpu_schedules.md")
