"""STMGT's speed against the design document's listing, measured in the same run.

For each N in --nodes: the reference ``../shared/bench/seed_reference.py --json`` (PyG
``GATv2Conv`` on a graph copied B*T times, dense weather attention) and ``stmgt speed`` (the
library's STMGT at the default configuration), each in its own process with a 16 GiB address
space limit, alternately, several repeats; the median of each figure is reported, with the
machine's measured float32 matmul peak and the fraction of it achieved. Writes
``results/speed.json`` and ``speed.md``.

    python benchmarks/speed.py --nodes 62 207 --repeats 3 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REFERENCE = HERE.parent.parent / "shared" / "bench" / "seed_reference.py"
LIMIT = 16 * 2**30


def _limit():
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


def run(cmd: list[str], timeout: float, threads: int, results: int = 1) -> list[dict]:
    """The last ``results`` JSON lines the command prints (each an error where it failed)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, preexec_fn=_limit, env=env)
    except subprocess.TimeoutExpired:
        return [{"error": f"over {timeout:.0f}s"}] * results
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["failed"])[-1]
        return [{"error": "out of memory (16 GiB limit)" if "memory" in last.lower() or "alloc" in last.lower()
                 else last[:160]}] * results
    return [json.loads(line) for line in p.stdout.strip().splitlines()[-results:]]


def median_of(runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0]
    out = dict(ok[0])
    for k, v in ok[0].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = statistics.median(r[k] for r in ok)
    out["repeats"] = len(ok)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, nargs="*", default=[62, 207, 2000])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--threads", type=int, default=1, help="threads of every process (default 1)")
    ap.add_argument("--out", default=str(HERE / "results" / "speed.json"))
    a = ap.parse_args()
    import torch
    from time_to_accuracy import machine  # benchmarks/: the same machine line in both tables

    from stmgt.speed import matmul_peak_gflops

    torch.set_num_threads(a.threads)
    peak = matmul_peak_gflops()
    rows = []
    for n in a.nodes:
        ref, fp32, bf16 = [], [], []
        for _ in range(a.repeats):
            ref += run([sys.executable, str(REFERENCE), "--json", "--nodes", str(n), "--batch", str(a.batch)],
                       a.timeout, a.threads)
            f, b = run([sys.executable, "-m", "stmgt", "speed", "--json", "--nodes", str(n), "--batch",
                        str(a.batch), "--precision", "both", "--threads", str(a.threads)], a.timeout, a.threads, 2)
            fp32.append(f)
            bf16.append(b)
            if "error" in ref[-1] and "error" in f:
                break
        rows.append({"nodes": n, "reference": median_of(ref), "stmgt": median_of(fp32),
                     "stmgt_bf16": median_of(bf16)})
        print(json.dumps(rows[-1]), flush=True)
    res = {"matmul_peak_gflops": round(peak, 1), "batch": a.batch, "threads": a.threads, "machine": machine(),
           "rows": rows}
    Path(a.out).write_text(json.dumps(res, indent=1))
    (HERE / "speed.md").write_text(markdown(res))
    print(markdown(res))


def markdown(res: dict) -> str:
    peak = res["matmul_peak_gflops"]
    lines = [
        "# STMGT speed against the design document's listing", "",
        f"Same machine, same run ({res.get('machine', '?')}; {res.get('threads', '?')} thread(s) per process,"
        f" nothing else running), batch {res['batch']}, history 12, hidden 96, 3 blocks, 4 heads, K=5;"
        f" medians over repeats, each in its own process. Measured float32 matmul peak: {peak} GFLOP/s; the"
        " bf16 rows' % of peak is of the bf16 matmul peak measured in the same process (`peak_gflops`).", "",
        "| N | implementation | train samples/s | infer samples/s | GFLOP/sample (train) | achieved GFLOP/s | "
        "% of peak | peak memory MB | train speed-up | infer speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        ref = r["reference"]
        for name, x in (("design-document listing", ref), ("stmgt fp32", r["stmgt"]),
                        ("stmgt bf16-mixed", r.get("stmgt_bf16", {"error": "not measured"}))):
            if "error" in x:
                lines.append(f"| {r['nodes']} | {name} | {x['error']} | | | | | | | |")
                continue
            ach = x["train_gflop_per_sample"] * x["train_samples_per_s"]
            su = iu = ""
            if name != "design-document listing" and "error" not in ref:
                su = f"{x['train_samples_per_s'] / ref['train_samples_per_s']:.2f}x"
                iu = f"{x['infer_samples_per_s'] / ref['infer_samples_per_s']:.2f}x"
            mem = f"{x['peak_memory_mb']:.0f}" if x.get("peak_memory_mb") is not None else ""
            lines.append(f"| {r['nodes']} | {name} | {x['train_samples_per_s']:.2f} | "
                         f"{x['infer_samples_per_s']:.2f} | {x['train_gflop_per_sample']:.3f} | {ach:.1f} | "
                         f"{100 * ach / x.get('peak_gflops', peak):.0f}% | {mem} | {su} | {iu} |")
    lines += ["", "Regenerate: `python benchmarks/speed.py --nodes 62 207 --threads 1` (needs"
              " `../shared/bench/seed_reference.py` and `torch_geometric` for the reference)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
