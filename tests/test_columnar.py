"""Columnar log reads (``EventLog.column_batches``) hold exactly what the row reads hold."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from helpers import shoplogs

from online import kernels
from online.eventlog import ColumnBatch, EventLog
from online.events import BATCH_COLUMNS
from online.state import CodeMap, UserState

KERNEL_COLUMNS = ("offset", "ts", "type", "price", "quantity")


def _same(col: ColumnBatch, rows) -> None:
    for name in KERNEL_COLUMNS:
        got, want = getattr(col, name), getattr(rows, name)
        assert got.dtype == want.dtype, name
        np.testing.assert_array_equal(got, want, err_msg=name)  # NaN == NaN here
    for name in ("user_id", "item_id", "category"):
        assert getattr(col, name).to_pylist() == getattr(rows, name).tolist(), name


@pytest.fixture()
def log(tmp_path):
    # the first events carry no item, category or price: a reader inferring column types
    # from the first rows would see NULLs only
    events = shoplogs.make_events(400, seed=3, users=12)
    for e in events[:150]:
        e.update(item_id=None, category=None, price=None, type=0)
    path = tmp_path / "events.db"
    shoplogs.write(path, events)
    with EventLog(path, partitions=16) as log:
        yield log


@pytest.mark.parametrize("size", [1, 7, 100, 10_000])
def test_column_batches_equal_the_row_reads(log, size):
    got = list(log.column_batches(5, 390, size))
    want = list(log.batches(5, 390, size))
    assert [r for _, r in got] == [r for _, r in want]
    for (c, _), (r, _) in zip(got, want, strict=True):
        _same(c, r)


def test_a_batch_of_nulls_only_reads_as_strings_and_nan(log):
    (batch, resume), = log.column_batches(0, 100, 1_000)
    assert resume == 100 and batch.item_id.type == pa.string()
    assert batch.item_id.null_count == 100 and np.isnan(batch.price).all()


def test_a_partition_reads_its_events_in_offset_order(log):
    for part in (0, 7, 15):
        got = ColumnBatch.concat(b for b, _ in log.column_batches(0, None, 13, partition=part))
        want, _ = log.read_partitions(part, 0, 10_000)
        _same(got, want)
    with pytest.raises(ValueError, match="partition: expected a value in"):
        next(log.column_batches(partition=16))


def test_a_set_of_partitions_reads_in_one_pass_in_offset_order(log):
    for parts in ([3], [0, 7, 15], list(range(8))):
        got = ColumnBatch.concat(b for b, _ in log.column_batches(5, 390, 17, partitions=parts))
        want, _ = log.read_partitions(parts, 5, 10_000, to_offset=390)
        _same(got, want)
        assert np.all(np.diff(got.offset) > 0)
    assert not list(log.column_batches(partitions=[]))
    with pytest.raises(ValueError, match="partition: expected a value in"):
        next(log.column_batches(partitions=[2, 16]))


def test_kernels_give_the_same_state_from_either_read(log):
    a, b = UserState(), UserState()
    for batch, _ in log.batches(size=64):
        kernels.apply(a, batch)
    for batch, _ in log.column_batches(size=64):
        kernels.apply(b, batch)
    assert a.equals(b)


def test_a_columnar_read_sees_events_appended_after_the_last_one(log):
    before = sum(len(b) for b, _ in log.column_batches(size=50))
    shoplogs.write(log.path, shoplogs.make_events(30, seed=9, users=4))
    after = sum(len(b) for b, _ in log.column_batches(size=50))
    assert (before, after) == (400, 430)


def test_code_maps_encode_arrow_strings_as_numpy_ones():
    values = ["b", None, "a", "b", "", None, "c", "a"]
    m1, m2 = CodeMap(["a"]), CodeMap(["a"])
    c1, added1 = m1.encode(np.array(values, dtype=object))
    c2, added2 = m2.encode(pa.array(values, pa.string()))
    assert c1.tolist() == c2.tolist() == [1, -1, 0, 1, 2, -1, 3, 0]
    assert added1 == added2 == ["b", "", "c"] and m1.values == m2.values
    chunked = pa.chunked_array([pa.array(values[:3]), pa.array(values[3:])])
    assert CodeMap(["a"]).encode(chunked)[0].tolist() == c1.tolist()


def test_the_columns_are_the_kernels_and_the_offset():
    from online.eventlog.columnar import COLUMNS

    assert set(COLUMNS) == set(BATCH_COLUMNS) - {"event_id", "session_id"}
