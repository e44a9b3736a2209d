"""``stmgt replay``: stream a dataset's observations into a running ``stmgt serve``, in time order.

Any dataset :func:`stmgt.data.loaders.load` reads (or ``synthetic``) is replayed from the start
of a split (``train``, ``val``, ``test``: the chronological 70/10/20 split of training) or a
timestamp. At ``--speed X`` one second of wall time replays ``X`` seconds of data (60: a
5-minute step every 5 seconds); ``--speed 0`` sends as fast as the service acknowledges.
Observations go in ``POST /v1/observations`` batches of at most ``--batch`` rows (a step's
covariates ride on its first row); a batch is retried when the connection fails and the
replay stops with the service's message when a batch is refused.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import numpy as np

from stmgt.data.panel import Panel
from stmgt.errors import ConfigError, StmgtError


class ReplayError(StmgtError):
    """The service refused a batch or could not be reached."""


def load_panel(data: str, format: str | None = None, nodes: int = 62, days: float = 28, seed: int = 0) -> Panel:
    """``synthetic`` (the synthetic city of ``nodes``, ``days``, ``seed``) or a dataset path."""
    if data == "synthetic":
        from stmgt.data.synthetic import synthetic_city

        return synthetic_city(num_nodes=nodes, days=days, seed=seed)
    from stmgt.data.loaders import load

    return load(data, format=format)


def start_index(panel: Panel, start: str) -> int:
    """The first step to replay: the start of split ``train``/``val``/``test`` or the first step at a timestamp."""
    from stmgt.data.windows import chronological_splits

    if start in ("train", "val", "test"):
        return chronological_splits(panel.num_steps)[start][0]
    try:
        t = np.datetime64(start, "ns")
    except ValueError:
        raise ConfigError(f"--start {start!r} is neither a split (train, val, test) nor a timestamp") from None
    i = int(np.searchsorted(panel.timestamps, t))
    if i >= panel.num_steps:
        raise ConfigError(f"--start {start}: the data ends at {panel.timestamps[-1]}")
    return i


def check_url(url: str) -> None:
    """Refuse a ``--to`` that is not an ``http(s)://host[:port]`` base URL."""
    from urllib.parse import urlsplit

    try:
        u = urlsplit(url)
        u.port  # noqa: B018 (a bad port raises here)
    except ValueError as e:
        raise ConfigError(f"--to {url!r}: not a URL ({e}); give the service's base URL, e.g."
                          " http://127.0.0.1:8000") from None
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ConfigError(f"--to {url!r}: not an http:// or https:// URL; give the service's base URL, e.g."
                          " http://127.0.0.1:8000")


def step_rows(panel: Panel, t: int) -> list[dict]:
    """The observed readings of step ``t`` as API rows (covariates on the first row)."""
    ts = str(np.datetime64(panel.timestamps[t], "s"))
    vals, mask = panel.values[t, :, 0], panel.mask[t, :, 0]
    rows = [{"timestamp": ts, "node_id": n, "value": round(float(v), 4)}
            for n, v, ok in zip(panel.node_ids, vals.tolist(), mask.tolist()) if ok]
    if rows and panel.covariates is not None and panel.covariate_names:
        cov = {k: float(v) for k, v in zip(panel.covariate_names, panel.covariates[t].tolist()) if np.isfinite(v)}
        if cov:
            rows[0]["covariates"] = cov
    return rows


def post(url: str, rows: list[dict], api_key: str | None = None, retries: int = 5, timeout: float = 30) -> dict:
    """POST one batch to ``url``/v1/observations; retries connection failures, raises on a refusal."""
    body = json.dumps({"observations": rows}).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["X-API-Key"] = api_key
    for attempt in range(retries + 1):
        req = urllib.request.Request(url.rstrip("/") + "/v1/observations", data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            try:
                detail = json.loads(e.read()).get("detail", "")
            except ValueError:
                detail = e.reason
            if e.code >= 500 and attempt < retries:
                time.sleep(min(2**attempt, 10))
                continue
            raise ReplayError(f"{url}: the service refused a batch (HTTP {e.code}): {detail}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            if attempt == retries:
                reason = getattr(e, "reason", e)
                raise ReplayError(f"{url}: cannot reach the service ({reason}); is `stmgt serve` running there?"
                                  ) from None
            time.sleep(min(2**attempt, 10))
    raise AssertionError("unreachable")


def replay(panel: Panel, url: str, speed: float = 60.0, start: str = "test", batch: int = 500,
           api_key: str | None = None, max_steps: int | None = None,
           log: Callable[[str], None] | None = print, retries: int = 5) -> dict:
    """Stream ``panel`` from ``start`` into the service at ``url``; returns rows, batches and seconds."""
    if speed < 0:
        raise ConfigError(f"--speed {speed}: give a positive factor (60 = a minute of data per second) or 0")
    if batch < 1:
        raise ConfigError(f"--batch {batch}: give at least 1")
    check_url(url)
    i0 = start_index(panel, start)
    stop = panel.num_steps if max_steps is None else min(panel.num_steps, i0 + max_steps)
    t_data0 = panel.timestamps[i0]
    wall0 = time.monotonic()
    sent = batches = 0
    last_log = wall0
    pending: list[dict] = []

    def flush(rows):
        nonlocal sent, batches
        for k in range(0, len(rows), batch):
            post(url, rows[k:k + batch], api_key, retries=retries)
            sent += len(rows[k:k + batch])
            batches += 1

    for t in range(i0, stop):
        rows = step_rows(panel, t)
        if speed > 0:
            due = wall0 + float((panel.timestamps[t] - t_data0) / np.timedelta64(1, "s")) / speed
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            flush(rows)
        else:
            pending += rows
            if len(pending) >= batch:
                flush(pending)
                pending = []
        if log and time.monotonic() - last_log > 10:
            last_log = time.monotonic()
            log(f"replayed up to {np.datetime64(panel.timestamps[t], 's')}: {sent} rows in {batches} batches")
    if pending:
        flush(pending)
    secs = time.monotonic() - wall0
    if log:
        log(f"done: {sent} rows in {batches} batches, {stop - i0} steps in {secs:.1f}s"
            f" ({sent / max(secs, 1e-9):.0f} rows/s)")
    return {"rows": sent, "batches": batches, "steps": stop - i0, "seconds": secs}
