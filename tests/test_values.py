"""Values as people write them: ``number_format``, ``digits`` and ``phone_cn`` refusing junk,
impossible dates, every failing column of a row reported, patterns printed as written."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importer.config import Config, NumberFormat
from importer.errors import ConfigError, ConfigProblem
from importer.job import parse_job
from importer.map import Mapped, Mapper


def columns_config(**columns: Any) -> dict[str, Any]:
    return {
        "job": {"kind": "user", "primary_keys": ["phone"]},
        "columns": {"phone": {"from": "手机号"}, **columns},
    }


def config_problems(**columns: Any) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        parse_job(columns_config(**columns))
    return info.value.problems


# -- the config: number_format and phone_cn ------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "thousands", "decimal"),
    [
        ({"thousands": ","}, ",", "."),
        ({"thousands": ",", "decimal": "."}, ",", "."),
        ({"thousands": "."}, ".", ","),  # the two must differ: "." groups, so "," is decimal
        ({"thousands": "'"}, "'", "."),
        ({"thousands": " ", "decimal": ","}, " ", ","),
        ({"thousands": "_"}, "_", "."),
        ({"decimal": ","}, None, ","),
        ({}, None, "."),
        ("1,234.56", ",", "."),
        ("1.234,56", ".", ","),
    ],
)
def test_number_format_forms(given: Any, thousands: str | None, decimal: str) -> None:
    config = parse_job(
        columns_config(amount={"from": "金额", "type": "number", "number_format": given})
    )
    assert config.columns["amount"].number_format == NumberFormat(
        thousands=thousands, decimal=decimal
    )


def test_number_format_on_integer_columns() -> None:
    config = parse_job(
        columns_config(age={"from": "年龄", "type": "integer", "number_format": "1,234.56"})
    )
    assert config.columns["age"].number_format == NumberFormat(thousands=",", decimal=".")


@pytest.mark.parametrize(
    ("given", "path", "message", "hint"),
    [
        (
            "1 234,56",
            "columns.amount.number_format",
            "unknown number_format '1 234,56'",
            'write "1,234.56" or "1.234,56", or a mapping like {thousands: ",", decimal: "."}',
        ),
        (
            5,
            "columns.amount.number_format",
            'expected "1,234.56", "1.234,56" or a mapping like {thousands: ",", decimal: "."}, '
            "got 5",
            None,
        ),
        (
            {"thousands": ",", "decimal": ","},
            "columns.amount.number_format",
            "thousands and decimal are both ','; they must differ",
            'e.g. {thousands: ".", decimal: ","}',
        ),
        (
            {"thousands": ";"},
            "columns.amount.number_format.thousands",
            """expected one of ",", ".", "'", " ", "_", got ";\"""",
            "a space also matches the no-break spaces U+00A0 and U+202F",
        ),
        (
            {"decimal": "'"},
            "columns.amount.number_format.decimal",
            """expected one of ".", ",", got "'\"""",
            None,
        ),
        (
            {"thousand": ","},
            "columns.amount.number_format.thousand",
            "unknown key 'thousand'",
            "did you mean 'thousands'?",
        ),
    ],
)
def test_number_format_refused(given: Any, path: str, message: str, hint: str | None) -> None:
    problems = config_problems(amount={"from": "金额", "type": "number", "number_format": given})
    assert problems == [ConfigProblem(path, message, hint)]


def test_number_format_only_on_numeric_columns() -> None:
    problems = config_problems(code={"from": "编号", "number_format": {"thousands": ","}})
    assert problems == [
        ConfigProblem(
            "columns.code",
            "'number_format' only applies to type integer or number, this column is string",
            "add type: number",
        )
    ]


def test_phone_cn_is_a_transform() -> None:
    config = parse_job(columns_config(mobile={"from": "手机", "transform": ["strip", "phone_cn"]}))
    assert config.columns["mobile"].transform == ["strip", "phone_cn"]
    problems = config_problems(mobile={"from": "手机", "transform": ["phone"]})
    assert [(p.path, p.hint) for p in problems] == [
        ("columns.mobile.transform.0", "did you mean 'phone_cn'?")
    ]


# -- the mapper ----------------------------------------------------------------------------------


def mapper_config(columns: dict[str, Any], **target: Any) -> Config:
    return parse_job(
        {
            "target": target,
            "job": {"kind": "user", "primary_keys": ["phone"]},
            "columns": {"phone": {"from": "手机号"}, **columns},
        }
    )


def mapped(columns: dict[str, Any], rows: dict[str, list[str | None]], **target: Any) -> Mapped:
    cfg = mapper_config(columns, **target)
    n = len(next(iter(rows.values())))
    rows = {"手机号": ["13800138000"] * n, **rows}
    t = pa.table({k: pa.array(v, pa.string()) for k, v in rows.items()})
    return Mapper(cfg).map_table(t, np.arange(2, n + 2, dtype=np.int64))


def sent(m: Mapped, name: str) -> list[Any]:
    """Per row the property ``name`` as sent, or the row's reason when it is rejected."""
    assert m.items is not None
    out = []
    for i in range(m.n):
        item = m.items[i]
        out.append(json.loads(item).get(name) if item is not None else m.reason[i])
    return out


AMOUNT = "column 金额 (property amount)"


def misplaced(mark: str) -> str:
    shown = '"\'"' if mark == "'" else f"'{mark}'"
    return (
        f"is not a number: misplaced thousands separator {shown} "
        f"(digits are grouped by three: 1{mark}234{mark}567)"
    )


def add_thousands(mark: str) -> str:
    shown = '"\'"' if mark == "'" else f"'{mark}'"
    fix = f'{{thousands: "{mark}"}}'
    return f"it has a thousands separator {shown}; add number_format: {fix} to this column"


# -- 1. numbers as people write them


@pytest.mark.parametrize(
    ("number_format", "cells", "values"),
    [
        (
            {"thousands": ","},
            ["1,299.00", "8,838.79", "-1,234", "+1,234,567.5", "1234.5", "12", ".5", "1,234."],
            [1299, 8838.79, -1234, 1234567.5, 1234.5, 12, 0.5, 1234],
        ),
        (
            "1.234,56",
            ["1.234,56", "-1.234", "1.234.567", "0,5", "12"],
            [1234.56, -1234, 1234567, 0.5, 12],
        ),
        ({"decimal": ","}, ["1234,56", "-0,5", "7"], [1234.56, -0.5, 7]),
        ({"thousands": "'"}, ["1'234.5", "12'345'678"], [1234.5, 12345678]),
        ({"thousands": "_"}, ["1_234"], [1234]),
        (
            {"thousands": " ", "decimal": ","},
            ["1 234,5", "1\u00a0234", "1\u202f234\u202f567", " 12 345 "],
            [1234.5, 1234, 1234567, 12345],
        ),
    ],
)
def test_number_format_reads_grouped_numbers(
    number_format: Any, cells: list[str], values: list[float]
) -> None:
    m = mapped(
        {"amount": {"from": "金额", "type": "number", "number_format": number_format}},
        {"金额": cells},
    )
    assert sent(m, "amount") == values
    assert [type(v) for v in sent(m, "amount")] == [type(v) for v in values]


def test_number_format_on_integers() -> None:
    m = mapped(
        {"qty": {"from": "数量", "type": "integer", "number_format": {"thousands": ","}}},
        {"数量": ["1,234", "1,234.00", "-12,345,678", "1,234.5"]},
    )
    assert sent(m, "qty") == [
        1234,
        1234,
        -12345678,
        "column 数量 (property qty): '1,234.5' is not an integer: it has a fraction",
    ]


@pytest.mark.parametrize(
    ("number_format", "cell", "why"),
    [
        (
            {"thousands": ","},
            "1,29",
            misplaced(","),
        ),
        (
            {"thousands": ","},
            "12,34,5",
            misplaced(","),
        ),
        # Indian grouping (lakh, crore) is refused: read as 1,234,567 it would be another number
        (
            {"thousands": ","},
            "12,34,567",
            misplaced(","),
        ),
        (
            {"thousands": ","},
            "1234,567",
            misplaced(","),
        ),
        ({"thousands": ","}, "1.234,56", "is not a number written like 1,234.56"),
        ({"thousands": ","}, "1,234e3", "is not a number written like 1,234.56"),
        (
            "1.234,56",
            "1.5",
            misplaced("."),
        ),
        ("1.234,56", "1,234.56", "is not a number written like 1.234,56"),
        ({"decimal": ","}, "1.5", "is not a number written like 1234,56"),
        (
            {"thousands": " "},
            "1\u00a023",
            misplaced(" "),
        ),
        ({"thousands": ","}, "abc", "is not a number written like 1,234.56"),
    ],
)
def test_number_format_refuses_misplaced_marks(number_format: Any, cell: str, why: str) -> None:
    m = mapped(
        {"amount": {"from": "金额", "type": "number", "number_format": number_format}},
        {"金额": [cell]},
    )
    shown = cell.replace("\u00a0", "\\xa0")
    assert [(int(c), r) for c, r in zip(m.errcode, m.reason, strict=True)] == [
        (20003, f"{AMOUNT}: '{shown}' {why}")
    ]
    assert m.column == ["金额"]


@pytest.mark.parametrize(
    ("cell", "fix"),
    [
        (
            "8,838.79",
            add_thousands(","),
        ),
        (
            "-1,234",
            add_thousands(","),
        ),
        (
            "1.234,56",
            add_thousands("."),
        ),
        (
            "1.234.567",
            add_thousands("."),
        ),
        (
            "1 234",
            add_thousands(" "),
        ),
        (
            "1'234.5",
            add_thousands("'"),
        ),
        ("12,5", 'it has a decimal comma; add number_format: {decimal: ","} to this column'),
    ],
)
def test_without_number_format_the_reason_says_how_to_fix_it(cell: str, fix: str) -> None:
    m = mapped({"amount": {"from": "金额", "type": "number"}}, {"金额": [cell]})
    assert m.reason == [f"{AMOUNT}: '{cell}' is not a number: {fix}"]
    assert int(m.errcode[0]) == 20003


def test_without_number_format_the_exact_message() -> None:
    m = mapped({"amount": {"from": "金额", "type": "number"}}, {"金额": ["8,838.79"]})
    assert m.reason == [
        "column 金额 (property amount): '8,838.79' is not a number: it has a thousands "
        "separator ','; add number_format: {thousands: \",\"} to this column"
    ]
    m = mapped({"age": {"from": "年龄", "type": "integer"}}, {"年龄": ["1,234"]})
    assert m.reason == [
        "column 年龄 (property age): '1,234' is not an integer: it has a thousands "
        "separator ','; add number_format: {thousands: \",\"} to this column"
    ]


@given(
    st.lists(
        st.one_of(
            st.integers(-(10**12), 10**12).map(str),
            st.floats(allow_nan=False, allow_infinity=False).map(repr),
            st.text("0123456789.-+eE ab", max_size=8),
        ),
        min_size=1,
        max_size=20,
    ),
    st.sampled_from([",", "'", " ", "_", None]),
)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_number_format_never_changes_a_value_without_its_marks(
    cells: list[str], thousands: str | None
) -> None:
    """With decimal ".", a value without the thousands mark converts (or not) exactly as
    without number_format; with decimal ",", one written with "," as with "." plainly."""
    plain = mapped({"n": {"from": "N", "type": "number"}}, {"N": cells})
    fmt = {"thousands": thousands} if thousands else {}
    kept = [c for c in cells if thousands is None or thousands not in c]
    if kept:
        with_fmt = mapped({"n": {"from": "N", "type": "number", "number_format": fmt}}, {"N": kept})
        plain_kept = mapped({"n": {"from": "N", "type": "number"}}, {"N": kept})
        assert with_fmt.errcode.tolist() == plain_kept.errcode.tolist()
        assert list(with_fmt.items or []) == list(plain_kept.items or [])
    assert plain.n == len(cells)
    commas = [c for c in kept if "," not in c]
    if commas:
        european = mapped(
            {"n": {"from": "N", "type": "number", "number_format": {"decimal": ","}}},
            {"N": [c.replace(".", ",") for c in commas]},
        )
        plain_commas = mapped({"n": {"from": "N", "type": "number"}}, {"N": commas})
        assert european.errcode.tolist() == plain_commas.errcode.tolist()
        assert list(european.items or []) == list(plain_commas.items or [])


# -- 2. digits never turns junk into a key

SCIENTIFIC = (
    "is in scientific notation: Excel rounded it, the digits are lost; "
    "format the column as text in Excel and export again"
)
PHONE = "column 手机 (property mobile)"


@pytest.mark.parametrize("target", [{}, {"protocol": "signed"}], ids=["import-api", "signed"])
def test_digits_refuses_letters_and_scientific_notation(target: dict[str, str]) -> None:
    cells = [
        "+86 138-0013-8000",
        "(0755) 1234.5678",
        "1.38001E+10",
        "1.38E10",
        "138OO138000",
        "138 ００１３ 8000",  # full-width digits are digits (NFKC), not dropped
        "电话13800138000",
        "--",
    ]
    m = mapped(
        {"mobile": {"from": "手机", "transform": ["strip", "digits"]}}, {"手机": cells}, **target
    )
    code = 20003 if not target else 10002
    assert [(int(c), r) for c, r in zip(m.errcode, m.reason, strict=True)] == [
        (0, None),
        (0, None),
        (code, f"{PHONE}: '1.38001E+10' {SCIENTIFIC}"),
        (code, f"{PHONE}: '1.38E10' {SCIENTIFIC}"),
        (code, f"{PHONE}: '138OO138000' has letters"),
        (0, None),
        (code, f"{PHONE}: '电话13800138000' has letters"),
        (0, None),
    ]
    assert sent(m, "mobile")[:2] == ["+8613800138000", "07551234.5678".replace(".", "")]
    assert sent(m, "mobile")[5] == "13800138000"
    assert sent(m, "mobile")[7] is None  # no digits: empty, left out
    assert m.column[2:5] == ["手机"] * 3
    # the refused row keeps its cell: no key is made of it
    assert m.identity[4] == "phone=13800138000"


def test_a_refused_primary_key_is_rejected_as_a_wrong_value_not_as_missing() -> None:
    cfg = parse_job(
        {
            "job": {"kind": "user", "primary_keys": ["phone"]},
            "columns": {"phone": {"from": "手机号", "transform": ["digits"]}},
        }
    )
    t = pa.table({"手机号": pa.array(["1.38001E+10", "13800138000"])})
    m = Mapper(cfg).map_table(t, np.arange(2, 4, dtype=np.int64))
    assert m.errcode.tolist() == [20003, 0]
    assert m.reason[0] == f"column 手机号 (property phone): '1.38001E+10' {SCIENTIFIC}"
    assert m.identity == ["phone=1.38001E+10", "phone=13800138000"]


# -- 3. phone_cn


@pytest.mark.parametrize(
    "cell",
    [
        "13800138000",
        "138-0013-8000",
        "138 0013 8000",
        "138.0013.8000",
        "(138)00138000",
        "+86 138-0013-8000",
        "+86-13800138000",
        "+8613800138000",
        "(+86)13800138000",
        "（+86）138 0013 8000",
        "0086 138 0013 8000",
        "008613800138000",
        "8613800138000",
        "１３８００１３８０００",
        "+８６ １３８－００１３－８０００",
        "138\u00a00013\u30008000",
        " 13800138000 ",
        "138—0013–8000",
    ],
)
def test_phone_cn_accepts(cell: str) -> None:
    m = mapped({"mobile": {"from": "手机", "transform": ["phone_cn"]}}, {"手机": [cell]})
    assert sent(m, "mobile") == ["13800138000"]


def test_phone_cn_accepts_every_mobile_prefix() -> None:
    cells = [f"1{d}900001111" for d in "3456789"]
    m = mapped({"mobile": {"from": "手机", "transform": ["phone_cn"]}}, {"手机": cells})
    assert sent(m, "mobile") == cells


@pytest.mark.parametrize(
    ("cell", "why"),
    [
        ("1.38001E+10", SCIENTIFIC),
        ("1.38E10", SCIENTIFIC),
        ("１．３８Ｅ＋１０", SCIENTIFIC),
        ("138OO138000", "has letters"),
        ("tel:13800138000", "has letters"),
        ("138001380001", "has 12 digits; a mobile number has 11"),
        ("1380013800", "has 10 digits; a mobile number has 11"),
        ("+86 138001380001", "has 12 digits; a mobile number has 11"),
        ("8613800138000 1", "has 14 digits; a mobile number has 11"),
        ("8612800138000", "has 13 digits; a mobile number has 11"),
        ("12800138000", "does not start with 13-19"),
        ("010-12345678", "does not start with 13-19"),
        ("0755-1234567", "does not start with 13-19"),
        ("+86 0755 12345678", "has 12 digits; a mobile number has 11"),
        ("+1 415 555 0100", "has a country code other than +86"),
        ("138/0013/8000", "has characters other than digits, spaces, dashes, dots and parentheses"),
    ],
)
def test_phone_cn_refuses(cell: str, why: str) -> None:
    m = mapped({"mobile": {"from": "手机", "transform": ["strip", "phone_cn"]}}, {"手机": [cell]})
    assert [(int(c), r) for c, r in zip(m.errcode, m.reason, strict=True)] == [
        (20003, f"{PHONE}: '{cell}' {why}")
    ]


def test_phone_cn_fast_path_agrees_with_the_general_one() -> None:
    cells = ["13800138000", "12800138000", None, "15912345678"]
    spec = {"mobile": {"from": "手机", "transform": ["phone_cn"]}}
    fast = mapped(spec, {"手机": cells})
    general = mapped(spec, {"手机": [*cells, "+86 139 0000 1111"]})
    assert sent(fast, "mobile") == sent(general, "mobile")[:4]
    assert fast.reason[1] == f"{PHONE}: '12800138000' does not start with 13-19"


def test_phone_cn_after_other_steps() -> None:
    m = mapped(
        {"mobile": {"from": "手机", "transform": ["nfkc", "strip", "phone_cn"]}},
        {"手机": ["　＋８６　１３８００１３８０００　", "", None]},
    )
    assert sent(m, "mobile") == ["13800138000", None, None]


# -- 4. impossible dates


@pytest.mark.parametrize(
    ("spec", "cell", "why"),
    [
        ({}, "2024-02-30", "is no such date (February 2024 has 29 days)"),
        ({}, "2023-02-29", "is no such date (February 2023 has 28 days)"),
        ({}, "2024-13-01", "is no such date (there is no month 13)"),
        ({}, "2024-00-10", "is no such date (there is no month 0)"),
        ({}, "2024-01-00", "is no such date (January 2024 has 31 days)"),
        ({}, "2024-04-31 10:00", "is no such date (April 2024 has 30 days)"),
        ({}, "2024-02-30 00:00:00", "is no such date (February 2024 has 29 days)"),
        ({}, "2024/2/30", "is no such date (February 2024 has 29 days)"),
        ({}, "2024-06-31T08:00:00+08:00", "is no such date (June 2024 has 30 days)"),
        ({"format": "%d/%m/%Y"}, "30/02/2024", "is no such date (February 2024 has 29 days)"),
        ({"format": "%d/%m/%Y"}, "01/13/2024", "is no such date (there is no month 13)"),
        (
            {"format": "%Y年%m月%d日"},
            "2023年2月29日",
            "is no such date (February 2023 has 28 days)",
        ),
        (
            {"format": "%d.%m.%y %H:%M"},
            "31.04.24 10:00",
            "is no such date (April 2024 has 30 days)",
        ),
        ({}, "2024-01-05 25:00", "is no such time (there is no hour 25; hours go 0-23)"),
        ({}, "yesterday", "is not a datetime (e.g. 2024-01-31 08:00:00)"),
        ({"format": "%d/%m/%Y"}, "2024-02-30", "is not a datetime in format '%d/%m/%Y'"),
    ],
)
def test_no_such_date(spec: dict[str, str], cell: str, why: str) -> None:
    m = mapped({"birthday": {"from": "生日", "type": "datetime", **spec}}, {"生日": [cell]})
    assert [(int(c), r) for c, r in zip(m.errcode, m.reason, strict=True)] == [
        (20003, f"column 生日 (property birthday): '{cell}' {why}")
    ]


def test_one_digit_month_and_day_with_slashes_still_work() -> None:
    m = mapped(
        {"birthday": {"from": "生日", "type": "datetime"}},
        {"生日": ["1990/3/5", "1990/12/31 8:05", "2024/2/29"]},
    )
    assert sent(m, "birthday") == [
        "1990-03-05 00:00:00",
        "1990-12-31 08:05:00",
        "2024-02-29 00:00:00",
    ]


def test_a_bad_default_says_no_such_date() -> None:
    problems = config_problems(
        birthday={"from": "生日", "type": "datetime", "default": "2023-02-29"}
    )
    assert [(p.path, p.message) for p in problems] == [
        ("columns.birthday.default", "'2023-02-29' is no such date (February 2023 has 28 days)")
    ]


# -- 5. every failing column of a row


def test_every_failing_column_is_reported() -> None:
    columns = {
        "age": {"from": "年龄", "type": "integer"},
        "name": {"from": "姓名", "required": True},
        "birthday": {"from": "生日", "type": "datetime"},
        "code": {"from": "编号", "pattern": r"[A-Z]\d+"},
    }
    rows: dict[str, list[str | None]] = {
        "年龄": ["12a", "12a", "30", "30"],
        "姓名": ["张三", "", "李四", "王五"],
        "生日": ["2024-02-30", "1990/3/5", "1990/3/5", "1990/3/5"],
        "编号": ["A1", "x\\1", "A1", "B2"],
    }
    m = mapped(columns, rows)
    assert m.errcode.tolist() == [20003, 20003, 0, 0]
    assert m.reason[:2] == [
        "column 年龄 (property age): '12a' is not an integer; "
        "column 生日 (property birthday): '2024-02-30' is no such date (February 2024 has 29 days)",
        "column 年龄 (property age): '12a' is not an integer; required column 姓名 (property name) "
        "is empty; column 编号 (property code): 'x\\1' does not match pattern '[A-Z]\\d+'",
    ]
    assert m.column == ["年龄;生日", "年龄;姓名;编号", None, None]


def test_the_errcode_is_the_first_failure_in_the_platforms_order() -> None:
    """Under signed a wrong type is 10002, a missing required value 20003: the type check
    comes first in the platform's order, so 10002, though the config lists name first."""
    columns = {
        "name": {"from": "姓名", "required": True},
        "age": {"from": "年龄", "type": "integer"},
    }
    m = mapped(columns, {"姓名": [""], "年龄": ["x"]}, protocol="signed")
    assert m.errcode.tolist() == [10002]
    assert m.reason == [
        "required column 姓名 (property name) is empty; "
        "column 年龄 (property age): 'x' is not an integer"
    ]


def test_a_row_wide_failure_comes_first() -> None:
    cfg = parse_job(
        {
            "job": {"kind": "user", "primary_keys": ["phone"]},
            "columns": {
                "phone": "手机号",
                "age": {"from": "年龄", "type": "integer"},
                "note": {"from": "备注", "required": True},
            },
        }
    )
    t = pa.table(
        {
            "手机号": pa.array(["", None]),
            "年龄": pa.array(["x", None]),
            "备注": pa.array(["n", None]),
        }
    )
    m = Mapper(cfg).map_table(t, np.arange(2, 4, dtype=np.int64))
    assert m.errcode.tolist() == [20001, 10004]
    assert m.reason == [
        "no primary-key property has a value (phone); "
        "column 年龄 (property age): 'x' is not an integer",
        "Properties are empty: every mapped column is empty",  # nothing more to say
    ]
    assert m.column == ["年龄", None]


# -- 6. patterns and values printed as written


def test_patterns_and_values_are_printed_as_written() -> None:
    m = mapped({"tel": {"from": "电话", "pattern": r"\+?\d{6,15}"}}, {"电话": ["C:\\tel", "a\tb"]})
    assert m.reason == [
        "column 电话 (property tel): 'C:\\tel' does not match pattern '\\+?\\d{6,15}'",
        "column 电话 (property tel): 'a\\tb' does not match pattern '\\+?\\d{6,15}'",
    ]
    problems = config_problems(tel={"from": "电话", "pattern": r"\d+", "default": "x\\y"})
    assert [(p.path, p.message) for p in problems] == [
        ("columns.tel.default", "'x\\y' does not match pattern '\\d+'")
    ]


def test_phone_cn_one_column_of_every_form_agrees_with_each_alone() -> None:
    """Refusals and full-width values are found per value and put back in place."""
    cells = [
        "１３８００１３８０００",
        "1.38001E+10",
        None,
        "+86 138-0013-8000",
        "138OO138000",
        "",
        "12800138000",
        "（+86）139 0000 1111",
        "tel:13800138000",
        "13912345678",
    ]
    spec = {"mobile": {"from": "手机", "transform": ["strip", "phone_cn"]}}
    together = mapped(spec, {"手机": cells})
    alone = [mapped(spec, {"手机": [c]}) for c in cells]
    assert sent(together, "mobile") == [sent(m, "mobile")[0] for m in alone]
    assert together.errcode.tolist() == [int(m.errcode[0]) for m in alone]
    assert sent(together, "mobile")[:4] == [
        "13800138000",
        f"{PHONE}: '1.38001E+10' {SCIENTIFIC}",
        None,
        "13800138000",
    ]


def test_number_format_applies_to_defaults_and_constants() -> None:
    columns = {
        "amount": {
            "from": "金额",
            "type": "number",
            "number_format": "1.234,56",
            "default": "1.000,5",
        },
        "fee": {"value": "1,250", "type": "integer", "number_format": {"thousands": ","}},
    }
    m = mapped(columns, {"金额": ["", "2,5"]})
    assert sent(m, "amount") == [1000.5, 2.5]
    assert sent(m, "fee") == [1250, 1250]
    problems = config_problems(amount={"from": "金额", "type": "number", "default": "1,000.5"})
    assert [(p.path, p.message) for p in problems] == [
        (
            "columns.amount.default",
            "'1,000.5' is not a number: " + add_thousands(","),
        )
    ]


@given(
    st.lists(
        st.tuples(
            st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True),
            st.sampled_from(["", "+86", "+86 ", "+86-", "(+86)", "0086", "0086 ", "86", "（+86）"]),
            st.lists(st.sampled_from([" ", "-", ".", "\u00a0", "\u3000", "－"]), max_size=3),
            st.booleans(),
        ),
        min_size=1,
        max_size=12,
    )
)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_phone_cn_any_way_of_writing_a_mobile_gives_its_11_digits(
    numbers: list[tuple[str, str, list[str], bool]],
) -> None:
    full_width = str.maketrans("0123456789", "０１２３４５６７８９")
    cells = []
    for digits, prefix, seps, wide in numbers:
        body = digits[:3] + "".join(seps) + digits[3:7] + "".join(seps) + digits[7:]
        cell = prefix + body
        cells.append(cell.translate(full_width) if wide else cell)
    m = mapped({"mobile": {"from": "手机", "transform": ["strip", "phone_cn"]}}, {"手机": cells})
    assert sent(m, "mobile") == [d for d, *_ in numbers]


def test_one_column_read_by_two_properties_is_named_once_with_both() -> None:
    job = parse_job(
        {
            "job": {"kind": "event", "event_name": "order", "primary_keys": ["phone"]},
            "columns": {
                "phone": "phone",
                "event_id": "id",
                "orderTime": {"from": "t", "type": "datetime"},
                "create_time": "t",
                "amount": {"from": "amount", "type": "number"},
            },
        }
    )
    t = pa.table({"phone": ["1"], "id": ["E1"], "t": ["yesterday"], "amount": ["x"]})
    m = Mapper(job).map_table(t, np.arange(2, 3, dtype=np.int64))
    assert m.column[0] == "t;amount"
    assert m.reason[0] == (
        "column t (properties orderTime, create_time): 'yesterday' is not a datetime (e.g. "
        "2024-01-31 08:00:00); column amount: 'x' is not a number"
    )
