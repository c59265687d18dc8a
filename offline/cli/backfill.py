"""Commands of the offline side: `replay`, `materialize`, `training-set`."""

from __future__ import annotations

import contextlib
import sys
import warnings
from pathlib import Path

import click

from offline.cli.app import Context, cli, emit, fail, pass_context


@cli.command()
@click.option("--from-offset", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--to-offset", type=click.IntRange(min=0), default=None,
              help="Stop before this offset (default: the log's end).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="One process, or one Ray task per partition group.")
@click.option("--address", default=None,
              help="Ray cluster to join (e.g. ray://head:10001 or auto); default: a local Ray.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Ray: tasks at once (default: every CPU of the local machine or cluster).")
@click.option("--tasks", type=click.IntRange(min=1), default=None,
              help="Ray: partition groups, one task each (default: --workers).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@pass_context
def replay(ctx: Context, from_offset: int, to_offset: int | None, engine: str,
           address: str | None, workers: int | None, tasks: int | None, as_json: bool) -> None:
    """Rebuild the offline parquet snapshot from the event log (backfill).

    Re-running a range replaces its rows; an interrupted run resumes where it stopped.
    `--engine ray` rebuilds offsets [0, --to-offset) with one Ray task per group of log
    partitions (the same kernels, the same rows) and commits when every task finished.

    \b
    Examples:
      portrait replay
      portrait replay --from-offset 0 --to-offset 100000 --json
      portrait replay --engine ray --workers 2 --json
    """
    _need_log(ctx)
    if engine == "ray":
        if from_offset:
            fail("--from-offset: the Ray engine rebuilds from offset 0 (use --engine local "
                 "to extend or re-run a range)")
        from offline.backfill.replay_ray import RayReplayFailed, replay_ray

        try:
            summary = replay_ray(ctx.settings, to_offset=to_offset, address=address,
                                 workers=workers, tasks=tasks, progress=True)
        except (RayReplayFailed, ConnectionError) as exc:
            fail(str(exc))
    else:
        if address or workers or tasks:
            fail("--address, --workers and --tasks need --engine ray")
        from offline.backfill.replay import replay as run_replay

        summary = run_replay(ctx.settings, from_offset=from_offset, to_offset=to_offset,
                             progress=True)
    body = summary.as_dict()
    emit(body, as_json, f"replayed offsets [{summary.from_offset}, {summary.to_offset}) "
         f"({summary.engine}, {summary.workers} worker(s)): "
         f"{summary.events:,} events -> {summary.rows:,} rows (+{summary.tail_rows:,} tail) "
         f"in {summary.seconds:.1f}s into {summary.output_dir}")


@cli.command()
@click.option("--force", is_flag=True,
              help="Materialize even when the replay is behind the log.")
@click.option("--full", is_flag=True,
              help="Reload every row, not only those since the last run (after a backfill "
                   "that rewrote old rows). A run into another online store than the last "
                   "one is full anyway.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="Feast's local engine, or Feast's Ray compute engine.")
@click.option("--address", default=None, help="Ray cluster to join; default: a local Ray.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Ray: CPUs of the local Ray and online writers (Redis).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@pass_context
def materialize(ctx: Context, force: bool, full: bool, engine: str, address: str | None,
                workers: int | None, as_json: bool) -> None:
    """Feast apply + materialize-incremental of the replayed snapshot into the online store.

    The online store materialized into is recorded: after a switch (e.g.
    PORTRAIT_ONLINE_STORE=redis on an existing data dir) the next run reloads everything
    and says why ("full_reason").

    \b
    Example:
      portrait replay && portrait materialize
      PORTRAIT_ONLINE_STORE=redis portrait materialize --json
      portrait materialize --engine ray --workers 2
    """
    from offline.feast_store import SnapshotBehindLog
    from offline.feast_store import materialize as run_materialize

    if engine == "local" and (address or workers):
        fail("--address and --workers need --engine ray")
    try:
        # Feast prints its own progress on stdout; keep stdout for the result alone.
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            body = run_materialize(ctx.settings, force=force, full=full, engine=engine,
                                   ray_address=address, workers=workers)
    except SnapshotBehindLog as exc:
        fail(str(exc))
    how = f"fully ({body['full_reason']})" if body["full"] else "incrementally"
    emit(body, as_json, f"materialized {', '.join(body['feature_views'])} {how} into the "
         f"{body['online_store']} online store (snapshot offsets < {body['replayed_end']})")


@cli.command("training-set")
@click.option("--entities", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="CSV or parquet with columns user_id, event_timestamp.")
@click.option("--label-horizon", default="7d", show_default=True,
              help="Label window after each entity time: purchases in (T, T+H].")
@click.option("--features", default=None, help="Comma-separated feature names (default all).")
@click.option("--path", "how", type=click.Choice(["fast", "feast"]), default="fast",
              show_default=True, help="Our as-of join, or Feast's get_historical_features.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output file: parquet, or CSV by extension.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="One process, or one Ray task per partition group.")
@click.option("--address", default=None, help="Ray cluster to join; default: a local Ray.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Ray: CPUs of the local Ray (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print a summary as one JSON object.")
@pass_context
def training_set(ctx: Context, entities: Path, label_horizon: str, features: str | None,
                 how: str, out: Path, engine: str, address: str | None, workers: int | None,
                 as_json: bool) -> None:
    """Point-in-time training data: features as of each entity row, and forward labels.

    Each row's features depend only on events with time <= its event_timestamp; labels count
    purchases strictly after it. Rows stay in the entities file's order. `--engine ray`
    joins each partition group's rows in a Ray task and writes the same file.

    \b
    Example:
      portrait training-set --entities entities.csv --label-horizon 7d --out train.parquet
      portrait training-set --entities entities.csv --engine ray --out train.parquet
    """
    from offline.backfill.replay import replayed_end
    from offline.backfill.training_set import read_entities, write_frame
    from offline.backfill.training_set import training_set as build
    from online.clock import parse_duration

    _need_log(ctx)
    try:
        horizon_us = parse_duration(label_horizon)
    except ValueError as exc:
        fail(f"--label-horizon: {exc}")
    if replayed_end(ctx.settings) == 0:
        fail("the offline snapshot is empty: run `portrait replay` first")
    try:
        frame = read_entities(entities)
        names = [n.strip() for n in features.split(",")] if features else None
        if engine == "ray":
            if how != "fast":
                fail("--path feast: Feast's join runs in one process; use --engine local")
            from offline.backfill.training_set_ray import training_set_ray

            table = training_set_ray(ctx.settings, frame, horizon_us, features=names,
                                     address=address, workers=workers)
        elif address or workers:
            fail("--address and --workers need --engine ray")
        else:
            table = build(ctx.settings, frame, horizon_us, features=names, path=how)
    except (KeyError, ValueError) as exc:
        fail(f"{entities}: {exc}")
    write_frame(table, out)
    body = {"rows": len(table), "columns": list(table.columns), "out": str(out), "path": how,
            "engine": engine}
    emit(body, as_json, f"wrote {len(table):,} rows x {len(table.columns)} columns to {out}")


def _need_log(ctx: Context) -> None:
    if not Path(ctx.settings.event_log_path).exists():
        fail(f"no event log in {ctx.data_dir}: run `portrait ingest` first")
