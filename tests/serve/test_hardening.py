"""The attacks and faults of issue 21, replayed against ``stmgt serve`` (FastAPI's TestClient, tiny runs):
retention that no client timestamp can move, the key checked before the body is read, bodies bounded
while they stream, per-road trust (one ``1e30`` blinds nobody), and faults that end in one line."""

import asyncio
import json
import math

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")


from stmgt.serve.app import Service  # noqa: E402

pytestmark = pytest.mark.slow
DAY = 86400


class Clock:
    """The server's clock, moved by the test."""

    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def post(c, rows, **kw):
    return c.post("/v1/observations", json={"observations": rows}, **kw)


def kept(c):
    return c.get("/v1/models").json()["store"]["observations"]


def iso(t):
    return pd.Timestamp(t, unit="s").isoformat()


# ---------------------------------------------------------------- 1. retention and time
def test_no_timestamp_a_client_sends_prunes_young_rows_of_a_replayed_historical_city(make, rows):
    """Issue 21, data loss 1: 2024 rows, then a row 23 h ahead of the server clock and one from year 0001."""
    clock = Clock(pd.Timestamp("2026-06-01").timestamp())
    c = make(clock=clock)
    history = rows(-60)  # the synthetic city is January 2024: a replayed historical city
    assert post(c, history).status_code == 200
    n = len(history)
    ahead = {"timestamp": iso(clock.t + 23 * 3600), "node_id": "road-000", "value": 50.0}
    assert post(c, [ahead]).status_code == 200  # allowed: under the 24-hour limit
    r = post(c, [{"timestamp": "0001-01-01T00:00:00", "node_id": "road-000", "value": 50.0}])
    assert r.status_code == 422
    assert r.json()["detail"] == ("observations[0].timestamp: 0001-01-01T00:00:00Z is before 1970-01-01T00:00:00Z,"
                                  " the earliest time accepted (server setting earliest); row 0 rejected")
    post(c, rows(-61, -60))  # the next batch, which used to prune everything 7 days before the newest row
    assert c.service.store.prune() == 0
    assert kept(c) == n + 1 + 8
    assert c.get("/v1/observations?limit=100000").json()["count"] == n + 9
    clock.t += 6.9 * DAY  # still inside the retention window of every acknowledged row
    post(c, rows(-62, -61))
    assert c.service.store.prune() == 0 and kept(c) == n + 17
    clock.t += 0.2 * DAY  # the first batches are 7.1 days old: they go, the one of 0.2 days ago stays
    assert c.service.store.prune() == n + 9
    assert kept(c) == 8


def test_one_row_stamped_ahead_does_not_move_the_citys_forecast_window(make, rows):
    c = make()
    post(c, rows(-12))
    before = c.get("/v1/forecast").json()
    ahead = pd.Timestamp.now("UTC").tz_localize(None) + pd.Timedelta(hours=23)
    assert post(c, [{"timestamp": ahead.isoformat(), "node_id": "road-000", "value": 50.0}]).status_code == 200
    after = c.get("/v1/forecast")
    assert after.status_code == 200, after.text
    assert after.json()["window_end"] == before["window_end"]
    assert _means(after.json()) == _means(before)
    assert c.get("/readyz").json()["ready"] is True


def test_the_accepted_time_window_is_the_operators(make):
    c = make(earliest="2000-01-01", max_future_hours=1)
    assert post(c, [{"timestamp": "2000-01-01T00:00", "node_id": "road-000", "value": 50.0}]).status_code == 200
    r = post(c, [{"timestamp": "2000-01-01T00:00", "node_id": "road-001", "value": 50.0},
                 {"timestamp": "1999-12-31T23:55", "node_id": "road-000", "value": 50.0}])
    assert r.status_code == 422 and r.json()["detail"].startswith(
        "observations[1].timestamp: 1999-12-31T23:55:00Z is before 2000-01-01T00:00:00Z, the earliest time accepted")
    future = pd.Timestamp.now("UTC").tz_localize(None) + pd.Timedelta(hours=2)
    r = post(c, [{"timestamp": future.isoformat(), "node_id": "road-000", "value": 50.0}])
    assert r.status_code == 422 and "more than 1 h ahead of the server clock" in r.json()["detail"]
    assert kept(c) == 1


@pytest.mark.parametrize("ts", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00", "0001-01-01T00:00:00"])
def test_timestamps_at_the_edges_of_the_calendar_are_422_not_500(make, ts):
    c = make()
    r = post(c, [{"timestamp": ts, "node_id": "road-000", "value": 50.0}])
    assert r.status_code == 422 and r.json()["detail"].startswith("observations[0].timestamp: ")


def test_bad_options_of_the_service_are_one_line(served, tmp_path):
    from stmgt.errors import StmgtError

    for kw, text in (({"earliest": "someday"}, "--earliest 'someday'"), ({"earliest": "1900-01-01"}, "--earliest"),
                     ({"retention_days": -1}, "--retention-days -1"), ({"plausible_std": 0}, "--plausible-std 0"),
                     ({"value_range": "5:1"}, "LO must be below HI"), ({"value_range": "x"}, "neither LO:HI")):
        with pytest.raises(StmgtError, match=text):
            Service([served["gru"]], db=str(tmp_path / "x.db"), auto_forecast=False, **kw)


# ---------------------------------------------------------------- 2. authenticate, then read; bound bodies
def test_the_key_is_checked_before_the_body_is_read(make):
    c = make(api_key="s3cret")
    for headers in ({}, {"X-API-Key": "wrong"}):
        r = c.post("/v1/observations", content=b"{not json at all", headers={**headers,
                                                                              "Content-Type": "application/json"})
        assert r.status_code == 401, r.text  # not 422: an unauthenticated client learns nothing of validation
    r = c.post("/v1/observations", json={"observations": [{"timestamp": "x"}]}, headers={"X-API-Key": "wrong"})
    assert r.json() == {"detail": "the X-API-Key header does not match the service's API key"}
    app = c.app

    async def never(*a):  # the body of a request with a wrong key is never read
        raise AssertionError("the body was read")

    sent = []

    async def send(msg):
        sent.append(msg)

    scope = {"type": "http", "method": "POST", "path": "/v1/observations", "headers": [(b"x-api-key", b"wrong"),
             (b"transfer-encoding", b"chunked")], "query_string": b"", "http_version": "1.1", "scheme": "http",
             "server": ("t", 80), "client": ("c", 1), "root_path": "", "raw_path": b"/v1/observations"}
    asyncio.run(app(scope, never, send))
    assert sent[0]["status"] == 401 and json.loads(sent[1]["body"])["detail"].startswith("the X-API-Key header")
    assert 'stmgt_observation_batches_refused_total{status="401"} 4' in c.get("/metrics").text


def test_bodies_are_bounded_while_they_stream_chunked_or_not(make, rows):
    c = make(api_key="k", max_batch=10)  # at most 10 * 1024 + 65536 bytes
    limit = 10 * 1024 + 65536
    reads = []

    def chunks(total, size=8192):
        for k in range(0, total, size):
            reads.append(k)
            yield b" " * min(size, total - k)

    h = {"X-API-Key": "k", "Content-Type": "application/json"}
    r = c.post("/v1/observations", content=chunks(10 * limit), headers=h)  # no Content-Length: chunked
    assert r.status_code == 413 and r.json()["detail"] == (f"body: more than {limit} bytes; at most {limit} (at most"
                                                           " 10 observations per batch: split it)")
    r = c.post("/v1/observations", content=b" " * (limit + 1), headers=h)
    assert r.status_code == 413
    body = json.dumps({"observations": rows(-1)}).encode()
    r = c.post("/v1/observations", content=(body[k:k + 7] for k in range(0, len(body), 7)), headers=h)
    assert r.status_code == 200 and r.json()["accepted"] == len(rows(-1))  # a small chunked body is read whole
    assert 'stmgt_observation_batches_refused_total{status="413"} 2' in c.get("/metrics").text


def test_every_answer_forbids_inline_script(make):
    from stmgt.serve.app import static_files

    c = make()
    for path in ("/", "/static/app.js", "/v1/models", "/nope"):
        csp = c.get(path).headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'self'" in csp, path
    js = next(p for p in static_files() if p.name == "app.js").read_text()
    code = "\n".join(line for line in js.splitlines() if not line.lstrip().startswith("//"))
    assert "innerHTML" not in code and "outerHTML" not in code and "insertAdjacentHTML" not in code
    assert "document.write" not in code and "eval(" not in code
    html = next(p for p in static_files() if p.name == "index.html").read_text()
    assert "<script>" not in html and " on" not in html.replace("\n", " ").split("<body>")[1].split("<script")[0] \
        .replace(" onl", "")  # no inline script, no inline event handler


# ---------------------------------------------------------------- 4. per-sensor trust
def _means(body):
    return {(r["step"], r["node_id"]): (r["mean"], r["quantiles"]["0.5"]) for r in body["forecasts"]}


@pytest.mark.parametrize("bad", [1e30, 1e308, -1e30])
def test_one_outlier_leaves_every_other_road_unchanged_and_is_marked(make, rows, bad):
    c = make()
    window = rows(-12)
    cell = next(r for r in window[::-1] if r["node_id"] == "road-003")
    post(c, [r for r in window if r is not cell])
    before = c.get("/v1/forecast").json()
    r = post(c, [dict(cell, value=bad)])
    assert r.status_code == 200 and r.json()["accepted"] == 1 and r.json()["flagged"] == 1
    assert "outside their road's plausible range" in r.json()["flagged_note"]
    after = c.get("/v1/forecast")
    assert after.status_code == 200  # not 409 for the whole city
    after = after.json()
    assert after["cached"] is False and _means(after) == _means(before)
    road = next(x for x in after["roads"] if x["node_id"] == "road-003")
    assert road["flagged_readings"] == 1
    assert all(x["flagged_readings"] == 0 for x in after["roads"] if x["node_id"] != "road-003")
    got = c.get(f"/v1/observations?nodes=road-003&since={cell['timestamp']}").json()["observations"]
    assert [{k: v for k, v in o.items() if k != "covariates"} for o in got] == [
        {"timestamp": cell["timestamp"] + "Z", "node_id": "road-003", "value": bad, "flagged": True}]
    text = c.get("/metrics").text
    assert "stmgt_observations_flagged_total 1" in text and "stmgt_store_flagged_observations 1" in text
    s = c.get("/v1/scores").json()["scores"][0]
    assert s["mae"] is None or s["mae"] < 1e6  # a flagged reading scores nothing
    assert c.get("/readyz").json()["ready"] is True


def _full(window):
    """``window`` with a reading of every road at every step (the synthetic city has gaps)."""
    have = {(r["timestamp"], r["node_id"]) for r in window}
    stamps = sorted({r["timestamp"] for r in window})
    return window + [{"timestamp": t, "node_id": f"road-00{k}", "value": 60.0} for t in stamps for k in range(8)
                     if (t, f"road-00{k}") not in have]


def test_roads_carry_observed_fraction_and_last_reading(make, rows):
    c = make()
    window = _full(rows(-12))
    stamps = sorted({r["timestamp"] for r in window})
    utc = [t + "Z" for t in stamps]  # as the answers write them
    keep = [r for r in window if r["node_id"] != "road-005"
            and not (r["node_id"] == "road-002" and r["timestamp"] > stamps[7])  # silent for the last 4 steps
            and not (r["node_id"] == "road-006" and r["timestamp"] < stamps[8])]  # only the last 4 steps
    post(c, keep)
    body = c.get("/v1/forecast?nodes=road-002,road-005,road-006,road-000").json()
    roads = {r["node_id"]: r for r in body["roads"]}
    assert set(roads) == {"road-000", "road-002", "road-005", "road-006"}
    assert roads["road-000"] == {"node_id": "road-000", "observed_fraction": 1.0, "last_observed_at": utc[-1],
                                 "flagged_readings": 0, "status": "ok"}
    assert roads["road-005"]["observed_fraction"] == 0 and roads["road-005"]["last_observed_at"] is None
    assert roads["road-005"]["status"] == "no data"
    assert roads["road-002"]["status"] == "stale" and roads["road-002"]["last_observed_at"] == utc[7]
    assert roads["road-006"]["status"] == "sparse"
    assert roads["road-006"]["observed_fraction"] == pytest.approx(1 / 3, abs=1e-4)
    all_roads = c.get("/v1/forecast").json()["roads"]
    assert len(all_roads) == 8
    explicit = c.post("/v1/forecast", json={"observations": keep}).json()["roads"]
    assert {r["node_id"]: r["status"] for r in explicit} == {r["node_id"]: r["status"] for r in all_roads}


def test_the_operator_sets_plausible_ranges(make, rows, tmp_path):
    c = make(value_range="0:200")
    r = post(c, [dict(rows(-1)[0], value=250.0), dict(rows(-1)[1], value=-1.0), dict(rows(-1)[2], value=199.0)])
    assert r.json()["flagged"] == 2
    info = c.get("/v1/models").json()["store"]
    assert info["value_range"] == [0.0, 200.0] and info["flagged"] == 2
    f = tmp_path / "ranges.csv"
    f.write_text("node_id,low,high\nroad-001,10,20\n")
    c = make(value_range=str(f))
    r = post(c, [dict(rows(-1)[0], value=150.0), dict(rows(-1)[1], value=30.0)])
    assert r.json()["flagged"] == 1
    assert c.get("/v1/models").json()["store"]["roads_with_own_range"] == ["road-001"]


def test_an_implausible_covariate_is_flagged_not_fatal(make, rows):
    c = make()
    window = rows(-12)
    post(c, window)
    last = next(r for r in window[::-1] if "covariates" in r)
    r = post(c, [dict(last, covariates={"temperature": 1e30})])
    assert r.status_code == 200 and r.json()["flagged_covariates"] == 1
    assert c.get("/v1/forecast").status_code == 200


def test_readyz_and_metrics_report_failing_forecasts(make, rows, monkeypatch):
    from stmgt.errors import DataError

    c = make()
    post(c, rows(-12))
    m = c.service.models["gru"]

    def broken(*a, **k):
        raise DataError("store: something the window cannot give")

    monkeypatch.setattr(m, "_distribution", broken)
    assert c.get("/v1/forecast").status_code == 409
    r = c.get("/readyz")
    assert r.status_code == 503 and r.json()["ready"] is False
    assert r.json()["forecasts"]["gru"] == "failed: the store: something the window cannot give"
    text = c.get("/metrics").text
    assert 'stmgt_forecast_failures_total{model="gru"} 1' in text and 'stmgt_forecast_ok{model="gru"} 0' in text
    monkeypatch.undo()
    assert c.get("/v1/forecast").status_code == 200
    assert c.get("/readyz").json() == {"ready": True, "store": True, "models": True, "forecasts": {"gru": "ok"}}


def test_waiting_for_history_is_still_ready(make, rows):
    c = make()
    post(c, rows(-3))
    assert c.get("/v1/forecast").status_code == 409
    r = c.get("/readyz")
    assert r.status_code == 200 and r.json()["forecasts"]["gru"].startswith("waiting: model gru needs 12 steps")


# ---------------------------------------------------------------- 5. faults end in one line
@pytest.mark.parametrize("query,param", [("since=-5", "since"), ("since=0001-01-01", "since"),
                                         ("until=9999999999999999999999", "until"), ("until=99999-01-01", "until"),
                                         ("since=nan", "since"), ("until=1e400", "until")])
def test_bad_times_in_queries_are_422_naming_the_parameter(make, rows, query, param):
    c = make()
    post(c, rows(-1))
    r = c.get(f"/v1/observations?{query}")
    assert r.status_code == 422 and r.json()["detail"].startswith(f"{param}: "), r.text
    assert "\n" not in r.json()["detail"]


@pytest.mark.parametrize("value", ["3", True, None, [1], {"a": 1}])
def test_covariates_are_strict_numbers(make, value):
    c = make()
    r = post(c, [{"timestamp": "2024-01-03T10:00", "node_id": "road-000", "value": 50.0,
                  "covariates": {"temperature": value}}])
    assert r.status_code == 422
    assert r.json()["detail"].startswith("observations[0].covariates: temperature: must be a JSON number, got")
    assert kept(c) == 0


def test_duplicates_in_one_batch(make):
    c = make()
    a = {"timestamp": "2024-01-03T10:00", "node_id": "road-000", "value": 50.0, "covariates": {"temperature": 1.0}}
    b = {"timestamp": "2024-01-03T10:00", "node_id": "road-001", "value": 40.0, "covariates": {"temperature": 2.0}}
    r = post(c, [a, b])
    assert r.status_code == 422 and r.json()["detail"] == (
        "observations[1].covariates.temperature: 2 at 2024-01-03T10:00:00Z, but row 0 gives 1 for the same time;"
        " covariates are one value per time; row 1 rejected")
    r = post(c, [a, dict(a, value=51.0)])
    assert r.status_code == 422 and r.json()["detail"].startswith(
        "observations[1]: node 'road-000' at 2024-01-03T10:00:00Z is also row 0, with another value (50, here 51)")
    assert kept(c) == 0
    r = post(c, [a, dict(a), dict(b, covariates={"temperature": 1.0})])  # the same reading twice: one row
    assert r.status_code == 200 and r.json()["accepted"] == 2 and kept(c) == 2
    assert 'stmgt_observations_refused_total 4' in c.get("/metrics").text


def test_refusals_never_echo_a_huge_value(make):
    c = make()
    big = "A" * 100_000
    r = post(c, [{"timestamp": "2024-01-03T10:00", "node_id": big, "value": 1.0}])
    assert r.status_code == 422 and len(r.json()["detail"]) < 400 and "(100000 characters)" in r.json()["detail"]
    r = c.get(f"/v1/observations?nodes={big[:5000]}")
    assert r.status_code == 422 and len(r.json()["detail"]) < 400


def test_a_store_that_stops_writing_answers_503_in_one_line(make, rows):
    import sqlite3

    c = make()

    def fail(statements):
        raise sqlite3.OperationalError("attempt to write a readonly database")

    c.service.store.backend.write = fail
    r = post(c, rows(-1))
    assert r.status_code == 503
    assert r.json()["detail"].endswith("cannot write (attempt to write a readonly database); nothing of this request"
                                       " was kept")


def test_predict_refuses_a_boolean_value_column(served, tmp_path, capsys):
    from stmgt.cli import main
    from stmgt.forecaster import TrainedRun

    meta = TrainedRun(served["gru"]).meta()
    times = pd.date_range("2024-01-03", periods=12, freq="5min")
    df = pd.DataFrame([{"timestamp": t, "node_id": n, "value": True} for t in times for n in meta["node_ids"]])
    for name in meta["covariate_names"]:
        df[name] = 1.0
    df.to_parquet(tmp_path / "bool.parquet")
    assert main(["predict", str(served["gru"]), "--input", str(tmp_path / "bool.parquet"), "--output",
                 str(tmp_path / "f.csv")]) == 2
    err = capsys.readouterr().err
    assert "value True is true/false, not a reading" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "f.csv").exists()


def test_non_finite_json_numbers_and_huge_floats(make):
    c = make()
    r = c.post("/v1/observations", content=b'{"observations": [{"timestamp": "2024-01-03T10:00", "node_id":'
                                           b' "road-000", "value": 1e400}]}', headers={"Content-Type":
                                                                                        "application/json"})
    assert r.status_code == 422
    r = post(c, [{"timestamp": "2024-01-03T10:00", "node_id": "road-000", "value": np.finfo(float).max}])
    assert r.status_code == 200 and r.json()["flagged"] == 1 and math.isfinite(kept(c))
