"""In-memory sources (issue 15): a pandas DataFrame, a ``pyarrow.Table`` or an iterable of
``pyarrow.RecordBatch`` given to ``run``, ``validate`` and ``preview``. Typed columns read as a
Parquet file's (docs/input-files.md), results name the source and the row, a generator is read
lazily, and a DataFrame import stores what the CSV import of the same data stores."""

from __future__ import annotations

import datetime as dt
import gc
import glob
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import read_results, write_csv

import importer
from importer.load import InputOptions, frame_source, iter_batches
from importer.sandbox import Sandbox

CONFIG = """
job: {name: frames, kind: user, primary_keys: [phone]}
columns:
  phone: phone
  username: v
"""


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def _sent_values(tmp_path: Path, data: Any) -> list[str | None]:
    """The ``username`` each row of ``data`` would be sent with (None: not sent, empty)."""
    shown = importer.preview(_config(tmp_path), data, n=50).rows
    return [json.loads(r.body)["properties"].get("username") if r.body else None for r in shown]


ZONED = pd.Timestamp("2024-03-01 09:00:00", tz="Asia/Shanghai")
#: column values -> the text a row is sent with, as docs/input-files.md says for Parquet
TYPES: dict[str, tuple[Any, list[str | None]]] = {
    "int64": (pd.Series([123, -7], dtype="int64"), ["123", "-7"]),
    "float": (pd.Series([1.5, 998.0]), ["1.5", "998"]),
    "whole float": (pd.Series([13800138000.0, 2.0]), ["13800138000", "2"]),
    "NaN": (pd.Series([np.nan, 1.25]), [None, "1.25"]),
    "timestamp": (
        pd.Series(
            pd.to_datetime(["2024-03-01 09:15:00", "2024-03-01 09:15:00.005"], format="ISO8601")
        ),
        ["2024-03-01 09:15:00", "2024-03-01 09:15:00.005"],
    ),
    "timestamp with zone": (pd.Series([ZONED, ZONED]), ["2024-03-01 09:00:00+0800"] * 2),
    "NaT": (pd.Series(pd.to_datetime([None, "2024-03-01"])), [None, "2024-03-01 00:00:00"]),
    "bool": (pd.Series([True, False]), ["true", "false"]),
    "decimal": (pd.Series([Decimal("12.50"), Decimal("-0.10")]), ["12.50", "-0.10"]),
    "None": (pd.Series([None, "x"]), [None, "x"]),
    "category": (pd.Series(["gold", "silver"], dtype="category"), ["gold", "silver"]),
    "Int64 nullable": (pd.Series([7, None], dtype="Int64"), ["7", None]),
    "boolean nullable": (pd.Series([True, None], dtype="boolean"), ["true", None]),
    "string dtype": (pd.Series(["013800", None], dtype="string"), ["013800", None]),
    "date": (pd.Series([dt.date(2024, 3, 1), dt.date(1999, 12, 31)]), ["2024-03-01", "1999-12-31"]),
}


@pytest.mark.parametrize("kind", list(TYPES))
def test_a_typed_column_is_sent_as_the_text_parquet_gives(tmp_path: Path, kind: str) -> None:
    values, expected = TYPES[kind]
    df = pd.DataFrame({"phone": ["13800138000", "13800138001"], "v": values})
    assert _sent_values(tmp_path, df) == expected
    # the same rows as a Parquet file read the same: one conversion, not two
    path = tmp_path / "same.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    assert _sent_values(tmp_path, path) == expected


def test_text_keeps_leading_zeros_and_every_digit(tmp_path: Path) -> None:
    table = pa.table({"phone": ["013800138000", "13800138001"], "v": ["20180808080800001", " a "]})
    assert _sent_values(tmp_path, table) == ["20180808080800001", " a "]


def test_results_name_the_source_and_the_row(tmp_path: Path) -> None:
    df = pd.DataFrame({"phone": ["13800138000", None, "13800138002"], "v": ["a", "b", "c"]})
    df.index = [10, 20, 30]  # the index is not what rows are numbered by: their position is
    out = tmp_path / "out"
    named = importer.validate(
        _config(tmp_path), importer.source(df, name="crm_frame"), report_dir=out
    )
    rows = read_results(named)
    assert [(r["file"], r["line"], r["status"], r["errcode"]) for r in rows] == [
        ("crm_frame", "1", "valid", ""),
        ("crm_frame", "2", "rejected", "20001"),
        ("crm_frame", "3", "valid", ""),
    ]
    assert rows[1]["errmsg"] == "no primary-key property has a value (phone)"
    unnamed = read_results(importer.validate(_config(tmp_path), df, report_dir=out))
    assert {r["file"] for r in unnamed} == {"<DataFrame>"}
    table = read_results(
        importer.validate(_config(tmp_path), pa.Table.from_pandas(df), report_dir=out)
    )
    assert {r["file"] for r in table} == {"<Table>"}
    # the rejected row, original types, in rejects.parquet
    assert named.report_dir is not None
    rejects = pq.read_table(named.report_dir / "rejects.parquet").to_pylist()
    assert [r["v"] for r in rejects] == ["b"]


def _batches(n: int, rows: int, produced: list[int]) -> Iterator[pa.RecordBatch]:
    for b in range(n):
        produced.append(b)
        phones = [f"138{b:04d}{i:04d}" for i in range(rows)]
        yield pa.record_batch({"phone": phones, "v": [str(i) for i in range(rows)]})


def test_a_generator_of_batches_is_read_lazily_and_sliced_to_batch_rows() -> None:
    produced: list[int] = []
    source = frame_source(_batches(5, 300, produced), name="stream")
    batches = iter_batches(source, InputOptions(batch_rows=100))
    first = next(batches)
    # the first batch of the loader comes before the generator's second batch is made
    assert produced == [0]
    assert first.table.num_rows == 100 and first.lines.tolist()[:2] == [1, 2]
    rest = list(batches)
    assert produced == [0, 1, 2, 3, 4]
    assert max(b.table.num_rows for b in rest) == 100
    assert rest[-1].lines.tolist()[-1] == 1500


def test_a_generator_is_validated_whole_and_read_once(tmp_path: Path) -> None:
    produced: list[int] = []
    summary = importer.validate(_config(tmp_path), _batches(3, 10, produced), report_dir=tmp_path)
    assert summary.counts["valid"] == 30 and produced == [0, 1, 2]
    rows = read_results(summary)
    assert (rows[-1]["file"], rows[-1]["line"]) == ("<RecordBatches>", "30")
    # read again (a run's pre-pass, then its send): the spill file, not the generator again
    produced = []
    source = frame_source(_batches(3, 10, produced))
    once = [b.lines.tolist() for b in iter_batches(source, InputOptions(batch_rows=10))]
    again = [b.lines.tolist() for b in iter_batches(source, InputOptions(batch_rows=10))]
    assert once == again and len(once) == 3 and produced == [0, 1, 2]
    # the spill file goes with the source
    spills = glob.glob(os.path.join(tempfile.gettempdir(), "dmimport-frame-*"))
    assert spills
    del source
    gc.collect()
    assert not set(spills) & set(glob.glob(os.path.join(tempfile.gettempdir(), "dmimport-frame-*")))


def test_a_missing_column_is_refused_naming_the_source(tmp_path: Path) -> None:
    df = pd.DataFrame({"phone": ["13800138000"]})
    with pytest.raises(importer.ConfigError) as exc:
        importer.validate(_config(tmp_path), importer.source(df, name="crm"), report_dir=tmp_path)
    assert str(exc.value).endswith(
        "columns.username.from: column 'v' is not in crm -- the file's columns are: phone"
    )


def test_a_nested_column_the_job_reads_is_refused(tmp_path: Path) -> None:
    table = pa.table({"phone": ["13800138000"], "v": [[1, 2]]})
    with pytest.raises(importer.LoadError) as exc:
        importer.validate(_config(tmp_path), table, report_dir=tmp_path)
    assert str(exc.value).startswith("<Table>: nested Parquet columns are not supported: v (list")


def test_a_dataframe_import_equals_the_csv_import_of_the_same_data(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [[f"0161{i:07d}", f"name-{i}"] for i in range(30)]
    rows[4][0] = ""  # no primary key: rejected
    rows[9][0] = "not-a-phone"
    config = _config(tmp_path)
    results = []
    stored = []
    for kind in ("csv", "frame"):
        sb = fresh_sandbox()
        monkeypatch.setenv("DMART_SECRET", sb.secret)
        if kind == "csv":
            data: Any = write_csv(tmp_path / "people.csv", ["phone", "v"], rows)
        else:
            data = pd.DataFrame(rows, columns=["phone", "v"]).replace("", None)
        summary = importer.run(
            config,
            data,
            overrides={"target.base_url": sb.url},
            report_dir=tmp_path / kind,
            ledger=tmp_path / f"{kind}.db",
        )
        got = read_results(summary)
        results.append([(r["line"], r["identity"], r["status"], r["errcode"]) for r in got])
        stored.append(sorted(json.dumps(c, sort_keys=True) for c in sb.customers()))
    csv_results, frame_results = results
    # a CSV's line counts its header: row i of the frame is line i + 2 of the file
    assert [(str(int(line) + 1), *rest) for line, *rest in frame_results] == csv_results
    assert stored[0] == stored[1] and len(stored[0]) == 29
    assert {r[2] for r in frame_results} == {"ok", "rejected"}
