"""Requests generated from the service's own OpenAPI schema (schemathesis) never get a 500."""

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402

from stmgt.serve.app import Service, create_app  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api_schema(served, rows, tmp_path_factory):
    """The schema of a service over the tiny GRU run, its store holding enough history to forecast."""
    from fastapi.testclient import TestClient

    svc = Service([served["gru"]], db=str(tmp_path_factory.mktemp("fuzz") / "s.db"), auto_forecast=False)
    app = create_app(svc)
    with TestClient(app) as c:
        assert c.post("/v1/observations", json={"observations": rows(-24)}).status_code == 200
    svc.start()
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    svc.stop()


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_generated_requests_never_get_a_server_error(case):
    response = case.call()
    assert response.status_code < 500, (f"{case.method} {case.formatted_path} -> {response.status_code}:"
                                        f" {response.text[:300]}")
