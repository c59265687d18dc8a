"""The replay's files: date-partitioned parquet, the manifest, the state checkpoints.

Layout under ``<data_dir>/offline/``:

- ``user_features/date=YYYY-MM-DD/part-<start>-<end>.parquet``: the rows a chunk of log
  offsets ``[start, end)`` emitted with that event date; ``tail-<end>.parquet``: the tail
  rows of the state at the replayed end (``offline.backfill.rows``).  Names are a function of the
  chunk and the date, so a re-run writes the same names and replaces instead of duplicating.
  Files are written as ``.<name>.tmp``, fsynced, then renamed (readers skip dot files).
- ``replay/manifest.json``: committed chunks (offsets, files, rows), the tail, the kept
  checkpoints, the run in progress and the watermark; replaced atomically.
- ``replay/checkpoints/<offset>/``: the feature state (``UserState.write_into``) and each
  user's newest applied offset (``last_offset.npy``) at a chunk boundary, whole or in parts
  (``offline.backfill.checkpoints``);
  ``replay/ray/<group>/state/``: the same for each group of an unfinished Ray replay.

Erasure: `erase_user_from_checkpoints` and `erase_user_from_parquet` rewrite, each file
atomically, what holds one user (see ``offline.privacy.erasure`` for the order).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from offline.backfill import rows as sn
from offline.backfill.checkpoints import (  # noqa: F401 (the replay's names for them)
    adopt_checkpoint,
    adopt_parts,
    load_checkpoint,
    save_checkpoint,
    state_dirs,
)
from online import catalogue as cat
from online.durable import fsync_dir, fsync_tree, replace_file, start_writeback
from online.state import UserState

ANCHOR_CHUNKS = 8  # keep the checkpoint of every 8th chunk boundary for re-runs
_BUFFER_ROWS = 262_144  # snapshot rows buffered before a write (~150 MB)
_SMALL_DAY_ROWS = 16_384  # a date with fewer buffered rows waits for more

# Dictionary pages only for strings (hashing every float costs more than it saves);
# integers and timestamps (counts, times, offsets: small steps) delta-encoded and not
# compressed, which is as small as plain + lz4 and a sixth cheaper to write; statistics
# only where readers filter (duckdb prunes row groups by time and user).
_INTEGERS = ["event_timestamp", "created", "offset", *(
    f.name for f in cat.stored_features() if f.dtype in ("int64", "timestamp"))]
_LEAVES = ["user_id", "event_timestamp", "created", "offset", *(  # parquet leaf paths
    f.name + (".list.element" if f.dtype == "str_list" else "") for f in cat.stored_features())]
WRITE_OPTIONS = {
    "compression": {name: "none" if name in _INTEGERS else "lz4" for name in _LEAVES},
    "column_encoding": dict.fromkeys(_INTEGERS, "DELTA_BINARY_PACKED"),
    "store_schema": False,
    "use_dictionary": ["user_id", *(
        f.name + (".list.element" if f.dtype == "str_list" else "")  # parquet leaf paths
        for f in cat.stored_features() if f.dtype in ("str", "str_list"))],
    "write_statistics": ["user_id", "event_timestamp", "offset"],
}


class Manifest:
    """The replay's bookkeeping: committed chunks, tail, checkpoints, the run in progress."""

    def __init__(self, root: Path, data: dict[str, Any]) -> None:
        self.root = root
        self.chunks: list[dict[str, Any]] = data.get("chunks", [])
        self.tail: dict[str, Any] = data.get("tail", {})
        self.checkpoints: list[int] = data.get("checkpoints", [])
        self.run: dict[str, Any] | None = data.get("run")
        self.watermark_us: int = data.get("watermark_us", cat.NO_TS)

    @classmethod
    def load(cls, root: Path) -> Manifest:
        path = root / "manifest.json"
        return cls(root, json.loads(path.read_text("utf-8")) if path.exists() else {})

    @property
    def end(self) -> int:
        return self.chunks[-1]["end"] if self.chunks else 0

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        data = {"version": 1, "chunks": self.chunks, "tail": self.tail,
                "checkpoints": self.checkpoints, "run": self.run,
                "watermark_us": self.watermark_us}
        atomic_write(self.root / "manifest.json", json.dumps(data, indent=1).encode())

    # -- the changes a replay makes, each saved before it returns -------------------------

    def begin_run(self, run: dict[str, Any]) -> None:
        """Record the run in progress (what a resume compares against)."""
        self.run = dict(run)
        self.save()

    def commit_chunk(self, entry: dict[str, Any], state: UserState,
                     last_offset: np.ndarray, *, checkpoint: bool = True) -> None:
        """A chunk's files are in place: record ``entry`` (replacing the chunk of the same
        start), checkpoint the state at its end (unless ``checkpoint`` is False: a resume
        then fast-forwards from an older checkpoint), advance the run in progress."""
        self.chunks = sorted([c for c in self.chunks if c["start"] != entry["start"]] + [entry],
                             key=lambda c: c["start"])
        if checkpoint:
            save_checkpoint(self, entry["end"], state, last_offset)
        if self.run is not None:
            self.run["done"] = entry["end"]
        if checkpoint:  # older ones stay until a newer one exists
            prune_checkpoints(self, keep_also=entry["end"])
        self.save()

    def is_anchor(self, end: int) -> bool:
        """Whether ``end``, the end of a committed chunk or of the next one, is a boundary
        whose checkpoint is kept for re-runs (every ``ANCHOR_CHUNKS``-th)."""
        return (sum(c["end"] < end for c in self.chunks) + 1) % ANCHOR_CHUNKS == 0

    def drop_tail(self, root: Path) -> None:
        """Delete the tail's files (stale once events past its end are replayed)."""
        for name in self.tail.get("files", []):
            (root / name).unlink(missing_ok=True)
        self.tail = {}
        self.save()

    def replace_tail(self, root: Path, files: list[str], rows: int, watermark_us: int) -> None:
        """The tail at the replayed end is ``files`` (in place under ``root``); the previous
        tail's other files are deleted."""
        stale = set(self.tail.get("files", [])) - set(files)
        self.tail = {"end": self.end, "files": files, "rows": rows}
        self.watermark_us = int(watermark_us)
        self.save()
        for name in stale:
            (root / name).unlink(missing_ok=True)

    def replace_all(self, root: Path, chunk: dict[str, Any] | None, tail: dict[str, Any],
                    watermark_us: int, parts: list[Path]) -> None:
        """A rebuild of ``[0, chunk end)`` as one chunk (its files in place under ``root``):
        adopt ``parts`` (directories each holding the state of disjoint users, in order) as
        its checkpoint, delete every file it does not name, finish the run."""
        end = chunk["end"] if chunk else 0
        if end:  # offset 0 is the empty state, never stored
            adopt_parts(self, end, parts)
        keep = set(chunk["files"] if chunk else []) | set(tail.get("files", []))
        old = [f for c in self.chunks for f in c["files"]] + self.tail.get("files", [])
        for name in set(old) - keep:
            (root / name).unlink(missing_ok=True)
        self.chunks = [chunk] if end else []
        self.tail = tail if end else {}
        self.watermark_us = int(watermark_us)
        self.finish()

    def finish(self) -> None:
        """No run in progress; keep only the checkpoints re-runs use."""
        self.run = None
        prune_checkpoints(self, keep_also=-1)
        self.save()

    def checkpoint_dir(self, offset: int) -> Path:
        return self.root / "checkpoints" / f"{offset:012d}"

    def chunk_plan(self, start: int, stop: int, chunk_events: int) -> list[tuple[int, int]]:
        """Chunks covering [start, stop): existing boundaries inside the prefix, then new."""
        if stop <= start:
            return []
        plan = [(c["start"], c["end"]) for c in self.chunks
                if c["end"] > start and c["start"] < stop]
        pos = max(self.end, start)
        while pos < stop:
            plan.append((pos, min(pos + chunk_events, stop)))
            pos = plan[-1][1]
        return plan


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably (`online.durable.replace_file`)."""
    replace_file(path, data)


def prune_checkpoints(man: Manifest, keep_also: int) -> None:
    """Keep the end's checkpoint, every ANCHOR_CHUNKS-th boundary's, and ``keep_also``."""
    bounds = [c["end"] for c in man.chunks]
    anchors = {b for k, b in enumerate(bounds, 1) if k % ANCHOR_CHUNKS == 0}
    keep = anchors | {man.end, keep_also}
    for off in [o for o in man.checkpoints if o not in keep]:
        shutil.rmtree(man.checkpoint_dir(off), ignore_errors=True)
        man.checkpoints.remove(off)


class DayFiles:
    """One parquet file per event date, written under a temporary name until committed.

    The kernels write rows straight into one buffer (``rows.RowBuffer``, ``capacity`` rows).
    When it is full, its rows are grouped by date with a stable sort (a file keeps the
    kernels' order) and each date goes out as one row group: its rows gathered once into
    contiguous columns, which become Arrow arrays without a further copy.  A date with fewer
    than ``_SMALL_DAY_ROWS`` rows (the window expiries of older days) stays buffered, up to a
    quarter of the buffer, for a larger row group later: fewer, larger row groups make the
    snapshot cheaper to write and to read.  One table per date and row group, so each row
    group has one dictionary per string column (the parquet writer re-encodes every value
    when the dictionary changes between the tables it is given).
    """

    def __init__(self, root: Path, stem: str, state: UserState, dicts: sn.Dictionaries,
                 capacity: int = _BUFFER_ROWS) -> None:
        self.root, self.stem = root, stem
        self._state, self._dicts = state, dicts
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._fds: dict[str, int] = {}  # a read-only descriptor of each file: its writeback
        self.buffer = sn.RowBuffer(capacity)
        self.rows = 0

    def relpath(self, day: str) -> str:
        return f"date={day}/{self.stem}.parquet"

    def _tmp(self, day: str) -> Path:
        return self.root / f"date={day}" / f".{self.stem}.parquet.tmp"

    def add_events(self, batch: Any, last_offset: np.ndarray) -> np.ndarray:
        """Apply ``batch`` to the state and write its rows (``rows.event_rows``)."""
        return sn.event_rows(self._state, batch, last_offset, self.buffer, self._drain)

    def add_tail(self, last_offset: np.ndarray) -> None:
        """Write the state's tail rows (``rows.tail_rows``)."""
        sn.tail_rows(self._state, last_offset, self.buffer, self._drain)

    def _drain(self, final: bool = False) -> None:
        buf = self.buffer
        n = buf.n
        if n == 0:
            return
        days = buf.ts[:n] // cat.DAY_US
        if days[0] == days.min() == days.max():
            self._write_day(int(days[0]), buf.block())
            buf.n = 0
            return
        first = days.min()
        span = days.max() - first
        # dates relative to the first fit 16 bits: numpy's stable sort is then a radix sort
        rel = (days - first).astype(np.uint16) if span < 1 << 16 else days
        order = np.argsort(rel, kind="stable")
        days = days[order]
        cuts = [0, *(np.flatnonzero(np.diff(days)) + 1).tolist(), n]
        kept: list[np.ndarray] = []
        room = 0 if final else buf.capacity // 4
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            if b - a < _SMALL_DAY_ROWS and b - a <= room:
                kept.append(order[a:b])
                room -= b - a
            else:
                self._write_day(int(days[a]), buf.block(order[a:b]))
        if kept:
            buf.keep(np.concatenate(kept))
        else:
            buf.n = 0

    def _write_day(self, day_number: int, block: sn.RowBlock) -> None:
        day = str(np.datetime64(day_number, "D"))
        table = sn.to_table(block, self._state, self._dicts)
        writer = self._writers.get(day)
        if writer is None:
            self._tmp(day).parent.mkdir(parents=True, exist_ok=True)
            writer = pq.ParquetWriter(self._tmp(day), table.schema, **WRITE_OPTIONS)
            self._writers[day] = writer
            self._fds[day] = os.open(self._tmp(day), os.O_RDONLY)
        writer.write_table(table, row_group_size=len(table))
        start_writeback(self._fds[day])  # the disk works while the kernels do
        self.rows += len(table)

    def commit(self, previous: list[str]) -> list[str]:
        """Write what is buffered, close, rename over the final names, drop previous files
        not rewritten."""
        self._drain(final=True)
        for day, writer in self._writers.items():
            writer.close()
            os.fsync(self._fds[day])  # durable before the manifest names it
            os.close(self._fds.pop(day))
        names = []
        for day in sorted(self._writers):
            os.replace(self._tmp(day), self.root / self.relpath(day))
            names.append(self.relpath(day))
        for old in set(previous) - set(names):
            (self.root / old).unlink(missing_ok=True)
        for d in {(self.root / n).parent for n in names}:
            fsync_dir(d)
        self.buffer = sn.RowBuffer(0)  # the memory goes back now, not when this is dropped
        self._writers.clear()
        return names

    def abort(self) -> None:
        """Give up what was written (the run failed): every writer and descriptor closed,
        the temporary files removed. A task retried in the same process (Ray) or a replay run
        again then starts clean, holding no descriptor of a deleted file."""
        for day, writer in self._writers.items():
            try:
                writer.close()
            except Exception:  # e.g. the disk that failed the run fails the close too
                pass
            fd = self._fds.pop(day, None)
            if fd is not None:
                os.close(fd)
            self._tmp(day).unlink(missing_ok=True)
        self._writers.clear()
        self.buffer = sn.RowBuffer(0)

    def __enter__(self) -> DayFiles:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


# -- erasure ---------------------------------------------------------------------------------


def erase_user_from_checkpoints(offline_dir: Path, stored_id: str) -> dict[str, Any]:
    """Rewrite every replay checkpoint (and Ray group state) holding the user without them."""
    replay_dir = Path(offline_dir) / "replay"
    rewritten = 0
    for directory in state_dirs(replay_dir):
        root = directory.parent
        users = json.loads((directory / "codes.json").read_text("utf-8"))["users"]
        if stored_id not in users:  # the id map alone says: no arrays to load
            continue
        state = UserState.load(directory)
        if not state.erase(stored_id):
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


def erase_user_from_parquet(offline_dir: Path, stored_id: str) -> dict[str, Any]:
    """Rewrite every parquet file under ``offline_dir`` holding the user's rows without them.

    A file is rewritten (temporary file, fsync, rename: readers see old or new) also when
    only its dictionary page lists the user; other files are not touched.
    """
    files = rows = 0
    for path in sorted(Path(offline_dir).rglob("*.parquet")):
        if "user_id" not in pq.read_schema(path).names:
            continue
        # Read the parquet dictionary too: a file may list the user in its dictionary page
        # (or its statistics) without holding a row of theirs. The user_id column alone
        # says whether the file must be rewritten: most files do not hold the user.
        source = pq.ParquetFile(path, read_dictionary=["user_id"])
        column = source.read(columns=["user_id"])["user_id"]
        listed = any(pc.index(chunk.dictionary, stored_id).as_py() >= 0
                     for chunk in column.chunks if pa.types.is_dictionary(chunk.type))
        mask = pc.fill_null(pc.equal(column.cast(pa.string()), stored_id), False)
        n = pc.sum(mask).as_py() or 0
        if not n and not listed:
            continue
        table = source.read()
        kept = table.filter(pc.invert(mask))
        # plain strings: the rewritten file's dictionary is built from the remaining rows only
        kept = kept.set_column(kept.schema.get_field_index("user_id"), "user_id",
                               kept["user_id"].cast(pa.string()))
        tmp = path.with_name(f".{path.name}.erase.tmp")
        pq.write_table(kept, tmp, **WRITE_OPTIONS)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
        files += 1
        rows += n
    return {"rows": rows, "files": files}
