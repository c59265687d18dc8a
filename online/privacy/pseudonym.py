"""Keyed pseudonyms of user ids: what the event log and every projection store instead of ids.

A user id is replaced at ingest by ``HMAC-SHA256(key, "portrait/user_id/v1" NUL id)``, cut to
128 bits and written as ``ps_`` + 32 hex digits.  A plain hash would not do: shop ids are
small, guessable spaces (customer numbers, e-mail addresses) and anyone holding the data could
hash every candidate and re-identify the rows.  Without the key, a pseudonym can neither be
reversed nor recomputed from a guessed id.

Key handling
------------
- The key comes from ``PORTRAIT_PSEUDONYM_KEY`` (``Settings.pseudonym_key``) or from a file
  (``PORTRAIT_PSEUDONYM_KEY_FILE``), never both.  It must hold at least 16 bytes; generate one
  with ``python -c "import secrets; print(secrets.token_hex(32))"``.  A key file inside the
  data dir is refused (a copy of the data dir would carry its own key), and a key file that
  group or others can read is reported with a warning.
- The key lives only in process memory: a `Pseudonymizer` refuses to be pickled (so it can
  never reach a checkpoint) and its ``repr`` shows the key's fingerprint, not the key.
- The data dir records the key's fingerprint (``privacy/pseudonym.json``: an HMAC of a fixed
  label, which reveals nothing about the key) so that opening it with another key, or without
  one, fails loudly instead of silently splitting every user in two.

Rotating the key
----------------
Pseudonyms are one-way: a new key gives every user a new, unlinkable pseudonym, and nothing
short of the raw ids (or the old key and the raw ids) maps old pseudonyms to new ones.  So a
rotation is a migration, not a setting change: re-ingest the raw source into a new data dir
under the new key, then delete the old data dir (or keep the old key to erase users from it:
erasure by raw id needs the key the data was written with).  Destroying the old key is a
legitimate way to make the old data dir anonymous-to-us, but the dir is then unreachable by
raw id, so erasure requests can no longer be served from it.

>>> p = Pseudonymizer(b"0123456789abcdef-not-a-real-key")
>>> p("alice") == p("alice") != p("bob"), p("alice")[:3], len(p("alice"))
(True, 'ps_', 35)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

from online.durable import replace_file
from online.settings import Settings

__all__ = [
    "MIN_KEY_BYTES",
    "PseudonymKeyError",
    "PseudonymKeyMismatch",
    "Pseudonymizer",
    "UnkeyedDataDir",
    "load_pseudonym_key",
    "marker_path",
    "open_event_log",
    "pseudonymizer_from_settings",
]

MIN_KEY_BYTES = 16
PREFIX = "ps_"
_DOMAIN = b"portrait/user_id/v1\x00"  # domain separation: the key is used for nothing else
_FINGERPRINT_LABEL = b"portrait/key-fingerprint/v1"
_log = logging.getLogger("portrait.privacy")


class PseudonymKeyError(ValueError):
    """The pseudonym key is missing, weak, ambiguous or kept in the wrong place."""


class PseudonymKeyMismatch(PseudonymKeyError):
    """The data dir was pseudonymized with a different key (or with one, and none is given)."""

    def __init__(self, data_dir: Path, expected: str | None, got: str | None) -> None:
        self.data_dir, self.expected, self.got = data_dir, expected, got
        if got is None:
            msg = (f"the data dir {data_dir} holds pseudonymized ids (key fingerprint "
                   f"{expected}) but no pseudonym key is configured: set "
                   "PORTRAIT_PSEUDONYM_KEY or PORTRAIT_PSEUDONYM_KEY_FILE")
        else:
            msg = (f"the pseudonym key configured (fingerprint {got}) is not the key the data "
                   f"dir {data_dir} was written with (fingerprint {expected}); a different key "
                   "would split every user in two. Rotating a key is a migration (see "
                   "online/privacy/pseudonym.py)")
        super().__init__(msg)


class UnkeyedDataDir(PseudonymKeyError):
    """A key is configured but the data dir's log already holds raw (unkeyed) ids."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        super().__init__(
            f"the event log in {data_dir} was written without a pseudonym key, so it holds raw "
            "user ids; pseudonymizing from now on would mix raw ids and pseudonyms. Re-ingest "
            "the source into a new data dir with the key configured")


class Pseudonymizer:
    """Maps a user id to its keyed pseudonym (HMAC-SHA256, 128 bits, ``ps_`` + hex).

    Callable (``str -> str``), as `EventLog(pseudonymizer=...)` expects.  ``key_id`` is the
    key's fingerprint, safe to log and store.
    """

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray):
            raise TypeError(f"key: expected bytes, got {type(key).__name__}")
        if len(key) < MIN_KEY_BYTES:
            raise PseudonymKeyError(
                f"the pseudonym key has {len(key)} bytes; at least {MIN_KEY_BYTES} are needed "
                '(generate one: python -c "import secrets; print(secrets.token_hex(32))")')
        # A keyed HMAC object copied per call skips re-hashing the key's pads every time.
        self._mac = hmac.new(bytes(key), _DOMAIN, hashlib.sha256)
        self.key_id = hmac.new(bytes(key), _FINGERPRINT_LABEL, hashlib.sha256).hexdigest()[:16]

    def __call__(self, user_id: str) -> str:
        mac = self._mac.copy()
        mac.update(user_id.encode("utf-8"))
        return PREFIX + mac.hexdigest()[:32]

    def many(self, user_ids) -> list[str]:
        """Pseudonyms of many ids (e.g. an entity file's ``user_id`` column), in order."""
        return [self(u) for u in user_ids]

    def __repr__(self) -> str:
        return f"Pseudonymizer(key_id={self.key_id!r})"

    def __reduce__(self):
        # Checkpoints and models are pickled; the key must never ride along.
        raise TypeError("a Pseudonymizer holds the secret key and is never pickled")


def load_pseudonym_key(settings: Settings) -> bytes | None:
    """The key configured in ``settings`` (env value or key file), None when neither is set."""
    secret = settings.pseudonym_key
    path = settings.pseudonym_key_file
    if secret is not None and path is not None:
        raise PseudonymKeyError(
            "both PORTRAIT_PSEUDONYM_KEY and PORTRAIT_PSEUDONYM_KEY_FILE are set; set one")
    if secret is not None:
        return secret.get_secret_value().encode("utf-8")
    if path is None:
        return None
    path = Path(path).expanduser()
    if _inside(path, Path(settings.data_dir)):
        raise PseudonymKeyError(
            f"the pseudonym key file {path} is inside the data dir {settings.data_dir}: keep "
            "the key apart from the data it protects")
    try:
        mode = path.stat().st_mode
        key = path.read_bytes().strip()
    except OSError as exc:
        raise PseudonymKeyError(f"cannot read the pseudonym key file {path}: {exc}") from None
    if mode & 0o077:
        _log.warning("the pseudonym key file %s is readable by group or others (mode %o)",
                     path, mode & 0o777)
    return key


def pseudonymizer_from_settings(settings: Settings, *, check: bool = True
                                ) -> Pseudonymizer | None:
    """The pseudonymizer of ``settings``' data dir, or None when no key is configured.

    With ``check`` (default) the key is checked against the fingerprint recorded in the data
    dir (recorded on first use): a different key, no key for a keyed data dir, or a key for a
    log that already holds raw ids raise `PseudonymKeyError` subclasses.
    """
    key = load_pseudonym_key(settings)
    data_dir = Path(settings.data_dir)
    recorded = _recorded_fingerprint(data_dir) if check else None
    if key is None:
        if recorded is not None:
            raise PseudonymKeyMismatch(data_dir, recorded, None)
        return None
    pseudonymizer = Pseudonymizer(key)
    if not check:
        return pseudonymizer
    if recorded is None:
        if _log_has_events(settings.event_log_path):
            raise UnkeyedDataDir(data_dir)
        _record_fingerprint(data_dir, pseudonymizer.key_id)
    elif recorded != pseudonymizer.key_id:
        raise PseudonymKeyMismatch(data_dir, recorded, pseudonymizer.key_id)
    return pseudonymizer


def open_event_log(settings: Settings, **kwargs: Any):
    """The data dir's `EventLog` with the configured pseudonymizer (what every writer opens)."""
    from online.eventlog import EventLog

    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    kwargs.setdefault("partitions", settings.log_partitions)
    return EventLog(settings.event_log_path, pseudonymizer=pseudonymizer_from_settings(settings),
                    **kwargs)


def marker_path(data_dir: Path) -> Path:
    """Where a data dir records its key fingerprint."""
    return Path(data_dir) / "privacy" / "pseudonym.json"


def _recorded_fingerprint(data_dir: Path) -> str | None:
    path = marker_path(data_dir)
    if not path.exists():
        return None
    return json.loads(path.read_text("utf-8"))["key_fingerprint"]


def _record_fingerprint(data_dir: Path, key_id: str) -> None:
    path = marker_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"version": 1, "algorithm": "HMAC-SHA256, 128 bits", "key_fingerprint": key_id}
    replace_file(path, json.dumps(body).encode("utf-8"))


def _log_has_events(path: Path) -> bool:
    if not Path(path).exists():
        return False
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT 1 FROM events LIMIT 1").fetchone() is not None
        finally:
            conn.close()
    except sqlite3.Error:  # no events table yet
        return False


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
        return True
    except ValueError:
        return False
