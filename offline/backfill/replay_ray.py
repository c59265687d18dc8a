"""Replay on Ray: the snapshot rebuilt by one Ray task per group of log partitions.

A user's events all live in one log partition (``online.partitions``), and every row of the
snapshot is a function of one user's events, so a group of partitions replays on its own:
each task reads its partitions (sealed segments, then the live tail in offset order), runs
the very kernels of the local replay (``offline.backfill.rows.event_rows`` and
``tail_rows``) on a state of its own users, and writes its parquet files and its state into
a staging directory.  The snapshot (files in ``user_features/``, the manifest, the end
checkpoint) is committed by the driver only when every task has finished, so readers never
see a half-run; the groups' states become the parts of that checkpoint by renaming
(``offline.backfill.checkpoints``), merged only when read.  The rows are exactly those of
``offline.backfill.replay.replay``
over the same offsets (tests compare them); only their grouping into files differs.

Failures: a task whose worker dies (killed, OOM, a machine lost) is retried alone by Ray
(``max_retries``); it starts its group afresh.  A driver that dies leaves the finished groups
in the staging directory (each with a ``done.json``), and the same call resumes: only the
missing groups run again.  A Ray replay rebuilds ``[0, end)``, the whole backfill; the local
engine then extends the snapshot incrementally from that checkpoint.

Layout: ``offline/replay/ray/g<k>/{rows/date=D/*.parquet, state/, done.json}`` while a run
is in progress; the committed files are ``part-0-<end>-g<k>.parquet`` and
``tail-<end>-g<k>.parquet`` under each date.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from offline.backfill import files as store
from offline.backfill import rows as sn
from offline.backfill.checkpoints import merge_states
from offline.backfill.replay import BATCH_EVENTS, ReplaySummary, _progress, _settings, snapshot_dir
from offline.log_archive import SegmentStore, segment_store
from online import catalogue as cat
from online import partitions as pt
from online.durable import fsync_tree
from online.eventlog import ColumnBatch, EventLog
from online.settings import Settings
from online.state import I_LAST_TS, UserState

__all__ = ["RayReplayFailed", "merge_states", "replay_ray"]

MAX_RETRIES = 3  # per task, on a worker's death
_OBJECT_STORE = 512 * 1024 * 1024  # bytes of a local Ray's object store (training-set frames)


class RayReplayFailed(RuntimeError):
    """A partition group failed on every attempt; finished groups are kept for a resume."""

    def __init__(self, group: int, partitions: list[int], cause: BaseException) -> None:
        super().__init__(f"replay of partition group {group} (partitions {partitions}) failed "
                         f"after {MAX_RETRIES} retries: {cause}; re-run to resume")
        self.group, self.partitions = group, partitions


def replay_ray(settings_or_paths: Settings | str | os.PathLike, to_offset: int | None = None,
               *, address: str | None = None, workers: int | None = None,
               tasks: int | None = None, progress: bool | Callable[[int], None] = True,
               batch_events: int = BATCH_EVENTS, fail_once_dir: str | None = None,
               ) -> ReplaySummary:
    """Rebuild the snapshot of log offsets ``[0, to_offset)`` with Ray tasks.

    ``address``: a Ray cluster to join (None: the running Ray of this process, else a local
    one started with ``workers`` CPUs).  ``workers``: tasks running at once (default: the
    local CPUs, or the cluster's).  ``tasks``: partition groups (default: ``workers``, capped
    at the log's partition count).  ``progress``: a bar over tasks, or ``advance(n)``.
    ``fail_once_dir``: a testing aid; each task kills its own worker once, mid-way, the
    first time it runs (a marker file per group there), which Ray must retry.
    """
    import ray

    s = _settings(settings_or_paths)
    started = time.perf_counter()
    own_ray = not ray.is_initialized()
    if own_ray:
        _start_ray(ray, address, workers)
    try:
        workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        root = snapshot_dir(s)
        man = store.Manifest.load(s.offline_dir / "replay")
        log_path = str(Path(s.event_log_path).resolve())
        with EventLog(log_path) as log:
            end = log.next_offset if to_offset is None else min(int(to_offset), log.next_offset)
            n_parts = log.partitions
        plan = pt.groups(n_parts, tasks or workers)
        sealed = segment_store(s)
        segments_url = sealed.url if sealed is not None and sealed.end else None
        summary = ReplaySummary(from_offset=0, to_offset=end, output_dir=str(root))
        staging = s.offline_dir / "replay" / "ray"
        key = {"engine": "ray", "request": None, "end": end, "partitions": n_parts,
               "groups": len(plan)}
        done = _resumable(man, key, staging, len(plan))
        if done:
            summary.resumed_at = 0
            summary.notes.append(f"resumed an interrupted Ray replay: {len(done)} of "
                                 f"{len(plan)} partition groups were done")
        man.begin_run(key)
        remote = ray.remote(_replay_group).options(num_cpus=1, max_retries=MAX_RETRIES)
        results = dict(done)
        todo = [g for g in range(len(plan)) if g not in results]
        with _progress(progress, len(plan)) as advance:
            advance(len(done))
            pending: dict[Any, int] = {}
            while todo or pending:
                while todo and len(pending) < workers:
                    g = todo.pop(0)
                    ref = remote.remote(log_path, str(staging), g, plan[g], end, batch_events,
                                        fail_once_dir, segments_url)
                    pending[ref] = g
                ready, _ = ray.wait(list(pending), num_returns=1)
                g = pending.pop(ready[0])
                try:
                    results[g] = ray.get(ready[0])
                except Exception as exc:  # Ray wraps the task's error or the worker's death
                    raise RayReplayFailed(g, plan[g], exc) from exc
                advance(1)
        _commit(man, root, staging, results, end, n_parts, summary)
        summary.workers = workers
    finally:
        if own_ray:
            ray.shutdown()
    summary.engine = "ray"
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def _start_ray(ray, address: str | None, workers: int | None) -> None:
    # Workers import our code from where the driver does (a checkout run with PYTHONPATH,
    # or an installed package); a cluster needs the package installed on its nodes.
    env = {"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}} \
        if os.environ.get("PYTHONPATH") else None
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=False)
    else:
        # tasks pass file names and counts, not data, through the object store: keep it small
        ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False,
                 runtime_env=env, log_to_driver=False, object_store_memory=_OBJECT_STORE)


def _resumable(man: store.Manifest, key: dict, staging: Path, n: int) -> dict[int, dict]:
    """The finished groups of an interrupted run of the same plan (else a clean staging)."""
    if man.run == key:
        found = {}
        for g in range(n):
            marker = staging / f"g{g:04d}" / "done.json"
            if marker.exists():
                found[g] = json.loads(marker.read_text("utf-8"))
        return found
    shutil.rmtree(staging, ignore_errors=True)
    return {}


def _replay_group(log_path: str, staging: str, group: int, parts: list[int], end: int,
                  batch_events: int, fail_once_dir: str | None,
                  segments_url: str | None = None) -> dict[str, Any]:
    """One Ray task: replay partitions ``parts`` over ``[0, end)`` into the staging dir."""
    _reset_peak_rss()
    out = Path(staging) / f"g{group:04d}"
    shutil.rmtree(out, ignore_errors=True)  # a retry starts its group afresh
    out.mkdir(parents=True)
    state, last_offset = UserState(), np.zeros(0, np.int64)
    dicts = sn.Dictionaries()
    rows_dir = out / "rows"
    events = 0
    # one thread per task: a worker is one core, and tasks scale by running side by side;
    # a failed task closes its files (a retry may run in this same worker process)
    with (store.DayFiles(rows_dir, f"part-{0:012d}-{end:012d}-g{group:04d}", state,
                         dicts) as files, EventLog(log_path) as log):
        segments = SegmentStore(segments_url) if segments_url else None
        for batch in _group_batches(log, parts, end, batch_events, segments):
            last_offset = files.add_events(batch, last_offset)
            events += len(batch)
            _maybe_fail(fail_once_dir, group)
        names = files.commit([])
    with store.DayFiles(rows_dir, f"tail-{end:012d}-g{group:04d}", state, dicts) as tail:
        tail.add_tail(last_offset)
        tail_names = tail.commit([])
    (out / "state").mkdir()
    state.write_into(out / "state")
    np.save(out / "state" / "last_offset.npy", last_offset[: state.n_users])
    fsync_tree(out / "state")  # durable before done.json lets a resume trust this group
    n = state.n_users
    result = {
        "group": group, "partitions": parts, "events": events, "files": names,
        "rows": files.rows, "tail_files": tail_names, "tail_rows": tail.rows, "users": n,
        "watermark_us": int(state.ints[:n, I_LAST_TS].max()) if n else cat.NO_TS,
        "pid": os.getpid(),
        "peak_rss_mb": _peak_rss_mb(),
    }
    store.atomic_write(out / "done.json", json.dumps(result).encode())
    return result


def _reset_peak_rss() -> None:
    """Start this process's peak RSS afresh (Linux: ``clear_refs`` 5), so that a pooled
    worker reports the peak of this task, not of every task it ran before."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    """Peak RSS since ``_reset_peak_rss`` (``VmHWM``), else the process's lifetime peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _group_batches(log: EventLog, parts: list[int], end: int, batch_events: int,
                   segments: SegmentStore | None = None):
    """Batches of ~``batch_events`` of the group's events below ``end`` in the kernels'
    columns (``ColumnBatch``): sealed segments first, partition after partition (users
    never span partitions, so no global order is needed), then the live tail from SQLite in
    one pass over its offsets (``column_batches(partitions=...)``: every page of the log
    holds events of every partition, so one index walk per partition read each page once
    per partition, twice the cost of the pass).  Full batches, not one per partition: many
    small kernel calls and row blocks cost more than the kernels."""
    pos = 0
    if segments is not None:
        got, n = [], 0
        for part in parts:
            for batch in segments.read_partition(part, end, batch_events, columnar=True):
                got.append(batch)
                n += len(batch)
                if n >= batch_events:
                    yield ColumnBatch.concat(got)
                    got, n = [], 0
        if got:
            yield ColumnBatch.concat(got)
        pos = segments.end
    every = sorted(parts) == list(range(log.partitions))
    for batch, _ in log.column_batches(pos, end, batch_events,
                                       partitions=None if every else list(parts)):
        yield batch


def _maybe_fail(fail_once_dir: str | None, group: int) -> None:
    if fail_once_dir is None:
        return
    marker = Path(fail_once_dir) / f"g{group:04d}"
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(os.getpid()))
        os._exit(1)  # the worker dies as if killed: no exception, no cleanup


def _commit(man: store.Manifest, root: Path, staging: Path, results: dict[int, dict],
            end: int, n_parts: int, summary: ReplaySummary) -> None:
    """Move the groups' files in, make their states the end checkpoint, save.

    The groups' state directories become the parts of the end checkpoint by renaming
    (``offline.backfill.checkpoints``): the driver neither loads nor writes any user's state,
    so committing costs the same for 1,000 users as for 100 million."""
    order = sorted(results)
    rows_files, tail_files = [], []
    for g in order:
        r = results[g]
        for name in r["files"] + r["tail_files"]:
            _move(staging / f"g{g:04d}" / "rows" / name, root / name)
        rows_files += r["files"]
        tail_files += r["tail_files"]
        summary.events += r["events"]
        summary.rows += r["rows"]
        summary.tail_rows += r["tail_rows"]
    chunk = {"start": 0, "end": end, "files": sorted(rows_files), "rows": summary.rows,
             "events": summary.events, "engine": "ray", "partitions": n_parts,
             "groups": len(order)} if end else None
    tail = {"end": end, "files": sorted(tail_files), "rows": summary.tail_rows}
    watermark = max((results[g]["watermark_us"] for g in order), default=cat.NO_TS)
    man.replace_all(root, chunk, tail, watermark,
                    [staging / f"g{g:04d}" / "state" for g in order])
    shutil.rmtree(staging, ignore_errors=True)
    summary.chunks = len(order)
    peaks: dict[str, float] = {}
    for g in order:
        pid = str(results[g].get("pid"))
        peaks[pid] = max(peaks.get(pid, 0.0), results[g].get("peak_rss_mb", 0.0))
    summary.worker_peak_rss_mb = peaks
    summary.end_offset = man.end


def _move(src: Path, dst: Path) -> None:
    """Rename ``src`` over ``dst``; a re-run after a crash mid-commit finds it moved."""
    if src.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    elif not dst.exists():
        raise FileNotFoundError(f"staged snapshot file {src} is missing")
