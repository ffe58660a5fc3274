"""Property-based: no cell, whatever text it holds, crashes the loader or the mapper, or changes
what happens to any other row.

The mapper works a column at a time and picks fast paths from scans of the whole column (all
digits? any quote? any control character?), and the loader scans blocks for NUL and U+FFFD.
So one odd cell could, through a bug, change the bytes sent for its neighbours. These tests
write a CSV with the ``csv`` module (file A), then the same file with one cell replaced (file
B), and require every other record to come out exactly the same: status, errcode, reason,
column, body and identity, and its line number moved only by the newlines the new cell added
or removed.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from helpers import write_csv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importer.config import Config
from importer.job import parse_job
from importer.load import InputOptions, iter_batches, open_source
from importer.map import Mapper

COLUMNS = ["id", "phone", "email", "name", "age", "amount", "vip", "when", "code"]
#: columns a test may overwrite; ``id`` always holds a value, so no record is ever blank
WRITABLE = COLUMNS[1:]

CONFIG: Config = parse_job(
    {
        "job": {"kind": "user", "primary_keys": ["phone", "email"], "max_value_length": 64},
        "columns": {
            "ref": "id",
            "phone": {"from": "phone", "transform": ["strip", "digits"]},
            "email": {"from": "email", "transform": ["strip", "lower"]},
            "username": "name",
            "nick": {"from": "name", "transform": ["nfkc", "collapse_spaces"]},
            "age": {"from": "age", "type": "integer"},
            "amount": {"from": "amount", "type": "number"},
            "vip": {"from": "vip", "type": "boolean"},
            "registered": {"from": "when", "type": "datetime", "timezone": "Asia/Shanghai"},
            "code": {"from": "code", "pattern": r"[A-Z]{2}\d+"},
        },
    }
)

#: values that take the mapper's or the loader's special paths
TRICKY = [
    "",
    " ",
    "\u3000",
    '"',
    '""',
    ",",
    "\n",
    "\r",
    "\r\n",
    "a\nb",
    "\x00",
    "\ufeff",
    "\ufffd",
    "\u2028",
    "\\",
    "=1+1",
    "😀👍🏽",
    "𠀀",
    "１３８",
    "13800138000",
    "+86 138-0013-8000",
    "A@B.CN ",
    "12",
    "-0012",
    "12.0",
    "12.5",
    "9223372036854775808",
    "1e999",
    "NaN",
    ".5",
    "1e-7",
    "是",
    "yes",
    "maybe",
    "2024-02-30",
    "2024-01-05 08:00:00",
    "2024/1/5 8:00",
    "2024-01-05T08:00:00Z",
    "1700000000",
    "1700000000000",
    "AB123",
    "x" * 65,
]

cells = st.one_of(
    st.sampled_from(TRICKY),
    st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=12),
    st.text(alphabet="0123456789 -+.:/eE", max_size=12),
)

#: well-formed values per column, so that many rows pass and carry real bodies
VALID: dict[str, st.SearchStrategy[str]] = {
    "phone": st.from_regex(r"\A\s?1[3-9]\d{9}\s?\Z"),
    "email": st.from_regex(r"\A[A-Za-z0-9]{1,6}@[a-z]{1,5}\.(cn|COM)\Z"),
    "name": st.text(alphabet=st.characters(exclude_categories=("Cs", "Cc")), max_size=10),
    "age": st.integers(-(10**12), 10**12).map(str) | st.just(""),
    "amount": st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr)
    | st.decimals(places=3, allow_nan=False, allow_infinity=False).map(str),
    "vip": st.sampled_from(["true", "FALSE", "1", "0", "yes", "N", "是", "否", ""]),
    "when": st.datetimes(
        min_value=datetime(1971, 1, 1),
        max_value=datetime(2099, 12, 31),
    ).map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S")),
    "code": st.from_regex(r"\A[A-Z]{2}\d{1,5}\Z") | st.just(""),
}


def cell(column: str) -> st.SearchStrategy[str]:
    """Nine times in ten a well-formed value, else anything at all."""
    return st.integers(0, 9).flatmap(lambda k: cells if k == 0 else VALID[column])


def row_strategy(i: int) -> st.SearchStrategy[list[str]]:
    return st.tuples(*[cell(c) for c in WRITABLE]).map(lambda t: [f"r{i}", *t])


@st.composite
def tables(draw: Any) -> list[list[str]]:
    n = draw(st.integers(min_value=1, max_value=8))
    return [draw(row_strategy(i)) for i in range(n)]


def outcomes(path: Path, batch_rows: int) -> list[tuple[int, tuple[Any, ...]]]:
    """(line, outcome) of every record of the file, in file order."""
    options = InputOptions(batch_rows=batch_rows)
    source = open_source(path, options)
    mapper = Mapper(CONFIG)
    out: list[tuple[int, tuple[Any, ...]]] = []
    for batch in iter_batches(source, options, CONFIG.source_columns()):
        m = mapper.map(batch)
        assert m.items is not None
        for i in range(m.n):
            verdict = (
                "row",
                int(m.errcode[i]),
                m.reason[i],
                m.column[i],
                m.items[i],
                m.identity[i],
            )
            out.append((int(m.lines[i]), verdict))
        out.extend((b.line, ("bad", b.reason, b.column)) for b in batch.bad)
    out.sort(key=lambda t: t[0])
    return out


def expected_lines(rows: list[list[str]]) -> list[int]:
    """Where each record starts: lines are counted by LF (a quoted value's own count)."""
    lines, line = [], 2
    for row in rows:
        lines.append(line)
        line += 1 + sum(v.count("\n") for v in row)
    return lines


@pytest.mark.slow
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows=tables(),
    where=st.tuples(st.integers(min_value=0), st.sampled_from(WRITABLE)),
    new=st.data(),
    batch_rows=st.sampled_from([1, 3, 50_000]),
)
def test_one_cell_never_changes_another_rows_outcome(
    tmp_path_factory: Any, rows: list[list[str]], where: tuple[int, str], new: str,
    batch_rows: int,
) -> None:  # fmt: skip
    j = where[0] % len(rows)
    k = COLUMNS.index(where[1])
    changed = [list(r) for r in rows]
    changed[j][k] = new.draw(cells | cell(where[1]), label="new cell")
    d = tmp_path_factory.mktemp("prop")
    a = outcomes(write_csv(d / "a.csv", COLUMNS, rows, lineterminator="\r\n"), batch_rows)
    b = outcomes(write_csv(d / "b.csv", COLUMNS, changed, lineterminator="\r\n"), batch_rows)

    # every record is accounted for, once, at the line where it starts
    assert [line for line, _ in a] == expected_lines(rows)
    assert [line for line, _ in b] == expected_lines(changed)
    for i in range(len(rows)):
        if i != j:
            assert a[i][1] == b[i][1], (i, rows[i], a[i][1], b[i][1])

    # a row that passes carries its cells exactly as written (the CSV round trip is exact)
    for i, (_, verdict) in enumerate(a):
        if verdict[0] == "row" and verdict[1] == 0:
            props = json.loads(verdict[4])
            assert props["ref"] == rows[i][0]
            name = rows[i][COLUMNS.index("name")]
            assert props.get("username") == (name or None)


@settings(max_examples=60, deadline=None)
@given(rows=tables())
def test_a_row_maps_the_same_alone_and_in_a_batch(rows: list[list[str]]) -> None:
    # Mapping straight from a table (the loader's NUL and U+FFFD screening aside): each row's
    # verdict and body must not depend on which other rows share its batch.
    clean = [[v.replace("\x00", "").replace("\ufffd", "") for v in r] for r in rows]
    table = pa.table({c: [r[i] for r in clean] for i, c in enumerate(COLUMNS)})
    lines = np.arange(2, 2 + len(clean), dtype=np.int64)
    mapper = Mapper(CONFIG)
    together = mapper.map_table(table, lines)
    assert together.items is not None
    for i in range(len(clean)):
        alone = mapper.map_table(table.slice(i, 1), lines[i : i + 1])
        assert alone.items is not None
        assert (
            int(alone.errcode[0]),
            alone.reason[0],
            alone.column[0],
            alone.items[0],
            alone.identity[0],
        ) == (
            int(together.errcode[i]),
            together.reason[i],
            together.column[i],
            together.items[i],
            together.identity[i],
        ), clean[i]
