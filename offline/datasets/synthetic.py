"""Seeded synthetic shop traffic as payload dicts, column chunks or JSON Lines.

The events come from the shop model in ``offline.datasets.shop``: heavy-tailed user activity,
sessions of views with add-to-cart and purchase funnels, refunds days later, Zipf-popular items
in 20 categories, a daily and weekly rhythm, and ~1% of events delivered late. The stream
depends only on (n_users, n_events, seed, start, shop), never on the chunk size, and the three
output forms describe the same events.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any

import numpy as np

from offline.datasets.encode import (
    TYPE_NAMES,
    byte_table,
    digit_chars,
    join_slots,
    payloads_from_columns,
    ts_chars,
)
from offline.datasets.shop import CATEGORIES, Catalogue, RawColumns, Shop, delivered_events

__all__ = ["DEFAULT_CHUNK", "DEFAULT_START", "Shop", "generate", "generate_columns", "write_jsonl"]

DEFAULT_START = "2024-01-01T00:00:00+00:00"
DEFAULT_CHUNK = 100_000


def _rechunk(stream: Iterator[RawColumns], size: int) -> Iterator[RawColumns]:
    """The same events in chunks of exactly ``size`` (the last one may be shorter)."""
    rest: RawColumns | None = None
    for raw in stream:
        merged = raw if rest is None else {k: np.concatenate([rest[k], raw[k]]) for k in raw}
        n, at = len(merged["ts_ms"]), 0
        while n - at >= size:
            yield {k: v[at:at + size] for k, v in merged.items()}
            at += size
        rest = {k: v[at:] for k, v in merged.items()}
    if rest is not None and len(rest["ts_ms"]):
        yield rest


def _numbered(prefix: str, numbers: np.ndarray) -> np.ndarray:
    """``prefix + str(k)`` for each k of ascending non-negative ``numbers``, as str objects.

    Built as a matrix of code points filled one digit row at a time (rows with the same
    digit count are contiguous, as the numbers ascend): a Python f-string per id would cost
    more than generating the event.

    >>> _numbered("syn-1-", np.arange(8, 12)).tolist()
    ['syn-1-8', 'syn-1-9', 'syn-1-10', 'syn-1-11']
    """
    numbers = np.asarray(numbers, dtype=np.int64)
    if len(numbers) == 0:
        return np.empty(0, dtype=object)
    n, n_prefix = len(numbers), len(prefix)
    max_digits = len(str(int(numbers[-1])))
    chars = np.zeros((n_prefix + max_digits, n), dtype=np.uint32)
    chars[:n_prefix] = np.frombuffer(prefix.encode("utf-32-le"), dtype=np.uint32)[:, None]
    edges = [0, *np.searchsorted(numbers, [10**d for d in range(1, max_digits)]).tolist(), n]
    for digits in range(1, max_digits + 1):
        lo, hi = edges[digits - 1], edges[digits]
        value = numbers[lo:hi]
        for j in range(digits):
            value, digit = np.divmod(value, 10)
            chars[n_prefix + digits - 1 - j, lo:hi] = digit + 48
    # trailing NULs of the shorter ids vanish in the conversion to str
    return np.ascontiguousarray(chars.T).view(f"U{n_prefix + max_digits}").ravel().astype(object)


class _Names:
    """The public ids of the generated users, items, categories, sessions and events."""

    def __init__(self, catalogue: Catalogue, seed: int) -> None:
        self.seed = seed
        self.item = _numbered("sku-", np.arange(len(catalogue.item_price)))
        self.item_category = np.array(CATEGORIES, dtype=object)[catalogue.item_category]

    def users(self, user: np.ndarray) -> np.ndarray:
        """User ids ("u<k>"), named per chunk: a table of all users would cost memory in
        proportion to n_users."""
        distinct, inverse = np.unique(user, return_inverse=True)
        return _numbered("u", distinct)[inverse]

    def sessions(self, session: np.ndarray) -> np.ndarray:
        """Session ids ("s<seed>-<k>"; None for -1, events outside a session)."""
        distinct, inverse = np.unique(session, return_inverse=True)
        names = np.empty(len(distinct), dtype=object)  # None where -1
        known = distinct >= 0
        names[known] = _numbered(f"s{self.seed}-", distinct[known])
        return names[inverse]

    def events(self, first: int, n: int) -> np.ndarray:
        """Event ids "syn-<seed>-<n>", n the position in the stream."""
        return _numbered(f"syn-{self.seed}-", np.arange(first, first + n))


def _raw_chunks(n_users: int, n_events: int, seed: int, start: str, chunk_size: int,
                shop: Shop | None) -> tuple[Catalogue, _Names, Iterator[RawColumns]]:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    catalogue, stream = delivered_events(n_users, n_events, seed, start=start,
                                         shop=shop or Shop())
    return catalogue, _Names(catalogue, seed), _rechunk(stream, chunk_size)


def generate_columns(
    n_users: int,
    n_events: int,
    seed: int,
    *,
    start: str = DEFAULT_START,
    chunk_size: int = DEFAULT_CHUNK,
    shop: Shop | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Synthetic events as column chunks (the fast path: no dicts, no JSON).

    Each chunk has at most ``chunk_size`` events, in delivery order, as numpy arrays:
    ``event_id`` ("syn-<seed>-<n>", n the 0-based position in the stream), ``user_id``
    ("u<k>"), ``item_id`` ("sku-<k>"), ``category``, ``session_id`` (object arrays of str;
    session_id is None for refunds), ``type`` (int8: view=0, add_to_cart=1,
    remove_from_cart=2, purchase=3, refund=4), ``ts`` (int64 µs UTC, whole milliseconds),
    ``price`` (float64, the item's fixed price, on every event; NaN would mean absent) and
    ``quantity`` (int64).

    >>> chunks = list(generate_columns(50, 1_000, seed=7, chunk_size=400))
    >>> [len(c["ts"]) for c in chunks], chunks[0]["event_id"][:2].tolist()
    ([400, 400, 200], ['syn-7-0', 'syn-7-1'])
    """
    catalogue, names, chunks = _raw_chunks(n_users, n_events, seed, start, chunk_size, shop)
    first = 0
    for raw in chunks:
        n, item = len(raw["ts_ms"]), raw["item"]
        yield {
            "event_id": names.events(first, n),
            "user_id": names.users(raw["user"]),
            "type": raw["type"],
            "ts": raw["ts_ms"] * 1000,
            "item_id": names.item[item],
            "category": names.item_category[item],
            "session_id": names.sessions(raw["session"]),
            "price": catalogue.item_price[item],
            "quantity": raw["quantity"],
        }
        first += n


def generate(
    n_users: int,
    n_events: int,
    seed: int,
    *,
    start: str = DEFAULT_START,
    chunk_size: int = DEFAULT_CHUNK,
    shop: Shop | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """Synthetic events as chunks of payload dicts (the wire format of the event schema).

    The same events as ``generate_columns`` with the same arguments.

    >>> payload = next(generate(50, 10, seed=7))[0]
    >>> payload["event_id"], payload["type"], payload["ts"]
    ('syn-7-0', 'view', '2024-01-01T00:00:00.000+00:00')
    """
    for columns in generate_columns(n_users, n_events, seed, start=start,
                                    chunk_size=chunk_size, shop=shop):
        yield payloads_from_columns(columns)


class _JsonLines:
    """JSON Lines of generated chunks, laid out as byte slots (``encode.join_slots``).

    The per-item and per-type texts are encoded once; per event only numbers are turned into
    digits. The bytes equal ``encode.jsonl_from_columns`` of the same chunk
    (a test holds them to it), at a fraction of its cost, as no name needs escaping.
    """

    def __init__(self, catalogue: Catalogue, names: _Names) -> None:
        self.seed = names.seed
        self.type = byte_table([f',"type":"{t}"' for t in TYPE_NAMES])
        self.item_head = byte_table([
            f',"item_id":"{i}","category":"{c}","session_id":'
            for i, c in zip(names.item.tolist(), names.item_category.tolist(), strict=True)
        ])
        self.item_tail = byte_table(
            [f',"price":{p!r},"quantity":' for p in catalogue.item_price.tolist()])
        self.session_open = byte_table([f'"s{self.seed}-', "null"])
        self.session_close = byte_table(['"', ""])

    def encode(self, raw: RawColumns, first: int) -> bytes:
        n, item, session = len(raw["ts_ms"]), raw["item"], raw["session"]
        outside = (session < 0).astype(np.int64)  # refunds: "session_id":null
        session_digits = digit_chars(np.maximum(session, 0))
        session_digits[outside == 1] = 0
        slots: list[bytes | np.ndarray] = [
            f'{{"event_id":"syn-{self.seed}-'.encode(),
            digit_chars(np.arange(first, first + n)),
            b'","user_id":"u',
            digit_chars(raw["user"]),
            b'"',
            self.type[raw["type"]],
            b',"ts":"',
            ts_chars(raw["ts_ms"] * 1000).T,
            b'"',
            self.item_head[item],
            self.session_open[outside],
            session_digits,
            self.session_close[outside],
            self.item_tail[item],
            digit_chars(raw["quantity"]),
            b"}\n",
        ]
        return join_slots(n, slots)


def write_jsonl(
    out: str | os.PathLike[str] | IO[str] | IO[bytes],
    n_users: int,
    n_events: int,
    seed: int,
    *,
    start: str = DEFAULT_START,
    chunk_size: int = DEFAULT_CHUNK,
    shop: Shop | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> int:
    """Write synthetic events as JSON Lines to a path, ``"-"`` (stdout) or a stream.

    A text stream with a binary buffer (stdout, ``open(..., "w")``) is written through the
    buffer. ``on_chunk(n)`` is called after each chunk of n events (progress bars). Returns
    the number of events written. The same arguments give the same bytes, and the lines
    parse to the payloads ``generate`` yields.
    """
    if isinstance(out, str | os.PathLike) and os.fspath(out) != "-":
        with open(out, "wb") as f:
            return write_jsonl(f, n_users, n_events, seed, start=start, chunk_size=chunk_size,
                               shop=shop, on_chunk=on_chunk)
    stream: IO[Any] = sys.stdout if isinstance(out, str | os.PathLike) else out
    binary = getattr(stream, "buffer", None) if isinstance(stream, io.TextIOBase) else stream
    if binary is not None and binary is not stream:
        stream.flush()  # text already buffered in the wrapper goes first
    catalogue, names, chunks = _raw_chunks(n_users, n_events, seed, start, chunk_size, shop)
    lines = _JsonLines(catalogue, names)
    written = 0
    for raw in chunks:
        data = lines.encode(raw, written)
        if binary is not None:
            binary.write(data)
        else:
            stream.write(data.decode("ascii"))
        written += len(raw["ts_ms"])
        if on_chunk is not None:
            on_chunk(len(raw["ts_ms"]))
    if binary is not None and binary is not stream:
        binary.flush()
    return written
