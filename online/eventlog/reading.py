"""Reading the log: offset ranges, partitions (through their index), users, counts."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from online.eventlog.store import _INSERTED, _MAX_INT64, _SELECT, LogFile
from online.events import EventBatch


class Reading(LogFile):
    """The reads of ``EventLog`` (row batches as ``EventBatch``)."""

    def read(
        self, from_offset: int = 0, limit: int = 100_000, *, to_offset: int | None = None
    ) -> tuple[EventBatch, int]:
        """Events with ``from_offset <= offset < to_offset`` in offset order, at most ``limit``.

        Returns ``(batch, resume_offset)``: pass ``resume_offset`` as the next ``from_offset``
        (last returned offset + 1, or ``from_offset`` when nothing was returned).
        """
        if limit <= 0:
            return EventBatch.empty(), from_offset
        upper = _MAX_INT64 if to_offset is None else to_offset
        recent = self._recent
        if recent is not None and recent[0] == from_offset:
            # the rows this process appended last, starting here: as the SELECT would return
            # them (they are the rows inserted), without reading them back
            self._recent = None
            rows = recent[1][:min(limit, upper - from_offset)]
            if rows:
                return EventBatch.from_rows(rows, _INSERTED), rows[-1][0] + 1
        with self._reading() as conn:
            rows = conn.execute(
                f'{_SELECT} WHERE "offset" >= ? AND "offset" < ? ORDER BY "offset" LIMIT ?',
                (from_offset, upper, limit),
            ).fetchall()
        if not rows:
            return EventBatch.empty(), from_offset
        return EventBatch.from_rows(rows), rows[-1][0] + 1

    def batches(self, from_offset: int = 0, to_offset: int | None = None,
                size: int = 100_000) -> Iterator[tuple[EventBatch, int]]:
        """``(batch, resume_offset)`` over offsets ``[from_offset, to_offset)``, in order.

        The one loop over ``read``: each batch holds at most ``size`` events, the resume offset
        is where the next read starts (``column_batches``: the same in the kernels' columns).
        """
        if to_offset is not None and from_offset >= to_offset:
            return
        offset = from_offset
        while True:
            batch, offset = self.read(offset, size, to_offset=to_offset)
            if not len(batch):
                return
            yield batch, offset

    def read_partitions(
        self,
        partitions: int | Iterable[int],
        from_offset: int = 0,
        limit: int = 100_000,
        *,
        to_offset: int | None = None,
    ) -> tuple[EventBatch, int]:
        """Like ``read``, restricted to one partition or a set (through the partition index).

        The resume offset is one past the last event returned (``from_offset`` when none).
        A set is read partition by partition and merged by offset, so each call costs at most
        ``limit`` rows per partition; work that needs no global order (a replay: users never
        span partitions) is cheaper reading one partition at a time.
        """
        parts = sorted({int(partitions)} if isinstance(partitions, int) else set(partitions))
        bad = [p for p in parts if not 0 <= p < self.partitions]
        if bad:
            raise ValueError(f"partitions: expected values in [0, {self.partitions}), got {bad}")
        if limit <= 0 or not parts:
            return EventBatch.empty(), from_offset
        upper = _MAX_INT64 if to_offset is None else to_offset
        rows: list[tuple] = []
        with self._reading() as conn:
            for part in parts:
                rows += conn.execute(
                    f'{_SELECT} WHERE part = ? AND "offset" >= ? AND "offset" < ?'
                    ' ORDER BY "offset" LIMIT ?',
                    (part, from_offset, upper, limit),
                ).fetchall()
        if not rows:
            return EventBatch.empty(), from_offset
        if len(parts) > 1:
            rows.sort(key=lambda r: r[0])  # column 0 is the offset
            del rows[limit:]
        return EventBatch.from_rows(rows), rows[-1][0] + 1

    def partition_counts(self) -> list[int]:
        """Events held per partition (index ``p`` = partition ``p``)."""
        counts = [0] * self.partitions
        with self._reading() as conn:
            for part, n in conn.execute("SELECT part, COUNT(*) FROM events GROUP BY part"):
                counts[part] = n
        return counts

    def read_user(
        self,
        user_id: str,
        *,
        until_ts_us: int | None = None,
        limit: int | None = None,
        before_ts_us: int | None = None,
        before_offset: int | None = None,
    ) -> EventBatch:
        """A user's events in offset order (``user_id`` as stored).

        ``until_ts_us`` keeps ``ts <= until``, ``before_ts_us`` keeps ``ts < before`` (raw event
        times: with late events this is a superset of the "as of" prefix, which the caller
        cuts by effective time). ``limit`` keeps the newest ``limit`` events (highest offsets);
        ``before_offset`` keeps ``offset < before_offset``, the next page of such a read
        (offsets are unique, times are not: many events may share one).
        """
        where, args = ["user_id = ?"], list[object]([user_id])
        if before_offset is not None:
            where.append('"offset" < ?')
            args.append(before_offset)
        if until_ts_us is not None:
            where.append("ts <= ?")
            args.append(until_ts_us)
        if before_ts_us is not None:
            where.append("ts < ?")
            args.append(before_ts_us)
        sql = f"{_SELECT} WHERE {' AND '.join(where)}"
        if limit is not None:
            sql = f'SELECT * FROM ({sql} ORDER BY "offset" DESC LIMIT ?) ORDER BY "offset"'
            args.append(max(limit, 0))
        else:
            sql += ' ORDER BY "offset"'
        with self._reading() as conn:
            rows = conn.execute(sql, args).fetchall()
        return EventBatch.from_rows(rows)

    def read_quarantine(self, from_id: int = 0, limit: int = 1_000) -> list[dict[str, Any]]:
        """Quarantined payloads (oldest first), each with its reason and the raw JSON."""
        with self._reading() as conn:
            cur = conn.execute(
                "SELECT id, received_at, source, batch_index, raw, field, reason"
                " FROM quarantine WHERE id >= ? ORDER BY id LIMIT ?",
                (from_id, limit),
            )
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    @property
    def next_offset(self) -> int:
        """The offset the next accepted event will get (one past the newest ever appended)."""
        with self._reading() as conn:
            return conn.execute("SELECT value FROM meta WHERE key = 'next_offset'").fetchone()[0]

    def count(self) -> int:
        """The number of events held (offsets minus erased events)."""
        with self._reading() as conn:
            return conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def stats(self) -> dict[str, Any]:
        """Size and extent of the log, for operators and ``/metrics``."""
        with self._reading() as conn:
            events, users, first, last = conn.execute(
                "SELECT COUNT(*), COUNT(DISTINCT user_id), MIN(ts), MAX(ts) FROM events"
            ).fetchone()
            quarantined = conn.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]
            next_offset = conn.execute(
                "SELECT value FROM meta WHERE key = 'next_offset'"
            ).fetchone()[0]
        size = 0
        if not self._memory:
            for suffix in ("", "-wal"):
                f = Path(f"{self.path}{suffix}")
                size += f.stat().st_size if f.exists() else 0
        return {
            "path": str(self.path), "events": events, "users": users,
            "next_offset": next_offset, "quarantined": quarantined,
            "first_ts_us": first, "last_ts_us": last, "size_bytes": size,
            "partitions": self.partitions,
        }  # fmt: skip
