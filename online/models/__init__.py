"""Online models of the projector: purchase propensity, segments, explanations, drift."""

from __future__ import annotations

from .drift import ErrorDrift
from .propensity import DAY_US, HOUR_US, PurchasePropensity

__all__ = ["DAY_US", "HOUR_US", "ErrorDrift", "PurchasePropensity"]
