"""Privacy: keyed pseudonyms of user ids, differentially private aggregates, their budget."""

from __future__ import annotations

from .budget import BudgetExhausted, PrivacyBudget, budget_total
from .dp import (
    SEGMENTS,
    SegmentInputs,
    SegmentRule,
    release_segments,
    segment_inputs,
)
from .pseudonym import (
    Pseudonymizer,
    PseudonymKeyError,
    PseudonymKeyMismatch,
    UnkeyedDataDir,
    load_pseudonym_key,
    open_event_log,
    pseudonymizer_from_settings,
)

__all__ = [
    "SEGMENTS",
    "BudgetExhausted",
    "PrivacyBudget",
    "PseudonymKeyError",
    "PseudonymKeyMismatch",
    "Pseudonymizer",
    "SegmentInputs",
    "SegmentRule",
    "UnkeyedDataDir",
    "budget_total",
    "load_pseudonym_key",
    "open_event_log",
    "pseudonymizer_from_settings",
    "release_segments",
    "segment_inputs",
]
