"""The `portrait` command line: a thin layer over the library functions of online and offline.

Every command that reports results takes ``--json`` and then prints exactly one JSON object on
stdout; progress bars and logs go to stderr.
"""

from __future__ import annotations

from offline.cli import (  # noqa: F401  (importing registers the commands)
    backfill,
    demo,
    evaluate,
    events,
    privacy,
    profiles,
    serving,
)
from offline.cli.app import cli


def main() -> None:
    """Entry point of the `portrait` console script: bad settings and missing extras are one
    line on stderr and exit code 2, never a traceback."""
    import sys
    import warnings

    from online.extras import MissingExtra
    from online.settings import SettingsInvalid

    # Feast's duckdb path (through ibis) warns about its own use of a deprecated call.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ibis\..*")
    try:
        cli(standalone_mode=True)
    except (SettingsInvalid, MissingExtra) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


__all__ = ["cli", "main"]
