"""Values at the edges a verifier found (issue 14): no cell is read as a number or a key a
person would not read in it, and every refusal says why."""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from importer.job import load_job, parse_job
from importer.map import Mapped, Mapper


def mapped(column: dict[str, Any], cells: list[str]) -> Mapped:
    cfg = parse_job(
        {
            "job": {"kind": "user", "primary_keys": ["uid"]},
            "columns": {"uid": {"from": "id"}, "v": {"from": "值", **column}},
        }
    )
    t = pa.table(
        {
            "id": pa.array([f"u{i}" for i in range(len(cells))], pa.string()),
            "值": pa.array(cells, pa.string()),
        }
    )
    return Mapper(cfg).map_table(t, np.arange(2, len(cells) + 2, dtype=np.int64))


def outcome(m: Mapped) -> list[Any]:
    """Per row: the value sent (None when left out) or the reason of the rejected row."""
    assert m.items is not None
    return [
        json.loads(item).get("v") if item is not None else m.reason[i]
        for i, item in enumerate(m.items)
    ]


COLUMN = "column 值 (property v)"


@pytest.mark.parametrize("type_", ["integer", "number"])
@pytest.mark.parametrize("number_format", [None, {"thousands": ","}, "1.234,56"])
def test_one_sign_only(type_: str, number_format: Any) -> None:
    spec: dict[str, Any] = {"type": type_}
    if number_format is not None:
        spec["number_format"] = number_format
    m = mapped(spec, ["+-1", "+1", "-1"])
    got = outcome(m)
    assert got[1:] == [1, -1]
    assert isinstance(got[0], str) and got[0].startswith(f"{COLUMN}: '+-1' is not a")


@pytest.mark.parametrize(
    ("number_format", "cell", "why"),
    [
        ({"thousands": ","}, "0,999", "a thousands separator ',' after a leading 0"),
        ({"thousands": ","}, "-0,999", "a thousands separator ',' after a leading 0"),
        ({"thousands": ","}, "00,999", "a thousands separator ',' after a leading 0"),
        ("1.234,56", "0.999", "a thousands separator '.' after a leading 0"),
    ],
)
def test_a_leading_zero_group_is_no_thousands(number_format: Any, cell: str, why: str) -> None:
    m = mapped({"type": "number", "number_format": number_format}, [cell, "1,299.5", "1.299,5"])
    mark = "," if isinstance(number_format, dict) else "."
    assert outcome(m)[0] == (
        f"{COLUMN}: '{cell}' is not a number: {why} (is '{mark}' the decimal mark here?)"
    )


def test_an_integer_column_is_not_told_to_read_a_fraction_as_thousands() -> None:
    m = mapped({"type": "integer"}, ["0.999", "1,000.50", "12,5", "1.234", "12,00"])
    assert outcome(m) == [
        f"{COLUMN}: '0.999' is not an integer: it has a fraction",
        f"{COLUMN}: '1,000.50' is not an integer",
        f"{COLUMN}: '12,5' is not an integer",
        f"{COLUMN}: '1.234' is not an integer: it has a thousands separator '.'; "
        'add number_format: {thousands: "."} to this column',
        f"{COLUMN}: '12,00' is not an integer: it has a decimal comma; "
        'add number_format: {decimal: ","} to this column',
    ]


@pytest.mark.parametrize(
    ("number_format", "cell"),
    [
        (None, "9223372036854775808"),
        (None, "-9223372036854775809"),
        ({"thousands": ","}, "9,223,372,036,854,775,808"),
        ({"thousands": " ", "decimal": ","}, "9 223 372 036 854 775 808,00"),
    ],
)
def test_an_integer_past_64_bits_says_so(number_format: Any, cell: str) -> None:
    spec: dict[str, Any] = {"type": "integer"}
    if number_format is not None:
        spec["number_format"] = number_format
    m = mapped(spec, [cell])
    assert outcome(m) == [
        f"{COLUMN}: '{cell}' is not an integer: "
        "outside the 64-bit range (-9223372036854775808 to 9223372036854775807)"
    ]


DIGITS_OTHER = "has characters other than the digits 0-9, spaces, dashes, dots, parentheses and a +"


def test_digits_makes_no_key_of_two_numbers_a_mask_or_an_amount() -> None:
    cells = [
        "13800138000/13900139000",
        "13800138000;13900139000",
        "138****8000",
        "1,299.00",
        "13800138000#123",
        "١٣٨٠٠١٣٨٠٠٠",  # Arabic-Indic digits: not 0-9
        "(0755) 1234-5678",
        "+86 138—0013–8000",
    ]
    m = mapped({"transform": ["strip", "digits"]}, cells)
    assert outcome(m) == [f"{COLUMN}: '{c}' {DIGITS_OTHER}" for c in cells[:6]] + [
        "075512345678",
        "+8613800138000",
    ]
    assert m.identity[:6] == [f"uid=u{i}" for i in range(6)]


@pytest.mark.parametrize("transform", ["digits", "phone_cn"])
def test_full_width_digits_and_spreadsheet_floats_are_the_number_written(transform: str) -> None:
    cells = ["１３８００１３８０００", "138 ００１３ 8000", "13800138000.0", " 13800138000.00 "]
    m = mapped({"transform": ["strip", transform]}, cells)
    assert outcome(m) == ["13800138000"] * 4


@pytest.mark.parametrize(
    ("spec", "cell", "why"),
    [
        ({}, "2024-01-01 24:00:00", "is no such time (there is no hour 24; hours go 0-23)"),
        ({}, "2024-01-01 23:60", "is no such time (there is no minute 60; minutes go 0-59)"),
        (
            {},
            "2024-01-01T23:59:60+08:00",
            "is no such time (there is no second 60; seconds go 0-59)",
        ),
        (
            {"format": "%Y-%m-%d %H:%M:%S"},
            "2024-01-01 24:00:00",
            "is no such time (there is no hour 24; hours go 0-23)",
        ),
        ({}, "0000-01-01", "is no such date (there is no year 0)"),
        ({}, "0000-00-00 00:00:00", "is no such date (there is no year 0)"),
        ({"format": "%Y-%m-%d"}, "0000-01-01", "is no such date (there is no year 0)"),
        (
            {},
            "12345678901",
            "is not a datetime: 11 digits are neither epoch seconds (10 digits) "
            "nor epoch milliseconds (13)",
        ),
        (
            {},
            "0",
            "is not a datetime: 1 digit is neither epoch seconds (10 digits) "
            "nor epoch milliseconds (13)",
        ),
        ({}, "20240105", 'is not a datetime without a format: add format: "%Y%m%d" to this column'),
        (
            {},
            "45292.5",
            "is not a datetime: it looks like an Excel date serial number (days since "
            "1899-12-30); format the column as a date in Excel and export again",
        ),
        (
            {},
            "1990年3月5日",
            'is not a datetime without a format: add format: "%Y年%m月%d日" to this column',
        ),
    ],
)
def test_a_datetime_that_cannot_be_says_why(spec: dict[str, str], cell: str, why: str) -> None:
    """Year 0 was sent (the platform refuses it); hour 24, 11 digits and 1990年3月5日 were
    only 'not a datetime'."""
    good = "2024-02-29" if spec.get("format") == "%Y-%m-%d" else "2024-02-29 23:59:59"
    m = mapped({"type": "datetime", **spec}, [cell, good])
    assert outcome(m) == [f"{COLUMN}: '{cell}' {why}", "2024-02-29 " + (good[11:] or "00:00:00")]


def test_a_constant_or_default_in_yaml_is_the_text_written(tmp_path: Path) -> None:
    """YAML 1.1 made ``0755`` octal 493, ``10:30`` 630 and ``yes`` true: sent on every row."""
    config = tmp_path / "job.yaml"
    config.write_text(
        "job: {kind: user, primary_keys: [uid]}\n"
        "columns:\n"
        "  uid: id\n"
        "  area: {value: 0755}\n"
        "  slot: {value: 10:30}\n"
        "  hex: {value: 0x1F}\n"
        "  answer: {value: yes}\n"
        "  ratio: {value: 1.10}\n"
        "  code: {from: 值, default: 010}\n"
        "  n: {value: 1_000, type: integer}\n"
        "  vip: {value: yes, type: boolean}\n"
        "  since: {value: 2024-01-05, type: datetime}\n",
        encoding="utf-8",
    )
    cfg = load_job(config)
    t = pa.table({"id": pa.array(["u1"]), "值": pa.array([""])})
    m = Mapper(cfg).map_table(t, np.arange(2, 3, dtype=np.int64))
    assert m.items is not None and m.items[0] is not None
    assert json.loads(m.items[0]) == {
        "uid": "u1",
        "area": "0755",
        "slot": "10:30",
        "hex": "0x1F",
        "answer": "yes",
        "ratio": "1.10",
        "code": "010",
        "n": 1000,
        "vip": True,
        "since": "2024-01-05 00:00:00",
    }


def test_a_parquet_float_column_of_whole_numbers_is_their_digits(tmp_path: Path) -> None:
    """pandas writes a phone or count column with a missing value as float64: Arrow's text
    of 13800138000.0 was '1.3800138e+10', refused by phone_cn as 'Excel rounded it' and
    sent as such by a string column."""
    import pyarrow.parquet as pq

    from importer.load import InputOptions, iter_batches, open_source

    path = tmp_path / "p.parquet"
    wide = [13800138000.0, float("nan"), 1e6, 0.5, 1e20, -1e10, 2.0**53, 1e-7]
    pq.write_table(
        pa.table(
            {
                "f64": pa.array(wide, pa.float64()),
                "f32": pa.array(
                    [13800138000.0, None, 1e6, 0.5, 1e20, -1e10, 2.0**20, 1e-7], pa.float32()
                ),
            }
        ),
        path,
    )
    options = InputOptions()
    rows = [
        r for b in iter_batches(open_source(path, options), options) for r in b.table.to_pylist()
    ]
    assert [r["f64"] for r in rows] == [
        "13800138000", None, "1000000", "0.5", "1e+20", "-10000000000", "9.007199254740992e+15",
        "1e-7",
    ]  # fmt: skip
    # a float32 past 2**24 is already rounded (13800137728): its digits would be wrong
    assert [r["f32"] for r in rows] == [
        "1.3800138e+10", None, "1000000", "0.5", "1e+20", "-1e+10", "1048576", "1e-7",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("transform", "cells", "sent"),
    [
        (
            "digits",
            ["'13800138000", '="0755-1234 5678"', "'+86 138 0013 8000"],
            ["13800138000", "075512345678", "+8613800138000"],
        ),
        (
            "phone_cn",
            ["'13800138000", '="13800138000"', "'+86 138 0013 8000"],
            ["13800138000"] * 3,
        ),
    ],
)
def test_a_number_a_spreadsheet_keeps_as_text_is_that_number(
    transform: str, cells: list[str], sent: list[str]
) -> None:
    """A leading apostrophe (Excel's text mark, and the CSV-injection guard of many exports)
    and the ="..." formula are marks, not characters the number has."""
    m = mapped({"transform": ["strip", transform]}, [*cells, "'13800138000'", '="1"="2"'])
    got = outcome(m)
    assert got[:3] == sent
    assert all(isinstance(r, str) and "has characters other than" in r for r in got[3:])


def test_init_reads_a_phone_column_as_phone_cn_reads_it(tmp_path: Path) -> None:
    """A phone column a spreadsheet wrote as floats (13800138000.0) and with the apostrophe
    of a CSV-injection guard ('+86 ...) was 'text, unique' and the key CHANGE_ME."""
    from importer.init import propose_config

    rows = ["手机号,姓名"] + [
        f"1380013{i:04d}.0,n{i}" if i % 3 else f"'+86 138 0013 {i:04d},n{i}" for i in range(30)
    ]
    data = tmp_path / "x.csv"
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    text = propose_config(data, kind="user")
    assert "phone: {from: 手机号, transform: [strip, phone_cn]}" in text
    assert "primary_keys: [phone]" in text


def test_a_bad_input_section_is_reported_with_its_file_line_and_the_other_problems(
    tmp_path: Path,
) -> None:
    """input: was checked by InputOptions.__init__, whose ConfigError escaped pydantic: no
    file, no line, no other problem, and encoding: CHANGE_ME was an 'unknown encoding'."""
    from importer.errors import ConfigError

    config = tmp_path / "job.yaml"
    config.write_text(
        "job: {kind: user, primary_keys: [uid]}\n"
        "columns:\n"
        "  uid: {from: id, type: integr}\n"
        "input:\n"
        "  encoding: CHANGE_ME\n"
        '  delimiter: ";;"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_job(config)
    assert info.value.source == str(config)
    assert [(p.path, p.line, p.message.split(":")[0]) for p in info.value.problems] == [
        (
            "columns.uid.type",
            3,
            "expected one of string, integer, number, boolean, datetime, got 'integr'",
        ),
        ("input.encoding", 5, "still CHANGE_ME"),
        (
            "input.delimiter",
            6,
            "delimiter must be one ASCII character other than a quote or a newline, got ';;'",
        ),
    ]


@pytest.mark.parametrize("declared", ["gb18030", "gbk", "latin-1"])
def test_a_declared_encoding_is_checked_where_the_text_stops_being_ascii(
    tmp_path: Path, declared: str
) -> None:
    """A UTF-8 file declared gb18030 whose first MiB was ASCII was read as GB18030: 张三 was
    stored as 寮犱笁, without a single bad record."""
    from importer.api import validate
    from importer.errors import LoadError

    config = tmp_path / "job.yaml"
    config.write_text(
        "job: {name: late, kind: user, primary_keys: [phone]}\n"
        "columns: {phone: phone, username: name}\n"
        f"input: {{encoding: {declared}}}\n",
        encoding="utf-8",
    )
    ascii_rows = "".join(f"1{3 + i % 7}{i:09d},user{i}\n" for i in range(60_000))
    assert len(ascii_rows) > 1024**2
    late = tmp_path / "late.csv"
    late.write_bytes(("phone,name\n" + ascii_rows + "13999999999,张三\n").encode("utf-8"))
    with pytest.raises(LoadError) as info:
        validate(config, [late], report_dir=tmp_path / "rep")
    name = codecs.lookup(declared).name  # iso8859-1 for latin-1
    assert str(info.value) == (
        f"{late}: input.encoding is {name}, but the bytes at line 60002 are not {name} "
        "but valid UTF-8 (as is all the text of a MiB from there): the file is UTF-8; set "
        "input.encoding: utf-8 or auto, or --encoding utf-8"
    )
    if declared != "latin-1":  # the same file written as declared is read as declared
        late.write_bytes(("phone,name\n" + ascii_rows + "13999999999,张三\n").encode(declared))
        summary = validate(config, [late], report_dir=tmp_path / "rep")
        assert summary.counts["valid"] == 60_001


@pytest.mark.parametrize(
    ("number_format", "cell"),
    [(None, "12.5"), (None, "-.5"), ({"thousands": ","}, "1,000.50"), ("1.234,56", "1.000,50")],
)
def test_an_integer_with_a_fraction_says_so(number_format: Any, cell: str) -> None:
    spec: dict[str, Any] = {"type": "integer"}
    if number_format is not None:
        spec["number_format"] = number_format
    assert outcome(mapped(spec, [cell])) == [
        f"{COLUMN}: '{cell}' is not an integer: it has a fraction"
    ]


@pytest.mark.parametrize(
    ("spec", "cell", "problem"),
    [
        ({"type": "integer"}, "１２", "is not an integer"),
        (
            {"type": "number", "number_format": {"thousands": ","}},
            "１，２９９",
            "is not a number written like 1,234.56",
        ),
        (
            {"type": "datetime"},
            "２０２４－０１－０５",
            "is not a datetime (e.g. 2024-01-31 08:00:00)",
        ),
    ],
)
def test_a_full_width_number_says_how_to_read_it(
    spec: dict[str, Any], cell: str, problem: str
) -> None:
    assert outcome(mapped(spec, [cell])) == [
        f"{COLUMN}: '{cell}' {problem}: it has full-width characters; "
        "add nfkc to this column's transform (transform: [nfkc])"
    ]
    assert outcome(mapped({**spec, "transform": ["nfkc"]}, [cell])) != outcome(mapped(spec, [cell]))
