"""Readers of event files (JSONL and CSV in the event schema), from a path, a stream or stdin."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from offline.datasets.records import Record

__all__ = ["Source", "iter_csv_events", "iter_jsonl", "open_binary", "open_text"]

Source = str | os.PathLike[str] | IO[str] | IO[bytes]
"""A path, ``"-"`` for stdin, or an open text or binary stream (left open)."""

_GZIP_MAGIC = b"\x1f\x8b"


@contextmanager
def open_binary(source: Source) -> Iterator[IO[bytes]]:
    """Open ``source`` for binary reading, gunzipping it when it starts with the gzip magic.

    Paths are opened and closed here; ``"-"`` and streams are left open for their owner.
    """
    if isinstance(source, str | os.PathLike):
        if os.fspath(source) == "-":
            raw: IO[bytes] = sys.stdin.buffer
            owned = False
        else:
            raw = open(source, "rb")  # closed below
            owned = True
    elif isinstance(source, io.TextIOBase):
        raise TypeError("open_binary needs a binary stream, got a text stream")
    else:
        raw, owned = source, False  # type: ignore[assignment]
    # peek needs a buffered reader; one we wrap around a stream must be detached afterwards,
    # or closing it (also on garbage collection) would close the caller's stream
    wrapped = not hasattr(raw, "peek")
    buffered = io.BufferedReader(raw) if wrapped else raw  # type: ignore[arg-type]
    try:
        if buffered.peek(2)[:2] == _GZIP_MAGIC:  # type: ignore[attr-defined]
            # GzipFile never closes a fileobj it was given
            with gzip.GzipFile(fileobj=buffered, mode="rb") as unzipped:
                yield unzipped  # type: ignore[misc]
        else:
            yield buffered
    finally:
        if wrapped:
            buffered.detach()
        if owned:
            raw.close()


@contextmanager
def open_text(
    source: Source, *, newline: str | None = None, errors: str = "strict"
) -> Iterator[IO[str]]:
    """Open ``source`` as UTF-8 text (a BOM is dropped; gzip is detected by content).

    ``errors="surrogateescape"`` reads a bad byte as a lone surrogate instead of failing the
    whole stream, so that the one line holding it is rejected by validation.
    """
    if isinstance(source, io.TextIOBase):
        yield source  # type: ignore[misc]
        return
    with open_binary(source) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline=newline, errors=errors)
        try:
            yield text
        finally:
            # detach so closing the wrapper never closes a stream we do not own (stdin)
            text.detach()


def iter_jsonl(source: Source) -> Iterator[Record]:
    """Event payloads from a JSON Lines file; a malformed line becomes an error record.

    Lines are decoded one by one, so a line with bad UTF-8 is an error record too rather than
    an exception that would abort the whole file.

    >>> lines = io.StringIO('{"event_id": "a"}\\n\\n{oops\\n[1]\\n')
    >>> for r in iter_jsonl(lines):  # doctest: +ELLIPSIS
    ...     print(r.line, r.skip or r.payload, r.message)
    1 {'event_id': 'a'} None
    2 blank line 2: blank line
    3 invalid_json line 3: invalid JSON: Expecting property name ...: line 1 column 2 (char 1)
    4 not_an_object line 4: not a JSON object: list
    """
    if isinstance(source, io.TextIOBase):
        yield from _records_from_lines(source)
        return
    with open_binary(source) as stream:
        yield from _records_from_lines(stream)


def _records_from_lines(lines: Iterable[str | bytes]) -> Iterator[Record]:
    loads = json.loads
    for n, line in enumerate(lines, 1):
        try:
            value = loads(line)
        except (ValueError, RecursionError) as exc:
            if not line.strip():
                yield Record(n, None, "blank", f"line {n}: blank line")
            else:
                why = "nested too deep" if isinstance(exc, RecursionError) else str(exc)
                yield Record(n, None, "invalid_json", f"line {n}: invalid JSON: {why}",
                             _line_text(line))
            continue
        if isinstance(value, dict):
            yield Record(n, value)
        else:
            kind = "null" if value is None else type(value).__name__
            yield Record(n, None, "not_an_object", f"line {n}: not a JSON object: {kind}",
                         _line_text(line))


def _line_text(line: str | bytes) -> str:
    """A line as text for the quarantine: bad UTF-8 kept as ``\\xNN`` escapes, no newline."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", "backslashreplace")
    return line.rstrip("\r\n")


def _parse_int(text: str) -> int | float | str:
    """An integer cell; a non-integral number stays a float and junk stays text (rejected later)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() else number


def _parse_float(text: str) -> float | str:
    """A float cell; junk stays text so that the validator rejects it with its own rule."""
    try:
        return float(text)
    except ValueError:
        return text


_CONVERTERS = {"price": _parse_float, "quantity": _parse_int}


def iter_csv_events(source: Source) -> Iterator[Record]:
    """Event payloads from a CSV file whose header uses the event schema's column names.

    An empty cell becomes null, ``price`` and ``quantity`` are parsed as numbers (a cell that
    does not parse is kept as text, so the validator rejects it). Unknown columns are passed
    through for the validator to reject. A row with more or fewer cells than the header is a
    ``bad_row`` record; bytes that are not UTF-8 reach the validator as lone surrogates, which
    it rejects (rule ``unicode``), so one bad row never aborts the file.

    >>> text = io.StringIO("event_id,user_id,type,ts,price,quantity\\n"
    ...                    "e1,u1,purchase,2024-01-01T00:00:00+00:00,9.5,2\\n"
    ...                    "e2,u1,view,2024-01-01T00:00:00+00:00,,x\\n")
    >>> [r.payload for r in iter_csv_events(text)]  # doctest: +NORMALIZE_WHITESPACE
    [{'event_id': 'e1', 'user_id': 'u1', 'type': 'purchase', 'ts': '2024-01-01T00:00:00+00:00',
      'price': 9.5, 'quantity': 2},
     {'event_id': 'e2', 'user_id': 'u1', 'type': 'view', 'ts': '2024-01-01T00:00:00+00:00',
      'price': None, 'quantity': 'x'}]
    """
    with open_text(source, newline="", errors="surrogateescape") as stream:
        reader = csv.reader(stream)
        header = next(reader, None)
        if header is None:
            return
        names = [name.strip() for name in header]
        converters = [_CONVERTERS.get(name) for name in names]
        width = len(names)
        line = reader.line_num
        for row in reader:
            # a quoted cell may span lines: the record starts on the line after the last one
            start, line = line + 1, reader.line_num
            if len(row) != width:
                if not row or row == [""]:
                    yield Record(start, None, "blank", f"line {start}: blank line")
                else:
                    yield Record(start, None, "bad_row",
                                 f"line {start}: {len(row)} cells, the header has {width}",
                                 json.dumps(row, ensure_ascii=False))
                continue
            payload: dict[str, Any] = {}
            for name, convert, cell in zip(names, converters, row, strict=True):
                if cell == "":
                    payload[name] = None
                elif convert is None:
                    payload[name] = cell
                else:
                    payload[name] = convert(cell)
            yield Record(start, payload)
