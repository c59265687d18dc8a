"""Model quality: the online models as they ran in the projector against batch baselines."""

from __future__ import annotations

from .run import evaluate
from .scoring import OnlineRun, entity_points, online_run, resolve_labels

__all__ = ["OnlineRun", "entity_points", "evaluate", "online_run", "resolve_labels"]
