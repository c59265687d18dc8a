"""Commands that read profiles: `profile`."""

from __future__ import annotations

import click

from offline.cli.app import Context, cli, emit, fail, open_log, pass_context


def parse_as_of(text: str) -> int:
    """An ``--as-of`` value in µs, or a clean error naming the option."""
    from online.clock import parse_time

    try:
        return parse_time(text)
    except (ValueError, OverflowError) as exc:
        fail(f"--as-of: {exc}")
        raise


@cli.command()
@click.argument("user_id")
@click.option("--as-of", "as_of", default=None,
              help="Evaluate the profile as of this time (ISO 8601 with a zone).")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as one JSON object.")
@pass_context
def profile(ctx: Context, user_id: str, as_of: str | None, as_json: bool) -> None:
    """Print a user's profile: latest, or as of a past time (recomputed from the log).

    \b
    Examples:
      portrait profile 17850
      portrait profile 17850 --as-of 2011-06-01T00:00:00+00:00 --json
    """
    from offline.wiring import build_projector
    from online.projector import UnknownUser
    from online.writerlock import WriterLock

    at_us = parse_as_of(as_of) if as_of is not None else None
    if not ctx.settings.event_log_path.exists():
        fail(f"no event log in {ctx.data_dir}: run `portrait ingest` first")
    log = open_log(ctx)
    # a reader: it catches up in memory, and saves that work as a checkpoint only when no
    # other process is the data dir's writer (a running server checkpoints on its own)
    lock = WriterLock(ctx.settings.state_dir, command="portrait profile")
    writer = lock.try_acquire()
    try:
        projector = build_projector(log, ctx.settings, online_writes=False)
        # Catch up with events appended since the last checkpoint (e.g. by another writer).
        if projector.run(batch_size=ctx.settings.batch_size, progress=True) and writer:
            projector.checkpoint()
        try:
            body = projector.profile(user_id, as_of=at_us)
        except UnknownUser as exc:
            fail(str(exc), code=3)
    finally:
        log.close()
        lock.release()
    if as_json:
        emit(body, as_json)
    else:
        from offline.cli.render import profile_view, show

        show(profile_view(body))
