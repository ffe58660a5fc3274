"""Values as people write them: ``number_format``, ``digits`` and ``phone_cn`` refusing junk,
impossible dates, every failing column of a row reported, patterns printed as written."""

from __future__ import annotations

from typing import Any

import pytest

from importer.config import NumberFormat
from importer.errors import ConfigError, ConfigProblem
from importer.job import parse_job


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
