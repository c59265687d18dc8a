"""/metrics follows Prometheus' conventions, and the shipped dashboard asks only for what it has."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from offline.wiring import create_app
from online.api import ApiSettings
from online.api.metrics import stats_families

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "online" / "api" / "monitoring"


def _events(n_users: int = 6, n: int = 30) -> list[dict]:
    out = []
    for k in range(n):
        kind = ("view", "add_to_cart", "purchase")[k % 3]
        out.append({"event_id": f"m{k}", "user_id": f"u{k % n_users}", "type": kind,
                    "ts": f"2024-03-01T{k % 24:02d}:{k % 60:02d}:00+00:00", "item_id": f"i{k % 4}",
                    **({"price": 3.0} if kind == "purchase" else {})})  # fmt: skip
    return out


@pytest.fixture(scope="module")
def scrape(tmp_path_factory) -> dict:
    """One scrape of the CLI's app (real models) after ingest, reads and a few page hits."""
    settings = ApiSettings(data_dir=tmp_path_factory.mktemp("metrics") / "data")
    with TestClient(create_app(settings)) as c:
        assert c.post("/v1/events", json={"events": _events()}).status_code == 200
        c.get("/v1/users/u1/profile")
        c.get("/v1/users/u1/profile", params={"as_of": "2024-03-01T05:00:00+00:00"})
        for path in ("/docs", "/redoc", "/console", "/console/assets/console.js", "/no-such"):
            c.get(path)
        text = c.get("/metrics").text
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_cumulative_counts_are_counters_named_total(scrape) -> None:
    counters = {n: f for n, f in scrape.items() if f.type == "counter"}
    assert {"portrait_events", "portrait_profiles_served", "portrait_checkpoints",
            "portrait_models_propensity_learnt", "portrait_models_drift_detections",
            "process_cpu_seconds"} <= set(counters)  # fmt: skip
    for name, family in counters.items():
        values = [s for s in family.samples if not s.name.endswith("_created")]
        assert values and all(s.name == f"{name}_total" for s in values), name
    # nothing cumulative is left as a gauge
    gauges = [n for n, f in scrape.items() if f.type == "gauge"]
    assert not [n for n in gauges if n.endswith("_total") or re.search(r"_n_[a-z]", n)]


def test_times_are_in_seconds(scrape) -> None:
    names = {s.name for f in scrape.values() for s in f.samples}
    assert not [n for n in names if re.search(r"_us(_|$)|micro", n)]
    assert "portrait_projector_watermark_timestamp_seconds" in names
    assert "portrait_models_propensity_watermark_timestamp_seconds" in names
    assert scrape["portrait_http_request_duration_seconds"].type == "histogram"
    watermark = scrape["portrait_projector_watermark_timestamp_seconds"].samples[0].value
    assert 1709251200 <= watermark < 1709337600  # within 2024-03-01 UTC, in seconds


def test_process_and_python_metrics_are_exported(scrape) -> None:
    for name in ("process_resident_memory_bytes", "process_start_time_seconds",
                 "process_open_fds", "python_info", "python_gc_collections"):
        assert name in scrape, name


def test_requests_are_labelled_by_route_template(scrape) -> None:
    routes = {s.labels["route"] for s in scrape["portrait_http_request_duration_seconds"].samples
              if "route" in s.labels}  # fmt: skip
    assert {"/v1/events", "/v1/users/{user_id}/profile", "/docs", "/redoc", "/console",
            "/console/assets/{path}", "<unmatched>"} <= routes  # fmt: skip
    assert not [r for r in routes if "u1" in r or "no-such" in r]


def test_stats_rules() -> None:
    fams = {f.name: f for f in stats_families(
        "portrait_x", {"n_done": 4, "queue": 2, "last_us": 2_500_000, "age_us": 1_000_000,
                       "never_us": -(2**63), "bad": float("nan"), "flag": True,
                       "groups": [{"id": 0, "label": "a b", "size": 5}]})}  # fmt: skip
    assert fams["portrait_x_done"].type == "counter"
    assert fams["portrait_x_queue"].type == "gauge"
    assert fams["portrait_x_last_timestamp_seconds"].samples[0].value == 2.5
    assert fams["portrait_x_age_seconds"].samples[0].value == 1.0
    assert fams["portrait_x_groups_size"].samples[0].labels == {"id": "0", "label": "a b"}
    assert not {"portrait_x_never_timestamp_seconds", "portrait_x_bad", "portrait_x_flag"} & set(
        fams)


def test_the_dashboard_queries_only_exported_metrics(scrape) -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 8
    samples = {s.name for f in scrape.values() for s in f.samples}
    used = {m for e in exprs for m in re.findall(r"\b((?:portrait|process|python)_[a-z_]+)", e)}
    missing = sorted(used - samples)
    assert not missing, missing
    routes = {r for e in exprs for r in re.findall(r'route="([^"]+)"', e)}
    exported = {s.labels.get("route") for s in scrape["portrait_http_request_duration_seconds"]
                .samples}  # fmt: skip
    assert routes <= exported


def test_the_scrape_config_targets_the_default_server() -> None:
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    job = config["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:8000"]
