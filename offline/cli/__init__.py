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
    federate,
    privacy,
    profiles,
    serving,
)
from offline.cli.app import cli


def main() -> None:
    """Entry point of the `portrait` console script."""
    import warnings

    # Feast's duckdb path (through ibis) warns about its own use of a deprecated call.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ibis\..*")
    cli()


__all__ = ["cli", "main"]
