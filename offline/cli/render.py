"""What the CLI shows people (``--json`` stays the scripts' format): rich tables, ISO times.

Each function turns one command's result dict into a rich renderable; `show` prints it on
stdout. Nothing here changes the ``--json`` output.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from online.clock import iso

__all__ = [
    "duration",
    "ingest_view",
    "iso_us",
    "log_stats_view",
    "profile_view",
    "segments_view",
    "show",
]

_NO_TS = -(2**63)


def show(renderable: RenderableType) -> None:
    """Print on stdout (colour only on a terminal; the width of the terminal, else 100)."""
    console = Console(soft_wrap=False)
    if not console.is_terminal:
        console = Console(width=100, no_color=True, highlight=False)
    console.print(renderable)


def iso_us(us: int | None) -> str:
    """µs since the epoch as ISO 8601 UTC (``—`` for none).

    >>> iso_us(1291191960000000), iso_us(None)
    ('2010-12-01T08:26:00+00:00', '—')
    """
    if us is None or us == _NO_TS:
        return "—"
    return iso(us)


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


def _pairs(title: str, rows: Iterable[tuple[str, Any]]) -> Table:
    table = Table(title=title, box=box.SIMPLE, show_header=False, title_justify="left")
    table.add_column(style="dim")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value if isinstance(value, Text) else str(value))
    return table


def log_stats_view(stats: dict[str, Any]) -> RenderableType:
    """`portrait log stats`: sizes with separators, times in ISO."""
    return _pairs("event log", [
        ("path", stats["path"]),
        ("events", f"{stats['events']:,}"),
        ("users", f"{stats['users']:,}"),
        ("next offset", f"{stats['next_offset']:,}"),
        ("quarantined", f"{stats['quarantined']:,}"),
        ("first event", iso_us(stats.get("first_ts_us"))),
        ("last event", iso_us(stats.get("last_ts_us"))),
        ("size", _bytes(stats.get("size_bytes", 0))),
    ])  # fmt: skip


def ingest_view(result: dict[str, Any], source: str) -> RenderableType:
    """`portrait ingest`: the counts, then the first problems by line."""
    rows = [("source", source), ("lines read", f"{result['lines']:,}"),
            ("accepted", f"{result['accepted']:,}"), ("duplicates", f"{result['duplicates']:,}"),
            ("rejected", f"{result['rejected']:,}"), ("skipped", f"{result['skipped']:,}")]
    for reason, n in (result.get("skipped_by_reason") or {}).items():
        rows.append((f"  skipped: {reason}", f"{n:,}"))
    if result.get("last_offset") is not None:
        rows.append(("last offset", f"{result['last_offset']:,}"))
    if result.get("projected_offset") is not None:
        rows.append(("projected up to", f"{result['projected_offset']:,}"))
    parts: list[RenderableType] = [_pairs("ingest", rows)]
    problems = result.get("problems") or []
    if problems:
        table = Table(title="problems (first 20; --json lists them all)", box=box.SIMPLE,
                      title_justify="left")  # fmt: skip
        for col in ("line", "kind", "reason"):
            table.add_column(col, justify="right" if col == "line" else "left")
        for p in problems[:20]:
            table.add_row(str(p.get("line", "")), str(p.get("kind", "")), str(p.get("reason", "")))
        parts.append(table)
    return Group(*parts)


def duration(seconds: float) -> str:
    """Seconds in words, two largest units (``never`` for the catalogue's -1).

    >>> duration(6874838.27), duration(62588.5), duration(42.0), duration(-1.0)
    ('79 d 13 h', '17 h 23 min', '42 s', 'never')
    """
    if seconds < 0:
        return "never"
    parts, rest = [], int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if rest >= size and len(parts) < 2:
            parts.append(f"{rest // size} {unit}")
            rest %= size
        elif parts:
            break
    return " ".join(parts) or f"{seconds:.2f} s"


def _value(value: Any, unit: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, list):
        return ", ".join(map(str, value)) if value else "(none)"
    if isinstance(value, float):
        if unit == "ratio":
            return f"{value:.1%}"
        if unit == "s":
            return duration(value)
        if 0 < abs(value) < 0.001:
            return "≈0"
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def profile_view(body: dict[str, Any]) -> RenderableType:
    """`portrait profile`: the header, the model fields in words, features by theme."""
    from online import catalogue

    head = [("as of", body.get("as_of")), ("log offset", f"{body['offset']:,}")]
    seg = body.get("segment") or {}
    if seg.get("label") is not None:
        head.append(("segment", f"{seg['label']} (#{seg.get('id')})"))
    prop = body.get("propensity") or {}
    if isinstance(prop.get("score"), int | float):
        head.append(("propensity", f"{prop['score']:.1%} chance of a purchase within "
                                   f"{prop.get('horizon', 'the horizon')}"))  # fmt: skip
    if body.get("model_version"):
        head.append(("models", f"{body.get('model_source', 'current')} · {body['model_version']}"))
    parts: list[RenderableType] = [_pairs(f"user {body['user_id']}", head)]
    reasons = prop.get("top_features") or []
    if reasons:
        table = Table(title="why: contributions to the score", box=box.SIMPLE,
                      title_justify="left")  # fmt: skip
        table.add_column("feature")
        table.add_column("value", justify="right")
        table.add_column("contribution", justify="right")
        for r in reasons:
            c = float(r.get("contribution", 0.0))
            table.add_row(r["feature"], _value(r.get("value"), ""),
                          Text(f"{c:+.3f}", style="green" if c >= 0 else "red"))  # fmt: skip
        parts.append(table)
    features = body.get("features", {})
    table = Table(title="features", box=box.SIMPLE, title_justify="left")
    for col, just in (("theme", "left"), ("feature", "left"), ("value", "right"),
                      ("unit", "left")):  # fmt: skip
        table.add_column(col, justify=just)
    last_view = None
    for f in catalogue.FEATURES:
        if f.name not in features:
            continue
        theme = f.view if f.view != last_view else ""
        last_view = f.view
        table.add_row(theme, f.name, _value(features[f.name], f.unit), f.unit)
    parts.append(table)
    return Group(*parts)


def segments_view(report: dict[str, Any]) -> RenderableType:
    """`portrait segments`: noisy sizes and means per segment, then the budget."""
    table = Table(title=f"segments as of {report.get('as_of')}: noisy sizes and means "
                        f"(epsilon {report['epsilon']})",
                  box=box.SIMPLE, title_justify="left")  # fmt: skip
    table.add_column("segment")
    table.add_column("description", style="dim")
    table.add_column("users", justify="right")
    names = list((report["segments"][0]["mean"] if report["segments"] else {}).keys())
    for name in names:
        table.add_column(name.replace("_", " "), justify="right")
    for s in report["segments"]:
        table.add_row(s["segment"], s.get("description", ""), f"{s['size']:,}",
                      *(_value(s["mean"].get(n), "") for n in names))  # fmt: skip
    budget = report.get("privacy", {}).get("budget", {})
    tail = _pairs("privacy budget", [
        ("spent", f"{budget.get('spent')} of {budget.get('total')}"),
        ("remaining", budget.get("remaining")),
        ("releases", budget.get("releases")),
    ])  # fmt: skip
    return Group(table, tail)
