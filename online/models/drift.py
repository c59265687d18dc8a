"""Drift of the propensity model: ADWIN over the error stream of resolved predictions."""

from __future__ import annotations

from river import base, drift

__all__ = ["ErrorDrift"]


class ErrorDrift(base.Base):
    """Watches the absolute error of resolved predictions for a change in its mean.

    Each resolved prediction (label known, see `PurchasePropensity`) feeds
    `|y - p|`, where `p` is the score the model gave at prediction time, into River's
    `drift.ADWIN`. A detection means the model's recent error differs from its past error: the
    world changed, or the model did. We record when (the event time of the resolution that
    triggered it, so replays agree) and how often; nothing is reset automatically.

    Parameters
    ----------
    delta
        ADWIN's significance value: lower means fewer, surer detections.
    clock
        ADWIN checks for a change every `clock` updates.
    grace_period
        No detection before this many updates.

    Examples
    --------

    >>> monitor = ErrorDrift()
    >>> for i in range(2000):
    ...     _ = monitor.update(0.1 if i < 1000 else 0.9, t_us=i)
    >>> monitor.n_detections, monitor.last_detected_us
    (1, 1023)
    >>> round(monitor.mean_error, 2)
    0.9

    """

    def __init__(self, delta: float = 0.002, clock: int = 32, grace_period: int = 10):
        self.delta = delta
        self.clock = clock
        self.grace_period = grace_period
        self._adwin = drift.ADWIN(delta=delta, clock=clock, grace_period=grace_period)
        self._n_updates = 0
        self._n_detections = 0
        self._last_detected_us: int | None = None

    def update(self, error: float, t_us: int) -> bool:
        """Feed one error observed at event time `t_us`; True when this update detected drift."""
        self._adwin.update(error)
        self._n_updates += 1
        if self._adwin.drift_detected:
            self._n_detections += 1
            self._last_detected_us = t_us
            return True
        return False

    @property
    def n_updates(self) -> int:
        return self._n_updates

    @property
    def n_detections(self) -> int:
        return self._n_detections

    @property
    def last_detected_us(self) -> int | None:
        """Event time (µs) of the resolution at which drift was last detected, None if never."""
        return self._last_detected_us

    @property
    def mean_error(self) -> float:
        """Mean absolute error over ADWIN's current window (0.0 before any update)."""
        return self._adwin.estimation

    def stats(self) -> dict:
        return {
            "n_updates": self._n_updates,
            "n_detections": self._n_detections,
            "last_detected_us": self._last_detected_us,
            "mean_error": self.mean_error,
            "window": self._adwin.width,
        }
