"""Time to accuracy of STMGT on Los-loop: the cost of one training step per lever, and full trainings.

Two parts, both written to ``benchmarks/results/time_to_accuracy.{json,md}``:

* ``steps``: for each lever (kernels, precision, threads) one fresh process builds the design
  architecture (hidden 96, 3 blocks, 4 heads, K=5) on Los-loop and times ``--steps`` training steps
  of a batch of 32 after one warm-up step (AdamW, mixture loss, clipping, as in training); it
  reports the median step, the epoch that implies (44 batches) and the process's peak RSS.
* ``runs``: full trainings (run folders of ``stmgt train``/``stmgt benchmark``): epochs, the best
  epoch, wall-clock to the best epoch and to the stop, stop reason, and the per-epoch log.

    python benchmarks/time_to_accuracy.py steps --data ../shared/data/los_loop
    python benchmarks/time_to_accuracy.py runs benchmarks/results/runs/los_loop_converged/stmgt/seed0

Each part replaces its own section of the JSON and the table is rebuilt from both (with the JSON's
``notes``, a list of sentences kept by hand).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from stmgt.run_folder import Run

RESULTS = Path(__file__).parent / "results"

#: lever name -> (model overrides, precision, threads, batch size)
LEVERS = {
    "fp32, PyTorch graph attention (before)": ({"model.fused_attention": False, "model.fused_ffn": False}, "32", 1, 32),
    "fp32, fused graph-attention kernels": ({"model.fused_ffn": False}, "32", 1, 32),
    "bf16 autocast, fused graph attention, GELU and dropout apart": ({"model.fused_ffn": False}, "bf16-mixed", 1, 32),
    "bf16 autocast, fused kernels": ({}, "bf16-mixed", 1, 32),
    "bf16 autocast, fused kernels, FFN recomputed": ({"model.recompute_ffn": True}, "bf16-mixed", 1, 32),
    "fp32, fused kernels, 2 threads": ({}, "32", 2, 32),
    "bf16 autocast, fused kernels, 2 threads": ({}, "bf16-mixed", 2, 32),
    "bf16 autocast, fused kernels, 2 threads, FFN recomputed": ({"model.recompute_ffn": True}, "bf16-mixed", 2, 32),
    "bf16 autocast, fused kernels, 2 threads, batch 64": ({}, "bf16-mixed", 2, 64),
}

_CHILD = r"""
import json, resource, statistics, sys, time
import torch
over, precision, threads, batch, steps, data = json.loads(sys.argv[1])
torch.set_num_threads(threads)
from torch.utils.flop_counter import FlopCounterMode
from stmgt.config import load_config
from stmgt.data.source import load_source
from stmgt.data.windows import PanelData
from stmgt.models import build_model
from stmgt.forecaster import data_info
from stmgt.runtime import keep_freed_memory
from stmgt.speed import matmul_peak_gflops
from stmgt.training.loss import mixture_loss
keep_freed_memory()
cfg = load_config(None, {"data.source": data, "model.node_embedding": True, **over})
torch.manual_seed(0)
d = PanelData(load_source(cfg.data), 12, 12, (0.7, 0.1, 0.2), batch)
model = build_model(cfg.model, data_info(d)).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
it = iter(d.loader("train", generator=torch.Generator().manual_seed(0)))
loc, sc = d.scaler.target_loc, d.scaler.target_scale
def step(b):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
        dist = model(b, d.edge_index)
        loss, _ = mixture_loss(dist, (b.y - loc) / sc, b.y_mask)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
times = []
for i in range(steps + 1):
    b = next(it)
    t = time.perf_counter()
    step(b)
    if i:
        times.append(time.perf_counter() - t)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
with FlopCounterMode(display=False) as fc:
    step(next(it))
peak = matmul_peak_gflops(dtype=torch.bfloat16 if precision == "bf16-mixed" else torch.float32)
s = statistics.median(times)
print(json.dumps({"step_s": s, "steps": times, "batches": len(d.loader("train")), "peak_rss_gib": rss,
                  "gflop_per_step": fc.get_total_flops() / 1e9, "achieved_gflops": fc.get_total_flops() / 1e9 / s,
                  "peak_gflops": peak, "fraction_of_peak": fc.get_total_flops() / 1e9 / s / peak}))
"""


def measure_steps(data: str, steps: int, only: list[str] | None = None) -> list[dict]:
    rows = []
    for name, (over, precision, threads, batch) in LEVERS.items():
        if only and name not in only:
            continue
        arg = json.dumps([over, precision, threads, batch, steps, data])
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        out = subprocess.run([sys.executable, "-c", _CHILD, arg], capture_output=True, text=True, env=env)
        if out.returncode:
            raise SystemExit(f"{name}: {out.stderr.strip().splitlines()[-1]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r.update(lever=name, precision=precision, threads=threads, batch=batch,
                 epoch_min=r["step_s"] * r["batches"] / 60)
        print(f"{name}: {r['step_s']:.2f} s/step, {r['peak_rss_gib']:.1f} GiB", flush=True)
        rows.append(r)
    return rows


def read_run(folder: Path) -> dict:
    info = json.loads((folder / "training.json").read_text())
    cfg = (folder / "config.yaml").read_text()
    hist = Run(folder).history()
    secs = info["train_seconds"]
    per_epoch = secs / max(1, info["epochs"])
    return {"run": str(folder), **info, "seconds_to_best": per_epoch * (info["best_epoch"] or 0),
            "history": [{k: r[k] for k in ("epoch", "train_loss", "val_mae", "lr")} for r in hist],
            "config": cfg}


def table(res: dict) -> str:
    md = ["# Time to accuracy: STMGT on Los-loop", "",
          f"Machine: {res.get('machine', '?')}. Regenerate: `python benchmarks/time_to_accuracy.py steps "
          "--data ../shared/data/los_loop` and `python benchmarks/time_to_accuracy.py runs RUN_DIR ...`.", ""]
    if res.get("steps"):
        md += ["## One training step per lever", "",
               "Design architecture (hidden 96, 3 blocks, 4 heads, K=5, node embedding), Los-loop (207 roads,"
               " 2,833 edges with self-loops), batch 32 unless stated, history 12 -> 12; median of the timed steps"
               " after one warm-up, one fresh process per lever, one lever at a time, nothing else running; an"
               " epoch is 44 batches of 32 (22 of 64). FLOPs by torch's FlopCounterMode for one step; the peak is"
               " a 2048^3 matrix product in the lever's precision on the same threads, in the same process.", "",
               "| lever | precision | threads | s / step | min / epoch | peak RSS (GiB) | GFLOP / step |"
               " achieved GFLOP/s | % of matmul peak |", "|---|---|---|---|---|---|---|---|---|"]
        for r in res["steps"]:
            flops = (f"{r['gflop_per_step']:.0f} | {r['achieved_gflops']:.1f} | {100 * r['fraction_of_peak']:.0f}%"
                     f" of {r['peak_gflops']:.0f}" if "gflop_per_step" in r else " | | ")
            md.append(f"| {r['lever']} | {r['precision']} | {r['threads']} | {r['step_s']:.2f} | "
                      f"{r['epoch_min']:.1f} | {r['peak_rss_gib']:.2f} | {flops} |")
        md.append("")
    if res.get("notes"):
        md += ["## Notes", ""] + [f"- {n}" for n in res["notes"]] + [""]
    for r in res.get("runs", []):
        md += [f"## Full training: `{r['run']}`", "",
               f"{r['epochs']} epochs, stop: {r['stop_reason']}; best validation MAE {r['best_val_mae']:.3f} at epoch"
               f" {r['best_epoch']}; {r['train_seconds'] / 60:.1f} min in all, about"
               f" {r['seconds_to_best'] / 60:.1f} min to the best epoch; precision {r['precision']},"
               f" {r['threads']} thread(s).", "", "| epoch | train loss | val MAE | lr |", "|---|---|---|---|"]
        for h in r["history"]:
            md.append(f"| {int(h['epoch']) + 1} | {float(h['train_loss']):.4f} | {float(h['val_mae']):.3f} |"
                      f" {float(h['lr']):.2e} |")
        md.append("")
    return "\n".join(md) + "\n"


def machine() -> str:
    import platform

    import torch

    from stmgt.runtime import cpu_has_bf16, usable_cpus

    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{model}, {usable_cpus()} usable cores, bf16 {'native' if cpu_has_bf16() else 'emulated'};"
            f" torch {torch.__version__}; {platform.platform()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="part", required=True)
    s = sub.add_parser("steps")
    s.add_argument("--data", default="../shared/data/los_loop")
    s.add_argument("--steps", type=int, default=3)
    s.add_argument("--levers", nargs="+", metavar="NAME", choices=list(LEVERS),
                   help="measure only these levers (their names as in the table; the table keeps the others)")
    r = sub.add_parser("runs")
    r.add_argument("folders", nargs="+", type=Path)
    a = ap.parse_args()
    path = RESULTS / "time_to_accuracy.json"
    res = json.loads(path.read_text()) if path.exists() else {}
    res["machine"] = machine()
    if a.part == "steps":
        new = {r["lever"]: r for r in measure_steps(a.data, a.steps, a.levers)}
        old = {r["lever"]: r for r in res.get("steps", []) if r["lever"] in LEVERS}
        res["steps"] = [{**old, **new}[k] for k in LEVERS if k in {**old, **new}]
    else:
        res["runs"] = [read_run(f) for f in a.folders]
    path.write_text(json.dumps(res, indent=1))
    (RESULTS / "time_to_accuracy.md").write_text(table(res))
    print(f"wrote {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
