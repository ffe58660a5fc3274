"""The ``columns:`` section: how each property is filled (``ColumnSpec``)."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..errors import rule_error
from ..protocol import DATETIME_FORMAT
from .base import StrictModel, did_you_mean, show

PropertyType = Literal["string", "integer", "number", "boolean", "datetime"]
Transform = Literal["strip", "lower", "upper", "digits", "collapse_spaces", "nfkc", "phone_cn"]

#: ``number_format.thousands``: the grouping marks people write (a space also matches the
#: no-break spaces U+00A0 and U+202F in cells).
Thousands = Literal[",", ".", "'", " ", "_"]
DecimalMark = Literal[".", ","]

#: ``number_format`` shorthand strings: how the number 1234.56 is written.
NUMBER_FORMAT_SHORTHANDS: dict[str, tuple[str, str]] = {
    "1,234.56": (",", "."),
    "1.234,56": (".", ","),
}

#: Properties every ``event`` call needs (seed: "event_id" and "create_time").
EVENT_ID = "event_id"
CREATE_TIME = "create_time"


def _scalar_to_text(v: Any) -> Any:
    """YAML scalars -> the text a cell would hold (``true`` -> 'true', ``12`` -> '12')."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, datetime):
        return v.strftime(DATETIME_FORMAT)
    if isinstance(v, date):
        return v.isoformat()
    return v


def _strptime_problem(fmt: str) -> str | None:
    """Why ``fmt`` is not a usable ``datetime.strptime`` format, or None when it is."""
    if "%" not in fmt:
        return f"format '{fmt}' has no %-directives"
    try:
        datetime.strptime("", fmt)
    except ValueError as exc:
        text = str(exc)
        # An empty string never matches a real format: that error means the format compiled.
        return None if text.startswith("time data") else text
    return None


_MARKS: dict[str, tuple[str, ...]] = {
    "thousands": get_args(Thousands),
    "decimal": get_args(DecimalMark),
}


class NumberFormat(StrictModel):
    """How an ``integer``/``number`` column writes its numbers: ``thousands`` (a grouping
    mark, none by default) and ``decimal`` (``.`` by default; ``,`` when ``thousands`` is
    ``.`` and ``decimal`` is not given, since the two must differ). The shorthand strings
    ``"1,234.56"`` and ``"1.234,56"`` name the two common pairs."""

    thousands: Thousands | None = None
    decimal: DecimalMark = "."

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if not isinstance(data, str | dict):
            raise rule_error(
                f'expected "1,234.56", "1.234,56" or a mapping like '
                f'{{thousands: ",", decimal: "."}}, got {show(data)}'
            )
        if isinstance(data, str):
            pair = NUMBER_FORMAT_SHORTHANDS.get(data)
            if pair is None:
                raise rule_error(
                    f"unknown number_format '{data}'",
                    'write "1,234.56" or "1.234,56", or a mapping like '
                    '{thousands: ",", decimal: "."}',
                )
            return {"thousands": pair[0], "decimal": pair[1]}
        if isinstance(data, dict) and "decimal" not in data and data.get("thousands") == ".":
            return {**data, "decimal": ","}
        return data

    @field_validator("thousands", "decimal", mode="before")
    @classmethod
    def _mark(cls, v: Any, info: ValidationInfo) -> Any:
        allowed = _MARKS[info.field_name or ""]
        if v is not None and v not in allowed:
            shown = ", ".join(f'"{m}"' for m in allowed)
            got = f'"{v}"' if isinstance(v, str) else show(v)
            raise rule_error(
                f"expected one of {shown}, got {got}",
                "a space also matches the no-break spaces U+00A0 and U+202F"
                if info.field_name == "thousands"
                else None,
            )
        return v

    @model_validator(mode="after")
    def _differ(self) -> NumberFormat:
        if self.thousands == self.decimal:
            raise rule_error(
                f"thousands and decimal are both '{self.decimal}'; they must differ",
                'e.g. {thousands: ".", decimal: ","}',
            )
        return self

    @property
    def example(self) -> str:
        """1234.56 as this format writes it (``1,234.56``)."""
        return f"1{self.thousands or ''}234{self.decimal}56"


class ColumnSpec(StrictModel):
    """How one property is filled: from a source column (``from``) or a constant (``value``)."""

    source: str | None = Field(default=None, alias="from")
    value: str | None = None
    type: PropertyType = "string"
    format: str | None = None
    timezone: str | None = None
    default: str | None = None
    transform: list[Transform] = Field(default_factory=list)
    pattern: str | None = None
    required: bool = False
    number_format: NumberFormat | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str | int | float) and not isinstance(data, bool):
            return {"from": _scalar_to_text(data)}
        if isinstance(data, dict):
            data = dict(data)
            for key in ("value", "default"):
                if key in data:
                    data[key] = _scalar_to_text(data[key])
            if isinstance(data.get("from"), int | float) and not isinstance(data["from"], bool):
                data["from"] = _scalar_to_text(data["from"])
        return data

    @field_validator("source", "value", "default", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        if isinstance(v, list | dict):
            raise rule_error("expected a single value, got a " + type(v).__name__)
        return v

    @field_validator("source")
    @classmethod
    def _source(cls, v: str | None) -> str | None:
        if v is not None and v == "":
            raise rule_error("column name must not be empty")
        return v

    @field_validator("format")
    @classmethod
    def _format(cls, v: str | None) -> str | None:
        if v is not None:
            why = _strptime_problem(v)
            if why:
                raise rule_error(
                    f"invalid datetime format: {why}", "see Python's strptime directives"
                )
        return v

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise rule_error(
                f"unknown time zone '{v}'",
                did_you_mean(v, available_timezones()) or "use an IANA name like Asia/Shanghai",
            ) from None
        return v

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            re.compile(v)
        except re.error as exc:
            raise rule_error(f"invalid regular expression: {exc}") from None
        why = _re2_problem(v)
        if why:
            raise rule_error(
                f"regular expression not supported: {why}",
                "patterns use RE2 syntax: no look-around or back-references",
            )
        return v

    @model_validator(mode="after")
    def _combination(self) -> ColumnSpec:
        if (self.source is None) == (self.value is None):
            raise rule_error(
                "set exactly one of 'from' (a source column) or 'value' (a constant)",
                None if self.source else "e.g. {from: 手机号} or {value: crm}",
            )
        if self.value is not None:
            used = [k for k in ("default", "pattern") if getattr(self, k) is not None]
            used += ["transform"] if self.transform else []
            used += ["required"] if self.required else []
            if used:
                raise rule_error(
                    f"'{used[0]}' only applies to a column read from the file ('from'), "
                    "not to a constant 'value'"
                )
        if self.number_format is not None and self.type not in ("integer", "number"):
            raise rule_error(
                "'number_format' only applies to type integer or number, "
                f"this column is {self.type}",
                "add type: number",
            )
        if self.type != "datetime":
            for key in ("format", "timezone"):
                if getattr(self, key) is not None:
                    raise rule_error(
                        f"'{key}' only applies to type datetime, this column is {self.type}",
                        "add type: datetime",
                    )
        return self


def _re2_problem(pattern: str) -> str | None:
    """The mapper matches with pyarrow (RE2); a Python-only regex must fail here, not later."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        pc.match_substring_regex(pa.array([""]), f"^(?:{pattern})$")
    except pa.ArrowInvalid as exc:
        return str(exc).removeprefix("Invalid regular expression: ")
    return None
