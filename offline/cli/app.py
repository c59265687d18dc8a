"""The root `portrait` group: the global ``--data-dir`` and the registry of sub-commands."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import click

from online.settings import (
    CONFIG_ENV,
    Settings,
    SettingsInvalid,
    load_settings,
    unknown_config_keys,
)


class Context:
    """What every command receives: the settings for the chosen data dir."""

    def __init__(self, data_dir: Path | None) -> None:
        overrides = {"data_dir": data_dir} if data_dir is not None else {}
        self.settings = load_settings(Settings, **overrides)
        check_all_settings(overrides)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir


def check_all_settings(overrides: dict[str, Any]) -> None:
    """Validate every PORTRAIT_* setting (the API's too) up front: a typo fails every command."""
    from online.api.settings import ApiSettings

    load_settings(ApiSettings, **overrides)
    unknown = unknown_config_keys(ApiSettings)
    if unknown:
        raise SettingsInvalid(
            f"{', '.join(unknown)} in {os.environ[CONFIG_ENV]}: unknown setting"
            f"{'s' if len(unknown) > 1 else ''} (see the README's settings table)"
        )


pass_context = click.make_pass_decorator(Context)


def emit(obj: dict[str, Any], as_json: bool, human: str | None = None) -> None:
    """Print a command's result: one JSON object with ``--json``, else readable text."""
    if as_json:
        # allow_nan=False: NaN and Infinity are not JSON; a script must always get valid JSON
        click.echo(json.dumps(_finite(obj), default=str, allow_nan=False))
    else:
        click.echo(human if human is not None
                   else json.dumps(_finite(obj), indent=2, default=str, allow_nan=False))


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float as None (JSON null), containers copied."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def fail(message: str, code: int = 2) -> None:
    """Stop a command with a one-line error on stderr (no traceback)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("portrait")
    except PackageNotFoundError:  # run from a source tree without installing
        return "unknown (not installed)"


def _export_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    # the settings classes (and Feast's subprocesses) read the file's name from the environment
    if value is not None:
        os.environ[CONFIG_ENV] = str(value.resolve())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), "--version", "-V", prog_name="portrait",
                      message="%(prog)s %(version)s")
@click.option(
    "--config",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    is_eager=True,
    expose_value=False,
    callback=_export_config,
    help=f"TOML file of settings (env {CONFIG_ENV}); environment variables override it.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="PORTRAIT_DATA_DIR",
    default=None,
    help="Where portrait keeps its stores (env PORTRAIT_DATA_DIR; default data/ at the "
    "project root, whatever the current directory).",
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
    try:
        ctx.obj = Context(data_dir)
    except SettingsInvalid as exc:
        fail(str(exc))


def open_log(ctx: Context):
    """The data dir's event log with the configured pseudonymizer; key problems are errors."""
    from online.privacy.pseudonym import PseudonymKeyError, open_event_log

    try:
        return open_event_log(ctx.settings)
    except (PseudonymKeyError, ValueError) as exc:  # ValueError: e.g. a partition mismatch
        fail(str(exc))
        raise


def writer_lock(ctx: Context, command: str):
    """The data dir's writer lock, taken; another writer is a one-line error (exit 2)."""
    from online.writerlock import WriterBusy, WriterLock

    try:
        return WriterLock(ctx.settings.state_dir, command=command).acquire()
    except WriterBusy as exc:
        fail(str(exc))
        raise
