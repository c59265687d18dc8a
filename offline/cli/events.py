"""Commands that bring events in: `generate`, `ingest`, and `log stats`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from offline.cli.app import Context, cli, emit, fail, open_log, pass_context, writer_lock
from offline.cli.progress import counting_progress

FORMATS = ("jsonl", "csv", "online-retail")


@cli.command()
@click.option("--users", type=click.IntRange(min=1), default=1_000, show_default=True)
@click.option("--events", type=click.IntRange(min=0), default=100_000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--start", default="2024-01-01T00:00:00+00:00", show_default=True,
              help="Event time of the stream's start (ISO 8601 with a zone).")
@click.option("--out", type=click.Path(dir_okay=False, allow_dash=True), default="-",
              show_default=True, help="JSONL file to write ('-' for stdout).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stderr's behalf.")
def generate(users: int, events: int, seed: int, start: str, out: str, as_json: bool) -> None:
    """Write a seeded synthetic shop stream (views, carts, purchases, refunds) as JSONL.

    The same seed gives the same bytes.

    \b
    Example:
      portrait generate --users 1000 --events 100000 --seed 7 --out events.jsonl
    """
    from offline.datasets import write_jsonl

    with counting_progress("generating", total=events) as advance:
        if out == "-":
            n = write_jsonl(sys.stdout, n_users=users, n_events=events, seed=seed, start=start,
                            on_chunk=advance)
        else:
            with open(out, "w", encoding="utf-8") as fh:
                n = write_jsonl(fh, n_users=users, n_events=events, seed=seed, start=start,
                                on_chunk=advance)
    summary = {"events": n, "users": users, "seed": seed, "out": out}
    if out != "-":
        emit(summary, as_json, f"wrote {n:,} events for {users:,} users to {out}")


@cli.command()
@click.argument("source", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Input format (default: from the file name; online-retail for *.csv.gz "
                   "named online_retail*, csv for *.csv, else jsonl).")
@click.option("--batch-size", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--no-project", is_flag=True, help="Only append to the log; project later.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@pass_context
def ingest(ctx: Context, source: str, fmt: str | None, batch_size: int, no_project: bool,
           as_json: bool) -> None:
    """Validate events from FILE (or '-' for stdin), append them to the log, and project them.

    Bad events are reported with their line number and reason and kept in the log's
    quarantine; they do not make the command fail. Re-ingesting a file is idempotent.

    Projecting makes this command the data dir's writer: while another process (a running
    server, another ingest) is, it exits 2 before reading anything; ``--no-project`` only
    appends to the log, which any number of processes may do (a server projects them).

    \b
    Examples:
      portrait ingest events.jsonl
      portrait ingest ../shared/datasets/online_retail.csv.gz --format online-retail --json
    """
    from offline.datasets import iter_csv_events, iter_jsonl, iter_online_retail
    from offline.ingest import ingest_records

    fmt = fmt or _guess_format(source)
    readers = {"jsonl": iter_jsonl, "csv": iter_csv_events, "online-retail": iter_online_retail}
    if source != "-" and not Path(source).is_file():
        fail(f"input file not found: {source}")
    lock = None if no_project else writer_lock(ctx, "portrait ingest")
    log = open_log(ctx)
    try:
        with counting_progress(f"ingesting {source}") as advance:
            summary = ingest_records(log, readers[fmt](source), batch_size=batch_size,
                                     source=fmt, on_batch=advance)
        result = summary.as_dict()
        if not no_project:
            result["projected_offset"] = _project(ctx, log)
    except OSError as exc:
        fail(f"I/O failure while ingesting {source}: {exc}", code=1)
    finally:
        log.close()
        if lock is not None:
            lock.release()
    if as_json:
        emit(result, as_json)
    else:
        from offline.cli.render import ingest_view, show

        show(ingest_view(result, source))


@cli.group()
def log() -> None:
    """Inspect the event log."""


@log.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
@pass_context
def log_stats(ctx: Context, as_json: bool) -> None:
    """Show the log's size, offsets, time range and quarantine.

    \b
    Example:
      portrait log stats --json
    """
    log_ = open_log(ctx)
    try:
        stats = log_.stats()
    finally:
        log_.close()
    if as_json:
        emit(stats, as_json)
    else:
        from offline.cli.render import log_stats_view, show

        show(log_stats_view(stats))


def _guess_format(source: str) -> str:
    name = Path(source).name.lower()
    if name.startswith("online_retail"):
        return "online-retail"
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    return "jsonl"


def _project(ctx: Context, log) -> int:
    """Bring the projector up to the end of the log and checkpoint it; return its offset."""
    from offline.wiring import build_projector

    projector = build_projector(log, ctx.settings)
    projector.run(batch_size=ctx.settings.batch_size, progress=True)
    projector.checkpoint()
    return projector.offset


@log.command("archive")
@click.option("--to", "url", default=None,
              help="Where segments go: a path or fsspec URL (default: <data-dir>/log/segments; "
                   "fixed after the first archive).")
@click.option("--to-offset", type=click.IntRange(min=0), default=None,
              help="Seal offsets below this (default: the log's next offset).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@pass_context
def log_archive(ctx: Context, url: str | None, to_offset: int | None, as_json: bool) -> None:
    """Seal the log's settled prefix as immutable parquet segments per partition.

    Each segment is checksummed and listed in the store's manifest; replays on Ray read
    them (from any machine that reaches the URL) and only the live tail from SQLite.

    \b
    Examples:
      portrait log archive
      portrait log archive --to file:///mnt/shared/portrait-segments --json
    """
    from offline.log_archive import archive

    if not Path(ctx.settings.event_log_path).exists():
        fail(f"no event log in {ctx.data_dir}: run `portrait ingest` first")
    try:
        body = archive(ctx.settings, url, to_offset=to_offset)
    except ValueError as exc:
        fail(str(exc))
    emit(body, as_json, f"sealed offsets [{body['from_offset']}, {body['to_offset']}): "
         f"{body['events']:,} events in {body['segments']} segments ({body['bytes']:,} bytes) "
         f"at {body['url']}")
