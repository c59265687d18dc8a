"""Training sets on Ray: the point-in-time join run per group of log partitions.

An entity row's features and labels depend on its own user's snapshot rows alone, and a user
belongs to one log partition, so the entity rows split by partition group and each Ray task
joins its share (``offline.backfill.training_set.training_set`` with ``snapshot_part``: only
the rows of
its users are read).  The driver puts the rows back in the entities file's order: the result
is the local engine's frame, value for value (a test compares them).  When the snapshot was
written by a Ray replay with the same groups, a task reads only its group's files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from offline.backfill import files as store
from offline.backfill.replay import snapshot_files
from offline.backfill.replay_ray import _start_ray
from offline.backfill.training_set import entity_times, training_set
from online import partitions as pt
from online.eventlog import EventLog
from online.settings import Settings

__all__ = ["training_set_ray"]

_GROUP = re.compile(r"-g(\d{4})\.parquet$")


def training_set_ray(settings: Settings, entities_df: pd.DataFrame, label_horizon_us: int,
                     features: Sequence[str] | None = None, *, address: str | None = None,
                     workers: int | None = None, tasks: int | None = None) -> pd.DataFrame:
    """``offline.backfill.training_set.training_set`` (fast path) by Ray tasks: the same frame."""
    import ray

    users, _ = entity_times(entities_df)  # fails early, naming the problem
    with EventLog(settings.event_log_path) as log:
        n_parts = log.partitions
    files = snapshot_files(settings)
    own_ray = not ray.is_initialized()
    if own_ray:
        _start_ray(ray, address, workers)
    try:
        workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        replay_groups = _replay_groups(settings, n_parts)
        n_groups = tasks or replay_groups or workers
        plan = pt.groups(n_parts, n_groups)
        group_of = np.empty(n_parts, np.int64)
        for g, parts in enumerate(plan):
            group_of[parts] = g
        row_group = group_of[pt.partitions_of(users.tolist(), n_parts)]
        by_file = len(plan) == replay_groups
        remote = ray.remote(_join_part).options(num_cpus=1, max_retries=3)
        frame = entities_df.reset_index(drop=True)
        refs, order = [], []
        for g in range(len(plan)):
            rows = np.flatnonzero(row_group == g)
            if not len(rows):
                continue
            mine = [f for f in files if not by_file or _file_group(f) in (g, None)]
            refs.append(remote.remote(str(settings.data_dir), frame.take(rows), mine,
                                      label_horizon_us, None if features is None
                                      else list(features)))
            order.append(rows)
        parts = ray.get(refs)
    finally:
        if own_ray:
            ray.shutdown()
    if not parts:  # no entity rows: the local path's empty frame
        return training_set(settings, entities_df, label_horizon_us, features)
    out = pd.concat(parts, ignore_index=True)
    where = np.concatenate(order)
    back = np.empty(len(where), np.int64)
    back[where] = np.arange(len(where))
    return out.take(back).reset_index(drop=True)


def _join_part(data_dir: str, entities_df: pd.DataFrame, files: list[str | os.PathLike],
               label_horizon_us: int, features: list[str] | None) -> pd.DataFrame:
    """One Ray task: the training rows of one partition group's entity rows."""
    return training_set(Settings(data_dir=Path(data_dir)), entities_df, label_horizon_us,
                        features, snapshot_part=[Path(f) for f in files])


def _replay_groups(settings: Settings, n_parts: int) -> int | None:
    """The partition groups of the snapshot's files, when one Ray replay wrote it all."""
    man = store.Manifest.load(settings.offline_dir / "replay")
    if len(man.chunks) == 1 and man.chunks[0].get("engine") == "ray" \
            and man.chunks[0].get("partitions") == n_parts:
        return int(man.chunks[0]["groups"])
    return None


def _file_group(path: Path) -> int | None:
    found = _GROUP.search(path.name)
    return int(found.group(1)) if found else None
