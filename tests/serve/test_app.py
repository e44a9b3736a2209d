"""Every route of ``stmgt serve`` through FastAPI's TestClient, with tiny trained runs."""

import json
import math
import re
import time

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")



pytestmark = pytest.mark.slow


def post(c, rows, **kw):
    return c.post("/v1/observations", json={"observations": rows}, **kw)


# ---------------------------------------------------------------- health, models, graph, docs
def test_health_ready_models_graph_and_openapi(make, served):
    c = make(runs=("gru", "stmgt"))
    assert c.get("/healthz").json() == {"status": "ok"}
    assert c.get("/readyz").json() == {"ready": True, "store": True, "models": True,
                                       "forecasts": {"gru": "none yet", "stmgt": "none yet"}}
    info = c.get("/v1/models").json()
    assert [m["name"] for m in info["models"]] == ["gru", "stmgt"] and info["default"] == "gru"
    gru = info["models"][0]
    assert re.fullmatch(r"[0-9a-f]{12}", gru["version"]) and gru["calibrated"] and gru["horizon"] == 12
    assert info["store"]["latest_observation"] is None and info["store"]["observations"] == 0
    g = c.get("/v1/graph").json()
    assert g["has_coords"] and len(g["nodes"]) == 8 and {"id", "lat", "lon"} <= set(g["nodes"][0])
    assert g["edges"] and {"source", "target"} <= set(g["edges"][0])
    assert c.get("/v1/graph?model=stmgt").json()["model"] == "stmgt"
    assert c.get("/v1/graph?model=nope").json() == {"detail": "model 'nope' is not served; served: gru, stmgt"}
    spec = c.get("/openapi.json").json()
    assert "/v1/forecast" in spec["paths"] and "/v1/observations" in spec["paths"]
    assert "/v1/forecasts/history" in spec["paths"]
    assert c.get("/docs").status_code == 404 and c.get("/redoc").status_code == 404


def test_readyz_is_503_when_the_store_is_unreachable(make):
    c = make()
    c.service.store.ping = lambda: False
    r = c.get("/readyz")
    assert r.status_code == 503 and r.json()["store"] is False


def test_runs_with_different_node_sets_or_names_are_refused(served, tmp_path):
    import shutil

    from stmgt.errors import RunError
    from stmgt.serve.forecasting import load_models

    other = tmp_path / "other"
    shutil.copytree(served["gru"], other, ignore=shutil.ignore_patterns("checkpoints"))
    meta = json.loads((other / "data.json").read_text())
    meta["node_ids"][0] = "elsewhere"
    (other / "data.json").write_text(json.dumps(meta))
    (other / "manifest.json").unlink(missing_ok=True)  # another city's run, not an edited copy of this one
    with pytest.raises(RunError, match="different node sets"):
        load_models([served["gru"], other])
    shutil.copytree(served["gru"], tmp_path / "x" / "gru", ignore=shutil.ignore_patterns("checkpoints"))
    with pytest.raises(RunError, match="two runs are named 'gru'"):
        load_models([served["gru"], tmp_path / "x" / "gru"])


# ---------------------------------------------------------------- ingestion
def test_ingest_is_an_idempotent_upsert_and_accepts_out_of_order_rows(make, rows):
    c = make()
    batch = rows(-20, -10)
    r = post(c, batch)
    assert r.status_code == 200 and r.json()["accepted"] == len(batch)
    assert post(c, batch).status_code == 200  # re-sent: same rows, same count
    assert c.get("/v1/models").json()["store"]["observations"] == len(batch)
    early = rows(-30, -20)
    assert post(c, early[::-1]).status_code == 200  # late and out of order
    got = c.get("/v1/observations").json()
    assert got["count"] == len(batch) + len(early)
    ts = [o["timestamp"] for o in got["observations"]]
    assert ts == sorted(ts)
    changed = dict(batch[0], value=1.25)
    post(c, [changed])
    one = c.get(f"/v1/observations?nodes={changed['node_id']}&since={changed['timestamp']}"
                f"&until={changed['timestamp']}").json()["observations"]
    assert one == [{"timestamp": changed["timestamp"] + "Z", "node_id": changed["node_id"], "value": 1.25,
                    "flagged": False, "covariates": changed["covariates"]}]  # naive times are UTC


def test_get_observations_filters_and_refusals(make, rows):
    c = make()
    post(c, rows(-10))
    a = c.get("/v1/observations?nodes=road-001,road-002&limit=5").json()
    assert a["count"] == 5 and a["truncated"] and {o["node_id"] for o in a["observations"]} <= {"road-001", "road-002"}
    assert c.get("/v1/observations?since=1704067200").status_code == 200  # seconds since 1970
    assert c.get("/v1/observations?since=yesterday").json()["detail"].startswith("since: 'yesterday' is not a")
    assert c.get("/v1/observations?nodes=zz").json()["detail"] == "nodes: 'zz' is not a node of the served models"
    assert c.get("/v1/observations?limit=0").status_code == 422


def _refusal(c, row, index=1, **kw):
    good = {"timestamp": "2024-01-03T10:00:00", "node_id": "road-000", "value": 50.0}
    r = post(c, [good, row] if index == 1 else [row], **kw)
    assert r.status_code == 422, r.text
    return r.json()["detail"]


@pytest.mark.parametrize("row,field,text", [
    ({"timestamp": "2024-01-03T10:00", "node_id": "nope", "value": 1}, "node_id", "'nope' is not a node"),
    ({"timestamp": "2024-01-03T10:00", "node_id": "road-000", "value": "fast"}, "value", "must be a JSON number"),
    ({"timestamp": "2024-01-03T10:00", "node_id": "road-000", "value": None}, "value", "must be a JSON number"),
    ({"timestamp": "2024-01-03T10:00", "node_id": "road-000", "value": True}, "value", "must be a JSON number"),
    ({"timestamp": "not a time", "node_id": "road-000", "value": 1}, "timestamp", "datetime"),
    ({"timestamp": "2999-01-01T00:00", "node_id": "road-000", "value": 1}, "timestamp", "ahead of the server clock"),
    ({"node_id": "road-000", "value": 1}, "timestamp", "Field required"),
    ({"timestamp": "2024-01-03T10:00", "node_id": "road-000", "value": 1, "speed": 2}, "speed", "Extra inputs"),
    ({"timestamp": "2024-01-03T10:00", "node_id": "road-001", "value": 1, "covariates": {"snow": 1}},
     "covariates.snow", "not a covariate"),
])
def test_bad_rows_are_refused_naming_row_and_field(make, row, field, text):
    c = make()
    detail = _refusal(c, row)
    assert detail.startswith(f"observations[1].{field}: ") and text in detail and "row 1 rejected" in detail
    assert c.get("/v1/models").json()["store"]["observations"] == 0  # nothing of a refused batch is kept


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_values_are_refused(make, token):
    c = make()
    row = '{"timestamp": "2024-01-03T10:00", "node_id": "road-000", "value": TOKEN}'
    body = '{"observations": [' + row.replace("TOKEN", token) + "]}"
    r = c.post("/v1/observations", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"].startswith("observations[0].value: Input should be a finite")
    cov = ('{"observations": [{"timestamp": "2024-01-03T10:00", "node_id": "road-000", "value": 1,'
           ' "covariates": {"temperature": TOKEN}}]}').replace("TOKEN", token)
    r = c.post("/v1/observations", content=cov, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"].startswith("observations[0].covariates.temperature:")


def test_oversize_and_empty_batches_are_refused(make, rows):
    c = make(max_batch=10)
    assert post(c, rows(-5)).json()["detail"].startswith("observations: ") and "at most 10" in \
        post(c, rows(-5)).json()["detail"]
    assert post(c, []).json()["detail"] == "observations: the batch is empty; send at least one observation"
    huge = {"observations": [{"timestamp": "2024-01-03T10:00", "node_id": "road-000", "value": 1.0}] * 2000}
    r = c.post("/v1/observations", json=huge)
    assert r.status_code == 413 and r.json()["detail"].startswith("body: more than 75776 bytes")
    assert c.post("/v1/observations", json={"rows": []}).json()["detail"].startswith("observations: Field required")


def test_writes_need_the_api_key(make, rows):
    c = make(api_key="s3cret")
    batch = rows(-2)
    r = post(c, batch)
    assert r.status_code == 401 and "X-API-Key" in r.json()["detail"]
    r = post(c, batch, headers={"X-API-Key": "wrong"})
    assert r.status_code == 401 and r.json()["detail"] == "the X-API-Key header does not match the service's API key"
    assert post(c, batch, headers={"X-API-Key": "s3cret"}).status_code == 200
    assert c.get("/v1/observations").status_code == 200  # reads stay open


# ---------------------------------------------------------------- forecasts
def test_forecast_refusals(make, rows):
    c = make()
    r = c.get("/v1/forecast")
    assert r.status_code == 409 and r.json()["detail"].startswith("the store holds no observations")
    post(c, rows(-5))
    r = c.get("/v1/forecast")
    assert r.status_code == 409
    assert re.search(r"needs 12 steps of history \(5 min each\) ending .*; the store holds 5 step\(s\) from .*;"
                     r" send observations from .* on", r.json()["detail"])
    post(c, rows(-12, -5))
    assert c.get("/v1/forecast").status_code == 200
    assert c.get("/v1/forecast?model=nope").status_code == 404
    bad_q = c.get("/v1/forecast?quantiles=0.5,1.5").json()["detail"]
    assert bad_q == "quantiles: '1.5' is not strictly between 0 and 1"
    assert c.get("/v1/forecast?quantiles=half").json()["detail"].startswith("quantiles: 'half' is not a number")
    assert c.get("/v1/forecast?steps=13").json()["detail"] == "steps: 13 is outside 1..12 (the horizon of gru)"
    assert c.get("/v1/forecast?steps=x").status_code == 422
    assert c.get("/v1/forecast?nodes=zz").json()["detail"] == "nodes: 'zz' is not a node of model gru"


def test_forecast_equals_stmgt_predict_on_the_same_window(make, served, panel, rows, tmp_path):
    from stmgt.cli import main
    from stmgt.forecaster import TrainedRun
    from stmgt.predict import write_recent_observations

    recent = write_recent_observations(TrainedRun(served["gru"]), panel, tmp_path / "recent.csv")
    assert main(["predict", str(served["gru"]), "--input", str(recent), "--output", str(tmp_path / "f.parquet")]) == 0
    ref = pd.read_parquet(tmp_path / "f.parquet")

    c = make()
    post(c, rows(-12))
    got = c.get("/v1/forecast?quantiles=0.05,0.1,0.5,0.9,0.95").json()
    window = c.post("/v1/forecast", json={"observations": rows(-12),
                                          "quantiles": [0.05, 0.1, 0.5, 0.9, 0.95]}).json()
    assert got["model"] == "gru" and got["calibrated"]
    assert got["window_end"] == str(ref["issued_at"].iloc[0]).replace(" ", "T") + "Z"
    for body in (got, window):
        f = pd.DataFrame([{"step": r["step"], "node_id": r["node_id"], "mean": r["mean"], "std": r["std"],
                           **{f"q{int(round(float(k) * 100)):02d}": v for k, v in r["quantiles"].items()}}
                          for r in body["forecasts"]])
        m = ref.merge(f, on=["step", "node_id"], suffixes=("", "_api"))
        assert len(m) == 12 * 8
        for col in ("mean", "std", "q05", "q10", "q50", "q90", "q95"):
            np.testing.assert_allclose(m[f"{col}_api"], m[col], rtol=1e-5, atol=1e-3)


def test_quantiles_are_exact_mixture_quantiles_not_normal_approximations(make, rows, monkeypatch):
    import torch

    from stmgt.distributions.mixture import GaussianMixture

    seen = []
    icdf = GaussianMixture.icdf

    def spy(self, q, *a, **k):
        seen.append(self)
        return icdf(self, q, *a, **k)

    monkeypatch.setattr(GaussianMixture, "icdf", spy)
    c = make()
    post(c, rows(-12))
    body = c.get("/v1/forecast?quantiles=0.025,0.975&nodes=road-003&steps=1,12").json()
    assert [r["step"] for r in body["forecasts"]] == [1, 12] and body["quantiles"] == [0.025, 0.975]
    assert set(body["forecasts"][0]["quantiles"]) == {"0.025", "0.975"}
    dist = seen[-1]  # the calibrated mixture in data units, [1, H, N]
    node = c.service.models["gru"].node_ids.index("road-003")
    gap = 0.0
    for r in body["forecasts"]:
        for p, v in r["quantiles"].items():
            cdf = dist.cdf(torch.full(dist.batch_shape, v))[0, r["step"] - 1, node].item()
            assert abs(cdf - float(p)) < 2e-3
            normal = r["mean"] + (1.959964 if float(p) > 0.5 else -1.959964) * r["std"]
            gap = max(gap, abs(v - normal))
    assert gap > 1e-2  # a mixture's quantiles are not mean +- z std


def test_forecast_cache_and_late_rows(make, rows):
    c = make()
    post(c, rows(-13, -1))
    a = c.get("/v1/forecast").json()
    assert a["cached"] is False and a["compute_ms"] > 0
    b = c.get("/v1/forecast?nodes=road-000").json()
    assert b["cached"] is True and b["window_end"] == a["window_end"] and b["issued_at"] == a["issued_at"]
    # a late row inside the window: recomputed for the same window end
    late = dict(rows(-5, -4)[0], value=1.0)
    post(c, [late])
    d = c.get("/v1/forecast").json()
    assert d["cached"] is False and d["window_end"] == a["window_end"]
    # a row older than the window does not invalidate
    post(c, rows(-40, -39))
    assert c.get("/v1/forecast").json()["cached"] is True
    # a new step moves the window
    post(c, rows(-1))
    e = c.get("/v1/forecast").json()
    assert e["cached"] is False and e["window_end"] > a["window_end"]
    assert "stmgt_forecasts_total{model=\"gru\",cached=\"true\"} 2" in c.get("/metrics").text


def test_gaps_in_the_window_are_masked(make, rows):
    c = make()
    batch = [r for r in rows(-12) if r["node_id"] != "road-004"]
    post(c, batch)
    body = c.get("/v1/forecast?nodes=road-004").json()
    assert len(body["forecasts"]) == 12 and all(math.isfinite(r["mean"]) for r in body["forecasts"])


def test_post_forecast_refusals(make, rows):
    c = make()
    r = c.post("/v1/forecast", json={"observations": [{"timestamp": "2024-01-01T00:00", "node_id": "x", "value": 1}]})
    assert r.status_code == 422 and r.json()["detail"].startswith("observations[0].node_id: 'x' is not a node")
    r = c.post("/v1/forecast", json={"model": "nope", "observations": rows(-12)})
    assert r.status_code == 404
    no_cov = [{k: v for k, v in r.items() if k != "covariates"} for r in rows(-12)]
    r = c.post("/v1/forecast", json={"observations": no_cov})
    assert r.status_code == 422 and "covariate" in r.json()["detail"]


def test_two_models_share_one_store(make, rows):
    c = make(runs=("gru", "stmgt"))
    post(c, rows(-12))
    a, b = c.get("/v1/forecast?model=gru").json(), c.get("/v1/forecast?model=stmgt").json()
    assert a["model"] == "gru" and b["model"] == "stmgt" and a["version"] != b["version"]
    assert a["window_end"] == b["window_end"] and len(b["forecasts"]) == 96


# ---------------------------------------------------------------- live scoring, metrics
def test_live_scores_follow_arriving_observations(make, rows):
    c = make()
    post(c, rows(-30, -18))
    issued = [c.get("/v1/forecast?quantiles=0.5").json()]
    for k in range(-18, -12):  # six more steps, a forecast issued after each
        post(c, rows(k, k + 1))
        issued.append(c.get("/v1/forecast?quantiles=0.5").json())
    s = c.get("/v1/scores").json()["scores"][0]
    assert s["model"] == "gru" and s["forecasts_issued"] == 7
    assert [r["step"] for r in s["steps"]] == [1, 2, 3, 4, 5, 6]
    obs = {(o["node_id"], o["timestamp"] + "Z"): o["value"] for o in rows(-18, -12)}
    for r in s["steps"]:  # MAE of the median per step, by hand
        errs = [abs(obs[(f["node_id"], f["timestamp"])] - f["quantiles"]["0.5"]) for fc in issued
                for f in fc["forecasts"] if f["step"] == r["step"] and (f["node_id"], f["timestamp"]) in obs]
        assert r["n"] == len(errs) and r["mae"] == pytest.approx(float(np.mean(errs)), abs=1e-3)
        assert 0 <= r["coverage80"] <= r["coverage90"] <= 1
    assert s["n"] == sum(r["n"] for r in s["steps"])
    text = c.get("/metrics").text
    assert 'stmgt_score_mae{model="gru",version="' in text and 'stmgt_score_coverage80{' in text


def test_metrics_text(make, rows):
    c = make()
    post(c, rows(-12))
    c.get("/v1/forecast")
    c.get("/v1/forecast?model=nope")
    text = c.get("/metrics").text
    for needle in ('stmgt_http_requests_total{route="/v1/observations",method="POST",status="200"} 1',
                   'stmgt_http_requests_total{route="/v1/forecast",method="GET",status="404"} 1',
                   '# TYPE stmgt_http_request_duration_seconds histogram',
                   'stmgt_http_request_duration_seconds_bucket{route="/v1/forecast",method="GET",le="+Inf"} 2',
                   'stmgt_forecast_compute_seconds_count{model="gru"} 1',
                   f"stmgt_observations_ingested_total {len(rows(-12))}",
                   f"stmgt_store_observations {len(rows(-12))}", "stmgt_store_bytes "):
        assert needle in text, needle
    for line in text.splitlines():  # every sample line is `name{labels} number`
        if not line.startswith("#"):
            assert re.fullmatch(r"[a-z_0-9]+(\{.*\})? (-?[0-9.e+-]+|NaN|\+Inf)", line), line


def test_the_issuer_forecasts_when_observations_arrive(make, rows):
    c = make(auto_forecast=True, settle_seconds=0.05)
    with c:  # runs the lifespan: the issuer thread starts and stops with the app
        post(c, rows(-12))
        deadline = time.time() + 30
        while time.time() < deadline and c.service.store.forecasts_issued("gru", c.service.models["gru"].version) < 1:
            time.sleep(0.1)
        assert c.service.store.forecasts_issued("gru", c.service.models["gru"].version) == 1
        assert c.get("/v1/forecast").json()["cached"] is True


# ---------------------------------------------------------------- the dashboard
def test_dashboard_is_served_with_local_assets_only(make):
    from stmgt.serve.app import static_files

    c = make()
    r = c.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    refs = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert refs and all(ref.startswith("/static/") for ref in refs)
    for ref in refs:
        assert c.get(ref).status_code == 200, ref
    files = static_files()
    assert {p.name for p in files} >= {"index.html", "app.js", "style.css"}
    for p in files:
        text = p.read_text()
        assert not re.search(r"https?://|//[a-z0-9-]+\.[a-z]", text, re.I), p.name
        assert "@import" not in text and "url(" not in text, p.name
    js = c.get("/static/app.js").text
    for route in ("/v1/models", "/v1/graph", "/v1/forecast", "/v1/observations", "/v1/scores"):
        assert route in js
