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
    return []


def build_projector(log, settings: Settings, *, online_writes: bool | None = None) -> Projector:
    """The projector of ``settings``' data dir, loaded from its checkpoint.

    ``online_writes``: push each batch's profiles to the Feast online store; by default only
    once the registry exists (before `portrait materialize` there is no online store to write;
    materialize then fills it from the replayed snapshot).
    """
    contributors = model_contributors(settings)
    if online_writes is None:
        online_writes = online_store_applied(settings)
    if online_writes:
        from offline.feast_store import OnlineWriter

        contributors.append(OnlineWriter(settings))
    return Projector(log, settings.state_dir, contributors=contributors)
