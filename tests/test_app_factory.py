"""`offline.wiring:create_app` with no arguments: the whole service an ASGI server is handed
(``uvicorn --factory offline.wiring:create_app``), settings from the environment."""

from __future__ import annotations

from fastapi.testclient import TestClient

from offline.datasets import generate
from offline.wiring import create_app


def test_zero_argument_factory_serves_models_and_erases_everywhere(tmp_path, monkeypatch):
    monkeypatch.setenv("PORTRAIT_DATA_DIR", str(tmp_path / "shop"))
    events = [e for chunk in generate(20, 600, seed=3) for e in chunk]
    with TestClient(create_app()) as client:
        for start in range(0, len(events), 200):
            r = client.post("/v1/events", json={"events": events[start:start + 200]})
            assert r.status_code in (200, 201, 202), r.text
        user = events[0]["user_id"]
        body = client.get(f"/v1/users/{user}/profile").json()
        assert {"propensity", "segment"} <= set(body), sorted(body)  # the models are wired
        receipt = client.delete(f"/v1/users/{user}").json()
        # the every-store eraser's receipt (the API alone knows only the log and its state)
        assert {"receipt_id", "stores", "complete"} <= set(receipt["erased"]), receipt
        assert client.get(f"/v1/users/{user}/profile").status_code == 404
