"""Prometheus metrics of one app: request latency per route, ingestion counts, projector lag.

Each app gets its own `CollectorRegistry` (two apps in one test process never share counts),
with the process and Python collectors of ``prometheus_client`` (CPU, memory, file
descriptors, GC). Gauges that describe the projector and the models are read at scrape time
from a callback, so they are never stale and cost nothing between scrapes.

Conventions (Prometheus' naming guide): cumulative counts are counters named ``*_total``;
durations and times are in seconds (``*_seconds``; points in time ``*_timestamp_seconds``);
request metrics are labelled with the route *template*, never the raw path.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_TYPE", "ApiMetrics", "RequestTimer"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# sub-millisecond lookups up to multi-second ingest batches
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


_NO_TS = -(2**63)  # the catalogue's null timestamp (µs)


class _GaugeCallback:
    """Gauges computed on scrape: ``read()`` returns {name: (help, value)}."""

    def __init__(self, read: Callable[[], Mapping[str, tuple[str, float]]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        for name, (doc, value) in self._read().items():
            yield GaugeMetricFamily(name, doc, value=float(value))


class _StatsCallback:
    """Components' ``stats()`` dicts, read on scrape and named by the conventions.

    ``read()`` returns {prefix: stats}. In a stats dict, ``n_*`` keys are cumulative counts
    (counters ``<prefix>_<rest>_total``), ``*_us`` keys are µs (exposed in seconds, points in
    time as ``*_timestamp_seconds``), a list of ``{"id", "label", "size"}`` dicts is one gauge
    labelled by id and label, and other numbers are gauges.
    """

    def __init__(self, read: Callable[[], Mapping[str, Mapping[str, Any]]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        for prefix, stats in self._read().items():
            yield from stats_families(prefix, stats)


def _metric_name(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", text)


def stats_families(prefix: str, stats: Mapping[str, Any]) -> Iterable[Metric]:
    """Prometheus families for a ``stats()`` dict (see `_StatsCallback` for the rules).

    >>> fams = stats_families("portrait_m", {"n_seen": 3, "pending": 2, "watermark_us": 5e6,
    ...                                      "last_us": -(2**63), "sizes": [], "drift": {"n_x": 1}})
    >>> [(f.name, f.type, f.samples[0].value) for f in fams]  # doctest: +NORMALIZE_WHITESPACE
    [('portrait_m_seen', 'counter', 3.0), ('portrait_m_pending', 'gauge', 2.0),
     ('portrait_m_watermark_timestamp_seconds', 'gauge', 5.0),
     ('portrait_m_drift_x', 'counter', 1.0)]
    """
    for key, value in stats.items():
        doc = f"{prefix.removeprefix('portrait_')}: {key} (component stats)."
        if isinstance(value, Mapping):
            yield from stats_families(f"{prefix}_{key}", value)
        elif isinstance(value, list):
            rows = [v for v in value if isinstance(v, Mapping) and "size" in v]
            if rows:
                family = GaugeMetricFamily(_metric_name(f"{prefix}_{key}_size"), doc,
                                           labels=["id", "label"])  # fmt: skip
                for row in rows:
                    family.add_metric([str(row.get("id")), str(row.get("label"))],
                                      float(row["size"]))  # fmt: skip
                yield family
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                continue
            if key.startswith("n_"):
                name = _metric_name(f"{prefix}_{key[2:]}")
                yield CounterMetricFamily(name, doc, value=float(value))
            elif key.endswith("_us"):
                if value == _NO_TS:
                    continue  # never happened: no sample rather than a date in 1677
                stem = key[:-3]
                # a time of day ("watermark", "last_detected") vs a duration ("age", "lag")
                duration = stem.rsplit("_", 1)[-1] in ("age", "lag", "duration", "elapsed")
                unit = "seconds" if duration else "timestamp_seconds"
                yield GaugeMetricFamily(_metric_name(f"{prefix}_{stem}_{unit}"), doc,
                                        value=value / 1e6)  # fmt: skip
            else:
                yield GaugeMetricFamily(_metric_name(f"{prefix}_{key}"), doc, value=float(value))


class ApiMetrics:
    """The app's registry and the instruments routes update."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # process (CPU, memory, fds, start time), Python version, GC: the default collectors,
        # registered on this app's own registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.request_seconds = Histogram(
            "portrait_http_request_duration_seconds",
            "Request latency by method, route template and status code.",
            ["method", "route", "status"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.events = Counter(
            "portrait_events", "Events received over HTTP by outcome.", ["outcome"], registry=r
        )
        for outcome in ("accepted", "duplicate", "rejected"):
            self.events.labels(outcome)  # export zeros before the first event
        self.profiles = Counter(
            "portrait_profiles_served", "Profiles served, latest or as of a past time.",
            ["mode"], registry=r,
        )  # fmt: skip
        for mode in ("latest", "as_of"):
            self.profiles.labels(mode)
        self.latest_profiles = self.profiles.labels("latest")  # the hot path's child
        self.projection_seconds = Histogram(
            "portrait_projection_duration_seconds",
            "Time to project one ingest request's events (features, models, online write).",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.checkpoints = Counter(
            "portrait_checkpoints", "Projector checkpoints written by the server.", registry=r
        )
        self.online_flush_seconds = Histogram(
            "portrait_online_flush_duration_seconds",
            "Time of one flush of deferred online-store writes that had rows to push (copy "
            "of the rows and the store's write).",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.online_rows = Counter(
            "portrait_online_rows_pushed", "User rows written to the online store by flushes.",
            registry=r,
        )  # fmt: skip
        self.online_flush_failures = Counter(
            "portrait_online_flush_failures",
            "Flushes whose write failed (their users stay pending and are pushed again).",
            registry=r,
        )  # fmt: skip

    def flushed(self, seconds: float, rows: int) -> None:
        """One flush of deferred online writes that pushed rows."""
        self.online_flush_seconds.observe(seconds)
        self.online_rows.inc(rows)

    def add_gauges(self, read: Callable[[], Mapping[str, tuple[str, float]]]) -> None:
        """Register gauges read at scrape time (projector lag)."""
        self.registry.register(_GaugeCallback(read))

    def add_stats(self, read: Callable[[], Mapping[str, Mapping[str, Any]]]) -> None:
        """Register components' ``stats()`` read at scrape time (models: labels, drift)."""
        self.registry.register(_StatsCallback(read))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class RequestTimer:
    """ASGI middleware: observe each request's latency under its route *template*.

    The template (``/v1/users/{user_id}/profile``), not the path, keeps the label set bounded;
    static files count under their mount (``/console/assets/{path}``), requests that match no
    route under ``<unmatched>``.
    """

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, str, int], Any] = {}  # labels() once per label set

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        root_path = scope.get("root_path", "")

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            key = (scope["method"], _template(scope, root_path), status)
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self.metrics.request_seconds.labels(
                    key[0], key[1], str(status))
            child.observe(time.perf_counter() - start)


def _template(scope: Scope, root_path: str) -> str:
    route = scope.get("route")
    if route is not None and getattr(route, "path", None):
        return route.path
    # a Mount (static files) sets no route; the router extended root_path by the mount's path
    mounted = scope.get("root_path", "")
    if mounted != root_path and mounted.startswith(root_path):
        return f"{mounted[len(root_path):]}/{{path}}"
    return "<unmatched>"
