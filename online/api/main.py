"""The FastAPI application: `create_app()` builds it; its lifespan opens and closes the stores.

Nothing is opened at import time: the event log and the projector live in a `ProfileService`
created by the lifespan (so each app, e.g. each test, gets its own), and settings reach the
routes from ``app.state.settings``: the ``settings`` given to `create_app`, else the
process-wide `get_api_settings()` (the ``lru_cache`` that tests and the CLI override).

Run it with ``portrait serve`` (which calls `check_bind` first) or
``uvicorn --factory online.api.main:create_app``.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from online.settings import Settings

from .accesslog import ACCESS_LOGGER, RouteTemplateFilter
from .errors import install_error_handlers
from .fastpath import CachedProfiles
from .limits import BodySizeLimit
from .metrics import ApiMetrics, RequestTimer
from .routes import events, features, health, pages, profiles, segments, users
from .schemas import problem_responses
from .service import Eraser, ProfileService, ProjectorFactory
from .settings import ApiSettings, get_api_settings

__all__ = ["create_app"]

_log = logging.getLogger("portrait.api")
_DOC_PATHS = ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")


def _api_settings(settings: Settings | None) -> ApiSettings:
    if settings is None:
        return get_api_settings()
    if isinstance(settings, ApiSettings):
        return settings
    # the lead's Settings (e.g. from the CLI's --data-dir): keep its values, add API defaults
    return ApiSettings(**{k: getattr(settings, k) for k in type(settings).model_fields})


def create_app(
    settings: Settings | None = None,
    *,
    projector_factory: ProjectorFactory | None = None,
    eraser: Eraser | None = None,
) -> FastAPI:
    """The REST API over the data dir of ``settings`` (environment settings when None).

    ``projector_factory(log, settings)`` builds the projector (default: `default_projector`);
    the CLI passes one whose contributors add the models and Feast online writes.
    ``eraser(settings, user_id, log, projector)`` backs ``DELETE /v1/users/{id}`` (default:
    `default_eraser`, log and state only); the CLI passes the every-store erasure.
    """
    api_settings = _api_settings(settings)
    metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = ProfileService(api_settings, metrics, projector_factory, eraser)
        service.open()  # loads the checkpoint and catches up with the log before serving
        app.state.service = service
        _log.info("serving %s at offset %d", api_settings.data_dir, service.offset)
        # access logs name route templates, never a path with a user id in it
        access = RouteTemplateFilter([*app.openapi()["paths"], *_DOC_PATHS])
        logging.getLogger(ACCESS_LOGGER).addFilter(access)
        if api_settings.gc_freeze:
            # The loaded state, models, modules and the OpenAPI schema (some 270,000 objects)
            # live as long as the server: a full collection scanning them would stall every
            # request for 100-300 ms; frozen, it scans what came after (about 1 ms).
            gc.freeze()
        try:
            yield
        finally:
            logging.getLogger(ACCESS_LOGGER).removeFilter(access)
            service.close()  # final checkpoint, then the log
            if api_settings.gc_freeze:
                gc.unfreeze()  # the closed service's objects are collectable again

    app = FastAPI(
        title="portrait",
        summary="Real-time e-commerce user profiles on an event-sourced feature store.",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # served from packaged assets by routes/pages.py, not a CDN
        redoc_url=None,
        responses=problem_responses("default"),
    )
    app.state.settings = api_settings
    app.state.metrics = metrics
    install_error_handlers(app)
    # innermost first: cached profile lookups are answered before routing (still timed)
    app.add_middleware(CachedProfiles, service=lambda: getattr(app.state, "service", None))
    app.add_middleware(BodySizeLimit, max_bytes=api_settings.max_body_bytes)
    app.add_middleware(RequestTimer, metrics=metrics)
    for module in (events, profiles, users, features, segments, health, pages):
        app.include_router(module.router)
    pages.mount_assets(app)
    return app
