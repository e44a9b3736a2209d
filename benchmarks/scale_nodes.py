"""Training-step time and peak memory of STMGT against the number of roads N (batch 8).

Synthetic road graphs of about 2.3 directed edges per node, default model, one process per N
(peak resident memory of that process). Writes ``results/scale_nodes.json``, ``.md``, ``.png``.

    python benchmarks/scale_nodes.py --nodes 62 250 1000 2000 4000 8000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, nargs="*", default=[62, 250, 1000, 2000, 4000, 8000])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--model", default="stmgt")
    ap.add_argument("--checkpoint-from", type=int, default=2000, help="recompute activations from this N up")
    ap.add_argument("--out", default=str(HERE / "results" / "scale_nodes"))
    a = ap.parse_args()
    rows = []
    for n in a.nodes:
        p = subprocess.run([sys.executable, "-m", "stmgt", "speed", "--json", "--model", a.model, "--nodes", str(n),
                            "--batch", str(a.batch), "--steps", str(a.steps)]
                           + (["--checkpoint"] if n >= a.checkpoint_from else []), capture_output=True, text=True)
        rows.append(json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else
                    {"nodes": n, "error": (p.stderr.strip().splitlines() or ["failed"])[-1][:200]})
        print(rows[-1], flush=True)
    Path(a.out + ".json").write_text(json.dumps({"setup": vars(a), "rows": rows}, indent=1))
    ok = [r for r in rows if "error" not in r]
    md = ["# STMGT training step against the number of roads", "",
          f"Batch {a.batch}, history 12, default model (hidden 96, 3 blocks), synthetic road graph with about 2.3 "
          "directed edges per node; one process per N.", "",
          "| N | edges | checkpointing | train step (ms) | ms per node | peak memory (MB) | GFLOP per sample |",
          "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            md.append(f"| {r['nodes']} | | | failed: {r['error']} | | | |")
        else:
            md.append(f"| {r['nodes']} | {r['edges']} | {r['checkpoint']} | {r['train_step_ms']} | "
                      f"{r['train_step_ms'] / r['nodes']:.2f} | "
                      f"{r['peak_memory_mb']} | {r['train_gflop_per_sample']} |")
    Path(a.out + ".md").write_text("\n".join(md) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].loglog([r["nodes"] for r in ok], [r["train_step_ms"] for r in ok], "o-", label="measured")
    if ok:
        n0, t0 = ok[0]["nodes"], ok[0]["train_step_ms"]
        ax[0].loglog([r["nodes"] for r in ok], [t0 * r["nodes"] / n0 for r in ok], "--", label="linear in N")
    ax[0].set_xlabel("roads N")
    ax[0].set_ylabel("training step (ms)")
    ax[0].legend()
    ax[1].loglog([r["nodes"] for r in ok], [r["peak_memory_mb"] for r in ok], "o-")
    ax[1].set_xlabel("roads N")
    ax[1].set_ylabel("peak memory (MB)")
    for x in ax:
        x.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(a.out + ".png", dpi=110)
    print("\n".join(md))


if __name__ == "__main__":
    main()
