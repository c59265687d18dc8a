"""Erasure of one user from every store of a data dir, with a receipt and an audit record.

`erase_user(settings, user_id)` is the one implementation behind ``portrait erase USER_ID``
and ``DELETE /v1/users/{user_id}`` (the server passes its open ``log`` and live
``projector``).  It maps the raw id to the stored id (the keyed pseudonym when a key is
configured) and removes the user from, in this order:

1. the event log and its quarantine (rows deleted, pages zeroed, WAL truncated): the source
   of truth goes first, so no later rebuild can bring the user back
   (``EventLog.erase_user``), then the sealed log segments (``offline.log_archive``);
2. the projector state: the live projector's rows (then a new checkpoint), or on disk the
   current checkpoint rewritten without the user; every older checkpoint is deleted, and the
   watermark is recomputed from the remaining users (``online.checkpoints.erase_user``);
3. the replay's checkpoints and every offline parquet file holding the user's rows
   (rewritten to a temporary file, fsynced, renamed over: readers see old or new, never half;
   ``offline.backfill.files``);
4. the online store: the user's rows in Feast's sqlite file (all feature views) and, when
   Redis is the online store, the user's Redis key (``offline.feast_online``);
5. the API's sampled-profiles logs (``online.api.consistency.erase_user``).

Each store's module owns its format and its erase, which returns what it removed; this
module only keeps the order, the receipt and the audit record.  A new store adds its erase
to `_steps` (after the stores it is rebuilt from, so a failure never lets a rebuild bring
the user back).

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
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from online import checkpoints
from online.api import consistency
from online.api.settings import ApiSettings
from online.clock import iso
from online.eventlog import EventLog
from online.privacy import pseudonymizer_from_settings
from online.settings import Settings
from online.state import fsync_dir

if TYPE_CHECKING:
    from online.projector import ProfileContributor, Projector

__all__ = ["Receipt", "audit_path", "erase_user", "retrain_models", "verify_receipt"]

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
               projector: Projector | None = None,
               contributors: Iterable[ProfileContributor] = ()) -> Receipt:
    """Erase ``user_id`` (the raw id) from every store of the data dir; returns the receipt.

    ``log`` / ``projector``: the server's open ones (call under its write lock); otherwise the
    log is opened here and the checkpoint on disk is rewritten.  ``contributors``: the
    projector's contributors (``name``, ``load``, ``save``, ``erase_user(stored_id)``) that
    scrub their part of an on-disk checkpoint.
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
        steps = _steps(settings, user_id, stored, log, projector, contributors)
        for name, step in steps:
            try:
                receipt.stores[name] = step()
            except Exception as exc:  # report and go on: the other stores must still be erased
                receipt.stores[name] = {"error": f"{type(exc).__name__}: {exc}"}
                receipt.complete = False
                receipt.notes.append(f"{name} was not erased (see its error): run it again")
        residue = receipt.stores["projector_state"].get("residue")
        if residue:
            receipt.complete = False
            receipt.notes.append("the projector checkpoint still mentions the user in "
                                 f"{residue}: run retrain_models to rebuild it from the log")
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


def retrain_models(settings: Settings, *, contributors: Iterable[ProfileContributor] = (),
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
        checkpoints.point_current(state_dir, final.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    removed = checkpoints.remove_other_checkpoints(state_dir, final.name)
    versions = {c.name: c.model_version for c in contributors if c.model_version is not None}
    return {"events": events, "offset": projector.offset, "checkpoint": final.name,
            "old_checkpoints_removed": removed, "model_versions": versions}


# -- the stores, in erasure's order ---------------------------------------------------------


def _steps(settings: ApiSettings, user_id: str, stored: str, log: EventLog | None,
           projector: Projector | None, contributors: Iterable[ProfileContributor],
           ) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    """(receipt name, erase) of every store; each store's module owns its erase."""
    from offline import feast_online, log_archive
    from offline.backfill import files as replay_files

    offline_dir = Path(settings.offline_dir)
    return [
        ("event_log", lambda: _erase_log(log, stored)),
        ("log_segments", lambda: log_archive.erase_user(settings, stored)),
        ("projector_state", lambda: checkpoints.erase_user(
            Path(settings.state_dir), stored, projector=projector, contributors=contributors)),
        ("replay_checkpoints",
         lambda: replay_files.erase_user_from_checkpoints(offline_dir, stored)),
        ("offline_parquet", lambda: replay_files.erase_user_from_parquet(offline_dir, stored)),
        ("online_sqlite", lambda: feast_online.erase_user_sqlite(settings, stored)),
        ("online_redis", lambda: feast_online.erase_user_redis(settings, stored)),
        # every sample log a server of this data dir wrote, not only the one configured here
        ("profile_samples", lambda: consistency.erase_user(
            settings.data_dir, settings.profile_sample_path, {user_id, stored})),
    ]


def _erase_log(log: EventLog | None, stored: str) -> dict[str, Any]:
    if log is None:
        return {"events": 0, "quarantined": 0}
    out = log.erase_user(stored)
    return {"events": out["events"], "quarantined": out["quarantine"],
            "wal_checkpointed": out["wal_checkpointed"]}


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
