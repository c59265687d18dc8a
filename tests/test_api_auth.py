"""API keys: read and write scopes, both header forms, open probes, and the loopback rule."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from online.api import ApiSettings, InsecureBind, check_bind, create_app

EVENT = {"event_id": "e1", "user_id": "u1", "type": "view", "ts": "2024-03-01T10:00:00Z"}
READ, WRITE = {"X-API-Key": "reader-key"}, {"Authorization": "Bearer writer-key"}


@pytest.fixture
def client(tmp_path):
    settings = ApiSettings(data_dir=tmp_path, api_read_keys=["reader-key"],
                           api_write_keys=["writer-key"])
    with TestClient(create_app(settings)) as c:
        yield c


def _problem(r, status: int) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")


def test_no_key_or_a_wrong_key_is_401(client) -> None:
    for headers in ({}, {"X-API-Key": "guess"}, {"Authorization": "Bearer guess"},
                    {"Authorization": "Basic d3JpdGVyLWtleQ=="}):
        _problem(client.post("/v1/events", json=EVENT, headers=headers), 401)
        _problem(client.get("/v1/users/u1/profile", headers=headers), 401)
    assert "WWW-Authenticate" in client.get("/v1/features").headers


def test_a_read_key_reads_but_cannot_write(client) -> None:
    _problem(client.post("/v1/events", json=EVENT, headers=READ), 403)
    _problem(client.delete("/v1/users/u1", headers=READ), 403)
    assert client.post("/v1/events", json=EVENT, headers=WRITE).json()["accepted"] == 1
    assert client.get("/v1/users/u1/profile", headers=READ).status_code == 200
    assert client.get("/v1/users/u1/events", headers=READ).status_code == 200
    r = client.post("/v1/profiles:batch", json={"user_ids": ["u1"]}, headers=READ)
    assert r.status_code == 200  # a read, although the method is POST


def test_a_write_key_does_everything(client) -> None:
    assert client.post("/v1/events", json=EVENT, headers={"X-API-Key": "writer-key"}).is_success
    assert client.get("/v1/users/u1/profile", headers=WRITE).status_code == 200
    assert client.delete("/v1/users/u1", headers=WRITE).status_code == 200


def test_probes_and_docs_need_no_key(client) -> None:
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert client.get(path).status_code == 200, path


def test_metrics_need_a_read_key_unless_configured_open(client, tmp_path) -> None:
    _problem(client.get("/metrics"), 401)
    _problem(client.get("/metrics", headers={"X-API-Key": "guess"}), 401)
    assert client.get("/metrics", headers=READ).status_code == 200
    assert client.get("/metrics", headers=WRITE).status_code == 200
    settings = ApiSettings(data_dir=tmp_path / "open", api_read_keys=["reader-key"],
                           metrics_require_key=False)
    with TestClient(create_app(settings)) as open_metrics:
        assert open_metrics.get("/metrics").status_code == 200
        _problem(open_metrics.get("/v1/users/u1/events"), 401)  # only /metrics is opened


def test_the_schema_declares_both_key_forms(client) -> None:
    schemes = client.get("/openapi.json").json()["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["Bearer"]["scheme"] == "bearer"


def test_without_keys_the_api_is_open_but_only_on_loopback(tmp_path) -> None:
    open_settings = ApiSettings(data_dir=tmp_path)
    with TestClient(create_app(open_settings)) as client:
        assert client.post("/v1/events", json=EVENT).status_code == 200
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_bind(host, open_settings)
    for host in ("0.0.0.0", "::", "192.168.0.10", "example.com"):
        with pytest.raises(InsecureBind, match="API keys"):
            check_bind(host, open_settings)
    check_bind("0.0.0.0", ApiSettings(data_dir=tmp_path, api_read_keys=["k"]))


def test_keys_come_from_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PORTRAIT_API_WRITE_KEYS", '["w1", "w2"]')
    monkeypatch.setenv("PORTRAIT_DATA_DIR", str(tmp_path))
    settings = ApiSettings()
    assert settings.scopes_of("w2") == {"read", "write"} and not settings.scopes_of("r")
    assert "w1" not in repr(settings)  # secrets stay out of logs
