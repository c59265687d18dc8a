"""Point-in-time training data: served feature values as of each entity row, plus labels.

An entity row is ``(user_id, event_timestamp)``.  Its features are the user's stored values
as of T (the newest snapshot row at or before T, see ``offline.backfill.asof_join``) put through the
catalogue's serving evaluation at T (``kernels.evaluate_stored``, the function the projector
and the API use), so a training row at T equals the profile served as of T.  Two paths give
the stored values and are tested equal: ``"fast"`` (our sorted as-of join over the parquet)
and ``"feast"`` (Feast's ``get_historical_features`` on duckdb); the rest is shared.

Labels look forward on purpose: ``purchases_next_<H>`` counts purchase events with effective
ts in (T, T+H], computed as the difference of the as-of ``purchase_count`` at T+H and at T
(the same prefix rule as the features), and ``purchased_next_<H>`` says whether it is > 0.
A label whose window reaches past the snapshot's watermark (the newest event time replayed)
is not yet known and is null.

Output columns: int features as ``Int64`` (nullable), floats ``float64`` (NaN), timestamps
``datetime64[us, UTC]`` (NaT), strings and item lists pyarrow-backed; every feature is null
for a user with no event at or before T.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from offline.backfill import asof_join as asof
from offline.backfill.replay import snapshot_files, watermark
from online import catalogue as cat
from online import kernels
from online.settings import Settings

__all__ = ["entity_times", "features_at", "label_names", "labels", "read_entities",
           "sample_entities", "sample_users", "training_set", "write_frame"]

Path_ = Literal["fast", "feast"]
_EVALUATED = [f for f in cat.FEATURES if f.kind in ("decay", "since")]
# stored columns the serving evaluation reads (decayed values, since-sources, last event)
_EVAL_INPUTS = sorted({"last_event_ts", *(f.source or f.name for f in _EVALUATED)})
_cache: dict[str, object] = {}


def training_set(settings: Settings, entities_df: pd.DataFrame, label_horizon_us: int,
                 features: Sequence[str] | None = None, path: Path_ = "fast", *,
                 snapshot_part: Sequence[Path] | None = None) -> pd.DataFrame:
    """The entity rows with one column per served feature (as of each row) and per label.

    ``snapshot_part``: read only these snapshot files, and in them only the entity rows'
    users (a Ray task's share, ``offline.backfill.training_set_ray``); default: the whole snapshot.
    """
    feats = features_at(settings, entities_df, features, path=path, snapshot_part=snapshot_part)
    labs = labels(settings, entities_df, label_horizon_us, path=path,
                  snapshot_part=snapshot_part)
    return pd.concat([entities_df.reset_index(drop=True), feats, labs], axis=1)


def features_at(settings: Settings, entities_df: pd.DataFrame,
                features: Sequence[str] | None = None, path: Path_ = "fast", *,
                snapshot_part: Sequence[Path] | None = None) -> pd.DataFrame:
    """Served feature values as of each entity row (one row per entity row, same order)."""
    names = cat.served_names() if features is None else [cat.feature(n).name for n in features]
    users, t_us = entity_times(entities_df)
    wanted = [f for f in cat.FEATURES if f.name in set(names) and f.kind != "since"]
    columns = sorted({*_EVAL_INPUTS, *(f.name for f in wanted)})
    stored = _stored_as_of(settings, users, t_us, columns, path, snapshot_part)
    return served_frame(stored, t_us, names)


def labels(settings: Settings, entities_df: pd.DataFrame, horizon_us: int,
           path: Path_ = "fast", *, snapshot_part: Sequence[Path] | None = None,
           ) -> pd.DataFrame:
    """Purchases in (T, T+H] per entity row: count and whether any (null past the watermark)."""
    if horizon_us <= 0:
        raise ValueError(f"label horizon must be positive, got {horizon_us} µs")
    users, t_us = entity_times(entities_df)
    counts = []
    for t in (t_us, t_us + horizon_us):
        col = _stored_as_of(settings, users, t, ["purchase_count"], path,
                            snapshot_part).column(0)
        counts.append(col.fill_null(0).to_numpy().astype(np.int64))
    known = t_us + horizon_us <= watermark(settings)
    n = counts[1] - counts[0]
    count_name, flag_name = label_names(horizon_us)
    return pd.DataFrame({
        count_name: pd.arrays.IntegerArray(n, ~known),
        flag_name: pd.arrays.BooleanArray(n > 0, ~known),
    })


def label_names(horizon_us: int) -> tuple[str, str]:
    """Column names of the labels for a horizon.

    >>> label_names(7 * cat.DAY_US), label_names(90 * cat.MINUTE_US)[0]
    (('purchases_next_7d', 'purchased_next_7d'), 'purchases_next_90m')
    """
    text = _duration(horizon_us)
    return f"purchases_next_{text}", f"purchased_next_{text}"


def _duration(us: int) -> str:
    for unit, size in (("d", cat.DAY_US), ("h", cat.HOUR_US), ("m", cat.MINUTE_US),
                       ("s", cat.SECOND_US)):
        if us % size == 0:
            return f"{us // size}{unit}"
    return f"{us}us"


def served_frame(stored: pa.Table, t_us: np.ndarray, names: Sequence[str]) -> pd.DataFrame:
    """Served values at T from stored rows aligned with T (null rows: no event yet)."""
    last = asof.micros(stored.column("last_event_ts"))
    matched = last != cat.NO_TS
    inputs: dict[str, object] = _Passthrough()
    for name in _EVAL_INPUTS:
        col = stored.column(name).filter(pa.array(matched))
        inputs[name] = (asof.micros(col) if cat.feature(name).dtype == "timestamp"
                        else col.to_numpy().astype(np.float64))
    served = kernels.evaluate_stored(inputs, t_us[matched])
    out: dict[str, object] = {}
    for name in names:
        f = cat.feature(name)
        if f.kind in ("decay", "since"):
            values = np.full(len(t_us), np.nan)
            values[matched] = served[name]
            out[name] = values
        else:
            out[name] = _pandas(stored.column(name), f.dtype)
    return pd.DataFrame(out)


class _Passthrough(dict):
    """Stored columns the evaluation only passes through: not needed, so not converted."""

    def __missing__(self, key: str) -> None:
        return None


def _pandas(column: pa.ChunkedArray, dtype: str):
    column = asof.dictionary_decoded(column)
    if dtype == "int64":
        return pd.array(column.to_numpy(zero_copy_only=False), dtype="Int64") \
            if column.null_count else column.to_numpy().astype(np.int64)
    if dtype == "float64":
        return column.to_numpy(zero_copy_only=False).astype(np.float64)
    if dtype == "timestamp":
        us = asof.micros(column)
        return pd.DatetimeIndex(us.view("datetime64[us]")).tz_localize("UTC")
    return pd.arrays.ArrowExtensionArray(column.combine_chunks())


def _stored_as_of(settings: Settings, users: np.ndarray, t_us: np.ndarray, columns: list[str],
                  path: Path_, snapshot_part: Sequence[Path] | None = None) -> pa.Table:
    if path == "fast" and snapshot_part is not None:
        snap = asof.load(list(snapshot_part), columns, users=set(users.tolist()))
        return snap.take(snap.rows_as_of(users, t_us), columns)
    if snapshot_part is not None:
        raise ValueError(f"path: a part of the snapshot is read by the 'fast' path only, "
                         f"got {path!r}")
    if path == "fast":
        snap = _snapshot(settings, columns)
        return snap.take(snap.rows_as_of(users, t_us), columns)
    if path == "feast":
        from offline.feast_store import historical_stored

        return historical_stored(settings, users, t_us, columns)
    raise ValueError(f"path: expected 'fast' or 'feast', got {path!r}")


def _snapshot(settings: Settings, columns: list[str]) -> asof.Snapshot:
    """The snapshot loaded with ``columns`` (kept while its files are unchanged)."""
    files = snapshot_files(settings)
    key = tuple((str(f), f.stat().st_mtime_ns) for f in files)
    snap = _cache.get("snapshot")
    if _cache.get("key") != key or not set(columns) <= set(snap.table.column_names):
        have = set(snap.table.column_names) if _cache.get("key") == key else set()
        snap = asof.load(files, sorted(have | set(columns)))
        _cache.update(key=key, snapshot=snap)
    return snap


# -- entity rows -----------------------------------------------------------------------------


def entity_times(entities_df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``user_id`` (object) and ``event_timestamp`` as int64 µs UTC (naive times: UTC)."""
    missing = {"user_id", "event_timestamp"} - set(entities_df.columns)
    if missing:
        raise ValueError(f"entity rows need columns user_id and event_timestamp; missing "
                         f"{sorted(missing)}")
    column = entities_df["event_timestamp"]
    # text (a CSV) is parsed as ISO 8601 row by row: pandas would otherwise take the format
    # of the first row and reject a later one with (or without) fractional seconds
    text = column.dtype == object or pd.api.types.is_string_dtype(column.dtype)
    ts = pd.to_datetime(column, utc=True, format="ISO8601" if text else None)
    if ts.isna().any():
        raise ValueError("event_timestamp: every entity row needs a time")
    us = ts.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[us]").view(np.int64)
    return entities_df["user_id"].astype(str).to_numpy(dtype=object), us


def read_entities(path: str | os.PathLike) -> pd.DataFrame:
    """Entity rows from a CSV or parquet file (by extension)."""
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        df = pd.read_parquet(path)
    else:
        df = pd.read_csv(path, dtype={"user_id": str})
    entity_times(df)  # fail early, naming the problem
    return df


def write_frame(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a training set as parquet, or CSV by extension (lists as JSON text)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        # without pandas' metadata: it names pyarrow-backed dtypes pandas cannot read back
        table = pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(None)
        pq.write_table(table, path)
        return
    import json

    out = df.copy()
    for name in out.columns:
        if isinstance(out[name].dtype, pd.ArrowDtype) and pa.types.is_list(
                out[name].dtype.pyarrow_dtype):
            out[name] = [None if v is None else json.dumps(list(v)) for v in out[name].tolist()]
    out.to_csv(path, index=False)


def sample_users(settings: Settings, n: int, *, seed: int = 0) -> np.ndarray:
    """``n`` distinct users of the snapshot, uniformly at random (all when fewer)."""
    snap = _snapshot(settings, [])
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(snap.users), size=min(n, len(snap.users)), replace=False)
    return snap.users.to_numpy()[np.sort(pick)]


def sample_entities(settings: Settings, n: int, *, seed: int = 0, horizon_us: int = 0,
                    users: Sequence[str] | None = None,
                    until: Literal["watermark", "last_event"] = "watermark") -> pd.DataFrame:
    """``n`` entity rows: a user at random, then a time uniform in the user's period.

    The period starts at the user's first event; it ends at the watermark minus the label
    horizon (default: every label known), or with ``until="last_event"`` at the user's
    newest event, which conditions the sample on the user still being active later: a
    subtle leak into labels, hence not the default.  Users whose period is empty are skipped.
    """
    snap = _snapshot(settings, ["last_event_ts"])
    first = snap.first_ts()
    end = np.full(first.shape, watermark(settings) - horizon_us)
    if until == "last_event":
        last = snap.take(snap.last_rows(), ["last_event_ts"]).column(0)
        end = np.minimum(asof.micros(last), end)
    ok = (first != cat.NO_TS) & (end >= first)
    if users is not None:
        ok &= snap.users.isin(list(users))
    candidates = np.flatnonzero(ok)
    if not len(candidates):
        raise ValueError("no user has a non-empty sampling period (horizon too long?)")
    rng = np.random.default_rng(seed)
    who = rng.choice(candidates, size=n)
    span = (end[who] - first[who]).astype(np.float64)
    t = first[who] + np.floor(rng.random(n) * (span + 1)).astype(np.int64)
    return pd.DataFrame({
        "user_id": snap.users.to_numpy()[who],
        "event_timestamp": pd.DatetimeIndex(t.view("datetime64[us]")).tz_localize("UTC"),
    })
