"""Load test of ``stmgt serve``: N concurrent clients for S seconds, mixed reads and writes.

Each client loops until the deadline, choosing a write (``POST /v1/observations``, a batch of
``--batch`` new rows) with probability ``--write-fraction`` and otherwise a read
(``GET /v1/forecast`` of every node, ``GET /v1/observations`` of one node's last hours,
``GET /v1/scores``, ``GET /v1/models``). Reports acknowledged rows per second and, per route,
requests per second and p50/p99 latency; writes ``results/serve_load.md`` and ``.json``.

Against a running service::

    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --clients 8 --seconds 30

or let the script start one on a free loopback port with a fresh store (in a temporary folder)::

    python benchmarks/serve_load.py --run runs/demo --clients 8 --seconds 30

The load starts once the first forecast has been issued (a fresh store's only wait). The rows written are
synthetic (a daily sine plus noise per node, random covariates on each
step's first row when the models use covariates), on the served nodes,
starting 60 days before now so that the store's future-timestamp check never refuses them.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
READS = (("GET /v1/forecast", 0.5), ("GET /v1/observations", 0.3), ("GET /v1/scores", 0.1), ("GET /v1/models", 0.1))


class Rows:
    """A stream of new observation rows shared by every client, in every process: row ``g`` is node ``g % N`` at
    step ``g // N`` (the counter lives in shared memory, so the steps written are contiguous)."""

    def __init__(self, nodes: list[str], interval_s: int, start: datetime, covariates: list[str]):
        self.nodes, self.interval_s, self.start, self.covariates = nodes, interval_s, start, covariates
        self.counter = multiprocessing.get_context("fork").Value("q", 0)  # inherited by the client processes

    @property
    def next(self) -> int:
        return self.counter.value

    def take(self, n: int) -> list[dict]:
        with self.counter.get_lock():
            g0 = self.counter.value
            self.counter.value = g0 + n
        out = []
        for g in range(g0, g0 + n):
            step, node = divmod(g, len(self.nodes))
            t = self.start + timedelta(seconds=step * self.interval_s)
            day = (step * self.interval_s) / 86400
            value = 60 + 15 * math.sin(6.2832 * day) + random.gauss(0, 3)
            out.append({"timestamp": t.strftime("%Y-%m-%dT%H:%M:%S"), "node_id": self.nodes[node],
                        "value": round(value, 3)})
            if node == 0 and self.covariates:  # global covariates (weather) ride on a step's first row
                out[-1]["covariates"] = {c: round(random.uniform(0, 1), 3) for c in self.covariates}
        return out

    def latest(self) -> str:
        step = max(0, self.next // len(self.nodes) - 1)
        return (self.start + timedelta(seconds=step * self.interval_s)).strftime("%Y-%m-%dT%H:%M:%S")


def client(url: str, rows: Rows, deadline: float, a, key: str | None, lat: dict, status: dict, acked: list) -> None:
    rng = random.Random()
    headers = {"X-API-Key": key} if key else {}
    with httpx.Client(base_url=url, timeout=60, headers=headers) as h:
        while time.perf_counter() < deadline:
            if rng.random() < a.write_fraction:
                route = "POST /v1/observations"
                batch = rows.take(a.batch)
                t0 = time.perf_counter()
                r = h.post("/v1/observations", json={"observations": batch})
                if r.status_code == 200:
                    acked.append(r.json()["accepted"])
            else:
                route = rng.choices([r for r, _ in READS], [w for _, w in READS])[0]
                t0 = time.perf_counter()
                if route == "GET /v1/forecast":
                    r = h.get("/v1/forecast")
                    if b'"pending":true' in r.content[:600]:  # the answer's head, before the rows
                        status["pending forecasts"]["answers"] += 1
                elif route == "GET /v1/observations":
                    since = (datetime.fromisoformat(rows.latest()) - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%S")
                    r = h.get("/v1/observations", params={"nodes": rng.choice(rows.nodes), "since": since})
                else:
                    r = h.get(route.split(" ")[1])
            dt = time.perf_counter() - t0
            lat[route].append(dt)
            status[route][r.status_code] += 1


def client_process(url: str, rows: Rows, deadline_epoch: float, a, key: str | None, clients: int):
    """``clients`` client threads in this process until ``deadline_epoch`` (wall clock): ``(latencies by route,
    statuses by route, acknowledged row counts)``. Several processes keep the load generator's own interpreter
    lock from delaying the answers it times."""
    lat: dict = defaultdict(list)
    status: dict = defaultdict(lambda: defaultdict(int))
    acked: list = []
    deadline = time.perf_counter() + (deadline_epoch - time.time())
    threads = [threading.Thread(target=client, args=(url, rows, deadline, a, key, lat, status, acked))
               for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return dict(lat), {r: dict(s) for r, s in status.items()}, acked


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: str, db: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "stmgt", "serve", run, "--db", db, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {proc.stdout.read().decode()}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("the server did not become ready in 180 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="a running service (default: start one with --run)")
    ap.add_argument("--run", help="run folder to serve from a fresh store when --url is not given")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    ap.add_argument("--procs", type=int, default=4, help="processes the clients are spread over (default 4)")
    ap.add_argument("--seconds", type=float, default=30, help="duration of the load (default 30)")
    ap.add_argument("--write-fraction", type=float, default=0.5, help="share of requests that write (default 0.5)")
    ap.add_argument("--batch", type=int, default=500, help="rows per write (default 500)")
    ap.add_argument("--api-key-env", help="environment variable holding the API key")
    ap.add_argument("--out", default=str(HERE / "results" / "serve_load"), help="output stem (.md and .json)")
    a = ap.parse_args()
    if not a.url and not a.run:
        ap.error("give --url of a running service or --run RUN_DIR to start one")
    key = os.environ.get(a.api_key_env, "") if a.api_key_env else None
    proc, tmp = None, None
    url = a.url
    if not url:
        tmp = tempfile.TemporaryDirectory()
        proc, url = start_server(a.run, str(Path(tmp.name) / "load.db"))
    try:
        info = httpx.get(url + "/v1/models", timeout=30).json()
        model = info["models"][0]
        nodes = [n["id"] for n in httpx.get(url + "/v1/graph", timeout=30).json()["nodes"]]
        interval_s = int(round(model["interval_minutes"] * 60))
        start = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0) - timedelta(days=60)
        start -= timedelta(seconds=start.timestamp() % interval_s)
        covs = sorted({c for m in info["models"] for c in m["covariates"]})
        rows = Rows(nodes, interval_s, start, covs)
        headers = {"X-API-Key": key} if key else {}
        warm = rows.take(len(nodes) * (model["history"] + 1))  # enough history for forecasts
        for k in range(0, len(warm), a.batch):
            httpx.post(url + "/v1/observations", json={"observations": warm[k:k + a.batch]}, headers=headers,
                       timeout=60).raise_for_status()
        ready = time.time() + 120  # the first forecast issued (the only one a reader would wait for)
        while time.time() < ready:
            r = httpx.get(url + "/v1/forecast", timeout=60)
            if r.status_code == 200 and not r.json().get("pending"):
                break
            time.sleep(0.2)
        t0 = time.perf_counter()
        jobs = [(url, rows, time.time() + a.seconds, a, key, len(range(w, a.clients, a.procs))) for w in range(a.procs)]
        ctx = multiprocessing.get_context("fork")  # the clients' arguments are inherited, not pickled
        results = ctx.Queue()
        workers = [ctx.Process(target=lambda job=job: results.put(client_process(*job))) for job in jobs]
        for w in workers:
            w.start()
        parts = [results.get() for _ in workers]
        for w in workers:
            w.join()
        wall = time.perf_counter() - t0
        lat: dict = defaultdict(list)
        status: dict = defaultdict(lambda: defaultdict(int))
        acked: list = []
        for part_lat, part_status, part_acked in parts:
            for route, xs in part_lat.items():
                lat[route] += xs
            for route, st in part_status.items():
                for code, n in st.items():
                    status[route][code] += n
            acked += part_acked
        metrics = httpx.get(url + "/metrics", timeout=30).text
        ready = httpx.get(url + "/readyz", timeout=30).json()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
            tmp.cleanup()
    pending = status.pop("pending forecasts", {}).get("answers", 0)
    routes = {}
    for route in sorted(lat):
        xs = lat[route]
        routes[route] = {"requests": len(xs), "per_second": len(xs) / wall, "p50_ms": 1000 * pct(xs, 0.5),
                         "p99_ms": 1000 * pct(xs, 0.99), "status": {str(k): v for k, v in status[route].items()}}
    compute = [ln for ln in metrics.splitlines() if ln.startswith("stmgt_forecast_compute_seconds_")
               and ("_sum" in ln or "_count" in ln)]
    res = {"setup": {"url": url if a.url else f"started: {a.run}", "clients": a.clients, "procs": a.procs,
                     "seconds": a.seconds,
                     "write_fraction": a.write_fraction, "batch": a.batch, "nodes": len(nodes),
                     "model": f"{model['name']} {model['version']} ({model['model']})",
                     "cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                     "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")},
           "wall_seconds": wall, "rows_acknowledged": sum(acked), "rows_per_second": sum(acked) / wall,
           "routes": routes, "forecast_compute": compute, "pending_forecast_answers": pending,
           "readyz_at_end": ready}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out + ".json").write_text(json.dumps(res, indent=1))
    md = ["# stmgt serve under load", "",
          f"{a.clients} clients in {a.procs} processes for {wall:.1f} s, {a.write_fraction:.0%} writes of {a.batch}"
          f" rows, {len(nodes)} nodes,"
          f" model {res['setup']['model']}; {res['setup']['cpus']} CPUs, {res['setup']['platform']},"
          f" {res['setup']['date']}. `python benchmarks/serve_load.py "
          + " ".join(sys.argv[1:]) + "`", "",
          f"**Acknowledged observations: {sum(acked)} ({res['rows_per_second']:.0f} rows/s)**", "",
          "| route | requests | per second | p50 (ms) | p99 (ms) | statuses |", "|---|---|---|---|---|---|"]
    for route, r in routes.items():
        st = ", ".join(f"{k}: {v}" for k, v in sorted(r["status"].items()))
        md.append(f"| {route} | {r['requests']} | {r['per_second']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |"
                  f" {st} |")
    n_fc = routes.get("GET /v1/forecast", {}).get("requests", 0)
    md += ["", f"Forecast answers marked `pending` (a newer window awaited the issuer): {pending} of {n_fc}.",
           "The load starts once the store holds a window and its first forecast is issued.",
           f"`/readyz` at the end: {json.dumps(ready.get('forecasts', ready))}.", "",
           "Forecast computation (by the issuer, one per window), from `/metrics`:", "", "```", *compute, "```", ""]
    Path(a.out + ".md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
