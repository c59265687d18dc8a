"""The privacy budget: a persistent ledger of the epsilon spent on private releases.

Every differentially private release (``POST /v1/segments``, ``portrait segments``) charges
its epsilon here *before* any noisy value is computed, and is refused once the data dir's
total would be exceeded.  By basic sequential composition, everything ever released from the
data dir is then ``total``-differentially private with respect to adding or removing one user.

The ledger is ``<data_dir>/privacy/budget.json`` (spent epsilon and one line per charge, with
no personal data), updated under an exclusive file lock and replaced atomically, so
concurrent servers and CLI runs over one data dir share one budget.  The total is a setting
(`budget_total`: ``Settings.privacy_budget_epsilon`` when the settings have it, else env
``PORTRAIT_PRIVACY_BUDGET_EPSILON``, else 10).  Raising it is a policy decision: the ledger
keeps what was spent, never forgets it.

>>> import tempfile
>>> budget = PrivacyBudget(tempfile.mkdtemp() + "/budget.json", total=1.0)
>>> budget.charge(0.75, "segments")["remaining"]
0.25
>>> budget.charge(0.5, "segments")
Traceback (most recent call last):
...
online.privacy.budget.BudgetExhausted: privacy budget exhausted: 0.5 requested, 0.25 of 1 left; ...
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_TOTAL_EPSILON", "BudgetExhausted", "PrivacyBudget", "budget_total"]

DEFAULT_TOTAL_EPSILON = 10.0
_ENV_TOTAL = "PORTRAIT_PRIVACY_BUDGET_EPSILON"
_SLACK = 1e-9  # float sums of charges: 0.1 * 10 must fit a total of 1.0


class BudgetExhausted(RuntimeError):
    """A release would spend more epsilon than the data dir has left."""

    def __init__(self, requested: float, remaining: float, total: float) -> None:
        self.requested, self.remaining, self.total = requested, remaining, total
        super().__init__(f"privacy budget exhausted: {requested:g} requested, "
                         f"{remaining:g} of {total:g} left; spent budget never comes back "
                         "(not with time, not with a restart)")


def budget_total(settings: Any) -> float:
    """The total epsilon of a data dir, from the settings or the environment (default 10)."""
    value: float | str | None = getattr(settings, "privacy_budget_epsilon", None)
    if value is None:
        value = os.environ.get(_ENV_TOTAL, DEFAULT_TOTAL_EPSILON)
    total = float(value)
    if not math.isfinite(total) or total < 0:
        raise ValueError(f"privacy budget: expected a finite epsilon >= 0, got {value!r}")
    return total


class PrivacyBudget:
    """The ledger at ``path`` with ``total`` epsilon to spend."""

    def __init__(self, path: str | Path, total: float) -> None:
        self.path = Path(path)
        self.total = float(total)

    @classmethod
    def for_settings(cls, settings: Any) -> PrivacyBudget:
        """The ledger of ``settings``' data dir."""
        return cls(Path(settings.data_dir) / "privacy" / "budget.json", budget_total(settings))

    def status(self) -> dict[str, Any]:
        """Total, spent, remaining epsilon and the number of releases charged."""
        data = self._read()
        return self._status(data)

    def charge(self, epsilon: float, purpose: str) -> dict[str, Any]:
        """Spend ``epsilon`` on ``purpose`` or raise `BudgetExhausted` (nothing is spent)."""
        epsilon = float(epsilon)
        if not math.isfinite(epsilon) or epsilon <= 0:
            raise ValueError(f"epsilon: expected a finite number > 0, got {epsilon!r}")
        with self._locked():
            data = self._read()
            remaining = self.total - data["spent"]
            if epsilon > remaining + _SLACK:
                raise BudgetExhausted(epsilon, max(remaining, 0.0), self.total)
            data["spent"] += epsilon
            data["charges"].append({"at_us": time.time_ns() // 1000, "epsilon": epsilon,
                                    "purpose": purpose})
            self._write(data)
        return self._status(data)

    def _status(self, data: dict[str, Any]) -> dict[str, Any]:
        spent = data["spent"]
        return {"total": self.total, "spent": round(spent, 12),
                "remaining": round(max(self.total - spent, 0.0), 12),
                "releases": len(data["charges"])}

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"version": 1, "spent": 0.0, "charges": []}
        return json.loads(self.path.read_text("utf-8"))

    def _write(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # flock on a side file: the ledger itself is replaced by rename, so it cannot hold
        # the lock.  One open file description per call, so threads exclude each other too.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f".{self.path.name}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
