"""The root `portrait` group: the global ``--data-dir`` and the registry of sub-commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from online.settings import Settings


class Context:
    """What every command receives: the settings for the chosen data dir."""

    def __init__(self, data_dir: Path | None) -> None:
        overrides = {"data_dir": data_dir} if data_dir is not None else {}
        self.settings = Settings(**overrides)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir


pass_context = click.make_pass_decorator(Context)


def emit(obj: dict[str, Any], as_json: bool, human: str | None = None) -> None:
    """Print a command's result: one JSON object with ``--json``, else readable text."""
    if as_json:
        click.echo(json.dumps(obj, default=str))
    else:
        click.echo(human if human is not None else json.dumps(obj, indent=2, default=str))


def fail(message: str, code: int = 2) -> None:
    """Stop a command with a one-line error on stderr (no traceback)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="PORTRAIT_DATA_DIR",
    default=None,
    help="Where portrait keeps its stores (env PORTRAIT_DATA_DIR, default ./data).",
)
@click.pass_context
def cli(ctx: click.Context, data_dir: Path | None) -> None:
    """portrait: real-time user profiles on an event-sourced feature store.

    \b
    Example:
      portrait --data-dir data generate --users 1000 --events 50000 --seed 7 --out ev.jsonl
      portrait ingest ev.jsonl
      portrait profile u42
    """
    ctx.obj = Context(data_dir)


def open_log(ctx: Context):
    """The data dir's event log with the configured pseudonymizer; key problems are errors."""
    from online.privacy.pseudonym import PseudonymKeyError, open_event_log

    try:
        return open_event_log(ctx.settings)
    except (PseudonymKeyError, ValueError) as exc:  # ValueError: e.g. a partition mismatch
        fail(str(exc))
        raise
