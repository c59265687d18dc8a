"""Sealed log segments: the log's settled prefix as immutable parquet files per partition.

Offsets are assigned in order and never reused, so every offset below the log's next offset
is settled: later events (late ones too) get new offsets.  ``archive`` writes the events of
offsets ``[archived end, next offset)`` as one parquet segment per partition, each with the
SHA-256 of its bytes, and then replaces the manifest (``manifest.json``) that lists them, so
a reader sees whole archive runs only.  Workers on other machines read a partition's history
from the segments (any fsspec URL: a path, ``file://``, ``s3://``, ``memory://``) and only
the live tail from SQLite.  A segment is checked against its checksum when read.

Segments are immutable, except for erasure: ``erase_user`` rewrites the segments holding
the user's events (new checksums, one manifest replacement) and says which.

Layout under the root: ``p<partition>/seg-<start>-<end>.parquet`` and ``manifest.json``.
The data dir records where its segments live in ``segments.json`` (``{"url": ...}``).
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from online.eventlog import ColumnBatch, EventBatch, EventLog
from online.events import BATCH_COLUMNS
from online.settings import Settings

__all__ = ["SegmentChecksumError", "SegmentStore", "archive", "segment_store"]

_SCHEMA = pa.schema([
    ("offset", pa.int64()), ("ts", pa.int64()), ("type", pa.int8()), ("user_id", pa.string()),
    ("item_id", pa.string()), ("category", pa.string()), ("session_id", pa.string()),
    ("price", pa.float64()), ("quantity", pa.int64()), ("event_id", pa.string()),
])
_READ_ROWS = 200_000  # events per SQLite read while archiving


class SegmentChecksumError(ValueError):
    """A segment's bytes do not match the checksum the manifest recorded for it."""

    def __init__(self, path: str, want: str, got: str) -> None:
        super().__init__(f"segment {path}: sha256 {got} does not match the manifest's {want} "
                         "(a damaged or altered file)")


class SegmentStore:
    """The segments under one root URL: the manifest, writing, checked reading."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.manifest = self._load()

    def _load(self) -> dict[str, Any]:
        path = posixpath.join(self.root, "manifest.json")
        if not self.fs.exists(path):
            return {"version": 1, "partitions": None, "end": 0, "segments": []}
        with self.fs.open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))

    @property
    def end(self) -> int:
        """Offsets below this are archived."""
        return int(self.manifest["end"])

    def save_manifest(self) -> None:
        """Replace the manifest (write a new object, then move it over the old)."""
        data = json.dumps(self.manifest, indent=1).encode()
        path = posixpath.join(self.root, "manifest.json")
        tmp = posixpath.join(self.root, ".manifest.json.tmp")
        self.fs.makedirs(self.root, exist_ok=True)
        with self.fs.open(tmp, "wb") as f:
            f.write(data)
        self.fs.mv(tmp, path)

    def write_segment(self, rel: str, table: pa.Table) -> dict[str, Any]:
        """Write one segment; its manifest entry (without partition and offsets)."""
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        data = buf.getvalue()
        path = posixpath.join(self.root, rel)
        self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        with self.fs.open(path, "wb") as f:
            f.write(data)
        return {"path": rel, "rows": table.num_rows, "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest()}

    def read_table(self, entry: dict[str, Any]) -> pa.Table:
        """A segment's events, after checking its checksum."""
        with self.fs.open(posixpath.join(self.root, entry["path"]), "rb") as f:
            data = f.read()
        got = hashlib.sha256(data).hexdigest()
        if got != entry["sha256"]:
            raise SegmentChecksumError(entry["path"], entry["sha256"], got)
        return pq.read_table(pa.BufferReader(data))

    def segments(self, partition: int) -> list[dict[str, Any]]:
        """The partition's segments in offset order."""
        return sorted((s for s in self.manifest["segments"] if s["partition"] == partition),
                      key=lambda s: s["start"])

    def read_partition(self, partition: int, end: int, batch_events: int, *,
                       columnar: bool = False) -> Iterator[EventBatch | ColumnBatch]:
        """The partition's archived events below ``end`` as batches, in offset order.

        ``columnar``: batches of the kernels' columns (``ColumnBatch``, ids as Arrow strings)."""
        for entry in self.segments(partition):
            if entry["start"] >= end:
                return
            table = self.read_table(entry)
            if entry["end"] > end:
                table = table.filter(pc.less(table.column("offset"), end))
            for start in range(0, table.num_rows, batch_events):
                part = table.slice(start, batch_events)
                yield ColumnBatch.from_arrow(part) if columnar else to_batch(part)


def to_batch(table: pa.Table) -> EventBatch:
    """Segment rows as an ``EventBatch`` (the dtypes of ``EventLog.read``)."""
    cols = {}
    for name in BATCH_COLUMNS:
        col = table.column(name)
        if pa.types.is_string(col.type):
            cols[name] = np.array(col.to_pylist(), dtype=object)
        elif name == "price":
            cols[name] = col.to_numpy(zero_copy_only=False).astype(np.float64)  # null -> NaN
        else:
            cols[name] = col.to_numpy().astype(EventBatch.empty().__dict__[name].dtype)
    return EventBatch(**cols)


def _table(batch: EventBatch) -> pa.Table:
    arrays = []
    for field in _SCHEMA:
        values = getattr(batch, field.name)
        if field.name == "price":
            arrays.append(pa.array(values, pa.float64(), from_pandas=True))  # NaN -> null
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=_SCHEMA)


def segment_store(settings: Settings) -> SegmentStore | None:
    """The data dir's segment store, None when it has never archived."""
    pointer = Path(settings.data_dir) / "segments.json"
    if not pointer.exists():
        return None
    return SegmentStore(json.loads(pointer.read_text("utf-8"))["url"])


def archive(settings: Settings, url: str | None = None, *, to_offset: int | None = None,
            ) -> dict[str, Any]:
    """Seal log offsets ``[archived end, to_offset or next offset)`` into segments.

    ``url``: where the segments live (default: the data dir's current store, else
    ``<data_dir>/log/segments``); a data dir keeps one store, so another URL is refused.
    """
    known = segment_store(settings)
    default = str((Path(settings.data_dir) / "log" / "segments").resolve())
    store = known or SegmentStore(url or default)
    if known is not None and url is not None and url.rstrip("/") != known.url:
        raise ValueError(f"--to: this data dir archives into {known.url}, got {url}")
    with EventLog(settings.event_log_path) as log:
        parts = log.partitions
        if store.manifest["partitions"] not in (None, parts):
            raise ValueError(f"the segments have {store.manifest['partitions']} partitions, "
                             f"the log {parts}")
        start = store.end
        stop = log.next_offset if to_offset is None else min(int(to_offset), log.next_offset)
        written = []
        if stop > start:
            for p in range(parts):
                batches, pos = [], start
                while True:
                    batch, pos = log.read_partitions(p, pos, _READ_ROWS, to_offset=stop)
                    if not len(batch):
                        break
                    batches.append(batch)
                if not batches:
                    continue
                rel = f"p{p:04d}/seg-{start:012d}-{stop:012d}.parquet"
                entry = store.write_segment(rel, _table(EventBatch.concat(batches)))
                written.append({"partition": p, "start": start, "end": stop, **entry})
    if stop > start:
        store.manifest.update(partitions=parts, end=stop,
                              segments=store.manifest["segments"] + written)
        store.save_manifest()
    pointer = Path(settings.data_dir) / "segments.json"
    if known is None:
        pointer.write_text(json.dumps({"url": store.url}))
    return {"url": store.url, "from_offset": start, "to_offset": max(start, stop),
            "segments": len(written), "events": sum(s["rows"] for s in written),
            "bytes": sum(s["bytes"] for s in written), "archived_end": store.end}


def erase_user(settings: Settings, stored_user_id: str) -> dict[str, Any]:
    """Rewrite the segments holding the user's events without them; what was rewritten."""
    store = segment_store(settings)
    if store is None:
        return {"segments_rewritten": 0, "events": 0, "paths": []}
    rewritten, events = [], 0
    entries = []
    for entry in store.manifest["segments"]:
        table = store.read_table(entry)
        mask = pc.equal(table.column("user_id"), stored_user_id)
        n = pc.sum(mask).as_py() or 0
        if n:
            # a new name, then the manifest, then the old file: readers holding the old
            # manifest still find the file its checksum describes
            version = int(entry.get("version", 0)) + 1
            stem = entry["path"].rsplit(".parquet", 1)[0].split(".v")[0]
            new = store.write_segment(f"{stem}.v{version}.parquet",
                                      table.filter(pc.invert(mask)))
            rewritten.append((entry["path"], new["path"]))
            entry = {**entry, **new, "version": version}
            events += n
        entries.append(entry)
    if rewritten:
        store.manifest["segments"] = entries
        store.save_manifest()
        for old, _ in rewritten:
            store.fs.rm(posixpath.join(store.root, old))
    return {"segments_rewritten": len(rewritten), "events": events,
            "paths": [new for _, new in rewritten]}
