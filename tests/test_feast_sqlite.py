"""The batched sqlite online store (`offline.feast_sqlite`) stores what Feast's own store does.

Each test writes the same rows through Feast's stock ``SqliteOnlineStore`` into one data dir
and through the plugin into another (both applied alike), then compares every table row by
row, rowid and storage class included, and what Feast reads back.
"""

from __future__ import annotations

import math
import sqlite3
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from feast import FeatureStore
from feast.infra.online_stores.helpers import extract_text_and_num
from feast.infra.online_stores.sqlite import SqliteOnlineStore as FeastStore
from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig as FeastConfig
from feast.infra.online_stores.sqlite import _table_id
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import BytesList, Int64List, StringList, Value
from feast.repo_config import load_repo_config
from helpers import shoplogs
from helpers.stored import projected

from offline import feast_online as fo
from offline import feast_sqlite
from offline import feast_store as fs
from offline.backfill.replay import replay
from offline.feast_rows import push_views, view_rows, write_rows
from online import catalogue as cat
from online.settings import Settings

EVENTS = shoplogs.make_events(300, seed=13, users=11)


def _stores(tmp_path, **options) -> dict[str, FeatureStore]:
    """Feast's store and the plugin, each on its own applied data dir, same options."""
    out = {}
    for kind, config_class in (("feast", FeastConfig),
                               ("plugin", feast_sqlite.SqliteOnlineStoreConfig)):
        settings = Settings(data_dir=tmp_path / kind)
        fs.apply(settings)
        config = fs.repo_config(settings)
        config.online_config = config_class(path=str(settings.online_store_path), **options)
        out[kind] = FeatureStore(repo_path=str(fs.FEATURE_REPO), config=config)
    assert type(out["feast"].provider.online_store) is FeastStore
    assert type(out["plugin"].provider.online_store) is feast_sqlite.SqliteOnlineStore
    return out


def _tables(store: FeatureStore) -> dict[str, list]:
    """Every table's schema and rows in rowid order, each value with its storage class."""
    with sqlite3.connect(store.config.online_store.path) as con:
        out = {}
        for name, sql in con.execute("select name, sql from sqlite_master where type = 'table'"
                                     " order by name"):
            columns = [c for (_, c, *_) in con.execute(f'pragma table_info("{name}")')]
            typed = ", ".join(f'"{c}", typeof("{c}")' for c in columns)
            out[name] = (sql, con.execute(f'select rowid, {typed} from "{name}" order by rowid')
                         .fetchall())
        return out


def _write(stores: dict[str, FeatureStore], view_name: str, rows: list) -> None:
    for store in stores.values():
        store.provider.online_write_batch(store.config, store.get_feature_view(view_name),
                                          rows, progress=None)


def _projected(tmp_path):
    """Stored columns of every user of a projected log, the last user's all null or empty."""
    return projected(tmp_path / "log", EVENTS)


def _key(*pairs) -> EntityKey:
    return EntityKey(join_keys=[k for k, _ in pairs], entity_values=[v for _, v in pairs])


def test_the_repo_runs_the_plugin_as_its_sqlite_store(tmp_path):
    settings = Settings(data_dir=tmp_path)
    assert settings.online_store == "sqlite"
    config = fs.repo_config(settings)
    assert config.online_store.type == feast_sqlite.TYPE
    assert isinstance(config.online_store, FeastConfig)
    store = fs.apply(settings)
    assert type(store.provider.online_store) is feast_sqlite.SqliteOnlineStore
    # Feast's CLI reads the same yaml (feature_repo/): it resolves the plugin too
    assert load_repo_config(fs.FEATURE_REPO, fs.FEATURE_REPO / "feature_store.yaml"
                            ).online_store.type == feast_sqlite.TYPE
    redis = fs.repo_config(Settings(data_dir=tmp_path, online_store="redis"))
    assert redis.online_store.type == "offline.feast_redis.RedisOnlineStore"


def test_projector_rows_are_stored_as_feasts_store_stores_them(tmp_path):
    ids, stored = _projected(tmp_path)
    stores = _stores(tmp_path)
    views = push_views(stores["plugin"], fs.PUSH_SOURCE)
    n = len(ids)
    ts = np.asarray(stored["last_event_ts"], np.int64)
    plugin = stores["plugin"]
    conn = plugin.provider.online_store._get_conn(plugin.config)
    for offsets in (np.arange(n, dtype=np.int64) * 7 + 3, np.arange(n, dtype=np.int64) * 7 + 9):
        batches = view_rows(views, ids, stored, offsets, ts)
        for view, rows in batches:  # batched: 8 users a statement, then the rest one by one
            table = _table_id(plugin.project, view, False)
            runs = plugin.provider.online_store._runs(plugin.config, conn, table, rows)
            assert runs is not None and [len(p) for _, p in runs] == [n // 8, n % 8]
        for store in stores.values():
            write_rows(store, batches)
        stored = {k: (v[::-1].copy() if isinstance(v, np.ndarray) else v[::-1])
                  for k, v in stored.items()}  # the second write changes every user's values
    tables = _tables(stores["feast"])
    assert sum(len(rows) for _, rows in tables.values()) > n * 40
    assert _tables(stores["plugin"]) == tables
    entity_rows = [{"user_id": u} for u in ids]
    read = {kind: store.get_online_features(features=store.get_feature_service(
                fs.FEATURE_SERVICE), entity_rows=entity_rows).to_dict()
            for kind, store in stores.items()}
    assert read["plugin"]["user_id"] == ids
    assert repr(read["plugin"]) == repr(read["feast"])  # repr: NaN equals NaN
    # the writer's version reads (online_read) see the second write
    versions = fo.OnlineWriter(Settings(data_dir=tmp_path / "plugin"),
                               store=stores["plugin"]).stored_versions(ids)
    assert sorted(o for o, _ in versions.values()) == sorted(np.arange(n) * 7 + 9)


def _reference_value(dtype: str, v) -> Value:
    """Feast's type mapping of one stored value, proto by proto (what `EncodedRows` encodes)."""
    if dtype == "float64":
        return Value() if math.isnan(v) else Value(double_val=v)
    if dtype == "int64":
        return Value(int64_val=v)
    if dtype == "timestamp":
        return Value(unix_timestamp_val=v if v == cat.NO_TS else v // 1_000_000)
    if dtype == "str":
        return Value() if v is None else Value(string_val=v)
    return Value() if v is None else Value(string_list_val=StringList(val=list(v)))


def test_odd_values_encoded_by_column_are_feasts_protos_and_rows(tmp_path):
    ids, stored = _projected(tmp_path)
    n = len(ids)
    odd = {"float64": [-0.0, math.inf, -math.inf, 1e300, 5e-324, math.nan, 0.1 + 0.2],
           "int64": [-(2**63), 2**63 - 1, -1, 0, 7, 7, -300],
           "timestamp": [cat.NO_TS, 0, -1_500_000, 1_900_000_000_123_456, 1, -1, 999_999],
           "str": ["", "\u00e9\u2028x'y", None, "a" * 128, "\U0001f600", "", "z"],
           "str_list": [[""], ["a", "a"], None, [], ["\u00e9", "b"], [""], ["c"]]}
    for f in cat.stored_features():
        if f.name == "last_event_ts":
            continue
        column = stored[f.name]
        for i, v in enumerate(odd[f.dtype][:n]):
            column[i] = v
    stores = _stores(tmp_path)
    views = push_views(stores["plugin"], fs.PUSH_SOURCE)
    offsets = np.arange(n, dtype=np.int64) * 3 + 1
    batches = view_rows(views, ids, stored, offsets, np.asarray(stored["last_event_ts"]))
    columns = {**stored, "offset": offsets}
    for _, rows in batches:  # the protos any store iterates are Feast's mapping's
        for name, values, texts in zip(rows.names, rows.values, rows.texts, strict=True):
            dtype = "int64" if name == "offset" else cat.feature(name).dtype
            for i, (raw, encoded, text) in enumerate(zip(columns[name], values, texts,
                                                         strict=True)):
                want = _reference_value(dtype, raw)
                assert bytes(encoded) == want.SerializeToString(), (name, raw)
                assert text == extract_text_and_num(want, False)[0], (name, raw)
                assert rows[i][1][name] == want
    for store in stores.values():
        write_rows(store, batches)
    assert _tables(stores["plugin"]) == _tables(stores["feast"])


def test_materialize_writes_what_feasts_store_writes(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    shoplogs.write(settings.event_log_path, EVENTS)
    replay(settings, progress=False)
    fs.apply(settings)
    stores = {}
    for kind, config_class in (("feast", FeastConfig),
                               ("plugin", feast_sqlite.SqliteOnlineStoreConfig)):
        config = fs.repo_config(settings)
        config.online_config = config_class(path=str(tmp_path / f"{kind}.db"))
        store = stores[kind] = FeatureStore(repo_path=str(fs.FEATURE_REPO), config=config)
        store.provider.online_store.update(config, [], store.list_feature_views(), [], [], False)
        store.materialize(start_date=datetime(1970, 1, 1, tzinfo=UTC),
                          end_date=datetime(2030, 1, 1, tzinfo=UTC))
    tables = _tables(stores["feast"])
    assert sum(len(rows) for _, rows in tables.values()) > 100
    assert _tables(stores["plugin"]) == tables


def test_every_value_kind_and_timestamp_is_stored_as_feast_stores_it(tmp_path):
    stores = _stores(tmp_path)
    shared = Value(double_val=2.5)
    ist = timezone(timedelta(hours=5, minutes=30))
    first = [
        (_key(("user_id", Value(string_val="u'1"))),
         {"a": Value(), "b": Value(double_val=math.nan), "c": Value(double_val=-0.0),
          "d": Value(double_val=math.inf), "e": shared, "it's": Value(string_val="x'y\u00e9\n")},
         datetime(2030, 1, 2, 3, 4, 5, 678901), datetime(2030, 1, 2, 3, 4, 6)),
        (_key(("user_id", Value(string_val="u2"))),  # another order of names: another run
         {"e": shared, "a": Value(int64_val=-(2 ** 63)), "f": Value(int32_val=7),
          "g": Value(float_val=0.1), "h": Value(bool_val=True), "i": Value(bool_val=False)},
         datetime(2030, 1, 2, 3, 4, 5, tzinfo=ist), None),
        (_key(("user_id", Value(string_val="u3")), ("shop", Value(int64_val=4))),
         {"j": Value(bytes_val=b"\x00\xff"), "k": Value(string_list_val=StringList(val=["p", ""])),
          "l": Value(unix_timestamp_val=cat.NO_TS), "m": Value(unix_timestamp_val=1_900_000_000),
          "n": Value(int64_list_val=Int64List(val=[1, -2])), "o": Value(string_val=""),
          "p": Value(bytes_list_val=BytesList(val=[b"q"]))},
         datetime(2030, 1, 2, tzinfo=UTC), datetime(1999, 12, 31, 23, 59, 59, tzinfo=ist)),
        (_key(("user_id", Value(int64_val=12))), {}, datetime(2030, 1, 3), None),  # no values
        (_key(("user_id", Value(string_val="u2"))),  # again in the same call: this one wins
         {"a": Value(int64_val=3), "z": Value(string_val="late")},
         datetime(2030, 1, 4, tzinfo=UTC), datetime(2030, 1, 4, tzinfo=UTC)),
    ]
    _write(stores, fs.VERSION_VIEW, first)
    second = [  # updates (values, times, a null created time) and new rows
        (_key(("user_id", Value(string_val="u'1"))),
         {"a": Value(string_val="now set"), "b": Value(), "new": Value(double_val=1e300)},
         datetime(2031, 5, 6, tzinfo=UTC), None),
        (_key(("user_id", Value(string_val="u4"))), {"a": shared, "b": shared},
         datetime(2031, 5, 6), datetime(2031, 5, 7)),
        (_key(("shop", Value(int64_val=4)), ("user_id", Value(string_val="u3"))),  # keys sorted
         {"j": Value(string_val="same entity, join keys listed the other way")},
         datetime(2031, 5, 6), datetime(2031, 5, 6)),
    ]
    _write(stores, fs.VERSION_VIEW, second)
    tables = _tables(stores["feast"])
    (_, rows), = [t for name, t in tables.items() if name.endswith("_snapshot")]
    assert len(rows) == 7 + 7 + 7 + 2  # u'1 (6 + new), u2 (6 + z), u3 (7), u4 (2)
    assert _tables(stores["plugin"]) == tables
    keys = [k for k, *_ in first[:3]] + [second[1][0]]
    read = {kind: store.provider.online_read(store.config,
                                             store.get_feature_view(fs.VERSION_VIEW), keys)
            for kind, store in stores.items()}
    assert [(ts, {n: v.SerializeToString() for n, v in values.items()})
            for ts, values in read["plugin"]] == [
        (ts, {n: v.SerializeToString() for n, v in values.items()})
        for ts, values in read["feast"]]


def test_cases_it_does_not_batch_are_feasts_own_write(tmp_path):
    # the value_num column of Feast's openai-compatible mode
    stores = _stores(tmp_path, enable_openai_compatible_store=True)
    for store in stores.values():  # what `feast apply` does with the option: add value_num
        views = push_views(store, fs.PUSH_SOURCE)
        store.provider.online_store.update(store.config, [], views, [], [], False)
    rows = [(_key(("user_id", Value(string_val="u1"))),
             {"a": Value(double_val=1.5), "b": Value(string_val="s")},
             datetime(2030, 1, 2), None)]
    _write(stores, fs.VERSION_VIEW, rows)
    tables = _tables(stores["feast"])
    (_, written), = [t for name, t in tables.items() if name.endswith("_snapshot")]
    assert 1.5 in written[0] and "value_num" in tables[next(iter(tables))][0]
    assert _tables(stores["plugin"]) == tables
    # a feature name with a NUL (kept by Feast's bound text; not put in the statement here)
    plain = _stores(tmp_path / "plain")
    _write(plain, fs.VERSION_VIEW, [(_key(("user_id", Value(string_val="u1"))),
                                     {"n\0ul": Value(int64_val=2)}, datetime(2030, 1, 2), None)])
    assert _tables(plain["plugin"]) == _tables(plain["feast"])
    # a timestamp sqlite3 cannot bind: both fail alike and write nothing
    bad = [(_key(("user_id", Value(string_val="u1"))), {"a": Value(int64_val=1)},
            pd.Timestamp("2030-01-02", tz="UTC"), None)]
    for store in plain.values():
        with pytest.raises(sqlite3.ProgrammingError):
            store.provider.online_write_batch(store.config,
                                              store.get_feature_view(fs.VERSION_VIEW), bad,
                                              progress=None)
    assert _tables(plain["plugin"]) == _tables(plain["feast"])
