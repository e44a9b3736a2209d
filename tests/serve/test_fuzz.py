"""Requests generated from the service's own OpenAPI schema (schemathesis) never get a 500.

Schemathesis is used through its Python API (each operation's Hypothesis strategy drawn by a plain
``@given``), not its pytest plugin, whose hooks read pytest internals that change between releases.
"""

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402

from stmgt.serve.app import Service, create_app  # noqa: E402

pytestmark = pytest.mark.slow

EXAMPLES = 30
"""Generated requests per API operation."""


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


def _operations(schema) -> list:
    ops = [result.ok() for result in schema.get_all_operations()]
    assert len(ops) >= 8, f"the schema lists {len(ops)} operations"
    return ops


def test_generated_requests_never_get_a_server_error(api_schema):
    failures = []
    for op in _operations(api_schema):
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck),
                  database=None)
        @given(case=op.as_strategy())
        def check(case):
            response = case.call()
            assert response.status_code < 500, (f"{case.method} {case.formatted_path} -> {response.status_code}:"
                                                f" {response.text[:300]}")

        try:
            check()
        except AssertionError as e:
            failures.append(str(e).splitlines()[0])
    assert not failures, "\n".join(failures)
