"""Shops of a demonstration federation: the Online Retail file split by customer country.

The largest countries (by customers) become shops of their own and the rest one shop: a
real, uneven federation (one big shop, a few small ones), each in its own data dir.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from offline.datasets.files import open_binary
from offline.datasets.online_retail import _user_id, iter_online_retail
from offline.ingest import ingest_records
from online.privacy.pseudonym import open_event_log
from online.settings import Settings

OTHERS = "Others"


def customer_countries(source) -> pd.Series:
    """Each customer's country (the one of most of their lines), indexed by user id."""
    with open_binary(source) as stream:
        frame = pd.read_csv(stream, dtype=str, usecols=["CustomerID", "Country"],
                            keep_default_na=False, na_filter=False, encoding="utf-8")
    frame = frame[frame["CustomerID"].str.strip() != ""]
    frame["user"] = frame["CustomerID"].map(_user_id)
    return frame.groupby("user")["Country"].agg(lambda c: c.value_counts().index[0])


def shop_names(countries: pd.Series, shops: int) -> dict[str, str]:
    """Country -> shop: the ``shops - 1`` countries with most customers, then ``Others``."""
    ranked = countries.value_counts().index.tolist()
    own = ranked[: max(shops - 1, 1)]
    return {c: (c.replace(" ", "_") if c in own else OTHERS) for c in ranked}


def split_online_retail(source, root: str | Path, *, shops: int = 5) -> dict[str, Path]:
    """Ingest each shop's customers into ``root/<shop>`` (idempotent); shop -> data dir."""
    root = Path(root)
    countries = customer_countries(source)
    shop_of_country = shop_names(countries, shops)
    shop_of_user = countries.map(shop_of_country).to_dict()
    names = sorted(set(shop_of_country.values()), key=lambda s: (s == OTHERS, s))
    dirs = {name: root / name for name in names}
    records = {name: [] for name in names}
    for record in iter_online_retail(source):
        if record.payload is not None:
            records[shop_of_user[record.payload["user_id"]]].append(record)
    for name, data_dir in dirs.items():
        data_dir.mkdir(parents=True, exist_ok=True)
        with open_event_log(Settings(data_dir=data_dir)) as log:
            ingest_records(log, records[name], source="online-retail")
    return dirs


def split_log(settings: Settings, root: str | Path, shares: dict[str, float]) -> dict[str, Path]:
    """Deal one data dir's users into shops by a stable hash (shop -> its share of users).

    For a demonstration on any log (the synthetic one included): shops of one population
    and uneven sizes, each ingested into ``root/<shop>`` (idempotent).
    """
    import zlib

    from online.eventlog import EventLog

    if abs(sum(shares.values()) - 1.0) > 1e-9:
        raise ValueError(f"shares: expected fractions summing to 1, got {shares}")
    root = Path(root)
    bounds, acc = [], 0.0
    for name, share in shares.items():
        acc += share
        bounds.append((acc, name))

    def shop(user: str) -> str:
        h = (zlib.crc32(user.encode()) % 10_000) / 10_000
        return next(name for bound, name in bounds if h < bound + 1e-12)

    payloads: dict[str, list[dict]] = {name: [] for name in shares}
    with EventLog(settings.event_log_path) as log:
        for batch, _ in log.batches():
            for row in _payloads(batch):
                payloads[shop(row["user_id"])].append(row)
    dirs = {}
    for name, rows in payloads.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        with EventLog(d / "events.db") as log:
            for k in range(0, len(rows), 10_000):
                log.append(rows[k:k + 10_000])
        dirs[name] = d
    return dirs


def _payloads(batch) -> list[dict]:
    """The wire form of a batch's events (the log's stored ids: pseudonyms stay pseudonyms)."""
    from online import catalogue as cat
    from online.events import EventType

    names = {int(t): t.wire_name for t in EventType}
    out = []
    for k in range(len(batch)):
        price = float(batch.price[k])
        row = {"event_id": batch.event_id[k], "user_id": batch.user_id[k],
               "type": names[int(batch.type[k])], "ts": cat.iso_utc(int(batch.ts[k])),
               "item_id": batch.item_id[k], "category": batch.category[k],
               "session_id": batch.session_id[k], "quantity": int(batch.quantity[k])}
        if price == price:  # not NaN
            row["price"] = price
        out.append({k2: v for k2, v in row.items() if v is not None})
    return out
