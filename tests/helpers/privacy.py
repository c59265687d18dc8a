"""Privacy checks: distinctive raw ids, and where in a data dir any of them is found."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from offline.datasets.synthetic import generate

KEY = "3f1c9a7e5b2d4f608e1a3c5b7d9f1e2a-test-key"
N_USERS = 60


def raw_id(k: int) -> str:
    return f"rawcust-{k:04d}-zq"


def shop_events(n_events: int = 3_000, seed: int = 5) -> list[dict]:
    """Synthetic events with distinctive raw ids (event and session ids do not embed them)."""
    out = []
    for chunk in generate(N_USERS, n_events, seed=seed):
        for e in chunk:
            out.append({**e, "user_id": raw_id(int(e["user_id"][1:]))})
    return out


def leaks(data_dir: Path, needles: list[str]) -> dict[str, set[str]]:
    """Which files of ``data_dir`` hold which needles: raw bytes of every file, plus every
    parquet file's decoded values (its pages are compressed, so bytes alone could miss)."""
    pattern = re.compile(b"|".join(re.escape(n.encode()) for n in needles))
    found: dict[str, set[str]] = {}
    for path in sorted(data_dir.rglob("*")):
        if not path.is_file():
            continue
        hits = {m.decode() for m in pattern.findall(path.read_bytes())}
        if path.suffix == ".parquet":
            table = pq.ParquetFile(path).read()
            text = str([table[f.name].to_pylist() for f in table.schema
                        if not (pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
                                or pa.types.is_timestamp(f.type))]).encode()
            hits |= {m.decode() for m in pattern.findall(text)}
        if hits:
            found[path.relative_to(data_dir).as_posix()] = hits
    return found
