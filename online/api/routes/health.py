"""Liveness, readiness (no API key: for probes) and Prometheus metrics (a read key by default)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse

from ..auth import require_metrics_read
from ..deps import MetricsDep, ServiceDep, SettingsDep
from ..metrics import CONTENT_TYPE
from ..schemas import HealthResponse, ReadyResponse, problem_responses

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> HealthResponse:
    """Liveness: the process answers."""
    return HealthResponse()


@router.get(
    "/readyz",
    responses={503: {"model": ReadyResponse, "description": "Log closed or projector lagging"}},
)
def readyz(service: ServiceDep, settings: SettingsDep) -> ReadyResponse:
    """Readiness: the log is open and the projector is within the lag bound."""
    log_open, offset, next_offset = service.readiness()
    lag = max(next_offset - offset, 0)
    ready = log_open and lag <= settings.ready_max_lag_events
    body = ReadyResponse(
        status="ready" if ready else "not_ready", log_open=log_open, offset=offset,
        log_next_offset=next_offset, lag_events=lag, max_lag_events=settings.ready_max_lag_events,
    )  # fmt: skip
    if not ready:
        return JSONResponse(body.model_dump(), status_code=503)  # type: ignore[return-value]
    return body


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(require_metrics_read)],
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"},
               **problem_responses(401, 403)},
)
def get_metrics(metrics: MetricsDep) -> Response:
    """Prometheus metrics: request latency per route, ingestion counts, projector lag, models.

    With API keys configured this needs a read key (`PORTRAIT_METRICS_REQUIRE_KEY=false`
    opens it to keyless scrapers).
    """
    return Response(metrics.render(), media_type=CONTENT_TYPE)
