"""Latest profiles kept serialized at the projector's offset, and their JSON bodies.

A latest profile is a function of the projector's state alone (features evaluated at the
watermark, the models at the offset, never the wall clock), so its body cannot change until
the projector moves. `ProfileCache` keeps the bytes of every latest profile served since the
last projection, keyed by the user id as asked; the server replaces the whole map, paired with
its offset, inside the exclusive section of every state change (projection, reload, erasure)
and at open, so an entry always belongs to one offset, a batch read from one map names that
offset, and a lookup after an acknowledged POST never sees an older body.

Entries are added only inside a shared section of the projector's lock (`ProfileService`), so
a map is never filled with a body of another offset. A hit takes no lock: it reads the map of
the current offset, or, while a projection is running, the one of the offset before, which is
what the same request would have read had it come a moment earlier. Bounded by
``max_users``: a full map takes no new entries until the next state change.

`profile_json` and `batch_json` are the bodies FastAPI would write for a `Profile` and a
`BatchProfilesResponse` (the model validated, then serialized by pydantic), byte for byte;
the batch body is joined from the profiles' bytes. An entry keeps the body dict beside its
bytes only when the server samples profiles (the sampler records the dict); otherwise the
bytes alone, so the map adds no containers for the cyclic garbage collector to scan.

`warm_up` computes one latest profile and its body before the server serves (and before
`online.api.main` freezes the heap), so the first lookup does not load what the lookup path
loads lazily (numba's dispatch of the kernels cached on disk, some 60,000 objects).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pydantic_core

from .schemas import Profile

__all__ = ["ProfileCache", "batch_json", "profile_json", "served_body", "warm_up"]

_serializer = Profile.__pydantic_serializer__


def profile_json(body: dict[str, Any]) -> bytes:
    """The JSON body of one profile, as the route's response model writes it."""
    return _serializer.to_json(Profile.model_validate(body))


def batch_json(offset: int, profiles: list[bytes], missing: list[str]) -> bytes:
    """The JSON body of a `BatchProfilesResponse` from serialized profiles."""
    return b"".join((b'{"offset":', str(int(offset)).encode(), b',"profiles":[',
                     b",".join(profiles), b'],"missing":', pydantic_core.to_json(missing), b"}"))


def served_body(body: dict[str, Any], features: list[str] | None) -> dict[str, Any]:
    """The projector's body plus serving metadata, features cut to ``features``."""
    out = dict(body)
    values = body["features"]
    out["event_time"] = values.get("last_event_ts")
    out["event_age_s"] = values.get("seconds_since_last_event")
    out.setdefault("model_source", "current")
    if features is not None:
        out["features"] = {n: values[n] for n in features}
    return out


def warm_up(projector) -> None:
    """Compute and serialize the latest profile of the state's first row, then drop it."""
    state = projector.state
    if not state.n_users:
        return
    from online import kernels
    from online.projector import ServedFeatures

    rows = np.zeros(1, dtype=np.int64)
    t = np.maximum(np.int64(projector.watermark_us), state.ints[rows, kernels.I_LAST_TS])
    values = {n: v.tolist()[0] for n, v in kernels.evaluate(state, rows, t).items()}
    served = ServedFeatures("warm-up", int(t[0]), projector.offset, values)
    for body in projector.bodies([served]):
        profile_json(served_body(body, None))


Entry = tuple[dict[str, Any] | None, bytes]  # (body when the server samples, JSON body)


class ProfileCache:
    """Serialized latest profiles (body dict or None, bytes) of one offset, by user id.

    ``current`` is the pair (offset, map), replaced as one object, so a reader with no lock
    gets a map and the offset its bodies belong to.
    """

    def __init__(self, max_users: int) -> None:
        self.max_users = max_users
        self.current: tuple[int, dict[str, Entry]] = (0, {})
        self.hits = 0
        self.misses = 0

    @property
    def entries(self) -> dict[str, Entry]:
        """The map of the current offset."""
        return self.current[1]

    def get(self, user_id: str) -> Entry | None:
        """The entry of ``user_id`` at the offset of the current map (no lock needed)."""
        entry = self.current[1].get(user_id)
        if entry is not None:
            self.hits += 1  # a statistic: a lost increment under a race is harmless
        return entry

    def put(self, entries: dict, user_id: str, body: dict[str, Any] | None, data: bytes) -> None:
        """Add to ``entries`` (the map read in the same shared section), unless full."""
        self.misses += 1
        if len(entries) < self.max_users:
            entries[user_id] = (body, data)

    def invalidate(self, offset: int) -> None:
        """A new, empty map for ``offset``: call inside the exclusive section of a state
        change, with the projector's offset after it."""
        self.current = (int(offset), {})

    def stats(self) -> dict[str, int]:
        return {"users": len(self.entries), "n_hits": self.hits, "n_misses": self.misses}
