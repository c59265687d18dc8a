"""Feast declarations of portrait's user profiles: entity, sources, themed views, service.

Every schema is read from the feature catalogue (``online/catalogue.py``); no feature name is
typed here.  The offline source is the replay's partitioned parquet (``offline/replay.py``),
the push source takes the projector's online writes (``offline/feast_store.py``).  The data
dir is resolved the way Feast resolves ``feature_store.yaml``: ``${PORTRAIT_DATA_DIR}``
expanded, relative to this directory (unset: the ``${PORTRAIT_DATA_DIR}`` symlink to
``../data``).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Array, Float64, Int64, String, UnixTimestamp

from online import catalogue as cat

DATA_DIR = (Path(__file__).parent / os.path.expandvars("${PORTRAIT_DATA_DIR}")).resolve()

# Profiles are lifetime aggregates: a dormant user's counts do not go stale, so the TTL is
# effectively unbounded.  It is not 0 because Feast's first materialize-incremental starts at
# now - ttl (a ttl of 0 means "one year ago", which would skip older history).
PROFILE_TTL = timedelta(days=365 * 100)
FEAST_TYPES = {
    "int64": Int64, "float64": Float64, "timestamp": UnixTimestamp, "str": String,
    "str_list": Array(String),
}  # fmt: skip
THEMES = {
    "activity": "event, order and item counts",
    "monetary": "spend, refunds and order values",
    "recency": "first, newest and newest-purchase times; time between orders",
    "decay": "exponentially decayed event counts and spend",
    "windows": "sliding-window event counts and spend",
    "sessions": "session counts and lengths",
    "funnel": "view-to-cart, cart-to-purchase and cart abandonment rates",
    "interest": "top categories by decayed affinity, distinct and recent items",
}
TAGS = {"owner": "portrait", "entity": "user"}

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.STRING,
    description="a shopper, by the user id stored in the event log (pseudonymized when keyed)",
)

user_features_source = FileSource(
    name="user_features",
    path=str(DATA_DIR / "offline" / "user_features"),
    file_format=ParquetFormat(),  # required for a directory with the duckdb offline store
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    description="feature snapshot rows written by `portrait replay` (partitioned by date)",
)

user_profile_push = PushSource(
    name="user_profile_push",
    batch_source=user_features_source,
    description="the projector's newest stored row per user and batch",
)


def _theme(name: str) -> FeatureView:
    return FeatureView(
        name=name,
        entities=[user],
        ttl=PROFILE_TTL,
        schema=[
            Field(name=f.name, dtype=FEAST_TYPES[f.dtype], description=f.description,
                  tags={"unit": f.unit, "kind": f.kind})
            for f in cat.stored_features()
            if f.view == name
        ],
        source=user_profile_push,
        online=True,
        description=THEMES[name],
        tags={**TAGS, "theme": name},
    )


activity = _theme("activity")
monetary = _theme("monetary")
recency = _theme("recency")
decay = _theme("decay")
windows = _theme("windows")
sessions = _theme("sessions")
funnel = _theme("funnel")
interest = _theme("interest")

snapshot = FeatureView(
    name="snapshot",
    entities=[user],
    ttl=PROFILE_TTL,
    schema=[Field(name="offset", dtype=Int64, description="log offset the row reflects")],
    source=user_profile_push,
    online=True,
    description="the log position of each profile row (orders online writes)",
    tags={**TAGS, "theme": "snapshot"},
)

THEME_VIEWS = [activity, monetary, recency, decay, windows, sessions, funnel, interest]
assert [v.name for v in THEME_VIEWS] == list(cat.VIEWS), "declare one view per catalogue view"

user_profile = FeatureService(
    name="user_profile",
    features=[*THEME_VIEWS, snapshot],
    description="every stored profile feature of a user, with the log offset it reflects",
    tags=TAGS,
)
