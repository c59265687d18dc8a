"""Point-in-time retrieval: training rows equal a brute-force reference and the served profile."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from helpers import naive, shoplogs

from offline.backfill import training_set as rt
from offline.backfill.replay import replay, watermark
from online import catalogue as cat
from online.eventlog import EventLog
from online.projector import UnknownUser, features_as_of
from online.settings import Settings

EVENTS = shoplogs.make_events(700, seed=5, users=8)
EFF = shoplogs.effective(EVENTS)
H = 2 * cat.DAY_US


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("retrieval")
    shoplogs.write(root / "events.db", EVENTS)
    settings = Settings(data_dir=root)
    replay(settings, chunk_events=250, batch_events=100, progress=False)
    return settings


def entity_rows(n: int, seed: int) -> pd.DataFrame:
    """Random (user, T): event times exactly, +-1 µs, random times, before any event."""
    rng = np.random.default_rng(seed)
    users = [f"u{k}" for k in range(8)] + ["nobody"]
    picks = rng.integers(len(EVENTS), size=n)
    t = np.array(EFF)[picks] + rng.choice([0, 0, 1, -1, 7 * cat.MINUTE_US, 3 * cat.DAY_US], n)
    t[: n // 4] = rng.integers(shoplogs.T0 - cat.DAY_US, max(EFF) + 40 * cat.DAY_US, n // 4)
    who = [EVENTS[k]["user_id"] if rng.random() < 0.8 else users[rng.integers(len(users))]
           for k in picks]
    return pd.DataFrame({"user_id": who,
                         "event_timestamp": pd.to_datetime(t, unit="us", utc=True)})


def as_reference(frame: pd.DataFrame, i: int, names: list[str]) -> dict | None:
    """Row i of a features frame in the reference's form (µs timestamps), None if all null."""
    out = {}
    for name in names:
        v = frame[name].iloc[i]
        if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v)):
            v = None
        elif cat.feature(name).dtype == "timestamp":
            v = int(pd.Timestamp(v).value // 1000)
        elif cat.feature(name).dtype == "str_list":
            v = list(v)
        elif isinstance(v, np.generic):
            v = v.item()
        out[name] = v
    if all(v is None for v in out.values()):
        return None
    # the reference keeps absent timestamps as NO_TS
    return {k: cat.NO_TS if v is None and cat.feature(k).dtype == "timestamp" else v
            for k, v in out.items()}


def test_features_equal_the_brute_force_reference(data):
    entities = entity_rows(400, seed=1)
    frame = rt.features_at(data, entities)
    names = cat.served_names()
    assert list(frame.columns) == names and len(frame) == len(entities)
    users, t_us = rt.entity_times(entities)
    for i, (user, t) in enumerate(zip(users, t_us, strict=True)):
        want = naive.as_of(EVENTS, user, int(t))
        got = as_reference(frame, i, names)
        if want is None:
            assert got is None, (user, t)
            continue
        for name in names:
            assert shoplogs.same(got[name], want[name], name), (user, int(t), name, got[name],
                                                           want[name])


def test_labels_count_purchases_in_the_horizon(data):
    entities = entity_rows(300, seed=2)
    got = rt.labels(data, entities, H)
    count, flag = rt.label_names(H)
    assert (count, flag) == ("purchases_next_2d", "purchased_next_2d")
    users, t_us = rt.entity_times(entities)
    newest = watermark(data)
    assert newest == max(EFF)
    for i, (user, t) in enumerate(zip(users, t_us, strict=True)):
        if t + H > newest:
            assert got[count].isna()[i] and got[flag].isna()[i]
            continue
        want = sum(1 for e, eff in zip(EVENTS, EFF, strict=True)
                   if e["user_id"] == user and e["type"] == naive.PURCHASE and t < eff <= t + H)
        assert got[count][i] == want and bool(got[flag][i]) == (want > 0)


def test_training_rows_equal_the_profile_served_as_of_their_time(data):
    entities = entity_rows(150, seed=3)
    table = rt.training_set(data, entities, H)
    assert list(table.columns[:2]) == ["user_id", "event_timestamp"]
    assert table["user_id"].tolist() == entities["user_id"].tolist()
    names = cat.served_names()
    users, t_us = rt.entity_times(entities)
    with EventLog(data.event_log_path) as log:
        for i, (user, t) in enumerate(zip(users, t_us, strict=True)):
            row = as_reference(table, i, names)
            try:
                served = features_as_of(log, user, int(t)).values
            except UnknownUser:
                assert row is None
                continue
            for name in names:
                assert shoplogs.same(row[name], served[name], name), (user, int(t), name)


def test_a_subset_of_features_and_the_entity_columns_are_kept(data):
    entities = entity_rows(20, seed=4).assign(extra=range(20))
    table = rt.training_set(data, entities, H, features=["spend_total", "decayed_spend_7d"])
    assert list(table.columns) == ["user_id", "event_timestamp", "extra", "spend_total",
                                   "decayed_spend_7d", *rt.label_names(H)]
    with pytest.raises(KeyError, match="nope"):
        rt.features_at(data, entities, features=["nope"])
    with pytest.raises(ValueError, match="event_timestamp"):
        rt.features_at(data, entities.drop(columns="event_timestamp"))


def test_sampled_entities_stay_inside_each_users_known_period(data):
    entities = rt.sample_entities(data, 500, seed=7, horizon_us=H)
    again = rt.sample_entities(data, 500, seed=7, horizon_us=H)
    pd.testing.assert_frame_equal(entities, again)
    users, t_us = rt.entity_times(entities)
    first = {}
    for e, eff in zip(EVENTS, EFF, strict=True):
        first.setdefault(e["user_id"], eff)
    assert all(first[u] <= t <= watermark(data) - H for u, t in zip(users, t_us, strict=True))
    assert rt.training_set(data, entities, H)[rt.label_names(H)[0]].notna().all()
    active = rt.sample_entities(data, 200, seed=7, until="last_event")
    last = {}
    for e, eff in zip(EVENTS, EFF, strict=True):
        last[e["user_id"]] = eff
    users, t_us = rt.entity_times(active)
    assert all(first[u] <= t <= last[u] for u, t in zip(users, t_us, strict=True))
    picked = rt.sample_users(data, 5, seed=1)
    assert len(set(picked)) == 5 and set(picked) <= set(first)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_training_sets_round_trip_through_files(data, tmp_path, suffix):
    entities = entity_rows(30, seed=6)
    path = tmp_path / f"entities{suffix}"
    rt.write_frame(entities, path)
    back = rt.read_entities(path)
    assert back["user_id"].tolist() == entities["user_id"].tolist()
    assert (rt.entity_times(back)[1] == rt.entity_times(entities)[1]).all()
    out = tmp_path / f"train{suffix}"
    table = rt.training_set(data, back, H)
    rt.write_frame(table, out)
    read = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    assert list(read.columns) == list(table.columns) and len(read) == len(table)


def test_entity_times_in_a_csv_may_mix_whole_and_fractional_seconds(tmp_path):
    path = tmp_path / "entities.csv"
    path.write_text("user_id,event_timestamp\nu1,2011-03-23 04:24:52+00:00\n"
                    "u2,2011-03-23 04:24:52.205300+00:00\nu3,2011-03-24T00:00:00Z\n")
    _, us = rt.entity_times(rt.read_entities(path))
    assert (us - us[0]).tolist() == [0, 205_300, 70_508_000_000]
