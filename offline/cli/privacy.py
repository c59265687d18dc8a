"""Privacy commands: `erase` (forget a user everywhere) and `segments` (noisy aggregates)."""

from __future__ import annotations

import click

from offline.cli.app import Context, cli, emit, fail, pass_context, writer_lock


@cli.command()
@click.argument("user_id")
@click.option("--json", "as_json", is_flag=True, help="Print the receipt as one JSON object.")
@pass_context
def erase(ctx: Context, user_id: str, as_json: bool) -> None:
    """Erase a user from every store: log, quarantine, state, checkpoints, online, parquet.

    Prints a receipt naming each store and what was removed; an audit record without
    personal data is kept. A later replay cannot bring the user back. The same erasure as
    ``DELETE /v1/users/{id}`` (same settings, same stores, every profile sample log the
    server wrote); exits 2 while a server is the data dir's writer (use its DELETE then).

    \b
    Example:
      portrait erase 17850 --json
    """
    from offline.wiring import erase_everywhere

    if not ctx.settings.event_log_path.exists():
        fail(f"no event log in {ctx.data_dir}")
    # it rewrites the checkpoint: the data dir's writer (a running server: use its DELETE)
    with writer_lock(ctx, "portrait erase"):
        body = erase_everywhere(ctx.settings, user_id)
    emit(body, as_json)
    if not body["complete"]:
        raise SystemExit(1)


@cli.command()
@click.option("--epsilon", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Make a new release, spending this much of the data dir's budget for "
                   "good (without it: print the last release, spending nothing).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@pass_context
def segments(ctx: Context, epsilon: float | None, as_json: bool) -> None:
    """Segment sizes and mean features with differential privacy (--epsilon spends budget).

    A new release spends --epsilon from the data dir's privacy budget
    (PORTRAIT_PRIVACY_BUDGET_EPSILON) and is refused once that is spent: spent budget never
    comes back. Without --epsilon the last release (this command's or POST /v1/segments')
    is printed again, which costs nothing.

    \b
    Example:
      portrait segments --epsilon 1.0 --json
      portrait segments --json
    """
    from offline.privacy.dp_report import segments_report
    from online.privacy.budget import BudgetExhausted
    from online.privacy.releases import last_release

    if epsilon is None:
        last = last_release(ctx.settings)
        if last is None:
            fail("no segment release yet: `portrait segments --epsilon E` makes one")
        emit(last, as_json)
        return
    if not ctx.settings.event_log_path.exists():
        fail(f"no event log in {ctx.data_dir}")
    try:
        report = segments_report(ctx.settings, epsilon)
    except BudgetExhausted as exc:
        fail(str(exc))
    if as_json:
        emit(report, as_json)
    else:
        from offline.cli.render import segments_view, show

        show(segments_view(report))
