"""Train/serve consistency, measured: a sample log of served profiles and its offline check.

The server appends a random sample of the profiles it serves to a JSONL file (stored user
id, as_of, offset, values). `check_consistency` recomputes each sampled profile from the
event log alone (the as-of path, cut at the logged offset) and reports, per feature, the
share of values that are exactly equal, and every mismatch. ``portrait consistency``
prints that report.
"""

from __future__ import annotations

import json
import os
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["ProfileSampler", "check_consistency", "erase_from_samples", "erase_user",
           "read_samples", "sample_logs"]

_MAX_LISTED = 1_000
_REGISTRY = Path("privacy") / "sample_logs.json"  # under the data dir


def sample_logs(data_dir: str | Path, configured: str | Path | None = None) -> list[Path]:
    """Every sample log a server of ``data_dir`` has written, plus ``configured``.

    Erasure reaches them all, whichever settings the erasing process was started with.
    """
    paths = {Path(configured).resolve()} if configured is not None else set()
    try:
        paths.update(Path(p) for p in json.loads((Path(data_dir) / _REGISTRY).read_text()))
    except FileNotFoundError:
        pass
    return sorted(paths)


def _register(data_dir: Path, path: Path) -> None:
    known = sample_logs(data_dir)
    if path in known:
        return
    registry = data_dir / _REGISTRY
    registry.parent.mkdir(parents=True, exist_ok=True)
    tmp = registry.with_name(f".{registry.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(sorted(str(p) for p in {*known, path})))
    os.replace(tmp, registry)


class ProfileSampler:
    """Append a random share (``rate``) of served profile bodies to a JSONL file.

    A record holds the stored user id (the pseudonym when a key is set), never the raw id,
    and the file's path is registered in the data dir (``privacy/sample_logs.json``) so that
    every erasure finds it.
    """

    def __init__(self, path: str | Path, rate: float, *, seed: int | None = None,
                 data_dir: str | Path | None = None) -> None:
        self.path = Path(path).resolve()
        if data_dir is not None:
            _register(Path(data_dir), self.path)
        self.rate = rate
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # line-buffered append: each record is one write, whole lines even if we crash
        self._file: IO[str] | None = self.path.open("a", encoding="utf-8", buffering=1)
        self.written = 0

    def maybe_record(self, body: dict[str, Any], stored_user_id: str) -> bool:
        """Record ``body`` (of ``stored_user_id``) with probability ``rate``; True if written."""
        with self._lock:
            if self._file is None or self._random.random() >= self.rate:
                return False
            line = json.dumps(
                {
                    "stored_user_id": stored_user_id, "as_of": body["as_of"],
                    "offset": body["offset"],
                    "model_version": body.get("model_version"), "features": body["features"],
                },  # fmt: skip
                separators=(",", ":"),
            )
            self._file.write(line + "\n")
            self.written += 1
            return True

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No record is written inside (erasure rewrites the file in place meanwhile)."""
        with self._lock:
            yield

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def erase_from_samples(path: str | Path, ids: set[str]) -> int:
    """Remove the records of ``ids`` (stored or, in older files, raw) from a sample log.

    Rewritten in place, not replaced: a server appends to it through an open O_APPEND fd
    (pause its sampler meanwhile). Returns the number of records removed.
    """
    removed = 0
    with open(path, "r+", encoding="utf-8") as f:
        kept = []
        for line in f:
            try:
                record = json.loads(line)
                drop = record.get("stored_user_id") in ids or record.get("user_id") in ids
            except (json.JSONDecodeError, AttributeError):
                drop = False
            removed += drop
            if not drop:
                kept.append(line)
        if removed:
            f.seek(0)
            f.writelines(kept)
            f.truncate()
            f.flush()
            os.fsync(f.fileno())
    return removed


def erase_user(data_dir: str | Path, configured: str | Path | None,
               ids: set[str]) -> dict[str, int]:
    """Remove the records of ``ids`` from every sample log of ``data_dir`` (`sample_logs`).

    Returns ``lines`` (records removed) and ``files`` (sample logs found and scanned).
    """
    removed = files = 0
    for path in sample_logs(data_dir, configured):
        if path.exists():
            removed += erase_from_samples(path, ids)
            files += 1
    return {"lines": removed, "files": files}


def read_samples(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a sample log (a torn last line, from a crash, is skipped)."""
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def check_consistency(sample_path: str | Path, log) -> dict[str, Any]:
    """Recompute every sampled profile from ``log`` and compare values exactly.

    Each record is recomputed with the as-of path (`online.projector.features_as_of`) at its
    logged ``as_of``, over the log cut at its logged ``offset``, so events appended after the
    profile was served do not count. Returns ``{"profiles", "values", "equal", "share_equal",
    "features": {name: {"n", "equal", "share_equal"}}, "mismatches": [...], "missing_users"}``
    (mismatches listed up to 1,000; counts are exact).
    """
    from online.clock import parse_time

    per: dict[str, list[int]] = {}
    mismatches: list[dict[str, Any]] = []
    n_profiles = n_values = n_equal = n_mismatch = 0
    missing: list[str] = []
    for record in read_samples(sample_path):
        n_profiles += 1
        # records hold the stored id; files written before that hold the raw "user_id"
        stored = "stored_user_id" in record
        user_id = record["stored_user_id"] if stored else record["user_id"]
        t_us = parse_time(record["as_of"])
        recomputed = _recompute(log, user_id, t_us, int(record["offset"]), stored=stored)
        if recomputed is None:
            missing.append(user_id)
            continue
        for name, served in record["features"].items():
            counts = per.setdefault(name, [0, 0])
            counts[0] += 1
            n_values += 1
            offline = recomputed.get(name)
            if _same(served, offline):
                counts[1] += 1
                n_equal += 1
            else:
                n_mismatch += 1
                if len(mismatches) < _MAX_LISTED:
                    mismatches.append({
                        "user_id": user_id, "as_of": record["as_of"],
                        "offset": record["offset"], "feature": name,
                        "served": served, "recomputed": offline,
                    })  # fmt: skip
    return {
        "sample_path": str(sample_path),
        "profiles": n_profiles,
        "values": n_values,
        "equal": n_equal,
        "mismatched": n_mismatch,
        "share_equal": n_equal / n_values if n_values else None,
        "features": {
            name: {"n": n, "equal": eq, "share_equal": eq / n if n else None}
            for name, (n, eq) in sorted(per.items())
        },
        "mismatches": mismatches,
        "missing_users": missing[:_MAX_LISTED],
    }


def _same(a: Any, b: Any) -> bool:
    # exact equality; JSON round-trips floats exactly (repr), so no tolerance is needed
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return a == b


class _LogBelow:
    """A read-only view of a log that ends at ``offset`` (as it was when a profile was served)."""

    def __init__(self, log, offset: int, *, stored: bool) -> None:
        self._log = log
        self._offset = offset
        self._stored = stored

    def stored_user_id(self, user_id: str) -> str:
        return user_id if self._stored else self._log.stored_user_id(user_id)

    def read_user(self, user_id: str, **kwargs):
        batch = self._log.read_user(user_id, **kwargs)
        keep = batch.offset < self._offset
        return batch if keep.all() else batch.take(keep.nonzero()[0])


def _recompute(log, user_id: str, t_us: int, offset: int, *,
               stored: bool) -> dict[str, Any] | None:
    """The served feature values of ``user_id`` as of ``t_us`` from events below ``offset``."""
    from online.projector import UnknownUser, features_as_of

    try:
        return features_as_of(_LogBelow(log, offset, stored=stored), user_id, t_us).to_json()
    except UnknownUser:
        return None
