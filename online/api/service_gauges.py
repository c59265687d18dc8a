"""The figures of a `ProfileService` that /metrics reads at scrape time."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from online.catalogue import NO_TS

if TYPE_CHECKING:
    from .service import ProfileService

__all__ = ["service_gauges", "service_stats"]


def service_gauges(service: ProfileService) -> dict[str, tuple[str, float]]:
    """Projector offset, lag, checkpoint age and watermark: {name: (help, value)}."""
    if service.log is None or service.projector is None:
        return {}
    offset = service.projector.offset
    out = {
        "portrait_projector_offset": ("Log offset the projector has reached.", offset),
        "portrait_log_next_offset": ("The log's next offset.", service.log.next_offset),
        "portrait_projector_lag_events": (
            "Events in the log not yet projected.", max(service.log.next_offset - offset, 0)
        ),
        "portrait_checkpoint_offset": ("Offset of the last checkpoint.",
                                       service._checkpoint_offset),
        "portrait_checkpoint_age_seconds": (
            "Seconds since the server's last checkpoint.",
            time.monotonic() - service._checkpoint_time,
        ),
    }  # fmt: skip
    lag = out["portrait_projector_lag_events"][1]
    out["portrait_projector_lag_seconds"] = (
        "Seconds since the projector was last caught up with the log (0 when it is).",
        time.monotonic() - service._caught_up_at if lag else 0.0,
    )
    out["portrait_projector_watermark_timestamp_seconds"] = (
        "Newest effective event time projected (Unix seconds).",
        service.projector.watermark_us / 1e6 if service.projector.watermark_us != NO_TS else 0.0,
    )
    return out


def service_stats(service: ProfileService) -> dict[str, dict[str, Any]]:
    """The projector's contributors' ``stats()`` (models: labels, drift, segment sizes)."""
    if service.log is None or service.projector is None:
        return {}
    out = {}
    for contributor in service.projector.contributors:
        stats = contributor.stats()
        if stats is not None:
            out[f"portrait_{contributor.name}"] = stats
    out["portrait_profile_cache"] = service.cache.stats()
    return out
