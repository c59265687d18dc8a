"""Stored rows of a projected shop log, for the online-store tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from helpers import shoplogs
from online import catalogue as cat
from online import kernels
from online.eventlog import EventLog
from online.projector import Projector
from online.settings import Settings


def projected(data_dir: Path, events: list[dict]) -> tuple[list[str], dict[str, np.ndarray]]:
    """The stored ids and columns of every user of ``events`` projected in ``data_dir``;
    the last user's values all null or empty (NaN, NaT, None, [])."""
    settings = Settings(data_dir=data_dir)
    shoplogs.write(settings.event_log_path, events)
    with EventLog(settings.event_log_path) as log:
        projector = Projector(log, settings.state_dir)
        projector.run()
    n = len(projector.state.users)
    stored = kernels.stored_values(projector.state, np.arange(n))
    for f in cat.stored_features():
        column = stored[f.name]
        if f.dtype == "float64":
            column[-1] = np.nan
        elif f.dtype == "timestamp" and f.name != "last_event_ts":
            column[-1] = cat.NO_TS
        elif f.dtype == "str":
            column[-1] = None
        elif f.dtype == "str_list":
            column[-1] = []
    return [projector.state.users.values[u] for u in range(n)], stored
