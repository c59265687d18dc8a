"""One contract for every projector contributor (as River runs one check suite per estimator).

Each contributor is driven by a real projector over a random shop log; then: its checkpoint
round-trips (a loaded copy contributes the same profile keys and reports the same stats), a
reset forgets everything (it behaves as a fresh one), and after ``erase_user`` nothing it
saves mentions the user.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import shoplogs

from online.api.deferred_writes import DeferredWrites
from online.eventlog import EventLog
from online.models.contributor import ModelContributor
from online.projector import ProfileContributor, Projector

# long, distinctive ids: a short one ("u3") also turns up inside pickled floats
EVENTS = [{**e, "user_id": f"contract-user-{e['user_id']}"}
          for e in shoplogs.make_events(600, seed=11, users=9)]


def _deferred():
    return DeferredWrites(lambda ids, stored, offsets: None)


def _online_writer(settings):
    from offline.feast_online import OnlineWriter
    from offline.feast_store import apply

    apply(settings)
    return OnlineWriter(settings)


FACTORIES = {
    "models": lambda settings: ModelContributor(),
    "deferred_writes": lambda settings: _deferred(),
    "online_store": _online_writer,
}


@pytest.fixture(scope="module")
def log_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("contributors") / "events.db"
    shoplogs.write(path, EVENTS)
    return path


def _project(log_path: Path, contributor, state_dir: Path) -> Projector:
    log = EventLog(log_path)
    projector = Projector(log, state_dir, contributors=[contributor])
    projector.run(batch_size=97)
    return projector


def _view(projector: Projector, contributor) -> tuple:
    bodies = []
    for user in sorted({e["user_id"] for e in EVENTS}):
        features = projector.features(user)
        body: dict = {}
        contributor.contribute(body, features)
        bodies.append(body)
    return repr(bodies), repr(contributor.stats()), contributor.model_version


def _unversioned(view: tuple) -> tuple:
    return tuple(re.sub(r"'model_version': '[^']*'", "", part) for part in view[:2])


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_contributor_contract(kind, log_path, tmp_path) -> None:
    from online.settings import Settings

    settings = Settings(data_dir=tmp_path / "data")
    make = lambda: FACTORIES[kind](settings)  # noqa: E731
    c = make()
    assert isinstance(c, ProfileContributor) and c.name == kind
    projector = _project(log_path, c, tmp_path / "state")
    try:
        seen = _view(projector, c)

        saved = tmp_path / "saved"
        saved.mkdir()
        c.save(saved)
        copy = make()
        copy.load(saved)
        assert _view(projector, copy) == seen, "a loaded checkpoint must behave the same"

        fresh = make()
        fresh_view = _view(projector, fresh)
        c.reset()
        # a reset is a new model version by design; everything else is as new
        assert _unversioned(_view(projector, c)) == _unversioned(fresh_view), \
            "reset must forget learnt state"

        victim = projector.log.stored_user_id("contract-user-u3")
        c2 = make()
        c2.load(saved)
        dropped = c2.erase_user(victim)
        assert isinstance(dropped, dict) and all(isinstance(v, int) for v in dropped.values())
        after = tmp_path / "after"
        after.mkdir()
        c2.save(after)
        for f in after.rglob("*"):
            if f.is_file():
                assert victim.encode() not in f.read_bytes(), f"{kind} keeps the user in {f}"
    finally:
        projector.log.close()
