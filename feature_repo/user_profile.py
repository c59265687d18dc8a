"""Feast declarations of portrait's user profiles: entity, sources, themed views, service.

Every schema is read from the feature catalogue (``online/catalogue.py``); no feature name is
typed here.  The offline source is the replay's partitioned parquet
(``offline/backfill/replay.py``),
the push source takes the projector's online writes (``offline/feast_online.py``).  The data
dir is resolved the way Feast resolves ``feature_store.yaml``: ``${PORTRAIT_DATA_DIR}``
expanded, relative to this directory (unset: the ``${PORTRAIT_DATA_DIR}`` symlink to
``../data``).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pandas as pd
from feast import (
    Entity,
    FeatureService,
    FeatureView,
    Field,
    FileSource,
    PushSource,
    RequestSource,
    ValueType,
)
from feast.data_format import ParquetFormat
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Array, Float64, Int64, String, UnixTimestamp

from online import catalogue as cat
from online import served as served_values

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

# -- served values: what the API serves, evaluated at the request's time -------------------

# The views above hold stored values (a decayed sum as of the user's last event, the
# timestamps "seconds since" counts from). The on-demand view `served` evaluates the API's
# served values from them at the request's `as_of` (Feast runs the transformation at
# get_online_features time, with `served_frame`, the API's own serving function).
served_at = RequestSource(
    name="served_at",
    schema=[Field(name=served_values.AS_OF, dtype=UnixTimestamp,
                  description="time the served values are evaluated at (e.g. now)")],
    description="the time a served profile is evaluated at, given with each entity row",
)
_INPUTS = set(served_values.stored_inputs())


@on_demand_feature_view(
    sources=[*(v[[f.name for f in v.schema if f.name in _INPUTS]] for v in
               (decay, recency, interest)), served_at],
    # no descriptions: Feast compares these fields with the ones it infers, descriptions too
    schema=[Field(name=n, dtype=Float64) for n in served_values.AT_REQUEST],
    mode="pandas",
    description="decayed and since-features as the API serves them, at the request's as_of",
    tags={**TAGS, "theme": "served"},
)
def served(inputs: pd.DataFrame) -> pd.DataFrame:
    from online.served import served_frame

    return served_frame(inputs)


def _without_at_request(view: FeatureView):
    keep = [f.name for f in view.schema if f.name not in served_values.AT_REQUEST]
    return view[keep] if len(keep) < len(view.schema) else view


user_profile_served = FeatureService(
    name="user_profile_served",
    features=[*(_without_at_request(v) for v in THEME_VIEWS if v.name != "decay"), served,
              snapshot],
    description="every feature as the API serves it at the entity row's as_of (window "
                "features: as of the row's time), with the log offset it reflects",
    tags=TAGS,
)
