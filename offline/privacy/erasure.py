"""Erasure of one user from every store of a data dir, with a receipt and an audit record.

`erase_user(settings, user_id)` is the one implementation behind ``portrait erase USER_ID``
and ``DELETE /v1/users/{user_id}`` (the server passes its open ``log`` and live
``projector``).  It maps the raw id to the stored id (the keyed pseudonym when a key is
configured) and removes the user from, in this order:

1. the event log and its quarantine (rows deleted, pages zeroed, WAL truncated): the source
   of truth goes first, so no later rebuild can bring the user back;
2. the projector state: the live projector's rows (then a new checkpoint), or on disk the
   current checkpoint rewritten without the user; every older checkpoint is deleted, and the
   watermark is recomputed from the remaining users (it was possibly the user's last event);
3. the replay's checkpoints and every offline parquet file holding the user's rows
   (rewritten to a temporary file, fsynced, renamed over: readers see old or new, never half);
4. the online store: the user's rows in Feast's sqlite file (all feature views; deleted
   directly by Feast's serialized entity key, which is how its sqlite store keys rows) and,
   when Redis is the online store, the user's Redis key (Feast keeps one hash per entity);
5. the API's sampled-profiles log, when one is configured.

Each step is idempotent: a failed or interrupted erasure is completed by running it again.
The receipt lists what each store removed; ``complete`` is False when a step failed or a
checkpoint part we cannot rewrite (an unknown contributor's state) still mentions the user.

Audit: ``<data_dir>/privacy/erasures.jsonl`` gets one line per erasure with the receipt's id,
time and counts, and no personal data: not the raw id, not the pseudonym (which links to the
user's rows wherever a copy of them survives, e.g. a backup), only ``subject_check`` =
SHA-256(salt, raw id) with a random salt that is returned in the receipt and stored nowhere.
Whoever holds the receipt can prove the erasure was done (`verify_receipt`); the audit file
alone cannot be linked to anyone, even by trying every possible id.

Models are aggregates: the user's events moved their weights, and erasing the user's rows
does not undo that (nor does it identify the user: no per-user data is kept in a model,
only pending labels keyed by the stored id, which contributors drop in ``erase_user``).
`retrain_models` rebuilds the projector and its models from the remaining log into a fresh
state and swaps it in atomically; contributors with a ``reset()`` start afresh (a
``ModelSet`` then reports a new ``model_version``).

Not reached: copies outside the data dir (training sets written with ``--out``, backups),
Redis RDB/AOF files until Redis rewrites them, and disk blocks of files replaced by rename.
Run the CLI erasure with the server stopped, or use the DELETE route: a running server holds
its own in-memory state and would write it back at its next checkpoint.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import shutil
import struct
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from online import catalogue as cat
from online.api.settings import ApiSettings
from online.checkpoints import current_checkpoint, point_current
from online.clock import iso
from online.eventlog import EventLog
from online.privacy import pseudonymizer_from_settings
from online.settings import Settings
from online.state import I_LAST_TS, UserState, fsync_dir, fsync_tree, write_synced

__all__ = ["Receipt", "audit_path", "erase_user", "retrain_models", "verify_receipt"]

_CURRENT = "CURRENT"  # the projector's pointer to its live checkpoint (online/projector.py)
# receipt counts that are the user's own data (the others count files, checkpoints, ...)
_USER_DATA = ("events", "quarantined", "state_rows", "rows", "keys", "lines")


@dataclass
class Receipt:
    """What an erasure removed, store by store (``as_dict()`` is the CLI/API body)."""

    receipt_id: str
    erased_at: str
    found: bool = False
    complete: bool = True
    stores: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    verification_salt: str = ""  # returned to the requester only; see `verify_receipt`

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def audit_path(settings: Settings) -> Path:
    """The erasure audit log of a data dir (JSONL, no personal data)."""
    return Path(settings.data_dir) / "privacy" / "erasures.jsonl"


def erase_user(settings: Settings, user_id: str, *, log: EventLog | None = None,
               projector=None, contributors: Iterable[Any] = ()) -> Receipt:
    """Erase ``user_id`` (the raw id) from every store of the data dir; returns the receipt.

    ``log`` / ``projector``: the server's open ones (call under its write lock); otherwise the
    log is opened here and the checkpoint on disk is rewritten.  ``contributors``: objects
    with the projector's contributor interface (``name``, ``load``, ``save``, optionally
    ``erase_user(stored_id)``) that can scrub their part of an on-disk checkpoint.
    """
    settings = api_settings(settings)
    receipt = Receipt(uuid.uuid4().hex, iso(time.time_ns() // 1000),
                      verification_salt=secrets.token_hex(16))
    pseudonymizer = pseudonymizer_from_settings(settings)  # also checks the key's fingerprint
    own_log = log is None and Path(settings.event_log_path).exists()  # never create a log
    if own_log:
        log = EventLog(settings.event_log_path, pseudonymizer=pseudonymizer)
    try:
        if log is not None:
            stored = log.stored_user_id(user_id)
        else:
            stored = pseudonymizer(user_id) if pseudonymizer else user_id
        steps = [
            ("event_log", lambda: _erase_log(log, stored)),
            ("log_segments", lambda: _erase_segments(settings, stored)),
            ("projector_state", lambda: _erase_projector(settings, projector, stored,
                                                         contributors, receipt)),
            ("replay_checkpoints", lambda: _erase_replay_checkpoints(settings, stored)),
            ("offline_parquet", lambda: _erase_parquet(settings, stored)),
            ("online_sqlite", lambda: _erase_online_sqlite(settings, stored)),
            ("online_redis", lambda: _erase_online_redis(settings, stored)),
            ("profile_samples", lambda: _erase_samples(settings, {user_id, stored})),
        ]
        for name, step in steps:
            try:
                receipt.stores[name] = step()
            except Exception as exc:  # report and go on: the other stores must still be erased
                receipt.stores[name] = {"error": f"{type(exc).__name__}: {exc}"}
                receipt.complete = False
                receipt.notes.append(f"{name} was not erased (see its error): run it again")
    finally:
        if own_log:
            log.close()
    receipt.found = any(s.get(k) for s in receipt.stores.values() for k in _USER_DATA)
    _audit(settings, receipt, user_id)
    return receipt


def verify_receipt(settings: Settings, receipt_id: str, user_id: str, salt: str) -> bool:
    """True when the audit log holds ``receipt_id`` and it was issued for ``user_id``."""
    path = audit_path(settings)
    if not path.exists():
        return False
    want = _subject_check(salt, user_id)
    with path.open(encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec["receipt_id"] == receipt_id:
                return hmac.compare_digest(rec["subject_check"], want)
    return False


def retrain_models(settings: Settings, *, contributors: Iterable[Any] = (),
                   batch_size: int | None = None) -> dict[str, Any]:
    """Rebuild the projector (state and ``contributors``' models) from the log's offset 0.

    The build runs in a scratch directory inside ``state/``; its checkpoint is then renamed
    into ``state/`` and ``CURRENT`` is replaced atomically, so a reader sees the old state or
    the new one.  Contributors with a ``reset()`` are reset first (models get a new version).
    """
    from online.projector import Projector

    contributors = list(contributors)
    state_dir = Path(settings.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".retrain-", dir=state_dir))
    try:
        for c in contributors:
            c.reset()
        with EventLog(settings.event_log_path) as log:
            projector = Projector(log, scratch, contributors=contributors)
            events = projector.run(batch_size=batch_size or settings.batch_size)
            built = projector.checkpoint()
        final = state_dir / built.name
        os.replace(built, final)
        fsync_dir(state_dir)
        point_current(state_dir, final.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    removed = _remove_other_checkpoints(state_dir, final.name)
    versions = {c.name: c.model_version for c in contributors if c.model_version is not None}
    return {"events": events, "offset": projector.offset, "checkpoint": final.name,
            "old_checkpoints_removed": removed, "model_versions": versions}


# -- the stores ------------------------------------------------------------------------------


def _erase_log(log: EventLog | None, stored: str) -> dict[str, Any]:
    if log is None:
        return {"events": 0, "quarantined": 0}
    out = log.erase_user(stored)
    return {"events": out["events"], "quarantined": out["quarantine"],
            "wal_checkpointed": out["wal_checkpointed"]}


def _erase_projector(settings: Settings, projector, stored: str, contributors,
                     receipt: Receipt) -> dict[str, Any]:
    state_dir = Path(settings.state_dir)
    if projector is not None:  # the server's live state; its checkpoint follows
        rows = int(projector.state.erase(stored))
        dropped = 0
        for c in projector.contributors:
            dropped += sum(v for v in c.erase_user(stored).values() if isinstance(v, int))
        if rows:
            projector.watermark_us = _watermark(projector.state)
        current = current_checkpoint(state_dir)
        # a new checkpoint only when the user was in memory or is on disk: an unknown
        # user's erasure (a DELETE of a typo) writes nothing and costs no full checkpoint
        if rows or dropped or current is None or _files_with(state_dir, stored):
            current = projector.checkpoint().name
    else:
        if not (state_dir / _CURRENT).exists():
            return {"state_rows": 0, "checkpoints_removed": 0}
        rows, current = _rewrite_checkpoint(state_dir, stored, list(contributors))
    removed = _remove_other_checkpoints(state_dir, current)
    residue = [p.relative_to(state_dir).as_posix() for p in _files_with(state_dir, stored)]
    if residue:
        receipt.complete = False
        receipt.notes.append("the projector checkpoint still mentions the user in "
                             f"{residue}: run retrain_models to rebuild it from the log")
    return {"state_rows": rows, "checkpoints_removed": removed, "residue": residue}


def _rewrite_checkpoint(state_dir: Path, stored: str, contributors: list) -> tuple[int, str]:
    """The current checkpoint copied without the user, made current; (rows, its name)."""
    source = state_dir / (state_dir / _CURRENT).read_text("utf-8").strip()
    meta = json.loads((source / "meta.json").read_text("utf-8"))
    state = UserState.load(source)
    rows = int(state.erase(stored))
    if rows:
        meta["watermark_us"] = _watermark(state)
    target = Path(tempfile.mkdtemp(prefix=f"ckpt-{int(meta['offset']):020d}-", dir=state_dir))
    try:
        state.write_into(target)
        written = set(os.listdir(target))
        by_name = {c.name: c for c in contributors}
        for entry in source.iterdir():
            if entry.name in written or entry.name == "meta.json":
                continue
            dest = target / entry.name
            c = by_name.get(entry.name)
            if entry.is_dir() and c is not None:  # a contributor that can scrub itself
                c.load(entry)
                c.erase_user(stored)
                dest.mkdir()
                c.save(dest)
            elif entry.is_dir():
                shutil.copytree(entry, dest)
            else:
                shutil.copy2(entry, dest)
        write_synced(target / "meta.json", json.dumps(meta).encode())
        fsync_tree(target)
        fsync_dir(state_dir)
        point_current(state_dir, target.name)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return rows, target.name


def _erase_segments(settings: Settings, stored: str) -> dict[str, Any]:
    from offline.log_archive import erase_user as erase_from_segments

    return erase_from_segments(settings, stored)


def _erase_replay_checkpoints(settings: Settings, stored: str) -> dict[str, Any]:
    replay_dir = Path(settings.offline_dir) / "replay"
    rewritten = 0
    # the replay's checkpoints, and the states of an unfinished Ray replay's groups
    found = [*replay_dir.glob("checkpoints/*"), *replay_dir.glob("ray/*/state")]
    for directory in sorted(p for p in found if p.is_dir()):
        root = directory.parent
        if not (directory / "codes.json").exists():
            continue
        users = json.loads((directory / "codes.json").read_text("utf-8"))["users"]
        if stored not in users:  # the id map alone says: no arrays to load
            continue
        state = UserState.load(directory)
        if not state.erase(stored):
            continue
        tmp = directory.with_name(f".{directory.name}.erase")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        state.write_into(tmp)
        for entry in directory.iterdir():  # e.g. last_offset.npy: no ids, kept as it is
            if not (tmp / entry.name).exists():
                shutil.copy2(entry, tmp / entry.name)
        fsync_tree(tmp)
        old = directory.with_name(f".{directory.name}.old")
        os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old)
        fsync_dir(root)
        rewritten += 1
    return {"checkpoints_rewritten": rewritten, "state_rows": rewritten}


def _erase_parquet(settings: Settings, stored: str) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from offline.backfill.replay import _WRITE_OPTIONS  # rewrite files the way replay writes them

    root = Path(settings.offline_dir)
    files = rows = 0
    for path in sorted(root.rglob("*.parquet")):
        if "user_id" not in pq.read_schema(path).names:
            continue
        # Read the parquet dictionary too: a file may list the user in its dictionary page
        # (or its statistics) without holding a row of theirs. The user_id column alone
        # says whether the file must be rewritten: most files do not hold the user.
        source = pq.ParquetFile(path, read_dictionary=["user_id"])
        column = source.read(columns=["user_id"])["user_id"]
        listed = any(pc.index(chunk.dictionary, stored).as_py() >= 0
                     for chunk in column.chunks if pa.types.is_dictionary(chunk.type))
        mask = pc.fill_null(pc.equal(column.cast(pa.string()), stored), False)
        n = pc.sum(mask).as_py() or 0
        if not n and not listed:
            continue
        table = source.read()
        kept = table.filter(pc.invert(mask))
        # plain strings: the rewritten file's dictionary is built from the remaining rows only
        kept = kept.set_column(kept.schema.get_field_index("user_id"), "user_id",
                               kept["user_id"].cast(pa.string()))
        tmp = path.with_name(f".{path.name}.erase.tmp")
        pq.write_table(kept, tmp, **_WRITE_OPTIONS)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
        files += 1
        rows += n
    return {"rows": rows, "files": files}


def _entity_key(stored: str, version: int) -> tuple[Any, bytes]:
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    key = EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=stored)])
    return key, serialize_entity_key(key, entity_key_serialization_version=version)


def _erase_online_sqlite(settings: Settings, stored: str) -> dict[str, Any]:
    import sqlite3

    path = Path(settings.online_store_path)
    if not path.exists():
        return {"rows": 0}
    from offline.feast_store import repo_config

    _, key = _entity_key(stored, repo_config(settings).entity_key_serialization_version)
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA secure_delete=ON")  # deleted cells are zeroed, not just unlinked
        rows = 0
        with conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master "
                                                 "WHERE type = 'table'")]
            for table in tables:
                columns = {r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')}
                if "entity_key" in columns:
                    rows += conn.execute(f'DELETE FROM "{table}" WHERE entity_key = ?',
                                         (key,)).rowcount
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # a no-op unless in WAL mode
    finally:
        conn.close()
    return {"rows": rows}


def _erase_online_redis(settings: Settings, stored: str) -> dict[str, Any]:
    if settings.online_store != "redis":
        return {"keys": 0, "skipped": "the online store is not redis"}
    from feast.infra.online_stores.helpers import _redis_key
    from feast.infra.online_stores.redis import RedisOnlineStore

    from offline.feast_store import repo_config

    config = repo_config(settings)
    entity, _ = _entity_key(stored, config.entity_key_serialization_version)
    client = RedisOnlineStore()._get_client(config.online_store)
    key = _redis_key(config.project, entity, config.entity_key_serialization_version)
    return {"keys": int(client.delete(key))}


def _erase_samples(settings: ApiSettings, ids: set[str]) -> dict[str, Any]:
    from online.api.consistency import erase_from_samples, sample_logs

    removed = files = 0
    # every sample log a server of this data dir wrote, not only the one configured here
    for path in sample_logs(settings.data_dir, settings.profile_sample_path):
        if path.exists():
            removed += erase_from_samples(path, ids)
            files += 1
    return {"lines": removed, "files": files}


def api_settings(settings: Settings) -> ApiSettings:
    """``settings`` as the server's `ApiSettings` (the rest read from the environment).

    The CLI and the DELETE route erase with the same settings, so both reach the same
    stores (the profile sample log is an API setting).
    """
    if isinstance(settings, ApiSettings):
        return settings
    return ApiSettings(**{name: getattr(settings, name) for name in Settings.model_fields})


# -- helpers ---------------------------------------------------------------------------------


def _audit(settings: Settings, receipt: Receipt, user_id: str) -> None:
    record = {
        "receipt_id": receipt.receipt_id, "erased_at": receipt.erased_at,
        "found": receipt.found, "complete": receipt.complete,
        "subject_check": _subject_check(receipt.verification_salt, user_id),
        "stores": {name: {k: v for k, v in s.items() if isinstance(v, int | bool)}
                   for name, s in receipt.stores.items()},
    }  # fmt: skip
    path = audit_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, separators=(",", ":")) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _subject_check(salt: str, user_id: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + user_id.encode("utf-8")).hexdigest()


def _watermark(state: UserState) -> int:
    """Newest effective event time over the users still in the state (what a replay gives)."""
    live = np.array([i for i, u in enumerate(state.users.values) if u is not None], np.int64)
    return int(state.ints[live, I_LAST_TS].max()) if len(live) else int(cat.NO_TS)


def _remove_other_checkpoints(state_dir: Path, keep: str) -> int:
    removed = 0
    for old in state_dir.glob("ckpt-*"):
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)
            removed += 1
    return removed


def _files_with(directory: Path, stored: str) -> list[Path]:
    """Files under ``directory`` that still hold ``stored`` (numeric .npy arrays skipped).

    A long id (a pseudonym) is searched as bytes anywhere; a short raw id only as a whole
    JSON string or a pickled str, so that erasing "u1" does not flag "u10".
    """
    data = stored.encode("utf-8")
    if len(data) >= 16:
        needles = [data]
    else:
        needles = [json.dumps(stored).encode(), b"\x8c" + bytes([len(data)]) + data,
                   b"X" + struct.pack("<I", len(data)) + data]
    return [p for p in sorted(directory.rglob("*"))
            if p.is_file() and p.suffix != ".npy"
            and any(n in p.read_bytes() for n in needles)]


