"""Private segment aggregates of a data dir: what ``portrait segments --epsilon E`` prints.

The mechanisms, bounds, budget split and segment rule live in ``online.privacy.dp`` (the API's
``POST /v1/segments`` uses the same ones); this module brings the projector up to the end of
the log (without checkpointing: a report changes nothing but the privacy budget) and releases
the report, charging ``epsilon`` to the data dir's budget (``online.privacy.budget``).
"""

from __future__ import annotations

from typing import Any

from online.eventlog import EventLog
from online.privacy import (
    BudgetExhausted,
    PrivacyBudget,
    SegmentRule,
    release_segments,
    segment_inputs,
)
from online.privacy.releases import save_release
from online.settings import Settings

__all__ = ["budget_status", "segments_report"]


def segments_report(settings: Settings, epsilon: float, *,
                    bounds: dict[str, float] | None = None,
                    rule: SegmentRule | None = None) -> dict[str, Any]:
    """Noisy segment sizes and mean features, epsilon-DP per user; spends ``epsilon``.

    Raises `BudgetExhausted` (before any work, and nothing spent) when the data dir's budget
    has less than ``epsilon`` left, ``ValueError`` for an epsilon that is not > 0.
    """
    from online.projector import Projector

    budget = PrivacyBudget.for_settings(settings)
    remaining = budget.status()["remaining"]
    if epsilon > remaining + 1e-9:  # fail fast; the charge itself is checked under the lock
        raise BudgetExhausted(float(epsilon), remaining, budget.total)
    with EventLog(settings.event_log_path) as log:
        projector = Projector(log, settings.state_dir)
        projector.run(batch_size=settings.batch_size)
        inputs = segment_inputs(projector.state, projector.watermark_us, projector.offset,
                                rule=rule)
    body = release_segments(inputs, epsilon, budget=budget, bounds=bounds)
    save_release(settings, body)  # GET /v1/segments serves it again, spending nothing
    return body


def budget_status(settings: Settings) -> dict[str, Any]:
    """Total, spent and remaining epsilon of the data dir, and the releases charged."""
    return PrivacyBudget.for_settings(settings).status()
