"""The last private release of a data dir, kept so that reading it again spends nothing.

A release is differentially private output: publishing it again (post-processing) costs no
further privacy, so ``GET /v1/segments`` serves the last one while only a new release
(``POST /v1/segments``, ``portrait segments --epsilon``) spends budget.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from online.durable import replace_file

__all__ = ["last_release", "save_release"]


def _path(settings: Any) -> Path:
    return Path(settings.data_dir) / "privacy" / "last_segments.json"


def save_release(settings: Any, body: dict[str, Any]) -> None:
    """Keep ``body`` as the data dir's last segment release (atomic replace)."""
    path = _path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_file(path, json.dumps(body).encode("utf-8"))


def last_release(settings: Any) -> dict[str, Any] | None:
    """The last segment release of the data dir (None before the first)."""
    try:
        return json.loads(_path(settings).read_text("utf-8"))
    except FileNotFoundError:
        return None
