"""CSV records longer than Arrow's block: the loader reads the file again with a larger block,
so a long field (up to input.max_field_bytes) loads, a longer one rejects only its record, and
every record still arrives exactly once with its physical line."""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.json as pajson
import pytest
from helpers import reference

from importer.errors import LoadError
from importer.load import BadRecord, InputOptions, ReadStats, Tuning, iter_batches, open_source

MIB = 1 << 20
BLOCK = Tuning().block  # the Arrow CSV block runs use
#: Arrow blocks of 4 KiB, and larger ones of 2 x max_field_bytes
SMALL_BLOCKS = Tuning(block=4096, block_slack=0)


def load(
    path: Path, tuning: Tuning | None = None, stats: ReadStats | None = None, **options: Any
) -> tuple[list[tuple[int, list[str]]], list[BadRecord]]:
    """(line, values) of every good row and the bad records, checking each batch's shape."""
    opts = InputOptions(**options)
    source = open_source(path, opts)
    rows: list[tuple[int, list[str]]] = []
    bad: list[BadRecord] = []
    for batch in iter_batches(source, opts, tuning=tuning, stats=stats):
        assert batch.table.num_rows == len(batch.lines)
        assert batch.table.num_rows + len(batch.bad) <= opts.batch_rows
        values = zip(*(c.to_pylist() for c in batch.table.columns), strict=True)
        rows.extend(zip(map(int, batch.lines), map(list, values), strict=True))
        bad.extend(batch.bad)
    return rows, bad


def test_the_block_does_not_grow_with_the_field_limit(tmp_path: Path) -> None:
    path = tmp_path / "small.csv"
    path.write_text("a,b\n1,2\n")
    options = InputOptions()
    stats = ReadStats()
    assert load(path, stats=stats) == ([(2, ["1", "2"])], [])
    assert stats.block == BLOCK <= 4 * MIB  # what the file was read with
    assert stats.restarts == []
    assert Tuning().large_block(options.max_field_bytes) >= 2 * options.max_field_bytes


def test_a_field_longer_than_the_block_loads(tmp_path: Path) -> None:
    # text with quoted newlines, after enough rows for batches to be delivered first; longer
    # than two blocks, which Arrow can never read as one record
    size = 2 * BLOCK + MIB
    assert size < InputOptions().max_field_bytes
    big = "\n".join(["长" * 1000] * 1000) + "x" * (size - 3_000_999)
    before = "".join(f"{i},a\n" for i in range(60_000))
    after = "".join(f"{i},b\n" for i in range(60_000))
    data = "a,b\n" + before + f'big,"{big}"\n' + "1\n" + after
    path = tmp_path / "long.csv"
    path.write_text(data, encoding="utf-8")
    stats = ReadStats()
    rows, bad = load(path, stats=stats, batch_rows=10_000)
    assert len(big.encode()) == size
    assert len(rows) == 120_001
    assert rows[:60_000] == [(i + 2, [str(i), "a"]) for i in range(60_000)]
    assert rows[60_000] == (60_002, ["big", big])
    # the big record spans 1,000 lines; one bad record, then the rest
    assert [(b.line, b.reason) for b in bad] == [(61_002, "expected 2 fields, found 1")]
    assert rows[60_001:] == [(61_003 + i, [str(i), "b"]) for i in range(60_000)]
    assert stats.restarts == [60_002]  # Arrow's record number: the header is 1


@pytest.mark.parametrize("compressed", [False, True])
def test_a_field_over_the_limit_rejects_only_its_record(tmp_path: Path, compressed: bool) -> None:
    limit = 2 * BLOCK + MIB  # the record needs the larger block to be read
    huge = "y\n" * (limit // 2) + "zz"  # limit + 2 bytes, spanning limit / 2 lines
    before = "".join(f"{i},a,\n" for i in range(30_000))
    after = "".join(f"{i},b,\n" for i in range(30_000))
    data = (
        "a,b,c\n"
        + before
        + "short\n"  # a bad record just before: reported once
        + "\n"
        + f'huge,"{huge}",\n'
        + "also,short\n"
        + after
    )
    path = tmp_path / ("over.csv.gz" if compressed else "over.csv")
    raw = data.encode()
    path.write_bytes(gzip.compress(raw, 1) if compressed else raw)
    stats = ReadStats()
    rows, bad = load(path, stats=stats, max_field_bytes=limit, batch_rows=7_000)
    huge_line = 30_002 + 2
    after_line = huge_line + limit // 2 + 1
    assert [(b.line, b.reason, b.column) for b in bad] == [
        (30_002, "expected 3 fields, found 1", None),
        (
            huge_line,
            f'value in column "b" is {limit + 2} bytes, over the {limit}-byte limit '
            "(input.max_field_bytes)",
            "b",
        ),
        (after_line, "expected 3 fields, found 2", None),
    ]
    assert bad[1].raw is not None and bad[1].raw.startswith('huge,"y\ny\n')
    assert rows[:30_000] == [(i + 2, [str(i), "a", ""]) for i in range(30_000)]
    assert rows[30_000:] == [(after_line + 1 + i, [str(i), "b", ""]) for i in range(30_000)]
    assert len(stats.restarts) == 1


def test_a_long_first_record_loads(tmp_path: Path) -> None:
    # the record does not fit the first block Arrow reads with the header
    big = "q" * (2 * BLOCK + 1000)
    path = tmp_path / "first.csv"
    path.write_text(f"a,b\n1,{big}\n2,x\n")
    rows, bad = load(path)
    assert rows == [(2, ["1", big]), (3, ["2", "x"])]
    assert bad == []


def test_a_long_field_in_another_encoding(tmp_path: Path) -> None:
    big = "张" * (BLOCK + 10)  # 2 bytes each in GB18030, 3 in UTF-8 (what Arrow reads)
    text = "a,b\n" + "".join(f"{i},李\n" for i in range(5000)) + f"x,{big}\n" + "y,王\n"
    path = tmp_path / "gb.csv"
    path.write_bytes(text.encode("gb18030"))
    stats = ReadStats()
    rows, bad = load(path, stats=stats, encoding="gb18030", batch_rows=1000)
    assert bad == []
    assert rows[-2:] == [(5002, ["x", big]), (5003, ["y", "王"])]
    assert len(rows) == 5002
    assert stats.restarts == [5002]


@pytest.mark.parametrize("seed", range(6))
def test_long_fields_match_a_reference_reader(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    limit = 6000  # larger block: 12,000 bytes

    def field() -> str:
        r = rng.random()
        if r < 0.004:  # longer than the normal block, within the limit
            return '"' + "\n".join("l" * 99 for _ in range(rng.randrange(45, 60))) + '"'
        if r < 0.006:  # over the limit, within the larger block
            return '"' + ",".join("o" * 99 for _ in range(rng.randrange(65, 110))) + '"'
        if r < 0.2:
            return '"' + rng.choice(["a,b", 'q ""x""', "1\n2", ""]) + '"'
        return "".join(rng.choice("xyz09 ") for _ in range(rng.randrange(0, 9)))

    out = ["h1,h2,h3"]
    for _ in range(rng.randrange(2000, 4000)):
        r = rng.random()
        if r < 0.03:
            out.append("")
        elif r < 0.08:
            out.append(",".join(field() for _ in range(rng.choice([1, 2, 4]))))
        else:
            out.append(",".join(field() for _ in range(3)))
    text = "\n".join(out) + "\n"
    good, bad_lines = reference(text, 3)
    path = tmp_path / "r.csv"
    path.write_text(text)
    stats = ReadStats()
    batch_rows = rng.choice([5, 100, 1000])
    rows, bad = load(path, SMALL_BLOCKS, stats, max_field_bytes=limit, batch_rows=batch_rows)
    too_long = {ln for ln, values in good if max(map(len, values)) > limit}
    assert rows == [(ln, values) for ln, values in good if ln not in too_long]
    assert sorted(b.line for b in bad) == sorted(bad_lines + list(too_long))
    assert [b.line for b in bad] == sorted(b.line for b in bad)
    assert len(stats.restarts) == 1


def test_a_record_longer_than_the_larger_block_stops_with_its_line(tmp_path: Path) -> None:
    rows = "".join(f"{i},x\n" for i in range(3000))
    data = "a,b\n" + rows + "bad\n" + '1,"' + "y" * 30_000 + '"\n2,z\n'
    opts = InputOptions(max_field_bytes=1024, batch_rows=500)
    path = tmp_path / "long.csv"
    path.write_text(data)
    source = open_source(path, opts)
    delivered: list[int] = []
    bad: list[int] = []
    with pytest.raises(LoadError, match=r"line 3002: a record is too long to read"):
        for batch in iter_batches(source, opts, tuning=SMALL_BLOCKS):
            delivered.extend(map(int, batch.lines))
            bad.extend(b.line for b in batch.bad)
    assert delivered == list(range(2, 3002))
    assert bad == []  # from the line named on, nothing is delivered


# --------------------------------------------------------------------------------------------
# JSON Lines: runs of lines read by Arrow give what reading each line gives


def load_jsonl(
    path: Path,
    columns: list[str] | None,
    tuning: Tuning | None = None,
    stats: ReadStats | None = None,
    **options: Any,
) -> list[Any]:
    """Everything the loader hands on, batch by batch (or the error it stops with)."""
    opts = InputOptions(**options)
    out: list[Any] = []
    try:
        source = open_source(path, opts)
        for b in iter_batches(source, opts, columns, tuning=tuning, stats=stats):
            bad = [(x.line, x.reason, x.column, x.raw) for x in b.bad]
            out.append((b.table.to_pylist(), b.lines.tolist(), b.raw, bad))
    except LoadError as exc:
        out.append(str(exc))
    return out


def same_as_line_by_line(
    path: Path, columns: list[str] | None, tuning: Tuning | None = None, **options: Any
) -> list[Any]:
    """What the default engine hands on, checked against reading every line one at a time."""
    tuning = tuning or Tuning()
    fast = load_jsonl(path, columns, tuning, **options)
    stats = ReadStats()
    slow = load_jsonl(path, columns, replace(tuning, jsonl_engine="lines"), stats, **options)
    assert fast == slow
    assert stats.arrow_lines == 0
    return fast


ODD_LINES = [
    "",
    "  ",
    ' {"a": "lead"}',
    '{"a": "trail"} ',
    '{"a": "x"}{"a": "y"}',
    '{"a": "x"} {"a": "y"}',
    '{"a": ',
    '"b": 1}',
    '{"a": "x",}',
    "[1, 2]",
    '"text"',
    "null",
    '{"a": NaN}',
    '{"a": "x", "n": NaN}',
    '{"a": "x", "n": -Infinity}',
    '{"a": "NaN and Infinity in a string"}',
    '{"a": 1, "a": 2}',
    '{"a": "x", "z": 1, "z": 2}',
    '{"a": "x", "z": {"d": 1, "d": 2}}',
    '{"a": "x", "z": [{"d": 1, "d": 2}]}',
    '{"a": "x", "\\u0061": "escaped duplicate"}',
    '{"a": "x\\u0000y"}',
    '{"a": "x", "z": "\\u0000 elsewhere"}',
    '{"a": "\\ud800 lone surrogate"}',
    '{"a": "\\ud83d\\ude00 pair"}',
    '{"a": "\\ufffd escaped"}',
    '{"a": "\ufffd literal"}',
    '{"a": "x", "z": ' + "[" * 300 + "]" * 300 + "}",
    '{"a": "x", "z": ' + "[" * 40 + "]" * 40 + "}",
    '{"a": {"nested": 1}}',
    '{"a": [1]}',
    '{"a": true, "b": false}',
    '{"a": 1.50, "b": -0}',
    '{"a": 12345678901234567890123, "b": 1e400}',
    '{"a": "tab\there"}',
    "{}",
    '{"b": "no a"}',
    '\ufeff{"a": "bom"}',
]


def _jsonl_text(rng: random.Random, n: int, odd: float, kinds: dict[str, str]) -> str:
    def value(kind: str) -> str:
        if rng.random() < 0.05:
            return "null"
        if kind == "int":
            return rng.choice(["0", "-0", "7", "-12", "9223372036854775807", "9223372036854775808"])
        if kind == "bool":
            return rng.choice(["true", "false"])
        if kind == "float":
            return rng.choice(["1.5", "1.50", "2e3"])
        if kind == "mixed":
            return rng.choice(['"1"', "1", "true", '"x"'])
        if kind == "nested":
            return rng.choice(['{"x": 1}', "[1, 2]", "[]", "{}"])
        if kind == "date":
            return rng.choice(['"2020-01-01 00:00:00"', '"2021-02-03"'])
        texts = ["x", "", "张三", 'q"q', "a\\b", "u1@example.com", "l" * 1027]  # 1027: see limits
        return json.dumps(rng.choice(texts))

    lines = []
    for _ in range(n):
        if rng.random() < odd:
            lines.append(rng.choice(ODD_LINES))
        else:
            keys = [k for k in kinds if rng.random() < 0.95]
            lines.append("{" + ", ".join(f'"{k}": {value(kinds[k])}' for k in keys) + "}")
    eol = rng.choice(["\n", "\r\n"])
    return eol.join(lines) + rng.choice([eol, ""])


@pytest.mark.parametrize("seed", range(40))
def test_jsonl_runs_read_by_arrow_match_reading_each_line(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    kinds = {k: rng.choice(["str", "str", "int", "bool", "float", "mixed", "nested", "date"])
             for k in ("a", "b", "z", "名")}  # fmt: skip
    text = _jsonl_text(rng, rng.randrange(50, 400), rng.choice([0, 0.01, 0.2]), kinds)
    encoding = rng.choice(["utf-8", "utf-8", "gb18030", "utf-16"])
    data = text.encode(encoding, "surrogatepass" if encoding != "gb18030" else "replace")
    if rng.random() < 0.2:
        at = rng.randrange(len(data))
        data = data[:at] + b"\xff" + data[at:]  # undecodable bytes
    path = tmp_path / "f.jsonl"
    path.write_bytes(data)
    tuning = Tuning(chunk=rng.choice([200, 5000, 4 << 20]))  # lines per block
    options: dict[str, Any] = {"batch_rows": rng.choice([1, 7, 100])}
    if encoding != "utf-8":
        options["encoding"] = encoding
    if rng.random() < 0.3:
        options["max_field_bytes"] = rng.choice([1024, 1030])
    columns = rng.choice([None, ["a"], ["a", "b", "名"], ["b", "missing"]])
    same_as_line_by_line(path, columns, tuning, **options)


def test_jsonl_plain_lines_are_read_by_arrow(tmp_path: Path) -> None:
    lines = [json.dumps({"a": f"v{i}", "b": i, "c": i % 2 == 0, "d": None}) for i in range(5000)]
    path = tmp_path / "plain.jsonl"
    path.write_text("\n".join(lines) + "\n")
    stats = ReadStats()
    got = load_jsonl(path, ["a", "b", "c", "d"], stats=stats, batch_rows=1000)
    rows = [row for batch in got for row in batch[0]]
    assert rows[:3] == [
        {"a": "v0", "b": "0", "c": "true", "d": None},
        {"a": "v1", "b": "1", "c": "false", "d": None},
        {"a": "v2", "b": "2", "c": "true", "d": None},
    ]
    assert [line for batch in got for line in batch[1]] == list(range(1, 5001))
    assert [raw for batch in got for raw in batch[2]] == lines
    assert stats.arrow_lines >= 4990  # zeros (maybe written -0) go one at a time


@pytest.mark.parametrize(
    ("line", "reason", "column"),
    [
        ('{"a": "x", "z": 1, "z": 2}', 'duplicate key "z"', "z"),
        ('{"a": "x", "z": {"d": 1, "d": 2}}', 'duplicate key "d"', "d"),
        ('{"a": "x", "n": NaN}', "invalid JSON: NaN is not a JSON value", None),
        ('{"a": {"b": 1}}', 'nested value in column "a" is not supported', "a"),
        ('{"a": "x\\u0000"}', 'NUL byte in column "a"', "a"),
        ('{"a": "\\ud800"}', 'unpaired surrogate (\\ud800-\\udfff escape) in column "a"', "a"),
        (
            '{"a": "x", "z": ' + "[" * 2000 + "]" * 2000 + "}",
            "invalid JSON: nested too deeply",
            None,
        ),
    ],
)
def test_jsonl_a_bad_line_among_plain_ones(
    tmp_path: Path, line: str, reason: str, column: str | None
) -> None:
    plain = [json.dumps({"a": f"v{i}", "z": i}) for i in range(300)]
    path = tmp_path / "one.jsonl"
    path.write_text("\n".join([*plain[:150], line, *plain[150:]]) + "\n")
    got = same_as_line_by_line(path, ["a"])
    [(rows, lines, _, bad)] = got
    assert [(b[0], b[1], b[2]) for b in bad] == [(151, reason, column)]
    assert lines == [*range(1, 151), *range(152, 302)]
    assert rows[150] == {"a": "v150"}


def test_jsonl_numbers_keep_their_text(tmp_path: Path) -> None:
    values = ["1.50", "-0", "0", "12345678901234567890123", "1e5", "-7", "true"]
    lines = [f'{{"n": {v}, "i": {i}}}' for i, v in enumerate(values * 50)]
    path = tmp_path / "n.jsonl"
    path.write_text("\n".join(lines) + "\n")
    got = same_as_line_by_line(path, ["n", "i"])
    rows = [row for batch in got for row in batch[0]]
    assert [r["n"] for r in rows] == values * 50
    assert [r["i"] for r in rows] == [str(i) for i in range(len(lines))]


def test_a_first_record_of_many_blocks(tmp_path: Path) -> None:
    # Arrow reads every block of it while the file is being opened
    big = "q" * 40_000
    path = tmp_path / "first.csv"
    path.write_text(f"a,b\n1,{big}\n2,x\n")
    rows, bad = load(path, SMALL_BLOCKS, max_field_bytes=30_000)
    assert rows == [(3, ["2", "x"])]
    assert [(b.line, b.column) for b in bad] == [(2, "b")]


def test_jsonl_runs_do_not_depend_on_arrows_error_wording(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrow's messages change between versions: with none of their words, numbers are still
    # learnt and bad lines still found, so Arrow reads all but the bad lines
    real = pajson.read_json

    def reworded(*args: Any, **kwargs: Any) -> Any:
        try:
            return real(*args, **kwargs)
        except pa.ArrowInvalid:
            raise pa.ArrowInvalid("something went wrong") from None

    monkeypatch.setattr(pajson, "read_json", reworded)
    lines = [json.dumps({"a": f"v{i}", "n": i + 1, "b": i % 2 == 0}) for i in range(20_000)]
    for at in (3, 7_001, 15_500):
        lines[at] = '{"a": "x", "a": "y"}'
    path = tmp_path / "numbers.jsonl"
    path.write_text("\n".join(lines) + "\n")
    stats = ReadStats()
    got = load_jsonl(path, ["a", "n", "b"], stats=stats, batch_rows=5000)
    assert got == same_as_line_by_line(path, ["a", "n", "b"], batch_rows=5000)
    assert [b[:2] for batch in got for b in batch[3]] == [
        (4, 'duplicate key "a"'),
        (7_002, 'duplicate key "a"'),
        (15_501, 'duplicate key "a"'),
    ]
    assert stats.arrow_lines == 20_000 - 3


def test_jsonl_a_column_of_numbers_and_strings_costs_few_failed_reads(tmp_path: Path) -> None:
    # every 7th value a string: no run of more than 6 lines is one Arrow can read, and cutting
    # runs down to their bad lines was 14 times slower than reading each line (issue 12)
    lines = [json.dumps({"a": f"v{i}", "n": str(i) if i % 7 == 0 else i}) for i in range(20_000)]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    stats = ReadStats()
    got = load_jsonl(path, ["a", "n"], stats=stats, batch_rows=5000)
    assert got == same_as_line_by_line(path, ["a", "n"], batch_rows=5000)
    assert sum(len(batch[0]) for batch in got) == 20_000
    assert stats.failed_reads <= 70  # was 847
