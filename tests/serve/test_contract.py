"""The HTTP contract of ``stmgt serve`` (``/v1``), checked against oracles outside the service: one time format
(ISO 8601, UTC, whole seconds, ``Z``) in every answer, a schema for every answer and refusal in ``/openapi.json``,
undeclared query parameters refused, covariates in ``GET /v1/observations`` (a window rebuilt from it forecasts
the same numbers), the forecast history with the observations it was scored against (SQLite and PostgreSQL),
GeoJSON forecasts, and refusals in API words (never a command-line flag)."""

import json
import math
import re
import shutil
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from stmgt.serve.app import Service, api_words, create_app  # noqa: E402

pytestmark = pytest.mark.slow

TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
#: Anything that looks like a date and a time of day (to find a time written in another format).
TIMEISH = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}[0-9:.+Z-]*")
TIME_KEYS = {"timestamp", "window_end", "issued_at", "last_observed_at", "latest", "latest_observation",
             "earliest_accepted"}
FLAG = re.compile(r"(?<![\w-])--[a-z]")
#: Every route of the API and the refusals it declares (besides 200).
ROUTES = {("get", "/healthz"): {422}, ("get", "/readyz"): {422, 503}, ("get", "/metrics"): {422},
          ("get", "/v1/models"): {422}, ("get", "/v1/graph"): {404, 422},
          ("post", "/v1/observations"): {401, 413, 422, 503}, ("get", "/v1/observations"): {422},
          ("get", "/v1/forecast"): {404, 409, 422, 503}, ("post", "/v1/forecast"): {404, 413, 422},
          ("get", "/v1/scores"): {404, 422}, ("get", "/v1/forecasts/history"): {404, 422}}
GET_ROUTES = sorted(p for m, p in ROUTES if m == "get")


def post(c, rows, **kw):
    r = c.post("/v1/observations", json={"observations": rows}, **kw)
    return r


def utc(text: str) -> datetime:
    """A time of an answer, checked to be in the one format, as an aware UTC datetime."""
    assert TIME.fullmatch(text), text
    t = datetime.fromisoformat(text)
    assert t.utcoffset() == timedelta(0), text
    return t


def z(naive: str) -> str:
    """A naive ISO time sent to the service as the answers write it (naive times are UTC)."""
    return datetime.fromisoformat(naive).replace(microsecond=0).isoformat() + "Z"


def times_in(body, found=None) -> list[str]:
    """Every time an answer carries (the values of :data:`TIME_KEYS`), checking that no other string of it looks
    like a time written differently."""
    found = [] if found is None else found
    if isinstance(body, dict):
        for k, v in body.items():
            if k in TIME_KEYS and v is not None:
                found.append(v)
            times_in(v, found)
    elif isinstance(body, list):
        for v in body:
            times_in(v, found)
    elif isinstance(body, str):
        for m in TIMEISH.finditer(body):
            assert TIME.fullmatch(m.group(0)), f"a time in another format: {body!r}"
    return found


@pytest.fixture(scope="module")
def spec(served, tmp_path_factory):
    """The service's ``/openapi.json``."""
    svc = Service([served["gru"]], db=str(tmp_path_factory.mktemp("spec") / "s.db"), auto_forecast=False)
    try:
        return TestClient(create_app(svc)).get("/openapi.json").json()
    finally:
        svc.store.close()


def conforms(spec, body, schema_name):
    """Validate ``body`` against a component schema of ``spec`` (JSON Schema 2020-12, as OpenAPI 3.1), with
    ``jsonschema_rs`` (schemathesis' validator, of the test extra), formats included."""
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": spec["components"]}
    jsonschema_rs.Draft202012Validator(schema, validate_formats=True).validate(body)


# ---------------------------------------------------------------- 1. one time format
def test_every_time_in_every_answer_is_utc_with_whole_seconds_and_z(make, rows, spec):
    c = make(runs=("gru", "stmgt"))
    window = rows(-13, -1)
    last = max(r["timestamp"] for r in window)
    before = datetime.now(timezone.utc).replace(microsecond=0)
    ack = post(c, window).json()
    assert ack["latest"] == z(last)
    # an offset is converted to UTC; a naive time is UTC
    early = rows(-40, -39)[0]
    shifted = (datetime.fromisoformat(early["timestamp"]) + timedelta(hours=2)).isoformat() + "+02:00"
    assert post(c, [dict(early, timestamp=shifted)]).status_code == 200
    got = c.get("/v1/observations", params={"nodes": early["node_id"], "since": shifted, "until": shifted}).json()
    assert [o["timestamp"] for o in got["observations"]] == [z(early["timestamp"])]

    answers = {
        "forecast": c.get("/v1/forecast").json(),
        "geojson": c.get("/v1/forecast?format=geojson").json(),
        "lines": c.get("/v1/forecast?format=geojson&geometry=lines&model=stmgt").json(),
        "window": c.post("/v1/forecast", json={"observations": window}).json(),
        "observations": c.get("/v1/observations?limit=100000").json(),
        "models": c.get("/v1/models").json(),
        "scores": c.get("/v1/scores").json(),
        "history": c.get("/v1/forecasts/history").json(),
    }
    after = datetime.now(timezone.utc)
    for name, body in answers.items():
        found = times_in(body)
        assert found, name
        for t in found:
            utc(t)
    f = answers["forecast"]
    assert f["window_end"] == z(last) == answers["window"]["window_end"]
    assert before - timedelta(seconds=1) <= utc(f["issued_at"]) <= after
    end = utc(f["window_end"])
    assert all(utc(r["timestamp"]) == end + timedelta(minutes=5 * r["step"]) for r in f["forecasts"])
    assert all(r["last_observed_at"] is None or utc(r["last_observed_at"]) <= end for r in f["roads"])
    store = answers["models"]["store"]
    assert store["latest_observation"] == z(last) and store["earliest_accepted"] == "1970-01-01T00:00:00Z"
    assert [s["window_end"] for s in answers["scores"]["scores"]] == [z(last), z(last)]
    assert {r["window_end"] for r in answers["history"]["forecasts"]} == {z(last)}
    assert answers["geojson"]["window_end"] == z(last)


# ---------------------------------------------------------------- 2. schemas for every answer and refusal
def _refs(node, out):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                out.append(v)
            else:
                _refs(v, out)
    elif isinstance(node, list):
        for v in node:
            _refs(v, out)
    return out


def test_openapi_declares_every_answer_and_refusal(spec):
    ops = {(m, p): op for p, item in spec["paths"].items() for m, op in item.items()}
    assert set(ops) == set(ROUTES)
    assert all(p.startswith("/v1/") or p in ("/healthz", "/readyz", "/metrics") for _, p in ops)
    schemas = spec["components"]["schemas"]
    for ref in _refs(spec, []):
        assert ref.startswith("#/components/schemas/") and ref.split("/")[-1] in schemas, ref
    error = schemas["ErrorResponse"]
    assert error["required"] == ["detail"] and error["properties"]["detail"]["type"] == "string"
    ids = [op["operationId"] for op in ops.values()]
    assert len(set(ids)) == len(ids)  # a client generator names its methods from these
    for key, op in ops.items():
        codes = {int(c) for c in op["responses"]}
        assert codes == {200} | ROUTES[key], key
        ok = op["responses"]["200"]["content"]
        for media, content in ok.items():
            schema = content["schema"]
            assert schema, (key, media)  # never {}
            if media == "text/plain":
                assert key == ("get", "/metrics") and schema == {"type": "string"}
            else:
                assert schemas[schema["$ref"].split("/")[-1]]["properties"], key
        for code in ROUTES[key]:
            declared = op["responses"][str(code)]["content"]["application/json"]["schema"]["$ref"]
            assert declared.endswith("/ReadyResponse" if key == ("get", "/readyz") and code == 503
                                     else "/ErrorResponse"), (key, code)
    geo = ops[("get", "/v1/forecast")]["responses"]["200"]["content"]
    assert set(geo) == {"application/json", "application/geo+json"}
    assert geo["application/geo+json"]["schema"]["$ref"].endswith("/ForecastGeoJSON")
    assert ops[("post", "/v1/observations")]["security"] == [{"apiKey": []}, {}]  # a key only where one is set


def test_answers_and_refusals_conform_to_what_the_openapi_declares(make, rows, spec):
    c = make()
    ops = {(m, p): op for p, item in spec["paths"].items() for m, op in item.items()}

    def check(method, path, r, expect):
        assert r.status_code == expect, (method, path, r.text[:200])
        op = ops[(method, path)]
        assert str(r.status_code) in op["responses"], (method, path, r.status_code)
        media = r.headers["content-type"].split(";")[0]
        schema = op["responses"][str(r.status_code)]["content"][media]["schema"]
        if "$ref" in schema:
            conforms(spec, r.json(), schema["$ref"].split("/")[-1])
        if r.status_code >= 400:
            assert set(r.json()) == {"detail"} or path == "/readyz"
            assert "\n" not in r.json().get("detail", "")

    check("get", "/v1/forecast", c.get("/v1/forecast"), 409)
    check("post", "/v1/observations", post(c, rows(-24, -12)), 200)
    check("post", "/v1/observations", post(c, [dict(rows(-1)[0], node_id="zz")]), 422)
    check("get", "/v1/forecast", c.get("/v1/forecast"), 200)
    check("get", "/v1/forecast", c.get("/v1/forecast?format=geojson&steps=1,12"), 200)
    check("get", "/v1/forecast", c.get("/v1/forecast?format=geojson&geometry=lines"), 200)
    check("get", "/v1/forecast", c.get("/v1/forecast?model=nope"), 404)
    check("post", "/v1/forecast", c.post("/v1/forecast", json={"observations": rows(-12)}), 200)
    check("post", "/v1/forecast", c.post("/v1/forecast", json={"model": "x", "observations": rows(-12)}), 404)
    check("post", "/v1/forecast", c.post("/v1/forecast", json={"observations": []}), 422)
    check("get", "/v1/observations", c.get("/v1/observations?limit=3"), 200)
    check("get", "/v1/observations", c.get("/v1/observations?limit=0"), 422)
    check("get", "/v1/models", c.get("/v1/models"), 200)
    check("get", "/v1/graph", c.get("/v1/graph"), 200)
    check("get", "/v1/graph", c.get("/v1/graph?model=x"), 404)
    check("get", "/v1/scores", c.get("/v1/scores"), 200)
    check("get", "/v1/scores", c.get("/v1/scores?model=x"), 404)
    check("get", "/v1/forecasts/history", c.get("/v1/forecasts/history"), 200)
    check("get", "/v1/forecasts/history", c.get("/v1/forecasts/history?model=x"), 404)
    check("get", "/healthz", c.get("/healthz"), 200)
    check("get", "/readyz", c.get("/readyz"), 200)
    check("get", "/metrics", c.get("/metrics"), 200)
    keyed = make(api_key="k")
    check("post", "/v1/observations", post(keyed, rows(-1)), 401)
    small = make(max_batch=1)  # a body limit of 1 KiB + 64 KiB
    check("post", "/v1/observations", post(small, rows(-200)), 413)
    check("post", "/v1/forecast", small.post("/v1/forecast", json={"observations": rows(-200)}), 413)
    small.service.store.ping = lambda: False
    check("get", "/readyz", small.get("/readyz"), 503)


# ---------------------------------------------------------------- 3. undeclared query parameters
@pytest.mark.parametrize("path", GET_ROUTES)
def test_an_undeclared_query_parameter_is_refused_naming_the_accepted_ones(make, spec, path):
    c = make()
    accepted = [p["name"] for p in spec["paths"][path]["get"].get("parameters", []) if p["in"] == "query"]
    r = c.get(path, params={"bogus": "1"})
    assert r.status_code == 422
    assert r.json() == {"detail": f"bogus: not a parameter of GET {path} (accepted: {', '.join(accepted) or 'none'})"}
    assert c.get(path).status_code in (200, 409)  # without it: answered (409: no history in the store yet)


def test_a_misspelt_parameter_does_not_answer_for_every_road(make, rows):
    c = make()
    post(c, rows(-12))
    r = c.get("/v1/forecast?node=road-000")
    assert r.status_code == 422 and r.json()["detail"] == ("node: not a parameter of GET /v1/forecast (accepted:"
                                                           " model, nodes, steps, quantiles, format, geometry)")
    assert {f["node_id"] for f in c.get("/v1/forecast?nodes=road-000").json()["forecasts"]} == {"road-000"}
    r = c.get("/v1/observations?node=road-000&since=2024-01-01")
    assert r.json()["detail"] == "node: not a parameter of GET /v1/observations (accepted: nodes, since, until, limit)"


def test_post_routes_refuse_query_parameters_too(make, rows):
    c = make()
    r = c.post("/v1/observations?dry_run=1", json={"observations": rows(-1)})
    assert r.status_code == 422 and r.json()["detail"] == ("dry_run: not a parameter of POST /v1/observations"
                                                           " (accepted: none)")
    assert c.get("/v1/models").json()["store"]["observations"] == 0  # nothing of it was kept
    r = c.post("/v1/forecast?model=gru", json={"observations": rows(-12)})
    assert r.json()["detail"] == "model: not a parameter of POST /v1/forecast (accepted: none)"


# ---------------------------------------------------------------- 4. covariates in GET /v1/observations
def test_a_window_rebuilt_from_get_observations_forecasts_the_same_numbers(make, rows):
    c = make()
    sent = rows(-20)
    post(c, sent)
    got = c.get("/v1/observations?limit=100000").json()
    assert not got["truncated"] and got["count"] == len(sent)
    covariates = {z(r["timestamp"]): r["covariates"] for r in sent if r.get("covariates")}
    assert covariates and all(o["covariates"] == covariates[o["timestamp"]] for o in got["observations"])
    window = [{"timestamp": o["timestamp"], "node_id": o["node_id"], "value": o["value"],
               **({"covariates": o["covariates"]} if o.get("covariates") else {})}
              for o in got["observations"] if not o["flagged"]]
    bare = [{k: v for k, v in o.items() if k != "covariates"} for o in window]
    assert c.post("/v1/forecast", json={"observations": bare}).status_code == 422  # the covariates are needed
    a = c.get("/v1/forecast").json()
    b = c.post("/v1/forecast", json={"observations": window}).json()
    assert a["window_end"] == b["window_end"]
    fa = {(f["step"], f["node_id"]): f for f in a["forecasts"]}
    fb = {(f["step"], f["node_id"]): f for f in b["forecasts"]}
    assert set(fa) == set(fb) and len(fa) == 12 * 8
    for k, f in fa.items():
        np.testing.assert_allclose([f["mean"], f["std"], *f["quantiles"].values()],
                                   [fb[k]["mean"], fb[k]["std"], *fb[k]["quantiles"].values()], atol=2e-4)


def test_observations_without_covariates_carry_none_and_flagged_covariates_are_named(make, rows):
    c = make()
    row = {"timestamp": "2024-01-03T10:00:00", "node_id": "road-000", "value": 50.0}
    post(c, [row])
    assert c.get("/v1/observations").json()["observations"] == [{**row, "timestamp": "2024-01-03T10:00:00Z",
                                                                 "flagged": False}]
    hi = c.service.trust.cov_ranges["temperature"][1]
    assert math.isfinite(hi)
    bad = hi + abs(hi) + 1e9  # beyond what `stmgt predict` accepts: stored flagged
    r = post(c, [dict(row, timestamp="2024-01-03T10:05:00", covariates={"temperature": bad, "wind_speed": 3.0})])
    assert r.json()["flagged_covariates"] == 1
    o = c.get("/v1/observations?since=2024-01-03T10:05:00Z").json()["observations"]
    assert o == [{"timestamp": "2024-01-03T10:05:00Z", "node_id": "road-000", "value": 50.0, "flagged": False,
                  "covariates": {"temperature": bad, "wind_speed": 3.0}, "flagged_covariates": ["temperature"]}]


# ---------------------------------------------------------------- 5. the forecast history
def test_forecast_history_pairs_issued_forecasts_with_their_observations(make, rows, new_db):
    c = make(db=new_db())
    post(c, rows(-30, -18))
    issued = [c.get("/v1/forecast").json()]
    for k in range(-18, -15):  # three more steps, a forecast issued after each
        post(c, rows(k, k + 1))
        issued.append(c.get("/v1/forecast").json())
    observed = {(o["node_id"], z(o["timestamp"])): o["value"] for o in rows(-30, -15)}
    h = c.get("/v1/forecasts/history?limit=100000").json()
    assert h["model"] == "gru" and h["version"] == issued[0]["version"] and h["interval_minutes"] == 5
    assert h["count"] == len(h["forecasts"]) == len(issued) * 12 * 8 and h["truncated"] is False
    rows_by = {(r["window_end"], r["step"], r["node_id"]): r for r in h["forecasts"]}
    seen = {"value": 0, "null": 0}
    for fc in issued:
        for f in fc["forecasts"]:
            r = rows_by[(fc["window_end"], f["step"], f["node_id"])]
            assert r["timestamp"] == f["timestamp"] and r["mean"] == f["mean"] and r["quantiles"] == f["quantiles"]
            assert abs((utc(r["issued_at"]) - utc(fc["issued_at"])).total_seconds()) <= 1
            want = observed.get((f["node_id"], f["timestamp"]))
            if want is None:
                assert r["observed"] is None
                seen["null"] += 1
            else:
                assert r["observed"] == pytest.approx(want, abs=1e-9)
                seen["value"] += 1
    assert seen["value"] and seen["null"]  # both: scored, and not observed yet
    # the live scores are these pairs: MAE of the median per step
    scores = {s["step"]: s for s in c.get("/v1/scores").json()["scores"][0]["steps"]}
    for step, s in scores.items():
        errs = [abs(r["observed"] - r["quantiles"]["0.5"]) for r in h["forecasts"]
                if r["step"] == step and r["observed"] is not None]
        assert s["n"] == len(errs) and s["mae"] == pytest.approx(np.mean(errs), abs=1e-3)
    # selections
    ends = sorted({fc["window_end"] for fc in issued})
    part = c.get("/v1/forecasts/history", params={"since": ends[1], "until": ends[2]}).json()["forecasts"]
    assert {r["window_end"] for r in part} == {ends[1], ends[2]} and len(part) == 2 * 96
    one = c.get("/v1/forecasts/history?nodes=road-001&until=" + ends[0]).json()["forecasts"]
    assert {r["node_id"] for r in one} == {"road-001"} and len(one) == 12
    cut = c.get("/v1/forecasts/history?limit=5").json()
    assert cut["count"] == 5 and cut["truncated"] is True and cut["forecasts"] == h["forecasts"][:5]
    assert [(r["window_end"], r["step"], r["node_id"]) for r in h["forecasts"]] == sorted(rows_by)
    assert c.get("/v1/forecasts/history?version=000000000000").json()["forecasts"] == []
    for q, status, start in (("model=nope", 404, "model 'nope' is not served"),
                             ("nodes=zz", 422, "nodes: 'zz' is not a node of model gru"),
                             ("since=soon", 422, "since: 'soon' is not a timestamp"),
                             ("limit=100001", 422, "limit: "), ("limit=0", 422, "limit: ")):
        r = c.get("/v1/forecasts/history?" + q)
        assert r.status_code == status and r.json()["detail"].startswith(start), (q, r.text)


# ---------------------------------------------------------------- 6. GeoJSON
def _by_node(body):
    """A JSON forecast's rows per node, without their node_id (as GeoJSON properties carry them)."""
    out = {}
    for f in body["forecasts"]:
        out.setdefault(f["node_id"], []).append({k: v for k, v in f.items() if k != "node_id"})
    return out


def test_geojson_points_and_lines_carry_the_forecast_at_lon_lat(make, rows, served, spec):
    c = make()
    post(c, rows(-12))
    meta = json.loads((served["gru"] / "data.json").read_text())
    lat_lon = dict(zip(meta["node_ids"], meta["coords"]))
    plain = c.get("/v1/forecast?steps=1,6&quantiles=0.1,0.9").json()
    per_node = _by_node(plain)
    r = c.get("/v1/forecast?steps=1,6&quantiles=0.1,0.9&format=geojson")
    assert r.status_code == 200 and r.headers["content-type"] == "application/geo+json"
    g = r.json()
    conforms(spec, g, "ForecastGeoJSON")
    assert g["type"] == "FeatureCollection" and g["geometry"] == "points"
    assert {k: g[k] for k in ("model", "version", "window_end", "issued_at", "quantiles")} == \
        {k: plain[k] for k in ("model", "version", "window_end", "issued_at", "quantiles")}
    assert len(g["features"]) == 8
    roads = {x["node_id"]: x for x in plain["roads"]}
    for f in g["features"]:
        n = f["properties"]["node_id"]
        assert f["type"] == "Feature" and f["geometry"]["type"] == "Point"
        assert f["geometry"]["coordinates"] == [lat_lon[n][1], lat_lon[n][0]]  # GeoJSON is [lon, lat]
        assert f["properties"]["forecasts"] == per_node[n] and len(per_node[n]) == 2
        assert f["properties"]["status"] == roads[n]["status"]
    graph = np.load(served["gru"] / "graph.npz")
    ei = graph["edge_index"]
    edges = [(meta["node_ids"][a], meta["node_ids"][b]) for a, b in zip(ei[0], ei[1]) if a != b]
    lines = c.get("/v1/forecast?steps=1,6&quantiles=0.1,0.9&format=geojson&geometry=lines").json()
    conforms(spec, lines, "ForecastGeoJSON")
    assert lines["geometry"] == "lines" and len(lines["features"]) == len(edges) > 0
    for f, (s, t) in zip(lines["features"], edges):
        p = f["properties"]
        assert f["geometry"] == {"type": "LineString", "coordinates": [[lat_lon[s][1], lat_lon[s][0]],
                                                                       [lat_lon[t][1], lat_lon[t][0]]]}
        assert (p["source"], p["target"], p["node_id"]) == (s, t, t) and p["forecasts"] == per_node[t]
    into = c.get("/v1/forecast?format=geojson&geometry=lines&nodes=road-001").json()["features"]
    assert len(into) == sum(1 for _, t in edges if t == "road-001")
    assert all(f["properties"]["target"] == "road-001" for f in into)


def test_geojson_refusals(make, rows, served, tmp_path):
    c = make()
    post(c, rows(-12))
    for q, text in (("format=xml", "format: Input should be 'json' or 'geojson'"),
                    ("geometry=lines", "geometry: lines is for format=geojson only; add format=geojson or leave it"
                                       " out"),
                    ("format=geojson&geometry=polygons", "geometry: Input should be 'points' or 'lines'")):
        r = c.get("/v1/forecast?" + q)
        assert r.status_code == 422 and r.json()["detail"] == text, q
    bare = tmp_path / "bare"
    shutil.copytree(served["gru"], bare, ignore=shutil.ignore_patterns("checkpoints"))
    meta = json.loads((bare / "data.json").read_text())
    del meta["coords"]
    (bare / "data.json").write_text(json.dumps(meta))
    (bare / "manifest.json").unlink(missing_ok=True)
    c = make(runs=(bare,))
    post(c, rows(-12))
    r = c.get("/v1/forecast?format=geojson")
    assert r.status_code == 422 and r.json() == {"detail": "format: geojson needs node coordinates and model bare has"
                                                           " none (its data.json has no coords); ask format=json"}
    assert c.get("/v1/forecast").status_code == 200


# ---------------------------------------------------------------- 7. API words, never CLI flags
def test_refusals_name_api_fields_and_server_settings_never_cli_flags(make, rows):
    c = make(earliest="2000-01-01", max_future_hours=1)
    details = []

    def refused(r, status):
        assert r.status_code == status, r.text
        details.append(r.json()["detail"])
        return details[-1]

    # a sparse window: the coverage check of stmgt.predict, shared with `stmgt predict --min-coverage`
    sparse = [r for r in rows(-12) if r["node_id"] in ("road-000", "road-001", "road-002")]
    d = refused(c.post("/v1/forecast", json={"observations": sparse}), 422)
    assert re.fullmatch(r"observations: the 12-step window up to \S+Z has only .* below the minimum coverage 0\.5 a"
                        r" forecast needs; give the latest 12 steps \(60 min\) of every node", d), d
    post(c, sparse)
    d = refused(c.get("/v1/forecast"), 409)
    assert d.startswith("the store: the 12-step window up to ") and "below the minimum coverage 0.5 a forecast" in d
    assert c.get("/readyz").json()["forecasts"]["gru"] == "failed: " + d
    future = (datetime.now(timezone.utc) + timedelta(hours=2)).replace(tzinfo=None).isoformat()
    d = refused(post(c, [{"timestamp": future, "node_id": "road-000", "value": 1.0}]), 422)
    assert re.fullmatch(r"observations\[0\]\.timestamp: \S+Z is more than 1 h ahead of the server clock \(\S+Z;"
                        r" server setting max_future_hours\); row 0 rejected", d), d
    d = refused(post(c, [{"timestamp": "1999-01-01T00:00", "node_id": "road-000", "value": 1.0}]), 422)
    assert d == ("observations[0].timestamp: 1999-01-01T00:00:00Z is before 2000-01-01T00:00:00Z, the earliest time"
                 " accepted (server setting earliest); row 0 rejected")
    fresh = make()
    post(fresh, rows(-5))
    d = refused(fresh.get("/v1/forecast"), 409)
    assert re.fullmatch(r"model gru needs 12 steps of history \(5 min each\) ending \S+Z; the store holds 5 step\(s\)"
                        r" from \S+Z; send observations from \S+Z on", d), d
    assert not [d for d in details if FLAG.search(d)]


def test_api_words_maps_the_shared_messages():
    assert api_words("window: x, below --min-coverage 0.5; give more, or lower --min-coverage") == (
        "observations: x, below the minimum coverage 0.5 a forecast needs; give more")
    assert api_words("window: the model was trained with covariates a, b; column(s) b missing; add them (same"
                     " names and units as in training)") == (
        "observations: the model was trained with covariates a, b; no observation carries b; add it to the rows'"
        " covariates (same names and units as in training)")
    assert api_words("pass --allow-gap to forecast") == "pass option allow_gap to forecast"
    assert api_words("ending 2024-01-03 08:00:00; from 2024-01-03T07:00:00Z") == (
        "ending 2024-01-03T08:00:00Z; from 2024-01-03T07:00:00Z")
    assert api_words("road-a--b and 2024-01-03 08:00:00+01:00") == "road-a--b and 2024-01-03 08:00:00+01:00"
