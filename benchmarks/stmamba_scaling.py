"""Cost of a training step against history length: STMamba (linear in T) vs STMGT (attention, T^2).

Each (model, T) runs in its own process so that the peak resident memory is that step's.
Equal hidden size (96), 3 blocks, batch 2, N nodes of the synthetic road graph, horizon 12.
A model may name its STMamba scan after a colon (``stmamba:chunked``); plain ``stmamba`` uses the
default (``auto``: the compiled CPU kernel where it builds). Writes ``results/stmamba_scaling.json``,
``.md`` and ``.png``.

    python benchmarks/stmamba_scaling.py --nodes 32 --batch 2 --models stmamba stmamba:chunked stmgt
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HISTORIES = (12, 48, 96, 192, 384, 768)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=32)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="processes per point; the median step time is kept")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--histories", type=int, nargs="*", default=list(HISTORIES))
    ap.add_argument("--models", nargs="*", default=["stmamba", "stmgt"])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "stmamba_scaling"))
    a = ap.parse_args()
    rows = []
    for model in a.models:
        for T in a.histories:
            name, _, scan = model.partition(":")
            cfg = f"model_config('{name}'" + (f", scan='{scan}')" if scan else ")")
            code = (f"import torch, json; torch.set_num_threads({a.threads}); from stmgt.speed import bench; "
                    f"from stmgt.config import model_config; "
                    f"r = bench('{name}', nodes={a.nodes}, batch={a.batch}, history={T}, steps={a.steps}, "
                    f"cfg={cfg}); r['model'] = '{model}'; print(json.dumps(r))")
            reps = []
            for _ in range(a.repeats):  # the machine is noisy: several processes, the median kept
                p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
                if p.returncode != 0:
                    reps = [{"model": model, "history": T, "error": p.stderr.strip().splitlines()[-1][:200]}]
                    break
                reps.append(json.loads(p.stdout.strip().splitlines()[-1]))
            if "error" in reps[0]:
                rows.append(reps[0])
            else:
                times = sorted(r["train_step_ms"] for r in reps)
                row = next(r for r in reps if r["train_step_ms"] == times[len(times) // 2])
                rows.append({**row, "train_step_ms_runs": [r["train_step_ms"] for r in reps],
                             "peak_memory_mb": max(r["peak_memory_mb"] for r in reps)})
            print(rows[-1], flush=True)
    res = {"setup": vars(a), "rows": rows}
    Path(a.out + ".json").write_text(json.dumps(res, indent=1))
    md = ["# Training-step cost against history length", "",
          f"{a.nodes} nodes, batch {a.batch}, hidden 96, 3 blocks, horizon 12, {a.threads} thread(s); "
          f"each point is {a.repeats} separate processes of {a.steps} timed steps: the median step time, the"
          " range in brackets, and the largest peak resident memory.", "",
          "| model | T | train step (ms) | peak memory (MB) | GFLOP per sample |", "|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            md.append(f"| {r['model']} | {r['history']} | failed: {r['error']} | | |")
        else:
            runs = r.get("train_step_ms_runs", [r["train_step_ms"]])
            md.append(f"| {r['model']} | {r['history']} | {r['train_step_ms']} [{min(runs)}-{max(runs)}] | "
                      f"{r['peak_memory_mb']} | {r['train_gflop_per_sample']} |")
    ratios = {}
    for m in a.models:
        t = {r["history"]: r["train_step_ms"] for r in rows if r["model"] == m and "error" not in r}
        if 96 in t and 768 in t:
            ratios[m] = t[768] / t[96]
    md += ["", "time at T=768 / time at T=96: " + ", ".join(f"{m} {v:.1f}x" for m, v in ratios.items())
           + " (linear scaling would be 8x)"]
    res["ratio_768_96"] = ratios
    Path(a.out + ".json").write_text(json.dumps(res, indent=1))
    Path(a.out + ".md").write_text("\n".join(md) + "\n")
    plot(rows, a.out + ".png")
    print("\n".join(md))


def plot(rows, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for m in sorted({r["model"] for r in rows}):
        ok = [r for r in rows if r["model"] == m and "error" not in r]
        T = [r["history"] for r in ok]
        axes[0].plot(T, [r["train_step_ms"] for r in ok], "o-", label=m)
        axes[1].plot(T, [r["peak_memory_mb"] for r in ok], "o-", label=m)
    for ax, lab in zip(axes, ("training step (ms)", "peak memory (MB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("history length T (steps)")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
