"""The thread policy measured: ``stmgt speed`` before and after, with the other cores busy and idle.

Each case is a fresh ``stmgt speed --model stmgt --nodes 62 --batch 32 --json`` process (float32,
the precision every CPU has), with ``OMP_WAIT_POLICY`` and ``OMP_NUM_THREADS`` removed from its
environment so that only the code decides. "before" runs the code at ``--before`` (a source folder,
e.g. a ``git worktree`` of the commit before the policy: torch's default thread count, OpenMP's
default spin-then-sleep wait); "after" runs this checkout (passive wait, threads = usable CPUs less
the busy ones), alone and with the count fixed. "busy" keeps one single-threaded CPU-bound process
running beside it (``python -c "while 1: pass"``). Cases alternate; the median over ``--repeats``.
Writes ``results/threads.json`` and ``results/threads.md``.

    git worktree add /tmp/before 93f212a
    python benchmarks/threads.py --before /tmp/before/src --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"

#: (label, which code, extra arguments)
CASES = [
    ("before: torch's default threads, default wait", "before", []),
    ("after: default (auto threads, passive wait)", "after", []),
    ("after: --threads 1", "after", ["--threads", "1"]),
    ("after: --threads 2 (passive wait alone)", "after", ["--threads", "2"]),
]


def speed(src: Path, extra: list[str], nodes: int, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = str(src)
    cmd = [sys.executable, "-m", "stmgt", "speed", "--model", "stmgt", "--nodes", str(nodes), "--batch", "32",
           "--steps", str(steps), "--json", *extra]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="source folder of the code before the policy (its src/)")
    ap.add_argument("--nodes", type=int, default=62)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    rows: dict[str, list[dict]] = {}
    for _ in range(a.repeats):
        for load in ("busy", "idle"):
            busy = subprocess.Popen([sys.executable, "-c", "while 1: pass"]) if load == "busy" else None
            time.sleep(2)
            try:
                for label, code, extra in CASES:
                    if load == "idle" and extra:
                        continue  # idle: only the two defaults are compared
                    r = speed(Path(a.before) if code == "before" else SRC, extra, a.nodes, a.steps)
                    rows.setdefault(f"{load} | {label}", []).append(r)
                    print(f"{load} | {label}: threads {r['threads']}, train {r['train_samples_per_s']},"
                          f" infer {r['infer_samples_per_s']} samples/s", flush=True)
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
    summary = {k: {"threads": [r["threads"] for r in v],
                   "train_samples_per_s": statistics.median(r["train_samples_per_s"] for r in v),
                   "infer_samples_per_s": statistics.median(r["infer_samples_per_s"] for r in v)}
               for k, v in rows.items()}
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    cmd = f"python benchmarks/threads.py --before BEFORE/src --repeats {a.repeats}"
    (HERE / "results" / "threads.json").write_text(json.dumps({"command": cmd, "machine": machine,
                                                               "nodes": a.nodes, "runs": rows,
                                                               "median": summary}, indent=1) + "\n")
    md = [f"# Thread policy: `stmgt speed --model stmgt --nodes {a.nodes} --batch 32` (float32)", "",
          f"Regenerate: `{cmd}` (BEFORE: a worktree of the commit before the policy). Machine: {machine};"
          f" median of {a.repeats} fresh processes per case; busy = one single-threaded CPU-bound process beside it.",
          "", "| load | code and setting | threads | train samples/s | infer samples/s |", "|---|---|---|---|---|"]
    for k, s in summary.items():
        load, label = k.split(" | ", 1)
        md.append(f"| {load} | {label} | {'/'.join(map(str, s['threads']))} | {s['train_samples_per_s']:.2f} |"
                  f" {s['infer_samples_per_s']:.2f} |")
    out = HERE / "results" / "threads.md"
    notes = out.read_text().split("\n## Notes", 1)[1] if out.is_file() and "\n## Notes" in out.read_text() else ""
    out.write_text("\n".join(md) + "\n" + ("\n## Notes" + notes if notes else ""))  # the notes are kept by hand
    print("\n".join(md))


if __name__ == "__main__":
    main()
