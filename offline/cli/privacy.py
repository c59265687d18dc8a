"""Privacy commands: `erase` (forget a user everywhere) and `segments` (noisy aggregates)."""

from __future__ import annotations

import click

from offline.cli.app import Context, cli, emit, fail, pass_context


@cli.command()
@click.argument("user_id")
@click.option("--json", "as_json", is_flag=True, help="Print the receipt as one JSON object.")
@pass_context
def erase(ctx: Context, user_id: str, as_json: bool) -> None:
    """Erase a user from every store: log, quarantine, state, checkpoints, online, parquet.

    Prints a receipt naming each store and what was removed; an audit record without
    personal data is kept. A later replay cannot bring the user back.

    \b
    Example:
      portrait erase 17850 --json
    """
    from offline.erasure import erase_user
    from offline.wiring import model_contributors

    if not ctx.settings.event_log_path.exists():
        fail(f"no event log in {ctx.data_dir}")
    receipt = erase_user(ctx.settings, user_id, contributors=model_contributors(ctx.settings))
    body = receipt.as_dict()
    emit(body, as_json)
    if not receipt.complete:
        raise SystemExit(1)


@cli.command()
@click.option("--epsilon", type=click.FloatRange(min=0, min_open=True), required=True,
              help="Privacy loss this release spends from the data dir's budget.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@pass_context
def segments(ctx: Context, epsilon: float, as_json: bool) -> None:
    """Segment sizes and mean features with differential privacy (spends --epsilon).

    Refused once the data dir's privacy budget (PORTRAIT_PRIVACY_BUDGET_EPSILON) is spent.

    \b
    Example:
      portrait segments --epsilon 1.0 --json
    """
    from offline.aggregates import segments_report
    from online.privacy.budget import BudgetExhausted

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
