"""The OpenAPI schema is valid, and a bounded schemathesis run against the app finds no 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from online.api import ApiSettings, create_app
from online.eventlog import EventLog

KEY = "schemathesis-key"
# users that generated requests hit often ("0", "a"), so profile and history return 200s too
SEED_EVENTS = [
    {"event_id": f"seed-{user}-{k}", "user_id": user, "type": t, "ts": f"2024-03-01T0{k}:00:00Z",
     **({"price": 4.0} if t in ("purchase", "refund") else {})}
    for user in ("0", "a", "u1")
    for k, t in enumerate(["view", "add_to_cart", "purchase", "refund", "view"])
]  # fmt: skip


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    settings = ApiSettings(data_dir=tmp_path_factory.mktemp("api-schema"), api_write_keys=[KEY])
    with EventLog(settings.event_log_path) as log:
        log.append(SEED_EVENTS)  # projected when the lifespan opens the app
    return create_app(settings)


@pytest.fixture(scope="module")
def api_schema(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    yield schema
    from schemathesis.python.asgi import shutdown_lifespans  # closes the app's log

    shutdown_lifespans()


def test_openapi_schema_is_valid(api_schema) -> None:
    api_schema.validate()  # against the OpenAPI meta-schema; raises on any violation
    paths = api_schema.raw_schema["paths"]
    assert {"/v1/events", "/v1/users/{user_id}/profile", "/v1/profiles:batch",
            "/v1/users/{user_id}/events", "/v1/users/{user_id}", "/healthz", "/readyz",
            "/metrics"} <= set(paths)


def _operations() -> list[tuple[str, str]]:
    # building the app opens nothing (the lifespan does), so its schema is known at collection
    spec = create_app(ApiSettings(data_dir="unused")).openapi()
    return [(method.upper(), path) for path, item in spec["paths"].items() for method in item]


@pytest.mark.parametrize("method,path", _operations())
def test_no_server_errors(api_schema, method: str, path: str) -> None:
    # schemathesis' own pytest plugin does not run under pytest 9 (Function._nodeid), so each
    # operation gets a plain hypothesis test over the case strategy schemathesis builds
    operation = api_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(max_examples=12, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        case.call_and_validate(headers={"X-API-Key": KEY})

    run()
