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
    models,
    privacy,
    profiles,
    serving,
)
from offline.cli.app import cli


def main() -> None:
    """Entry point of the `portrait` console script: bad settings and missing extras are one
    line on stderr and exit code 2, never a traceback."""
    import sys

    from online.extras import MissingExtra
    from online.settings import SettingsInvalid

    quiet_third_party_warnings()
    try:
        cli(standalone_mode=True)
    except (SettingsInvalid, MissingExtra) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def quiet_third_party_warnings() -> None:
    """Keep libraries' deprecation notices (Feast, ibis, duckdb...) out of the user's terminal.

    A filter is not enough: importing Feast runs ``warnings.simplefilter("once",
    DeprecationWarning)``, which goes in front of any filter set before it. So the display hook
    drops deprecation and future warnings raised from installed packages (they are for those
    packages' maintainers) and shows everything else, ours included.
    """
    import logging
    import warnings
    from pathlib import Path

    ours = Path(__file__).resolve().parents[2]
    show = warnings.showwarning
    quiet = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
    log = logging.getLogger("portrait.warnings")

    def showwarning(message, category, filename, lineno, file=None, line=None):
        path = Path(filename).resolve()
        if issubclass(category, quiet) and (ours not in path.parents or "site-packages" in
                                            path.parts):
            log.debug("%s:%s: %s: %s", filename, lineno, category.__name__, message)
            return
        show(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning


__all__ = ["cli", "main", "quiet_third_party_warnings"]
