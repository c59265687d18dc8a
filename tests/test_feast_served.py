"""Feast serves what the API serves: the on-demand view `served` (issue 12, item 17).

The online store holds stored values (decayed sums as of the user's last event, the
timestamps "seconds since" counts from) under the feature views' names. The feature service
``user_profile_served`` replaces those by the on-demand view, evaluated at each entity row's
``as_of`` with the API's own serving function: at the API's ``as_of`` they are equal.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from helpers import shoplogs

from offline import feast_store as fs
from offline.backfill.replay import replay
from online import catalogue as cat
from online.eventlog import EventLog
from online.projector import Projector
from online.served import AT_REQUEST
from online.settings import Settings

NOW = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def served_data(tmp_path_factory):
    settings = Settings(data_dir=tmp_path_factory.mktemp("served"))
    events = shoplogs.make_events(400, seed=11, users=6)
    for e in events:  # Feast keeps whole seconds online: so do these events
        e["ts"] -= e["ts"] % cat.SECOND_US
    shoplogs.write(settings.event_log_path, events)
    replay(settings, progress=False)
    fs.materialize(settings, end=NOW)
    with EventLog(settings.event_log_path) as log:
        projector = Projector(log, settings.state_dir)
        projector.run()
        users = list(projector.state.users.values)
        bodies = {b["user_id"]: b for b in projector.profiles(users)[0]}
    return settings, bodies


def _online(settings: Settings, rows: list[dict]) -> dict[str, list]:
    store = fs.feature_store(settings)
    return store.get_online_features(features=store.get_feature_service("user_profile_served"),
                                     entity_rows=rows).to_dict()


def test_feast_served_features_equal_the_api_profile(served_data) -> None:
    settings, bodies = served_data
    users = sorted(bodies)
    rows = [{"user_id": u, "as_of": datetime.fromisoformat(bodies[u]["as_of"])} for u in users]
    got = _online(settings, rows + [{"user_id": "nobody", "as_of": NOW}])
    windows = {f.name for f in cat.FEATURES if f.kind == "window"}
    compared = [n for n in cat.served_names() if n not in windows]
    assert set(AT_REQUEST) <= set(compared) and set(compared) <= set(got)
    for i, user in enumerate(users):
        api = bodies[user]["features"]
        for name in compared:
            have, want = got[name][i], api[name]
            if cat.feature(name).dtype == "timestamp":
                have = None if have is None else have.astimezone(UTC).isoformat()
                want = None if want is None else datetime.fromisoformat(want).isoformat()
            elif cat.feature(name).dtype == "str_list":
                have = list(have) if have is not None else have
            assert have == want, (user, name, have, want)
    assert all(got[n][-1] is None for n in AT_REQUEST)  # an unknown user: nulls


def test_served_values_follow_the_requested_time(served_data) -> None:
    settings, bodies = served_data
    user = sorted(bodies)[0]
    at = datetime.fromisoformat(bodies[user]["as_of"])
    later = at.replace(year=at.year + 1)
    a, b = (_online(settings, [{"user_id": user, "as_of": t}]) for t in (at, later))
    assert b["decayed_events_7d"][0] < a["decayed_events_7d"][0]
    assert b["seconds_since_last_event"][0] > a["seconds_since_last_event"][0]
    assert b["event_count"] == a["event_count"]  # stored kinds do not move with T
