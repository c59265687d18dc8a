"""Bulk ingestion: loader records -> validated, deduplicated appends to the event log.

The loaders (`offline.datasets`) yield one `Record` per input line; this module batches the
payloads, appends them (the log validates, deduplicates and quarantines), and keeps a summary
in which every input line is accounted for: accepted + duplicates + rejected + skipped == lines.

A line that holds no event object (not JSON, a list, a scalar, a CSV row of the wrong width)
is rejected like a bad event: reported with its line number and kept in the quarantine. Only
lines that are no events by design are skipped: blank lines and, in Online Retail, rows
without a customer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from offline.datasets import Record
from online.eventlog import EventLog, Unparsed

#: Rejections and skips listed in a summary; the counts stay exact beyond it.
MAX_LISTED = 1_000
#: Skip reasons of lines that are no events by design (counted, not quarantined).
SKIPPED = frozenset({"blank", "no_customer"})
_FIELD_OF = {"invalid_json": "<line>", "bad_row": "<line>"}  # else "<event>": JSON, no object


@dataclass
class IngestSummary:
    """What one ingest did, line by line accounted for."""

    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    last_offset: int | None = None
    problems: list[dict[str, Any]] = field(default_factory=list)

    def note_problem(self, line: int, kind: str, reason: str, field_name: str | None) -> None:
        if len(self.problems) < MAX_LISTED:
            self.problems.append(
                {"line": line, "kind": kind, "field": field_name, "reason": reason}
            )

    @property
    def balanced(self) -> bool:
        return self.lines == self.accepted + self.duplicates + self.rejected + self.skipped

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "skipped": self.skipped,
            "skipped_by_reason": dict(sorted(self.skipped_by_reason.items())),
            "last_offset": self.last_offset,
            "problems": self.problems,
            "problems_listed": len(self.problems),
        }


def ingest_records(
    log: EventLog,
    records: Iterable[Record],
    *,
    batch_size: int = 10_000,
    source: str = "file",
    on_batch: Callable[[int], None] | None = None,
) -> IngestSummary:
    """Append the payloads of ``records`` to ``log`` in batches and account for every line.

    ``on_batch(n_lines)`` is called after each batch (progress bars, projection).
    """
    summary = IngestSummary()
    lines: list[int] = []
    payloads: list[dict[str, Any] | Unparsed] = []

    def flush() -> None:
        if not payloads:
            return
        result = log.append(payloads, source=source)
        summary.accepted += result.accepted
        summary.duplicates += result.duplicates
        summary.rejected += result.rejected
        if result.last_offset is not None:
            summary.last_offset = result.last_offset
        for outcome in result.problems:
            if outcome.status == "rejected":
                summary.note_problem(
                    lines[outcome.index], "rejected", outcome.reason or "", outcome.field
                )
        n = len(payloads)
        lines.clear()
        payloads.clear()
        if on_batch is not None:
            on_batch(n)

    for record in records:
        summary.lines += 1
        if record.payload is None:
            reason = record.skip or "unknown"
            if reason in SKIPPED:
                summary.skipped += 1
                summary.skipped_by_reason[reason] = summary.skipped_by_reason.get(reason, 0) + 1
                continue
            # rejected and quarantined by the log, in the batch the line belongs to
            message = (record.message or reason).removeprefix(f"line {record.line}: ")
            payload: dict[str, Any] | Unparsed = Unparsed(
                record.raw or "", _FIELD_OF.get(reason, "<event>"), reason, message
            )
        else:
            payload = record.payload
        lines.append(record.line)
        payloads.append(payload)
        if len(payloads) >= batch_size:
            flush()
    flush()
    return summary
