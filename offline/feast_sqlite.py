"""Feast's sqlite online store with a batched ``online_write_batch``: same tables, same rows.

Feast's ``SqliteOnlineStore.online_write_batch`` runs one ``conn.execute`` of its UPSERT per
feature value (~50 per user), and per value serializes the proto, extracts its text and has
sqlite's registered adapter turn both timestamps into epoch seconds; per (user, view) it
serializes the entity key. For the projector's flushes that loop cost ~500 us per user row
(49 values), ~85% of a flush. `SqliteOnlineStore` here is a Feast online-store plugin
(``online_store: {type: offline.feast_sqlite.SqliteOnlineStore}`` in
``feature_repo/feature_store.yaml``; Feast imports ``<module>.<Class>Config`` for a dotted
type and makes the store from the config's module and class name minus ``Config``) that
subclasses Feast's store and changes only the write:

- the values Feast's loop would bind are made first, by Feast's own functions:
  ``serialize_entity_key`` once per distinct key (kept across calls by the key proto's own
  bytes: a user's key is serialized once for all views), ``SerializeToString`` and
  ``extract_text_and_num`` once per distinct ``ValueProto`` in the call (by object, as
  ``offline.feast_rows`` shares the protos of repeated values, then by the proto's bytes,
  which determine its text: a flush's ~68k values hold ~15k contents), ``to_naive_utc`` and the
  adapter sqlite3 has registered for ``datetime`` (Feast's ``adapt_datetime_epoch``) once per
  timestamp object (kept across calls by identity, the object held, while the adapter is the
  same), so the stored integers are the ones Feast's ``execute`` binds;
- then, in one transaction as Feast's loop, ``executemany`` of Feast's UPSERT with one
  ``VALUES`` row per feature of 8 entity rows (the rest one by one), in Feast's order (SQLite
  upserts a multi-row ``VALUES`` row by row, so rows, rowids and conflicts come out as
  Feast's), each entity row's key and times bound once for all its features. sqlite3 looks
  up an adapter for every bound ``bytes`` and ``None`` (~1 us each): the blobs are bound as
  ``bytearray`` (stored as the same blobs), a NULL value_text as the integer 0 and a NULL
  created_ts as ``''``, which the statement turns back into NULL (a stored text is always
  text, a stored time always an integer).

Rows given as `offline.feast_rows.EncodedRows` (the projector's flushes) already hold each
value's serialized bytes and text by column: the statements and bound values are the same,
made from those columns (the entity key serialized once per user id), with no proto built.

Whatever it does not handle exactly as Feast goes to Feast's method unchanged:
``vector_enabled``, ``enable_openai_compatible_store`` (the ``value_num`` column), a
timestamp that is not a plain ``datetime`` after ``to_naive_utc`` (sqlite3 adapts by exact
type) or an adapter that does not make it an ``int``, an adapter registered for a type bound
here, more features than SQLite's parameter limit allows, a feature name with a NUL. Reads,
``update`` (``feast apply``), ``plan``, teardown, document retrieval are Feast's.
tests/test_feast_sqlite.py holds every stored table byte-identical to Feast's store's.

Where Feast compares ``online_store.type`` to ``"sqlite"``: the ``feast apply`` CLI takes its
plan/diff path only for that type, for others ``FeatureStore.apply`` (which
``offline.feast_store.apply`` always uses), and both create the same tables; its project-name
check refuses hyphens only for that type (the project is ``portrait``). ``Settings.online_store``
stays ``"sqlite"``; the Redis config of ``offline.feast_store.repo_config`` is unchanged.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal

from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores import sqlite as feast_sqlite
from feast.infra.online_stores.helpers import extract_text_and_num
from feast.utils import to_naive_utc

from offline.feast_rows import EncodedRows

__all__ = ["SqliteOnlineStore", "SqliteOnlineStoreConfig", "TYPE"]

TYPE = "offline.feast_sqlite.SqliteOnlineStore"
_CACHE_MAX = 1 << 16  # entity keys / timestamps kept across calls; cleared when full
_COLUMNS = ("entity_key", "feature_name", "value", "value_text", "event_ts", "created_ts")
_BOUND_HERE = (int, str, bytearray, bytes, type(None))  # an adapter for one: Feast's write
_NO_TEXT, _NO_CREATED = 0, ""
_USERS = 8  # entity rows a statement writes


class SqliteOnlineStoreConfig(feast_sqlite.SqliteOnlineStoreConfig):
    """Feast's sqlite online store config, under this store's type."""

    type: Literal["offline.feast_sqlite.SqliteOnlineStore"] = TYPE  # type: ignore[assignment]


class SqliteOnlineStore(feast_sqlite.SqliteOnlineStore):
    """Feast's sqlite online store; ``online_write_batch`` batched (see the module docstring).
    The class name must end in ``SqliteOnlineStore``: Feast's store asserts it of the type."""

    # key proto's bytes (or, for `EncodedRows`, the user id) -> Feast's key bytes
    _keys: dict[bytes | str, bytearray] | None = None
    _key_version: int | None = None  # the serialization version of `_keys`
    _times: dict[int, tuple[datetime, int]] | None = None  # id -> (the datetime, bound int)
    _adapt: Callable[[datetime], Any] | None = None  # the adapter `_times` holds values of
    _statements: dict[tuple[str, tuple[str, ...], int], str] | None = None

    def online_write_batch(self, config, table, data: Sequence[tuple],
                           progress: Callable[[int], Any] | None) -> None:
        conn = self._get_conn(config)
        name = feast_sqlite._table_id(config.project, table,
                                      config.registry.enable_online_feature_view_versioning)
        runs = self._runs(config, conn, name, data)
        if runs is None:  # a case Feast's own loop handles differently: let it write
            super().online_write_batch(config, table, data, progress)
            return
        with conn:
            for statement, params in runs:
                conn.executemany(statement, params)
        if progress:
            for _ in data:
                progress(1)

    def _runs(self, config, conn: sqlite3.Connection, table_name: str, data: Sequence[tuple],
              ) -> list[tuple[str, list[list]]] | None:
        """``(statement, parameters)`` runs writing ``data`` as Feast's loop does, in its
        order (consecutive rows with the same feature names share a statement); None: a
        case not handled here."""
        store = config.online_store
        if store.vector_enabled or getattr(store, "enable_openai_compatible_store", False):
            return None
        adapt = sqlite3.adapters.get((datetime, sqlite3.PrepareProtocol))
        if adapt is None or any((t, sqlite3.PrepareProtocol) in sqlite3.adapters
                                for t in _BOUND_HERE):
            return None
        version = config.entity_key_serialization_version
        if self._keys is None or self._key_version != version or len(self._keys) > _CACHE_MAX:
            self._keys, self._key_version = {}, version
        if self._times is None or self._adapt is not adapt or len(self._times) > _CACHE_MAX:
            self._times, self._adapt = {}, adapt
        if self._statements is None or len(self._statements) > _CACHE_MAX:
            self._statements = {}
        keys, times = self._keys, self._times
        limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        if isinstance(data, EncodedRows):
            return self._encoded_runs(table_name, data, version, adapt, limit)
        values: dict[int, tuple[bytearray, Any]] = {}  # id -> (serialized, value_text)
        contents: dict[bytes, tuple[bytearray, Any]] = {}  # the same by the proto's bytes
        runs: list[tuple[tuple[str, ...], list[list]]] = []  # (names, one list per row)
        names: tuple[str, ...] | None = None
        params: list[list] = []
        get, ident = values.get, id
        for entity_key, features, event_ts, created_ts in data:
            proto = entity_key.SerializeToString()
            key = keys.get(proto)
            if key is None:
                key = keys[proto] = bytearray(serialize_entity_key(
                    entity_key, entity_key_serialization_version=version))
            event = _bound(times, adapt, event_ts)
            created = _NO_CREATED if created_ts is None else _bound(times, adapt, created_ts)
            if event is None or created is None:
                return None
            if not features:  # Feast writes nothing for it
                continue
            row_names = tuple(features)
            if row_names != names:
                if 3 + 2 * len(row_names) > limit or not all(
                        type(n) is str and "\0" not in n for n in row_names):
                    return None
                names, params = row_names, []
                runs.append((names, params))
            row = [key, event, created]
            for val in features.values():
                done = get(ident(val))  # `data` holds every val: ids are not reused
                if done is None:
                    serialized = val.SerializeToString()
                    done = contents.get(serialized)
                    if done is None:
                        text = extract_text_and_num(val, False)[0]
                        done = contents[serialized] = (bytearray(serialized),
                                                       _NO_TEXT if text is None else text)
                    values[ident(val)] = done
                row += done
            params.append(row)
        out: list[tuple[str, list]] = []
        for names, rows in runs:
            out += self._grouped(table_name, names, rows, limit)
        return out

    def _encoded_runs(self, table_name: str, data: EncodedRows, version: int,
                      adapt: Callable[[datetime], Any], limit: int,
                      ) -> list[tuple[str, list]] | None:
        """`_runs` of rows held by column (`offline.feast_rows.EncodedRows`): the same
        statements and bound values, made per column instead of per ``ValueProto``."""
        names = data.names
        if not data or not names:  # Feast writes nothing for a row without features
            return []
        if 3 + 2 * len(names) > limit or not all(type(n) is str and "\0" not in n
                                                 for n in names):
            return None
        assert self._keys is not None and self._times is not None
        keys, times = self._keys, self._times
        heads = []
        for i, (user, event_ts, created_ts) in enumerate(
                zip(data.user_ids, data.event_ts, data.created, strict=True)):
            key = keys.get(user)  # a user id (str) here; key protos' bytes in `_runs`
            if key is None:
                key = keys[user] = bytearray(serialize_entity_key(
                    data.entity_key(i), entity_key_serialization_version=version))
            event = _bound(times, adapt, event_ts)
            created = _NO_CREATED if created_ts is None else _bound(times, adapt, created_ts)
            if event is None or created is None:
                return None
            heads.append((key, event, created))
        columns: list[list] = []
        for values, texts in zip(data.values, data.texts, strict=True):
            columns += (values, [_NO_TEXT if t is None else t for t in texts])
        rows = [head + bound for head, bound in zip(heads, zip(*columns, strict=True), strict=True)]
        return self._grouped(table_name, names, rows, limit)

    def _grouped(self, table_name: str, names: tuple[str, ...], rows: list, limit: int,
                 ) -> list[tuple[str, list]]:
        """A run's entity rows (each key, times, then (value, text) per feature) as
        statements of `_USERS` entity rows, then one at a time."""
        per = min(_USERS, limit // (3 + 2 * len(names)))
        whole = len(rows) - len(rows) % per
        out: list[tuple[str, list]] = []
        if whole:
            chain = itertools.chain.from_iterable
            out.append((self._statement(table_name, names, per),
                        [list(chain(rows[i:i + per])) for i in range(0, whole, per)]))
        if whole < len(rows):
            out.append((self._statement(table_name, names, 1), rows[whole:]))
        return out

    def _statement(self, table_name: str, names: tuple[str, ...], users: int) -> str:
        assert self._statements is not None
        key = (table_name, names, users)
        statement = self._statements.get(key)
        if statement is None:
            statement = self._statements[key] = _upsert(table_name, names, users)
        return statement


def _bound(times: dict[int, tuple[datetime, int]], adapt: Callable[[datetime], Any],
           ts: datetime) -> int | None:
    """The integer sqlite3 binds for Feast's ``to_naive_utc(ts)`` (the registered datetime
    adapter's, for a plain ``datetime``); None when it would bind anything else. Kept by the
    object's identity, holding the object, so the id is not reused while kept."""
    seen = times.get(id(ts))
    if seen is not None and seen[0] is ts:
        return seen[1]
    naive = to_naive_utc(ts)
    if type(naive) is not datetime:
        return None
    bound = adapt(naive)
    if type(bound) is not int:
        return None
    times[id(ts)] = (ts, bound)
    return bound


def _upsert(table_name: str, names: Sequence[str], users: int) -> str:
    """Feast's UPSERT (no value_num/vector columns) of ``users`` entity rows, a ``VALUES`` row
    per feature: parameters per entity row key, event time, created time ('' for NULL), then
    (value, value_text (0 for NULL)) per feature."""
    rows = []
    for user in range(users):
        at = user * (3 + 2 * len(names))
        key, event, created = at + 1, at + 2, at + 3
        for i, name in enumerate(names):
            value, text = at + 4 + 2 * i, at + 5 + 2 * i
            literal = "'" + name.replace("'", "''") + "'"
            rows.append(f"(?{key}, {literal}, ?{value}, "
                        f"CASE WHEN typeof(?{text}) = 'integer' THEN NULL ELSE ?{text} END, "
                        f"?{event}, CASE WHEN typeof(?{created}) = 'text' THEN NULL "
                        f"ELSE ?{created} END)")
    update_set = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[2:])
    return (f"INSERT INTO {feast_sqlite._quote_id(table_name)} ({', '.join(_COLUMNS)}) "
            f"VALUES {', '.join(rows)} "
            f"ON CONFLICT(entity_key, feature_name) DO UPDATE SET {update_set};")
