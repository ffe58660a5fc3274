"""The loader: every record of a real file arrives once, as a row or as an explained bad record."""

from __future__ import annotations

import datetime
import gzip
import json
import os
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import reference, write_file

from importer.errors import ConfigError, LoadError
from importer.load import (
    BadRecord,
    Batch,
    InputOptions,
    Source,
    Tuning,
    expand_inputs,
    iter_batches,
    open_source,
)

#: Arrow blocks of 4 KiB, so a small file crosses many block boundaries
SMALL_BLOCKS = Tuning(block=4096, block_slack=0)


@dataclass
class Loaded:
    source: Source
    batches: list[Batch]
    rows: list[dict[str, Any]]
    lines: list[int]
    bad: list[BadRecord]
    raw: list[str]


def load(
    path: Path, columns: list[str] | None = None, tuning: Tuning | None = None, **options: Any
) -> Loaded:
    opts = InputOptions(**options)
    source = open_source(path, opts)
    batches = list(iter_batches(source, opts, columns, tuning=tuning))
    out = Loaded(source, batches, [], [], [], [])
    for b in batches:
        assert b.table.num_rows == len(b.lines)
        assert b.lines.dtype == np.int64
        assert all(t == pa.string() for t in b.table.schema.types)
        out.rows.extend(b.table.to_pylist())
        out.lines.extend(int(x) for x in b.lines)
        out.bad.extend(b.bad)
        if b.raw is not None:
            out.raw.extend(b.raw)
    return out


def bad_of(loaded: Loaded) -> list[tuple[int, str]]:
    return [(b.line, b.reason) for b in loaded.bad]


def load_error(path: Path, **options: Any) -> str:
    with pytest.raises(LoadError) as info:
        load(path, **options)
    assert str(path) in str(info.value)
    return str(info.value)


# --------------------------------------------------------------------------------------------
# CSV values and line numbers


def test_csv_values_arrive_exactly_as_written(tmp_path: Path) -> None:
    data = (
        "phone,order_id,amount,name,note\n"
        '013800138000,20180808080800001,1.50, 张三 ,"a, ""quoted"" note"\n'
        '0086138,00001,1e5,,"two\nlines"\n'
    )
    got = load(write_file(tmp_path / "a.csv", data))
    assert got.rows == [
        {
            "phone": "013800138000",
            "order_id": "20180808080800001",
            "amount": "1.50",
            "name": " 张三 ",
            "note": 'a, "quoted" note',
        },
        {
            "phone": "0086138",
            "order_id": "00001",
            "amount": "1e5",
            "name": "",
            "note": "two\nlines",
        },
    ]
    assert got.lines == [2, 3]
    assert got.source.format == "csv"
    assert got.source.columns == ["phone", "order_id", "amount", "name", "note"]
    assert got.source.has_header_columns is True
    assert got.batches[0].raw is None


LINES_CSV = (
    "a,b\n"  # 1
    '1,"x\n'  # 2
    'y"\n'  # 3
    "2,3,4\n"  # 4  ragged
    "\n"  # 5  blank
    "5,6\n"  # 6
    '"7\n'  # 7
    "\n"  # 8
    '",8\n'  # 9
    "9\n"  # 10 ragged
    ",\n"  # 11 only a delimiter: empty, skipped
    "10,11\n"  # 12
)


@pytest.mark.parametrize("eol", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_physical_line_numbers(tmp_path: Path, eol: str) -> None:
    got = load(write_file(tmp_path / "lines.csv", LINES_CSV.replace("\n", eol)))
    assert [r["a"] for r in got.rows] == ["1", "5", f"7{eol}{eol}", "10"]
    assert got.lines == [2, 6, 7, 12]
    assert bad_of(got) == [(4, "expected 2 fields, found 3"), (10, "expected 2 fields, found 1")]
    assert [b.raw for b in got.bad] == ["2,3,4", "9"]


def test_multiline_header_shifts_line_numbers(tmp_path: Path) -> None:
    got = load(write_file(tmp_path / "h.csv", 'a,"b\nc"\n1,2\n3,4\n'))
    assert got.source.columns == ["a", "b\nc"]
    assert got.lines == [3, 4]


def test_ragged_row_is_explained_and_the_run_goes_on(tmp_path: Path) -> None:
    got = load(write_file(tmp_path / "r.csv", "a,b,c\n1,2,3\n4,5\n6,7,8,9\n10,11,12\n"))
    assert [r["a"] for r in got.rows] == ["1", "10"]
    assert got.lines == [2, 5]
    assert [(b.line, b.reason, b.raw, b.column) for b in got.bad] == [
        (3, "expected 3 fields, found 2", "4,5", None),
        (4, "expected 3 fields, found 4", "6,7,8,9", None),
    ]


@pytest.mark.parametrize(
    "tail",
    ['3,"4\n5,6\n', '3,"4\n5,6', '3,"x""y\n'],
    ids=["newline-at-end", "no-newline-at-end", "escaped-quote-inside"],
)
def test_unterminated_quote_at_end_of_file(tmp_path: Path, tail: str) -> None:
    got = load(write_file(tmp_path / "u.csv", "a,b\n1,2\n" + tail))
    assert got.rows == [{"a": "1", "b": "2"}]
    [bad] = got.bad
    assert bad.line == 3
    assert bad.reason == "unterminated quoted field: the file ends inside quotes"
    assert bad.column == "b"
    assert bad.raw is not None and bad.raw.startswith('3,"')


def test_unterminated_quote_in_a_short_last_record(tmp_path: Path) -> None:
    got = load(write_file(tmp_path / "u.csv", 'a,b\n1,2\n"5,6'))
    assert got.rows == [{"a": "1", "b": "2"}]
    assert bad_of(got) == [
        (3, "unterminated quoted field at the end of the file (expected 2 fields, found 1)")
    ]


def test_closed_quote_ending_in_a_newline_is_fine(tmp_path: Path) -> None:
    got = load(write_file(tmp_path / "q.csv", 'a,b\n1,"x\n"\n'))
    assert got.rows == [{"a": "1", "b": "x\n"}]
    assert got.bad == []


def test_malformed_quoting_is_a_bad_record_never_repaired(tmp_path: Path) -> None:
    # issue 11 #21: Arrow (and most readers) would send 'bc', 'x' and 'ab\ncdtail'
    data = (
        'a,b,c\n1,"b"c,d\n2,"ok, fine",5\'10"\n3,""x,y\n'
        '4,"ab\ncd"tail,z\n5,"""q""",w\n6,"a"  ,\n7,8,"9"x\n'
    )
    got = load(write_file(tmp_path / "m.csv", data))
    assert got.rows == [
        {"a": "2", "b": "ok, fine", "c": "5'10\""},  # a quote inside a value is a character
        {"a": "5", "b": '"q"', "c": "w"},
    ]
    assert got.lines == [3, 7]
    assert [(b.line, b.reason, b.column, b.raw) for b in got.bad] == [
        (2, 'malformed quoting: text after the closing quote in column "b"', "b", '1,"b"c,d'),
        (4, 'malformed quoting: text after the closing quote in column "b"', "b", '3,""x,y'),
        (5, 'malformed quoting: text after the closing quote in column "b"', "b",
         '4,"ab\ncd"tail,z'),
        (8, 'malformed quoting: text after the closing quote in column "b"', "b", '6,"a"  ,'),
        (9, 'malformed quoting: text after the closing quote in column "c"', "c", '7,8,"9"x'),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("record", "column"),
    [('"2","b"c,"d"', "b"), ('"2","a,"b,"d"', "b"), ('"2","b","d" ', "c"), ('"2",""x,"d"', "b")],
)
def test_malformed_quoting_in_a_fully_quoted_file(tmp_path: Path, record: str, column: str) -> None:
    rows = [f'"{i}","x{i}","y, {i}"' for i in range(1, 1000)]
    rows[500] = record
    got = load(write_file(tmp_path / "q.csv", '"a","b","c"\n' + "\n".join(rows) + "\n"))
    assert [(b.line, b.reason, b.raw) for b in got.bad] == [
        (502, f'malformed quoting: text after the closing quote in column "{column}"', record)
    ]
    assert len(got.rows) == 998 and got.rows[0] == {"a": "1", "b": "x1", "c": "y, 1"}


def test_backslash_escaped_quotes_need_escape_char(tmp_path: Path) -> None:
    data = 'id,name\n1,"Bret \\"Hit Man\\" Hart"\n2,"C:\\\\temp"\n3,"say ""hi"""\n4,a\\,b\n'
    data += '5,\\N\n6,"C:\\temp"\n'  # MySQL's NULL, and a backslash that escapes nothing
    path = write_file(tmp_path / "e.csv", data)
    got = load(path)
    assert [(b.line, b.reason) for b in got.bad] == [
        (2, 'malformed quoting: text after the closing quote in column "name"'),
        (5, "expected 2 fields, found 3"),
    ]
    assert got.bad[0].raw == '1,"Bret \\"Hit Man\\" Hart"'
    got = load(path, escape_char="\\")
    assert got.source.escape_char == "\\"
    assert got.rows == [
        {"id": "1", "name": 'Bret "Hit Man" Hart'},
        {"id": "2", "name": "C:\\temp"},
        {"id": "3", "name": 'say "hi"'},
        {"id": "4", "name": "a,b"},
    ]
    unknown = "(input.escape_char escapes only quotes, delimiters, line ends and itself)"
    assert [(b.line, b.reason, b.column, b.raw) for b in got.bad] == [
        (6, f'unknown escape sequence "\\N" in column "name" {unknown}', "name", "5,\\N"),
        (7, f'unknown escape sequence "\\t" in column "name" {unknown}', "name", '6,"C:\\temp"'),
    ]
    with pytest.raises(ConfigError) as info:
        InputOptions(escape_char='"')
    assert [p.path for p in info.value.problems] == ["input.escape_char"]


@pytest.mark.parametrize("escape", [None, "\\"])
def test_malformed_quoting_is_found_across_pieces_and_blocks(
    tmp_path: Path, escape: str | None
) -> None:
    tuning = replace(SMALL_BLOCKS, chunk=61)  # the stream reads 61 bytes at a time
    rng = random.Random(11)
    good_fields = [('"a,b"', "a,b"), ('"x""y"', 'x"y'), ('""', ""), ('"l1\nl2"', "l1\nl2"),
                   ('""""', '"'), ("plain", "plain"), ('ab"c', 'ab"c'), ("", "")]  # fmt: skip
    if escape:
        good_fields += [('"p\\"q"', 'p"q'), ("r\\,s", "r,s"), ('"t\\\\"', "t\\")]
    bad_fields = ['"b"c', '""x', '"a""b"c', '"m\nn"o', '"q" ']
    lines = ["h1,h2,h3"]
    good: list[tuple[int, list[str]]] = []
    bad: list[int] = []
    line = 2
    for _ in range(1500):
        fields = [rng.choice(good_fields) for _ in range(3)]
        text = ",".join(f for f, _ in fields)
        if rng.random() < 0.1:
            k = rng.randrange(3)
            texts = [f for f, _ in fields]
            texts[k] = rng.choice(bad_fields)
            text = ",".join(texts)
            bad.append(line)
        elif any(v for _, v in fields):  # else a record of empty values: no record
            good.append((line, [v for _, v in fields]))
        lines.append(text)
        line += 1 + text.count("\n")
    got = load(write_file(tmp_path / "r.csv", "\n".join(lines) + "\n"), escape_char=escape,
               max_field_bytes=1024, tuning=tuning)  # fmt: skip
    assert [b.line for b in got.bad] == bad
    assert [b for b in got.bad if not b.reason.startswith("malformed quoting: text after")] == []
    assert [(ln, list(r.values())) for ln, r in zip(got.lines, got.rows, strict=True)] == good


UNTERMINATED = "line 1: the header has an unterminated quote: the quote that opens"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ('"a,b\n1,2\n', f"{UNTERMINATED} column 1 is never closed"),
        ('a,"b\n1,2', f"{UNTERMINATED} column 2 is never closed"),
        ('a,"b"x\n1,2\n',
         "line 1: malformed quoting in the header: text after the closing quote of column 2"),
    ],
)  # fmt: skip
def test_broken_quoting_in_the_header_is_named(tmp_path: Path, data: str, message: str) -> None:
    path = write_file(tmp_path / "h.csv", data)
    assert load_error(path) == f"{path}: {message}"


def test_unterminated_quote_in_a_long_header(tmp_path: Path) -> None:
    path = write_file(tmp_path / "h.csv", 'a,"b\n' + "1,2\n" * 400_000)
    assert load_error(path) == (
        f"{path}: line 1: the header has an unterminated quote: the quote that opens column 2 "
        "is never closed within the first 1048576 bytes"
    )


@pytest.mark.parametrize(
    ("name", "data", "options", "expected"),
    [
        ("semi.csv", "a;b\n1,5;2\n", {"delimiter": ";"}, {"a": "1,5", "b": "2"}),
        ("pipe.csv", 'a|b\n1|"x|y"\n', {"delimiter": "|"}, {"a": "1", "b": "x|y"}),
        ("tabs.tsv", "a\tb\n1,5\t2\n", {}, {"a": "1,5", "b": "2"}),
        ("tabs.txt", "a\tb\n1\t2\n", {"format": "tsv"}, {"a": "1", "b": "2"}),
    ],
    ids=["semicolon", "pipe", "tsv-extension", "tsv-format"],
)
def test_delimiters(
    tmp_path: Path, name: str, data: str, options: dict[str, Any], expected: dict[str, str]
) -> None:
    got = load(write_file(tmp_path / name, data), **options)
    assert got.rows == [expected]
    assert got.source.delimiter == (options.get("delimiter") or ("\t" if "t" in name[-3:] else ","))


def test_header_only_file_has_no_rows(tmp_path: Path) -> None:
    for i, data in enumerate(["a,b\n", "a,b", "a,b\r\n\r\n", "a,b\r\n", "a,b\r"]):
        got = load(write_file(tmp_path / f"h{i}.csv", data))
        assert got.source.columns == ["a", "b"]
        assert got.rows == [] and got.bad == []


def test_blank_lines_are_not_records(tmp_path: Path) -> None:
    got = load(write_file(tmp_path / "b.csv", "a\n\n1\n\n\n2\n\n"))
    assert got.rows == [{"a": "1"}, {"a": "2"}]
    assert got.lines == [3, 6]


def test_nul_byte_is_a_bad_record(tmp_path: Path) -> None:
    got = load(write_file(tmp_path / "n.csv", b"a,b\n1,x\x00y\n2,z\n"))
    assert got.rows == [{"a": "2", "b": "z"}]
    assert [(b.line, b.reason, b.column) for b in got.bad] == [(2, 'NUL byte in column "b"', "b")]


def test_field_over_the_limit_rejects_the_record_not_the_file(tmp_path: Path) -> None:
    big = "x" * (10 * 1024 * 1024 + 1)
    got = load(write_file(tmp_path / "big.csv", f"a,b\n1,ok\n2,{big}\n3,ok\n"))
    assert [r["a"] for r in got.rows] == ["1", "3"]
    assert got.lines == [2, 4]
    [bad] = got.bad
    assert (bad.line, bad.column) == (3, "b")
    assert bad.reason == (
        'value in column "b" is 10485761 bytes, over the 10485760-byte limit '
        "(input.max_field_bytes)"
    )


def test_field_limit_is_configurable(tmp_path: Path) -> None:
    data = f"a,b\n1,{'1' * 1024}\n2,{'1' * 1025}\n"
    got = load(write_file(tmp_path / "f.csv", data), max_field_bytes=1024)
    assert got.lines == [2]
    assert bad_of(got) == [(3, 'value in column "b" is 1025 bytes, over the 1024-byte limit '
                               "(input.max_field_bytes)")]  # fmt: skip


# --------------------------------------------------------------------------------------------
# Encodings


def test_utf8_bom_is_stripped(tmp_path: Path) -> None:
    got = load(write_file(tmp_path / "bom.csv", "\ufeffphone,name\n013800138000,张三\n"))
    assert got.source.encoding == "utf-8-sig"
    assert got.source.columns == ["phone", "name"]
    assert got.rows == [{"phone": "013800138000", "name": "张三"}]


def test_gb18030_round_trips_chinese(tmp_path: Path) -> None:
    text = "手机号,姓名,城市\n13800138000,张三,北京\n13800138001,李四𠀀,上海\n"
    got = load(write_file(tmp_path / "gb.csv", text, encoding="gb18030"))
    assert got.source.encoding == "gb18030"
    assert got.source.columns == ["手机号", "姓名", "城市"]
    assert got.rows == [
        {"手机号": "13800138000", "姓名": "张三", "城市": "北京"},
        {"手机号": "13800138001", "姓名": "李四𠀀", "城市": "上海"},
    ]


@pytest.mark.parametrize(
    ("encoding", "detected"),
    [("utf-8", "utf-8"), ("gb18030", "gb18030"), ("gbk", "gb18030"), ("utf-16", "utf-16")],
)
def test_auto_detects_the_encoding(tmp_path: Path, encoding: str, detected: str) -> None:
    got = load(write_file(tmp_path / "x.csv", "姓名,城市\n张三,北京\n", encoding=encoding))
    assert got.source.encoding == detected
    assert got.rows == [{"姓名": "张三", "城市": "北京"}]


def test_pure_ascii_is_utf8(tmp_path: Path) -> None:
    assert load(write_file(tmp_path / "a.csv", "a\n1\n")).source.encoding == "utf-8"


def test_explicit_encoding_wins(tmp_path: Path) -> None:
    got = load(
        write_file(tmp_path / "l.csv", "name\ncafé\n", encoding="latin-1"), encoding="latin-1"
    )
    assert got.source.encoding == "iso8859-1"
    assert got.rows == [{"name": "café"}]


def test_undecodable_start_is_refused_with_advice(tmp_path: Path) -> None:
    message = load_error(write_file(tmp_path / "x.csv", b"name\n\x80\xff\x80\n"))
    assert "cannot tell the encoding" in message and "input.encoding" in message


def _utf8_rows(n: int) -> str:
    return "".join(f"{i},name_{i:06d},北京市朝阳区第{i}号\n" for i in range(n))


def test_wrong_encoding_later_in_the_file_is_a_bad_record_not_garbled(tmp_path: Path) -> None:
    # more than the 1 MiB the encoding is chosen from, then one GB18030 record
    head = "id,name,city\n" + _utf8_rows(30_000)
    assert len(head.encode()) > 1 << 20
    data = head.encode() + "30000,王五,上海\n".encode("gb18030") + b"30001,ok,ok\n"
    got = load(write_file(tmp_path / "mixed.csv", data))
    assert got.source.encoding == "utf-8"
    assert len(got.rows) == 30_001
    assert got.rows[-1] == {"id": "30001", "name": "ok", "city": "ok"}
    [bad] = got.bad
    assert (bad.line, bad.column) == (30_002, "name")
    assert bad.reason == 'undecodable bytes (not valid utf-8) in column "name"'
    assert bad.raw is not None and bad.raw.startswith("30000,\ufffd")
    assert not any("\ufffd" in v for r in got.rows for v in r.values())


def test_undecodable_gb18030_record(tmp_path: Path) -> None:
    data = "a,b\n1,张三\n".encode("gb18030") + b"2,\x80x\n" + "3,李四\n".encode("gb18030")
    got = load(write_file(tmp_path / "g.csv", data), encoding="gb18030")
    assert got.rows == [{"a": "1", "b": "张三"}, {"a": "3", "b": "李四"}]
    assert bad_of(got) == [(3, 'undecodable bytes (not valid gb18030) in column "b"')]


def test_literal_replacement_character_is_refused(tmp_path: Path) -> None:
    got = load(write_file(tmp_path / "r.csv", "a,b\n1,ok\n2,bad\ufffd\n"))
    assert got.lines == [2]
    assert bad_of(got) == [
        (3, 'replacement character U+FFFD in column "b" (the text was garbled before export)')
    ]


def test_utf16_excel_unicode_text(tmp_path: Path) -> None:
    got = load(
        write_file(tmp_path / "excel.txt", "姓名\t城市\r\n张三\t北京\r\n", encoding="utf-16"),
        format="tsv",
    )
    assert got.source.encoding == "utf-16"
    assert got.rows == [{"姓名": "张三", "城市": "北京"}]


# --------------------------------------------------------------------------------------------
# Whole-file problems


def test_empty_file(tmp_path: Path) -> None:
    assert load_error(write_file(tmp_path / "e.csv", b"")).endswith("file is empty")


def test_missing_file(tmp_path: Path) -> None:
    assert "no such file" in load_error(tmp_path / "nope.csv")


def test_duplicate_header_names(tmp_path: Path) -> None:
    message = load_error(write_file(tmp_path / "d.csv", "phone,name,phone,x,x\n1,2,3,4,5\n"))
    assert 'duplicate column names in the header: "phone" (columns 1, 3); "x" (columns 4, 5)' in (
        message
    )


def test_parquet_named_csv(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    pq.write_table(pa.table({"a": [1]}), path)
    assert "this is a Parquet file, not CSV" in load_error(path)


def test_gzip_named_csv(tmp_path: Path) -> None:
    message = load_error(write_file(tmp_path / "g.csv", gzip.compress(b"a\n1\n")))
    assert "gzip-compressed but its name does not end in .gz; rename it to g.csv.gz" in message


def test_binary_garbage_named_csv(tmp_path: Path) -> None:
    data = random.Random(1).randbytes(4096)
    message = load_error(write_file(tmp_path / "b.csv", data))
    assert "binary data" in message or "cannot tell the encoding" in message


def test_xlsx_named_csv(tmp_path: Path) -> None:
    message = load_error(write_file(tmp_path / "x.csv", b"PK\x03\x04" + b"\x00" * 100))
    assert "a ZIP archive (an Excel .xlsx workbook?)" in message


def test_unknown_extension(tmp_path: Path) -> None:
    assert "set input.format" in load_error(write_file(tmp_path / "x.dat", "a\n1\n"))
    assert load(write_file(tmp_path / "y.dat", "a\n1\n"), format="csv").rows == [{"a": "1"}]


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError) as info:
        InputOptions(format="xml", delimiter="ab", batch_rows=0, encoding="nope")
    paths = [p.path for p in info.value.problems]
    assert paths == ["input.format", "input.encoding", "input.delimiter", "input.batch_rows"]


# --------------------------------------------------------------------------------------------
# gzip


def test_gzip_csv_and_jsonl(tmp_path: Path) -> None:
    got = load(write_file(tmp_path / "a.csv.gz", gzip.compress("a,b\n1,张三\n".encode())))
    assert got.source.compressed and got.rows == [{"a": "1", "b": "张三"}]
    got = load(write_file(tmp_path / "a.jsonl.gz", gzip.compress(b'{"a": 1}\n')))
    assert got.source.format == "jsonl" and got.rows == [{"a": "1"}]


def test_truncated_gzip_is_refused_before_reading(tmp_path: Path) -> None:
    data = gzip.compress(("a,b\n" + "1,2\n" * 10_000).encode())
    message = load_error(write_file(tmp_path / "t.csv.gz", data[: len(data) // 2]))
    assert "truncated gzip file" in message


def test_gzip_bomb_guard(tmp_path: Path) -> None:
    path = write_file(tmp_path / "bomb.csv.gz", gzip.compress(b"a\n" + b"1\n" * 100_000))
    assert "max_decompressed_bytes" in load_error(path, max_decompressed_bytes=10_000)


@pytest.mark.parametrize("name", ["t.csv.gz", "t.jsonl.gz"])
def test_gzip_truncated_after_opening_delivers_what_was_read(
    tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    # open_source checked the whole file; it is cut short before it is read
    rows = "".join(f'{{"a": "{i}"}}\n' if "jsonl" in name else f"{i}\n" for i in range(300_000))
    text = ("" if "jsonl" in name else "a\n") + rows
    data = gzip.compress(text.encode(), mtime=0)
    path = write_file(tmp_path / name, data)
    opts = InputOptions(batch_rows=10_000)
    source = open_source(path, opts)
    path.write_bytes(data[: len(data) * 3 // 4])
    delivered: list[int] = []
    bad: list[BadRecord] = []
    with pytest.raises(LoadError, match="truncated gzip file"):
        for batch in iter_batches(source, opts, ["a"]):
            delivered.extend(int(x) for x in batch.lines)
            bad.extend(batch.bad)
    assert len(delivered) > 100_000
    assert delivered == list(range(delivered[0], delivered[0] + len(delivered)))
    if name.endswith("csv.gz"):
        # the last record read may be cut short: it is reported, not delivered
        assert [(b.line, b.reason) for b in bad] == [
            (delivered[-1] + 1, "incomplete record: the file breaks off here")
        ]
    # the kept error held Arrow's file object through its traceback: closing the reader then
    # waited out its whole grace period and warned
    assert "did not stop in time" not in caplog.text


def test_gz_that_is_not_gzip(tmp_path: Path) -> None:
    assert "not gzip-compressed" in load_error(write_file(tmp_path / "n.csv.gz", "a\n1\n"))


# --------------------------------------------------------------------------------------------
# JSON Lines


JSONL = (
    '{"phone": "013800138000", "n": 12, "f": 1.50, "g": 998.0, "ok": true, "no": false, '
    '"z": null}\n'
    "\n"
    '{"phone": "1", "n": 1e2}\n'
    '{"phone": 2, "phone": 3}\n'
    '{"phone": NaN}\n'
    '{"phone": -Infinity}\n'
    "[1, 2]\n"
    '"text"\n'
    '{"phone": {"nested": 1}}\n'
    '{"phone": "4", "other": [1, {"deep": 2}]}\n'
    '{"phone": "5", "n": "12"\n'
    '{"phone": "7}\n'
    "   \n"
    '{"phone": "6"}\r\n'
)


def test_jsonl_records_and_reasons(tmp_path: Path) -> None:
    cols = ["phone", "n", "f", "g", "ok", "no", "z", "missing"]
    got = load(write_file(tmp_path / "a.jsonl", JSONL), columns=cols)
    assert got.source.format == "jsonl" and got.source.has_header_columns is False
    assert got.source.columns == ["phone", "n", "f", "g", "ok", "no", "z"]
    assert got.rows[0] == {
        "phone": "013800138000",
        "n": "12",
        "f": "1.50",
        "g": "998.0",
        "ok": "true",
        "no": "false",
        "z": None,
        "missing": None,
    }
    assert [r["phone"] for r in got.rows] == ["013800138000", "1", "4", "6"]
    assert got.rows[1]["n"] == "1e2"
    assert got.lines == [1, 3, 10, 14]
    assert got.raw == [JSONL.split("\n")[i - 1].rstrip("\r") for i in got.lines]
    assert bad_of(got) == [
        (4, 'duplicate key "phone"'),
        (5, "invalid JSON: NaN is not a JSON value"),
        (6, "invalid JSON: -Infinity is not a JSON value"),
        (7, "line is not a JSON object"),
        (8, "line is not a JSON object"),
        (9, 'nested value in column "phone" is not supported'),
        (11, "invalid JSON: Expecting ',' delimiter at column 25"),
        (12, "invalid JSON: Unterminated string starting at column 11"),
    ]
    assert got.bad[0].column == "phone" and got.bad[5].column == "phone"
    assert got.bad[6].raw == '{"phone": "5", "n": "12"'


def test_jsonl_deep_nesting_is_a_bad_record(tmp_path: Path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    got = load(
        write_file(tmp_path / "d.jsonl", '{"a": 1}\n' + deep + '\n{"a": 2}\n'), columns=["a"]
    )
    assert got.lines == [1, 3]
    assert bad_of(got) == [(2, "invalid JSON: nested too deeply")]


def test_jsonl_encodings(tmp_path: Path) -> None:
    got = load(write_file(tmp_path / "bom.jsonl", '\ufeff{"名": "张三"}\n'), columns=["名"])
    assert got.rows == [{"名": "张三"}]
    data = '{"a": "张三"}\n'.encode("gb18030") + b'{"a": "\x80"}\n{"b": 1}\n'
    got = load(write_file(tmp_path / "gb.jsonl", data), columns=["a"], encoding="gb18030")
    assert got.rows == [{"a": "张三"}, {"a": None}]
    assert bad_of(got) == [(2, 'undecodable bytes (not valid gb18030) in column "a"')]


def test_jsonl_utf16(tmp_path: Path) -> None:
    path = write_file(
        tmp_path / "u.jsonl", '{"名": "张三"}\r\n\r\n{"名": 1}\r\n', encoding="utf-16"
    )
    got = load(path, columns=["名"])
    assert got.source.encoding == "utf-16"
    assert got.rows == [{"名": "张三"}, {"名": "1"}]
    assert got.lines == [1, 3]


def test_jsonl_overlong_line_is_skipped_not_held(tmp_path: Path) -> None:
    long = '{"a": "' + "x" * 3_000_000 + '"}'
    got = load(write_file(tmp_path / "l.jsonl", f'{{"a": 1}}\n{long}\n{{"a": 2}}\n'), columns=["a"],
               max_field_bytes=1024)  # fmt: skip
    assert got.rows == [{"a": "1"}, {"a": "2"}]
    assert [(b.line, b.reason, b.raw) for b in got.bad] == [
        (2, "line longer than 1050624 bytes", None)
    ]


def test_jsonl_nul_and_field_limit(tmp_path: Path) -> None:
    data = f'{{"a": "x\\u0000y"}}\n{{"a": "{"1" * 1025}"}}\n{{"a": "{"1" * 1024}"}}\n'
    got = load(write_file(tmp_path / "n.jsonl", data), columns=["a"], max_field_bytes=1024)
    assert got.lines == [3]
    assert [b.reason for b in got.bad] == [
        'NUL byte in column "a"',
        'value in column "a" is 1025 bytes, over the 1024-byte limit (input.max_field_bytes)',
    ]


# --------------------------------------------------------------------------------------------
# Parquet


def test_parquet_columns_become_text(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    table = pa.table(
        {
            "id": pa.array([13800138000, 2, None], pa.int64()),
            "amount": pa.array([998.0, 1.5, float("nan")]),
            "at": pa.array(
                [
                    datetime.datetime(2024, 3, 1, 9, 15),
                    datetime.datetime(2024, 3, 1, 9, 15, 0, 5000),
                    None,
                ],
                pa.timestamp("us"),
            ),
            "day": pa.array([datetime.date(2024, 3, 1)] * 3),
            "flag": pa.array([True, False, None]),
            "name": pa.array(["张三", None, "x"]).dictionary_encode(),
            "blob": pa.array([b"ok", b"\xff", b"fine"], pa.binary()),
        }
    )
    pq.write_table(table, path)
    got = load(path)
    assert got.source.encoding == "binary" and got.source.has_header_columns
    assert got.rows == [
        {"id": "13800138000", "amount": "998", "at": "2024-03-01 09:15:00", "day": "2024-03-01",
         "flag": "true", "name": "张三", "blob": "ok"},
        {"id": None, "amount": None, "at": None, "day": "2024-03-01", "flag": None, "name": "x",
         "blob": "fine"},
    ]  # fmt: skip
    assert got.lines == [1, 3]
    assert [(b.line, b.reason, b.column) for b in got.bad] == [
        (2, 'undecodable bytes (not valid utf-8) in column "blob"', "blob")
    ]


def test_parquet_zoned_and_fractional_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    at = datetime.datetime(2024, 3, 1, 1, 0, tzinfo=datetime.UTC)
    pq.write_table(
        pa.table(
            {
                "z": pa.array([at], pa.timestamp("s", "Asia/Shanghai")),
                "f": pa.array([datetime.datetime(2024, 3, 1, 9, 15, 0, 5000)], pa.timestamp("ms")),
            }
        ),
        path,
    )
    assert load(path).rows == [{"z": "2024-03-01 09:00:00+0800", "f": "2024-03-01 09:15:00.005"}]


def test_parquet_nested_columns_are_refused_only_when_read(tmp_path: Path) -> None:
    path = tmp_path / "n.parquet"
    pq.write_table(pa.table({"a": [1, 2], "tags": [["x"], []], "s": [{"k": 1}, None]}), path)
    message = load_error(path)  # every column asked for
    assert "nested Parquet columns are not supported: tags (list<element: string>), s (struct" in (
        message
    )
    assert message.endswith("the config reads them: export flat columns of text, numbers, "
                            "booleans or dates")  # fmt: skip
    got = load(path, ["a"])  # the job reads only a: the others stay in the original rows
    assert got.rows == [{"a": "1"}, {"a": "2"}]
    assert got.batches[0].original is not None
    assert got.batches[0].original.column_names == ["a", "tags", "s"]


def test_parquet_batches_and_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"a": list(range(25))}), path, row_group_size=7)
    got = load(path, batch_rows=10)
    assert all(b.table.num_rows <= 10 for b in got.batches)
    assert got.lines == list(range(1, 26))
    assert [r["a"] for r in got.rows] == [str(i) for i in range(25)]


def test_not_really_parquet(tmp_path: Path) -> None:
    assert "not a Parquet file" in load_error(write_file(tmp_path / "x.parquet", "a,b\n1,2\n"))


# --------------------------------------------------------------------------------------------
# Finding files


def test_expand_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    for name in ["b.csv", "a.jsonl", "c.csv.gz", "d.parquet", "notes.md", ".hidden.csv"]:
        (d / name).write_text("x")
    (d / "sub" / "e.csv").write_text("x")
    assert [p.name for p in expand_inputs([d])] == ["a.jsonl", "b.csv", "c.csv.gz", "d.parquet"]
    monkeypatch.chdir(tmp_path)
    got = expand_inputs(["in/*.csv", "in/b.csv", d / "a.jsonl", "in/sub"])
    assert [str(p) for p in got] == [
        str(d / "a.jsonl"),
        os.path.join("in", "b.csv"),
        os.path.join("in", "sub", "e.csv"),
    ]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("missing.csv", "no such file or directory"),
        ("*.nothing", "no file matches this pattern"),
        ("empty", "directory has no input files"),
    ],
)
def test_expand_inputs_refuses_what_matches_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str, message: str
) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LoadError, match=message):
        expand_inputs([path])


# --------------------------------------------------------------------------------------------
# Batches over large files


def test_batches_are_bounded_and_lose_nothing(tmp_path: Path) -> None:
    total = 120_000
    lines = ["phone,name,n"]
    broken = set(range(7, total, 997))
    for i in range(total):
        if i in broken:
            lines.append(f"{i},only-two")
        elif i % 5000 == 1:
            lines.append(f'{i},"two\nlines",x')
        else:
            lines.append(f"{i:011d},name{i},{i}")
    got = load(write_file(tmp_path / "big.csv", "\n".join(lines) + "\n"), batch_rows=50_000)
    assert len(got.batches) >= 3
    assert [b.index for b in got.batches] == list(range(len(got.batches)))
    assert all(b.table.num_rows + len(b.bad) <= 50_000 for b in got.batches)
    assert len(got.rows) + len(got.bad) == total
    assert len(got.bad) == len(broken)
    # file order inside and across batches, bad records in their own batch's stretch
    every = sorted(got.lines + [b.line for b in got.bad])
    assert len(set(every)) == total
    for prev, nxt in zip(got.batches, got.batches[1:], strict=False):
        stretch_end = max([*map(int, prev.lines), *(b.line for b in prev.bad)])
        start = min([*map(int, nxt.lines), *(b.line for b in nxt.bad)])
        assert stretch_end < start
    # line numbers: every quoted newline pushes later records one line down
    first_bad = min(broken)
    assert got.bad[0].line == first_bad + 2 + sum(1 for i in range(first_bad) if i % 5000 == 1)
    assert got.lines[-1] == total + 1 + len(range(1, total, 5000))


def _random_csv(rng: random.Random, n: int) -> tuple[str, list[tuple[int, list[str]]], list[int]]:
    """A CSV with quoted delimiters, quotes and newlines, ragged rows and blank lines, and the
    records a straightforward reader finds in it: good (line, values) and bad lines."""

    def field() -> str:
        r = rng.random()
        if r < 0.1:
            return ""
        if r < 0.3:
            inner = rng.choice(["a,b", 'say ""hi""', "one\ntwo", "x\n\ny", "张三"])
            return f'"{inner}"'
        return "".join(rng.choice("abc019 ") for _ in range(rng.randrange(1, 12)))

    out = ["h1,h2,h3"]
    for _ in range(n):
        r = rng.random()
        if r < 0.03:
            out.append("")
        elif r < 0.06:
            out.append(",".join(field() for _ in range(rng.choice([1, 2, 4, 5]))))
        else:
            out.append(",".join(field() for _ in range(3)))
    text = "\n".join(out) + rng.choice(["\n", ""])
    good, bad = reference(text, 3)
    return text, good, bad


@pytest.mark.parametrize(
    ("seed", "batch_rows", "crlf_semicolon_gb"),
    [(0, 7, False), (1, 1000, False), (2, 50_000, False), (41, 3, True), (81, 1000, True)],
)
def test_matches_a_reference_reader_across_blocks(
    tmp_path: Path, seed: int, batch_rows: int, crlf_semicolon_gb: bool
) -> None:
    rng = random.Random(seed)
    text, good, bad = _random_csv(rng, rng.randrange(1000, 3000))
    options: dict[str, Any] = {"batch_rows": batch_rows, "max_field_bytes": 1024}
    data = text.encode()
    if crlf_semicolon_gb:  # the generated fields hold no ';'
        text = text.replace(",", ";").replace("\n", "\r\n")
        good = [(ln, [v.replace(",", ";").replace("\n", "\r\n") for v in r]) for ln, r in good]
        data, options["delimiter"] = text.encode("gb18030"), ";"
    got = load(write_file(tmp_path / "r.csv", data), tuning=SMALL_BLOCKS, **options)
    assert [(ln, list(r.values())) for ln, r in zip(got.lines, got.rows, strict=True)] == good
    assert [b.line for b in got.bad] == bad


def test_quoted_crlf_across_a_block_boundary(tmp_path: Path) -> None:
    # Arrow drops the LF of a CR|LF split between blocks, even inside quotes
    # (apache/arrow#51368): the stream never ends a block with CR.
    head = "a,b\r\n" + "0,x\r\n" * 800
    pad = 4095 - len(head) - len('1,"ab')
    data = head + "0," + "y" * (pad - 4) + '\r\n1,"ab\r\ncd"\r\n2,z\r\n'
    assert data.index("ab\r\ncd") + 2 == 4095
    got = load(write_file(tmp_path / "crlf.csv", data), max_field_bytes=1024, tuning=SMALL_BLOCKS)
    assert got.rows[-2:] == [{"a": "1", "b": "ab\r\ncd"}, {"a": "2", "b": "z"}]
    assert got.lines[-2:] == [803, 805]


def test_a_batch_may_hold_only_bad_records(tmp_path: Path) -> None:
    got = load(write_file(tmp_path / "bad.csv", "a,b\n" + "x\n" * 10 + "1,2\n"), batch_rows=3)
    assert [(b.table.num_rows, len(b.bad)) for b in got.batches] == [(0, 3), (0, 3), (0, 3), (1, 1)]
    assert [b.line for b in got.bad] == list(range(2, 12))
    assert got.lines == [12]


def test_a_record_longer_than_a_block_stops_with_its_line(tmp_path: Path) -> None:
    rows = "".join(f"{i},x\n" for i in range(2000))
    data = "a,b\n" + rows + '1,"' + "y" * 20_000 + '"\n2,z\n'
    opts = InputOptions(max_field_bytes=1024, batch_rows=500)
    source = open_source(write_file(tmp_path / "long.csv", data), opts)
    delivered = 0
    with pytest.raises(LoadError, match=r"line 2002: a record is too long to read"):
        for batch in iter_batches(source, opts, tuning=SMALL_BLOCKS):
            delivered += batch.table.num_rows
    assert 0 < delivered <= 2000


def test_sample_files_load(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent / "sample_data"
    for path in expand_inputs([root]):
        source = open_source(path, InputOptions())
        columns = None if source.format != "jsonl" else source.columns
        batches = list(iter_batches(source, InputOptions(), columns))
        assert sum(b.table.num_rows for b in batches) > 0
        if path.name == "order_events.jsonl":
            first = batches[0].table.to_pylist()[0]
            assert first["订单号"] == "20180808080800001"
            assert json.loads(batches[0].raw[0])["订单号"] == "20180808080800001"  # type: ignore[index]


def test_stopping_early_releases_the_reader(tmp_path: Path) -> None:
    # Arrow's reader thread waits for the consumer; closing the generator must free it.
    path = write_file(tmp_path / "many.csv", "a,b\n" + "".join(f"{i},x\n" for i in range(200_000)))
    opts = InputOptions(batch_rows=100, max_field_bytes=1024)
    source = open_source(path, opts)
    for _ in range(3):
        batches = iter_batches(source, opts, tuning=SMALL_BLOCKS)
        first = next(batches)
        batches.close()  # type: ignore[attr-defined]
        assert list(first.lines) == list(range(2, 102))


def test_load_imports_nothing_above_it() -> None:
    # the first stage: only the bottom modules (errors) and its own package
    import ast

    import importer.load

    allowed = {"errors"}
    for path in Path(importer.load.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 2:
                assert (node.module or "") in allowed, (path.name, node.module)
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert not (node.module or "").startswith("importer"), (path.name, node.module)
