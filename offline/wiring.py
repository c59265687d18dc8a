"""How the parts are put together for a data dir: the projector with its contributors.

`online` cannot import `offline`, so the composition of the projector (feature kernels, the
online models, and the Feast online writer) happens here, on the floor that sees both sides;
the CLI and the server it starts call `build_projector`.
"""

from __future__ import annotations

from online.projector import ProfileContributor, Projector
from online.settings import Settings


def online_store_applied(settings: Settings) -> bool:
    """True once `portrait materialize` (feast apply) has registered the feature views."""
    return settings.registry_path.exists()


def model_contributors(settings: Settings) -> list[ProfileContributor]:
    """The online models' contributors (propensity, segments), fresh, before any checkpoint."""
    from online.models.contributor import ModelContributor

    return [ModelContributor(horizon_us=settings.propensity_horizon_us)]


def build_projector(log, settings: Settings, *, online_writes: bool | None = None,
                    deferred: bool = False) -> Projector:
    """The projector of ``settings``' data dir, loaded from its checkpoint.

    ``online_writes``: push each batch's profiles to the Feast online store; by default only
    once the registry exists (before `portrait materialize` there is no online store to write;
    materialize then fills it from the replayed snapshot). ``deferred``: note changed users
    during projection and push them on the server's flushes, off the request path
    (`online.api.deferred_writes.DeferredWrites`); bulk commands push inside each batch instead.
    """
    contributors = model_contributors(settings)
    if online_writes is None:
        online_writes = online_store_applied(settings)
    if online_writes:
        if deferred:  # the server: pushed by a child process, off its interpreter lock
            from offline.feast_process import OnlineWriterProcess
            from online.api.deferred_writes import DeferredWrites

            child = OnlineWriterProcess(settings)
            contributors.append(DeferredWrites(child.push_stored, close=child.close))
        else:
            from offline.feast_online import OnlineWriter

            contributors.append(OnlineWriter(settings))
    projector = Projector(log, settings.state_dir, contributors=contributors)
    _catch_up_models(projector)
    _note_serving_model(settings, projector)
    return projector


def build_server_projector(log, settings: Settings) -> Projector:
    """The server's projector: as `build_projector`, with online writes deferred.

    What the process holds once it is built (modules, the loaded state and models) is moved
    out of the cyclic collector's reach (`gc.freeze`): every full collection would scan it
    again, and an ingest request's ~10 objects per event made one every few requests
    (~7 µs per event measured, ~2 µs after the freeze).
    """
    import gc

    projector = build_projector(log, settings, deferred=True)
    gc.freeze()
    return projector


def _catch_up_models(projector: Projector) -> None:
    """Bring models that a checkpoint lacks (a data dir older than them) to its offset.

    The models are rebuilt by a replay of the log prefix through a scratch projector (the
    same deterministic path), so they reflect the same offset as the loaded feature state.
    """
    import tempfile

    from online.models.contributor import ModelContributor

    behind = [c for c in projector.contributors
              if isinstance(c, ModelContributor) and not c.loaded and projector.offset > 0]
    if not behind:
        return
    with tempfile.TemporaryDirectory(prefix="models-", dir=projector.state_dir) as scratch:
        Projector(projector.log, scratch, contributors=behind).run(
            until_offset=projector.offset, progress=True)


def _note_serving_model(settings: Settings, projector: Projector) -> None:
    """Give the serving model its registry entry the first time the data dir serves it."""
    from online.models.contributor import ModelContributor
    from online.models.registry import ModelRegistry, describe_learner

    registry = ModelRegistry(settings.data_dir)
    for c in projector.contributors:
        if not isinstance(c, ModelContributor):
            continue
        try:
            if registry.get(c.model_version) is None:  # learnt online from the log's start
                registry.record({"model_version": c.model_version, "source": "online",
                                 "kind": describe_learner(c.models.propensity), "offset": 0,
                                 "trained_on": {"from_offset": 0, "learns_online": True}})
        except (OSError, ValueError):  # a read-only data dir or a damaged registry file:
            pass  # serving goes on; `portrait models` reports the damage


def erase_everywhere(settings: Settings, user_id: str, log=None, projector=None) -> dict:
    """The one eraser of ``portrait erase`` and ``DELETE /v1/users/{id}``: the receipt dict.

    `offline.privacy.erasure.erase_user` with the server's settings (`erasure.api_settings`: the
    sample log is an API setting) over the server's open log and live projector, or, from
    the CLI (no projector), over the log and checkpoint on disk with the model
    contributors that scrub their part of it. `create_app` passes it to the API, so the
    DELETE route reaches every store (online store, parquet, replay checkpoints, samples).
    """
    from offline.privacy.erasure import api_settings, erase_user

    settings = api_settings(settings)
    contributors = model_contributors(settings) if projector is None else ()
    return erase_user(settings, user_id, log=log, projector=projector,
                      contributors=contributors).as_dict()


def create_app(settings: Settings | None = None):
    """The whole REST service of ``settings``' data dir (environment settings when None):
    the models, the Feast online writes and the every-store erasure, as `portrait serve`
    runs it. A zero-argument factory for any ASGI server:
    ``uvicorn --factory offline.wiring:create_app`` (settings from ``PORTRAIT_*``).

    ``online.api.main.create_app`` is the API alone (features only, log and state erasure):
    `online` cannot import the models' Feast writer or the stores `offline` owns.
    """
    from online.api.main import create_app as create_api
    from online.api.settings import get_api_settings

    return create_api(settings if settings is not None else get_api_settings(),
                      projector_factory=build_server_projector, eraser=erase_everywhere)
