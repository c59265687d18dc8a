"""Replay: rebuild the offline feature snapshot from the event log (how the store backfills).

The log is read in offset order, batch by batch, and applied by the feature engine's own
kernels (``offline.backfill.rows`` calls ``online.kernels``), so replaying offsets ``[0, n)`` ends
in the projector's state at ``n``, bit for bit.  Rows go to
``<data_dir>/offline/user_features/date=YYYY-MM-DD/`` (by ``event_timestamp``, UTC).

Which rows a snapshot holds (see ``offline.backfill.rows``): one row per (user, effective event
time) with the state after the user's last event at that time, plus a row at every time a
sliding-window value changes between two events, plus the tail (the windows emptying out
after each user's newest event).  With those, "the newest row at or before T" is the user's
exact stored state as of T, for every T, so point-in-time joins (ours and Feast's) are exact
and a row stamped T depends only on events with effective ts <= T.  The price is storage:
on synthetic shop traffic 1.7 rows per event (expiry rows ~0.6 per event, one per non-empty
bucket of each window; the tail ~10 rows per user, at most ~95), about 270 bytes per event
on disk.  The cheaper alternatives were wrong or bigger: event rows only (window features
stale until the user's next event, so training rows would disagree with served profiles),
or the ring buckets in every row (~190 extra columns).

Work is committed in chunks of ``chunk_events`` offsets (files, checkpoints and manifest:
``offline.backfill.files``): a chunk's files are written under temporary names, renamed over
the chunk's previous files (names are a function of the chunk's offsets and date, so a
re-run replaces rather than duplicates), then the manifest is atomically replaced.  The
state is checkpointed at the run's last chunk and at every ``files.ANCHOR_CHUNKS``-th boundary
only: a checkpoint is the whole state (~2 KB per user, fsynced), which cost as much as a
tenth of the replay when written at every chunk, while fast-forwarding the kernels over at
most ``ANCHOR_CHUNKS`` chunks of events costs a fraction of replaying them.  Memory is
bounded by a batch of events plus ~260k buffered rows.
An interrupted replay resumes at its last committed chunk (its state fast-forwarded from the
newest checkpoint before it); a re-run of a range starts at
the nearest chunk boundary at or before it (from a kept checkpoint, fast-forwarding state
only) and follows the existing chunk boundaries.  The committed chunks always form the
prefix ``[0, end)``.  The tail is deleted when a run extends the end and rewritten when it
finishes.  Readers see a consistent snapshot between runs; during one they may see a
missing tail or a chunk half renamed (rows then come from both versions of that chunk,
which are equal).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from offline.backfill import files as store
from offline.backfill import rows as sn
from online import catalogue as cat
from online import kernels as kn
from online.eventlog import EventLog
from online.settings import Settings
from online.state import UserState, last_per_user

__all__ = ["ReplaySummary", "replay", "replay_state", "replayed_end", "snapshot_dir",
           "snapshot_files", "watermark"]

CHUNK_EVENTS = 1_000_000  # offsets per committed chunk (checkpoint + manifest update)
BATCH_EVENTS = 100_000  # events read and applied at once (bounds memory)


@dataclass
class ReplaySummary:
    """What one replay did (``as_dict()`` is the CLI's ``--json`` body)."""

    from_offset: int
    to_offset: int
    events: int = 0
    rows: int = 0
    tail_rows: int = 0
    chunks: int = 0
    resumed_at: int | None = None
    seconds: float = 0.0
    end_offset: int = 0  # end of the committed prefix after the run
    output_dir: str = ""
    notes: list[str] = field(default_factory=list)
    engine: str = "local"  # or "ray" (offline.backfill.replay_ray)
    workers: int = 1  # processes that ran kernels at once
    worker_peak_rss_mb: dict[str, float] = field(default_factory=dict)  # Ray: per worker pid

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["events_per_s"] = round(self.events / self.seconds) if self.seconds > 0 else None
        return out


def _settings(settings_or_paths: Settings | str | os.PathLike) -> Settings:
    if isinstance(settings_or_paths, Settings):
        return settings_or_paths
    return Settings(data_dir=Path(settings_or_paths))


def snapshot_dir(settings_or_paths: Settings | str | os.PathLike) -> Path:
    """The snapshot's root (the Feast FileSource path)."""
    return _settings(settings_or_paths).offline_dir / "user_features"


def snapshot_files(settings_or_paths: Settings | str | os.PathLike) -> list[Path]:
    """The committed parquet files of the snapshot (chunks and tail), sorted."""
    s = _settings(settings_or_paths)
    man = store.Manifest.load(s.offline_dir / "replay")
    root = snapshot_dir(s)
    names = [f for c in man.chunks for f in c["files"]] + man.tail.get("files", [])
    return sorted(root / f for f in names)


class _Cursor:
    """The replay's position: feature state plus each user's newest applied offset."""

    def __init__(self, state: UserState, last_offset: np.ndarray) -> None:
        self.state = state
        self.last_offset = last_offset


def replay(settings_or_paths: Settings | str | os.PathLike, from_offset: int = 0,
           to_offset: int | None = None, progress: bool | Callable[[int], None] = True, *,
           chunk_events: int = CHUNK_EVENTS, batch_events: int = BATCH_EVENTS) -> ReplaySummary:
    """Replay log offsets ``[from_offset, to_offset)`` into the parquet snapshot.

    ``settings_or_paths``: a ``Settings`` or a data dir.  ``to_offset`` None: the log's end.
    ``progress``: True draws a rich bar on stderr, a callable receives ``advance(n_offsets)``.
    The range is widened to chunk boundaries (see the module docstring); a ``from_offset``
    past the replayed end starts at that end.  Re-running a range replaces its rows; calling
    again with the arguments of an interrupted run resumes it.
    """
    s = _settings(settings_or_paths)
    started = time.perf_counter()
    root = snapshot_dir(s)
    man = store.Manifest.load(s.offline_dir / "replay")
    request = [int(from_offset), None if to_offset is None else int(to_offset)]
    with EventLog(s.event_log_path) as log:
        stop = log.next_offset if to_offset is None else min(int(to_offset), log.next_offset)
        start = min(max(int(from_offset), 0), man.end)
        summary = ReplaySummary(from_offset=start, to_offset=stop, output_dir=str(root))
        if start < from_offset:
            summary.notes.append(f"the snapshot ends at offset {man.end}: started there")
        run = man.run
        if run and run["request"] == request and run["done"] > run["start"]:
            start, stop = run["done"], max(stop, run["stop"])  # resume the interrupted run
            summary.resumed_at = start
            summary.notes.append(f"resumed an interrupted replay at offset {start}")
        plan = man.chunk_plan(start, stop, chunk_events)
        if plan and (plan[0][0] < start or plan[-1][1] > stop):
            summary.notes.append(f"widened to chunk boundaries [{plan[0][0]}, {plan[-1][1]})")
        if plan:
            begin, end = plan[0][0], plan[-1][1]
            cur = _state_at(man, log, begin, batch_events)
            man.begin_run({"request": request, "start": begin, "stop": end, "done": begin})
            if end > man.end and man.tail:
                man.drop_tail(root)  # events past the old end make the old tail stale
            dicts = sn.Dictionaries()
            with _progress(progress, end - begin) as advance:
                for lo, hi in plan:
                    n_ev, n_rows = _replay_chunk(man, log, root, lo, hi, cur, dicts,
                                                 batch_events, advance, hi == end)
                    summary.events += n_ev
                    summary.rows += n_rows
                    summary.chunks += 1
            summary.from_offset, summary.to_offset = begin, end
        if man.chunks and man.tail.get("end") != man.end:
            if not plan or plan[-1][1] != man.end:
                cur = _state_at(man, log, man.end, batch_events)
                if man.end not in man.checkpoints:  # an interrupted run's end: keep it now
                    store.save_checkpoint(man, man.end, cur.state, cur.last_offset)
            summary.tail_rows = _write_tail(man, root, cur, sn.Dictionaries())
        man.finish()
    summary.end_offset = man.end
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def replayed_end(settings_or_paths: Settings | str | os.PathLike) -> int:
    """The end of the replayed prefix: the snapshot reflects log offsets below it."""
    return store.Manifest.load(_settings(settings_or_paths).offline_dir / "replay").end


def watermark(settings_or_paths: Settings | str | os.PathLike) -> int:
    """The newest effective event time in the replayed prefix (µs; ``NO_TS`` when empty)."""
    man = store.Manifest.load(_settings(settings_or_paths).offline_dir / "replay")
    return man.watermark_us


def replay_state(settings_or_paths: Settings | str | os.PathLike,
                 offset: int | None = None) -> UserState:
    """The feature state the replay checkpointed at ``offset`` (default: the replayed end)."""
    man = store.Manifest.load(_settings(settings_or_paths).offline_dir / "replay")
    offset = man.end if offset is None else offset
    if offset != 0 and offset not in man.checkpoints:
        raise KeyError(f"no replay checkpoint at offset {offset} (kept: {man.checkpoints})")
    return store.load_checkpoint(man, offset)[0]


def _state_at(man: store.Manifest, log: EventLog, offset: int, batch_events: int) -> _Cursor:
    """State at ``offset``: the nearest checkpoint at or before it, fast-forwarded."""
    base = max([c for c in man.checkpoints if c <= offset], default=0)
    cur = _Cursor(*store.load_checkpoint(man, base))
    for batch, _ in _batches(log, base, offset, batch_events):
        kn.apply(cur.state, batch)
        cur.last_offset = sn.grow_offsets(cur.last_offset, cur.state.n_users)
        _note_offsets(cur.state.index_users(batch.user_id), batch.offset, cur.last_offset)
    return cur


def _note_offsets(uidx: np.ndarray, offsets: np.ndarray, last_offset: np.ndarray) -> None:
    users, last = last_per_user(uidx)
    last_offset[users] = offsets[last] + 1


def _batches(log: EventLog, lo: int, hi: int, batch_events: int):
    """Batches of offsets [lo, hi) in the kernels' columns, with their resume offsets."""
    return log.column_batches(lo, hi, batch_events)


def _replay_chunk(man: store.Manifest, log: EventLog, root: Path, lo: int, hi: int,
                  cur: _Cursor,
                  dicts: sn.Dictionaries, batch_events: int, advance, last: bool,
                  ) -> tuple[int, int]:
    # One thread: reading, the kernels and parquet encoding take turns.  Threads overlapping
    # them would make one replay use more than a core, and replays scale by running on
    # more partitions at once (offline.backfill.replay_ray), not by threads.
    events, pos = 0, lo
    with store.DayFiles(root, f"part-{lo:012d}-{hi:012d}", cur.state, dicts) as files:
        for batch, nxt in _batches(log, lo, hi, batch_events):
            cur.last_offset = files.add_events(batch, cur.last_offset)
            events += len(batch)
            advance(nxt - pos)
            pos = nxt
        advance(hi - pos)
        old = next((c for c in man.chunks if c["start"] == lo), None)
        names = files.commit(old["files"] if old else [])
    man.commit_chunk({"start": lo, "end": hi, "files": names, "rows": files.rows,
                      "events": events}, cur.state, cur.last_offset,
                     checkpoint=last or man.is_anchor(hi))
    return events, files.rows


def _write_tail(man: store.Manifest, root: Path, cur: _Cursor, dicts: sn.Dictionaries) -> int:
    man.drop_tail(root)
    with store.DayFiles(root, f"tail-{man.end:012d}", cur.state, dicts) as files:
        files.add_tail(cur.last_offset)
        names = files.commit([])
    state = cur.state
    watermark = int(state.ints[: state.n_users, kn.I_LAST_TS].max()) \
        if state.n_users else cat.NO_TS
    man.replace_tail(root, names, files.rows, watermark)
    return files.rows


class _progress:
    """``advance(n)`` for a bar on stderr (True), a caller's callable, or nothing (False)."""

    def __init__(self, progress: bool | Callable[[int], None], total: int) -> None:
        self._progress, self._total, self._bar = progress, total, None

    def __enter__(self) -> Callable[[int], None]:
        if callable(self._progress):
            return self._progress
        if not self._progress:
            return lambda n: None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = Console(stderr=True)
        self._bar = Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                             disable=not console.is_terminal)  # no bar frames in log files
        self._bar.__enter__()
        task = self._bar.add_task("replay", total=self._total)
        return lambda n: self._bar.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
