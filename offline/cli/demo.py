"""The `demo` command: portrait end to end on the embedded defaults."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console

from offline.cli.app import Context, cli, emit, fail, pass_context


@cli.command()
@click.option("--data", default=None,
              help="Online Retail file (default: PORTRAIT_ONLINE_RETAIL, then "
                   "../shared/datasets/online_retail.csv.gz; synthetic when none is found).")
@click.option("--synthetic", is_flag=True,
              help="Use the synthetic shop generator even when the Online Retail file exists.")
@click.option("--users", type=click.IntRange(min=10), default=2_000, show_default=True,
              help="Synthetic users.")
@click.option("--events", type=click.IntRange(min=100), default=200_000, show_default=True,
              help="Synthetic events.")
@click.option("--no-serve", is_flag=True, help="Skip the live REST server step.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="Run the replay step on a local Ray.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@pass_context
def demo(ctx: Context, data: str | None, synthetic: bool, users: int, events: int,
         no_serve: bool, engine: str, as_json: bool) -> None:
    """Run portrait end to end: ingest, profiles, replay, Feast, training rows, live API.

    Safe to re-run: ingestion is idempotent and every later step resumes or replaces.

    \b
    Example:
      portrait demo
      portrait --data-dir /tmp/shop demo --data online_retail.csv.gz --json
      portrait demo --engine ray
    """
    from offline.demo import run_demo

    console = Console(stderr=as_json)

    def say(text: str) -> None:
        console.print(text, highlight=False, markup=False)

    def show(title: str, obj: Any) -> None:
        console.print(obj if isinstance(obj, str) else json.dumps(obj, indent=2, default=str),
                      highlight=False, markup=False)

    try:
        shop = {"n_users": users, "n_events": events, "seed": 7} if synthetic else None
        report = run_demo(ctx.settings, data, say, show, serve=not no_serve, synthetic=shop,
                          engine=engine)
    except FileNotFoundError as exc:
        fail(str(exc))
    if as_json:
        emit({"source": report.source, **report.steps}, True)
    else:
        say(f"Done. Everything is in {ctx.data_dir}/ (see README: where data goes).")
