"""Prometheus metrics of one app: request latency per route, ingestion counts, projector lag.

Each app gets its own `CollectorRegistry` (two apps in one test process never share counts).
Gauges that describe the projector and the models are read at scrape time from a callback, so
they are never stale and cost nothing between scrapes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_TYPE", "ApiMetrics", "RequestTimer"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# sub-millisecond lookups up to multi-second ingest batches
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class _GaugeCallback(Collector):
    """Gauges computed on scrape: ``read()`` returns {name: (help, value)}."""

    def __init__(self, read: Callable[[], Mapping[str, tuple[str, float]]]) -> None:
        self._read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        for name, (doc, value) in self._read().items():
            yield GaugeMetricFamily(name, doc, value=float(value))


class ApiMetrics:
    """The app's registry and the instruments routes update."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
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
        self.projection_seconds = Histogram(
            "portrait_projection_duration_seconds",
            "Time to project one ingest request's events (features, models, online write).",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.checkpoints = Counter(
            "portrait_checkpoints", "Projector checkpoints written by the server.", registry=r
        )

    def add_gauges(self, read: Callable[[], Mapping[str, tuple[str, float]]]) -> None:
        """Register gauges read at scrape time (projector lag, model state)."""
        self.registry.register(_GaugeCallback(read))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class RequestTimer:
    """ASGI middleware: observe each request's latency under its route *template*.

    The template (``/v1/users/{user_id}/profile``), not the path, keeps the label set bounded;
    requests that match no route are counted under ``<unmatched>``.
    """

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            self.metrics.request_seconds.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - start
            )
