"""A forecast is computed once per window, off the request path: reads answer from memory."""

import random
import threading
import time

import pandas as pd
import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from stmgt.serve.app import Service, create_app  # noqa: E402
from stmgt.serve.forecasting import ServedModel  # noqa: E402
from stmgt.serve.store import Store  # noqa: E402


@pytest.fixture
def counted(monkeypatch):
    """Every model computation, with the thread it ran on; each takes at least 0.2 s (a slow model)."""
    class Calls(list):
        pass

    calls, frames = Calls(), []
    real = ServedModel._distribution

    def slow(self, df, source, min_coverage=0.5):
        calls.append((threading.current_thread().name, source))
        frames.append(df)
        time.sleep(0.2)
        return real(self, df, source, min_coverage)

    monkeypatch.setattr(ServedModel, "_distribution", slow)
    calls.frames = frames
    return calls


def _client(served, tmp_path, **kw):
    svc = Service([served["gru"]], db=str(tmp_path / "s.db"), **kw)
    c = TestClient(create_app(svc))
    c.service = svc
    return c


def _post(c, rows):
    r = c.post("/v1/observations", json={"observations": rows})
    assert r.status_code == 200, r.text


def _wait(pred, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_reads_never_compute_while_the_issuer_runs(served, rows, tmp_path, counted):
    c = _client(served, tmp_path, auto_forecast=True, settle_seconds=0.05)
    with c:
        counted.clear()  # the warm-up forecast of the service start
        _post(c, rows(-14, -2))
        assert _wait(lambda: len(counted) == 1 and c.get("/v1/forecast").json()["pending"] is False)
        first = c.get("/v1/forecast").json()
        _post(c, rows(-2, -1))  # a new step: the window moves
        answers = []
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 1.5:
            answers.append(c.get("/v1/forecast").json())
        assert _wait(lambda: c.get("/v1/forecast").json()["window_end"] > first["window_end"])
        last = c.get("/v1/forecast").json()
    # every computation ran on the issuer, one per window, whatever the number of reads
    assert [name for name, _ in counted] == ["stmgt-issuer", "stmgt-issuer"], counted
    assert len(answers) > 20 and all(a["cached"] for a in answers)
    stale = [a for a in answers if a["window_end"] == first["window_end"]]
    assert stale and all(a["pending"] for a in stale)  # the newest finished forecast, saying a newer one is due
    assert last["pending"] is False and last["cached"] is True


def test_a_late_row_inside_the_window_recomputes_once(served, rows, tmp_path, counted):
    c = _client(served, tmp_path, auto_forecast=True, settle_seconds=0.05)
    with c:
        counted.clear()
        _post(c, rows(-13, -1))
        assert _wait(lambda: len(counted) == 1 and not c.get("/v1/forecast").json()["pending"])
        before = c.get("/v1/forecast").json()
        old = rows(-2, -1)[0]
        late = dict(old, value=old["value"] + 15.0)  # a correction of the newest reading, plausible
        _post(c, [late])
        reads = [c.get("/v1/forecast").json() for _ in range(30)]
        assert _wait(lambda: len(counted) == 2 and not c.get("/v1/forecast").json()["pending"])
        after = c.get("/v1/forecast").json()
        time.sleep(0.3)  # the issuer, woken by the reads, finds nothing more to do
    assert len(counted) == 2, counted
    assert after["window_end"] == before["window_end"] and after["issued_at"] >= before["issued_at"]
    df = counted.frames[-1]  # the recomputation read the corrected reading from the store
    at = df[(df["node_id"] == late["node_id"]) & (df["timestamp"] == pd.Timestamp(late["timestamp"]))]
    assert at["value"].tolist() == [pytest.approx(late["value"])]
    assert all(r["window_end"] == before["window_end"] for r in reads)


def test_other_quantiles_come_from_the_kept_mixture_not_the_model(served, rows, tmp_path, counted):
    import torch

    c = _client(served, tmp_path, auto_forecast=False)
    counted.clear()
    _post(c, rows(-13, -1))
    c.get("/v1/forecast")
    assert len(counted) == 1
    got = c.get("/v1/forecast?quantiles=0.25,0.75,0.975").json()
    assert len(counted) == 1 and got["cached"] is True
    m = c.service.models["gru"]
    entry = m._newest
    d = entry["dist"]
    # oracle: torch.distributions' mixture CDF at the answered quantiles
    mix = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(logits=d.log_weights),
                                                torch.distributions.Normal(d.means, d.stds))
    index = {n: i for i, n in enumerate(m.node_ids)}
    for row in got["forecasts"][:50]:
        for p, v in row["quantiles"].items():
            cdf = float(mix.cdf(torch.tensor(v))[0, row["step"] - 1, index[row["node_id"]]])
            assert abs(cdf - float(p)) < 2e-3, (p, v, cdf)


def test_scores_reads_answer_the_kept_scores_while_the_issuer_runs(served, rows, tmp_path, monkeypatch):
    c = _client(served, tmp_path, auto_forecast=True, settle_seconds=0.05)
    queries = []
    real = Store.scores

    def count(self, *a, **k):
        queries.append(threading.current_thread().name)
        return real(self, *a, **k)

    monkeypatch.setattr(Store, "scores", count)
    with c:
        _post(c, rows(-30, -18))
        assert _wait(lambda: c.service.store.forecasts_issued("gru", c.service.models["gru"].version) >= 1)
        for k in range(-18, -12):  # steps that the issued forecasts predicted arrive
            _post(c, rows(k, k + 1))
        assert _wait(lambda: c.get("/v1/scores").json()["scores"][0]["n"] > 0)
        n = len(queries)
        reads = [c.get("/v1/scores").json() for _ in range(20)]
    assert all(q == "stmgt-issuer" for q in queries), queries
    assert len(queries) <= n + 1  # the reads ran no scoring query (at most the issuer's last refresh)
    assert all(r["scores"][0]["n"] > 0 for r in reads)


def test_the_store_keeps_each_roads_newest_time_as_the_database_says(tmp_path):
    store = Store(str(tmp_path / "x.db"), retention_days=0)
    rng = random.Random(0)
    nodes = [f"n{i}" for i in range(6)]
    for _ in range(200):
        rows = [(rng.choice(nodes), rng.randrange(0, 50) * 300, rng.random(), int(rng.random() < 0.3))
                for _ in range(rng.randrange(1, 6))]
        rows = list({(r[0], r[1]): r for r in rows}.values())  # one row per node and time in a batch
        store.ingest(rows)
        truth = {n: t for n, t in store.backend.query(
            "SELECT node, MAX(ts) FROM obs WHERE flag = 0 GROUP BY node") if t is not None}
        assert store.latest_per_node(nodes) == truth
    store.close()
    again = Store(str(tmp_path / "x.db"), retention_days=0)  # read back at start
    assert again.latest_per_node(nodes) == truth
    again.close()


def test_a_pending_answer_derived_from_the_kept_one_equals_one_encoded_afresh(make, rows):
    import json

    from stmgt.predict import QUANTILES

    c = make()
    _post(c, rows(-13, -1))
    svc = c.service
    m = svc.models["gru"]
    r = m.forecast_from_store(svc.store)
    current = svc.forecast_bytes(m, {**r, "cached": True, "pending": False}, QUANTILES)
    derived = svc.forecast_bytes(m, {**r, "cached": True, "pending": True}, QUANTILES)  # from the kept one
    svc.bodies = type(svc.bodies)()  # nothing kept: encoded from the forecast itself
    fresh = svc.forecast_bytes(m, {**r, "cached": True, "pending": True}, QUANTILES)
    assert json.loads(derived) == json.loads(fresh) and json.loads(fresh)["pending"] is True
    assert {**json.loads(current), "pending": True} == json.loads(fresh)
