"""Served values at request time from a frame of stored columns (Feast's on-demand view).

The Feast online store holds *stored* values: a decayed sum as of the user's last event, a
timestamp where the API serves "seconds since". `served_frame` turns those columns into the
values the API serves at a time T, through `kernels.evaluate_stored` (the one serving
function), for the features whose served value follows from stored columns and T alone
(kinds ``decay`` and ``since``). Window features need the bucket rings, which no online row
holds: they stay as stored (the value at the row's time). Nothing here imports Feast.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from online import catalogue as cat

__all__ = ["AS_OF", "AT_REQUEST", "served_frame", "stored_inputs"]

AS_OF = "as_of"  # the request field: the time the values are evaluated at
#: served features evaluated at the request's time (the rest is served as stored)
AT_REQUEST = tuple(f.name for f in cat.FEATURES if f.kind in ("decay", "since"))


def stored_inputs() -> list[str]:
    """The stored columns `served_frame` reads (besides ``as_of``)."""
    names = {"last_event_ts"}
    for f in cat.FEATURES:
        if f.name in AT_REQUEST:
            names.add(f.stored_column)
    return sorted(names)


def _us(column: pd.Series) -> np.ndarray:
    """µs since the epoch of a timestamp column (``NO_TS`` where null)."""
    ts = pd.to_datetime(column, utc=True)
    out = ts.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[us]")
    us = out.to_numpy().astype(np.int64)
    return np.where(ts.isna().to_numpy(), np.int64(cat.NO_TS), us)


def served_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The `AT_REQUEST` features at each row's ``as_of`` from its stored columns.

    A row without a stored profile (a user the store does not hold) gets nulls. A T before
    the row's ``last_event_ts`` is taken as ``last_event_ts``, as the API does.
    """
    stored: dict[str, np.ndarray] = {}
    for name in stored_inputs():
        f = cat.feature(name)
        if f.dtype == "timestamp":
            stored[name] = _us(frame[name])
        else:
            stored[name] = pd.to_numeric(frame[name]).to_numpy(np.float64, na_value=0.0)
    known = stored["last_event_ts"] != cat.NO_TS
    t = _us(frame[AS_OF])
    if (known & (t == cat.NO_TS)).any():
        raise ValueError(f"{AS_OF}: a time is needed for every row (the values are evaluated "
                         "at it)")
    t = np.where(known, np.maximum(t, stored["last_event_ts"]), 0)
    last = np.where(known, stored["last_event_ts"], 0)
    inputs = {**stored, "last_event_ts": last}
    from online import kernels  # numba: loaded when values are served, not by declarations

    values = kernels.evaluate_stored(inputs, t, names=set(AT_REQUEST))
    out = pd.DataFrame({name: values[name] for name in AT_REQUEST}, index=frame.index)
    return out.where(pd.Series(known, index=frame.index), None) if not known.all() else out
