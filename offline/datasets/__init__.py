"""Event sources: the Online Retail loader, event file readers and the synthetic generator."""

from __future__ import annotations

from offline.datasets.files import iter_csv_events, iter_jsonl, open_text
from offline.datasets.online_retail import find_online_retail, iter_online_retail
from offline.datasets.records import Record, Tally
from offline.datasets.synthetic import Shop, generate, generate_columns, write_jsonl

__all__ = [
    "Record",
    "Shop",
    "Tally",
    "find_online_retail",
    "generate",
    "generate_columns",
    "iter_csv_events",
    "iter_jsonl",
    "iter_online_retail",
    "open_text",
    "write_jsonl",
]
