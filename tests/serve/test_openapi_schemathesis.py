"""Every answer of ``stmgt serve`` keeps the contract its own ``/openapi.json`` declares (schemathesis, in-process
over ASGI): for requests generated from the schema and for hand-written valid ones, the status code is declared
for the operation (``status_code_conformance``), the media type is one it declares (``content_type_conformance``)
and the body validates against the declared schema (``response_schema_conformance``), including the pre-encoded
JSON and GeoJSON forecasts that FastAPI does not validate itself.

Schemathesis is driven through its Python API (each operation's Hypothesis strategy drawn by a plain ``@given``),
as in ``test_fuzz.py``, not through its pytest plugin.
"""

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from stmgt.serve.app import Service, create_app  # noqa: E402

pytestmark = pytest.mark.slow

EXAMPLES = 40
"""Generated requests per API operation (11 operations: about 10 s on a busy 2-core machine)."""
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api(served, rows, tmp_path_factory):
    """``(schema, rows)``: the schema of a service over the tiny GRU run, its store holding enough history to
    forecast and two issued forecasts (so that scores and the history have rows)."""
    from fastapi.testclient import TestClient

    svc = Service([served["gru"]], db=str(tmp_path_factory.mktemp("conformance") / "s.db"), auto_forecast=False)
    app = create_app(svc)
    c = TestClient(app)
    assert c.post("/v1/observations", json={"observations": rows(-30, -1)}).status_code == 200
    assert c.get("/v1/forecast").status_code == 200
    assert c.post("/v1/observations", json={"observations": rows(-1)}).status_code == 200
    assert c.get("/v1/forecast").status_code == 200
    yield schemathesis.openapi.from_asgi("/openapi.json", app), rows
    svc.store.close()


def _operations(schema) -> dict:
    ops = {(op.method.upper(), op.path): op for op in (r.ok() for r in schema.get_all_operations())}
    assert len(ops) == 11, sorted(ops)
    return ops


def test_generated_requests_get_answers_that_conform_to_the_schema(api):
    schema, _ = api
    failures = []
    for (method, path), op in _operations(schema).items():
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck),
                  database=None)
        @given(case=op.as_strategy())
        def check(case):
            response = case.call()
            case.validate_response(response, checks=CHECKS)

        try:
            check()
        except Exception as e:  # a schemathesis failure (or a group of them): keep going, report them all
            failures.append(f"{method} {path}: {str(e).strip().splitlines()[0] if str(e).strip() else repr(e)}")
    assert not failures, "\n".join(failures)


def test_valid_requests_get_200s_that_conform_to_the_schema(api):
    """The success answers of every operation, checked against the schema (generated requests are mostly refused:
    without these, a broken success schema could go unnoticed)."""
    schema, rows = api
    ops = _operations(schema)
    window = rows(-12)
    valid = [
        ("GET", "/healthz", {}), ("GET", "/readyz", {}), ("GET", "/metrics", {}), ("GET", "/v1/models", {}),
        ("GET", "/v1/graph", {"query": {"model": "gru"}}),
        ("POST", "/v1/observations", {"body": {"observations": rows(-1)}}),
        ("GET", "/v1/observations", {"query": {"nodes": "road-000,road-001", "limit": 50}}),
        ("GET", "/v1/forecast", {"query": {"steps": "1,12", "quantiles": "0.25,0.75"}}),
        ("GET", "/v1/forecast", {"query": {"format": "geojson"}}),
        ("GET", "/v1/forecast", {"query": {"format": "geojson", "geometry": "lines", "nodes": "road-001"}}),
        ("POST", "/v1/forecast", {"body": {"observations": window, "steps": [1], "quantiles": [0.5]}}),
        ("GET", "/v1/scores", {"query": {"model": "gru"}}),
        ("GET", "/v1/forecasts/history", {"query": {"nodes": "road-003", "limit": 30}}),
    ]
    assert {(m, p) for m, p, _ in valid} == set(ops)
    for method, path, parts in valid:
        case = ops[(method, path)].Case(**parts)
        response = case.call()
        assert response.status_code == 200, (method, path, response.text[:300])
        case.validate_response(response, checks=CHECKS)
    geo = ops[("GET", "/v1/forecast")].Case(query={"format": "geojson"}).call()
    assert geo.headers["content-type"] == ["application/geo+json"]
