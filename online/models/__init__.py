"""Online models of the projector: purchase propensity, segments, explanations, drift."""

from __future__ import annotations

from .drift import ErrorDrift
from .modelset import STATE_FORMAT, ModelSet, format_duration
from .propensity import DAY_US, HOUR_US, PurchasePropensity
from .segments import RFM, UserSegments

__all__ = [
    "DAY_US",
    "HOUR_US",
    "RFM",
    "STATE_FORMAT",
    "ErrorDrift",
    "ModelSet",
    "PurchasePropensity",
    "UserSegments",
    "format_duration",
]
