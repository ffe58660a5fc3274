"""Why one value does not convert, in words that say how to fix it.

Built only for rejected rows (one Python call per rejected value): the converters decide
vectorised which values fail, these functions only explain a failure, so a reason can name the
value's own problem (``'8,838.79' is not a number: it has a thousands separator ','; add
number_format: {thousands: ","} to this column``, ``'2024-02-30' is no such date (February
2024 has 29 days)``) without any per-row work for the rows that pass.
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime
from functools import lru_cache

from ..config import ColumnSpec, NumberFormat
from ..protocol import DATETIME_FORMAT
from .values import grouping

_TYPE_PROBLEM = {
    "integer": "is not an integer",
    "number": "is not a number",
    "boolean": "is not a boolean (true/false, 1/0, yes/no, y/n, 是/否)",
    "datetime": f"is not a datetime (e.g. {datetime(2024, 1, 31, 8).strftime(DATETIME_FORMAT)})",
}

#: Grouping marks a value without ``number_format`` may hold, with the ``number_format`` that
#: reads it (written as in YAML) and the decimal mark that goes with it.
_GROUPINGS: tuple[tuple[str, str, str], ...] = (
    (",", '{thousands: ","}', "."),
    (".", '{thousands: "."}', ","),
    (" ", '{thousands: " "}', "."),
    ("\u00a0", '{thousands: " "}', "."),
    ("\u202f", '{thousands: " "}', "."),
    ("'", '{thousands: "\'"}', "."),
    ("_", '{thousands: "_"}', "."),
)
#: full-width digits and marks (０-９, ，, ．, －, ＋, ：, ／) of a cell typed on a CJK keyboard
_FULL_WIDTH = re.compile(r"[\uff0b-\uff1a]")
_DECIMAL_COMMA = re.compile(r"[+-]?\d*,\d+")


def type_problem(spec: ColumnSpec) -> str:
    """What a value that does not convert under ``spec`` is not."""
    if spec.type == "datetime" and spec.format:
        return f"is not a datetime in format '{spec.format}'"
    if spec.number_format is not None and spec.type in ("integer", "number"):
        example = spec.number_format.example
        example = (
            example if spec.type == "number" else example.rsplit(spec.number_format.decimal)[0]
        )
        return f"{_TYPE_PROBLEM[spec.type]} written like {example}"
    return _TYPE_PROBLEM[spec.type]


def value_problem(spec: ColumnSpec, value: str) -> str:
    """What is wrong with ``value``, one that does not convert under ``spec``."""
    text = value.strip()
    why: str | None = None
    if spec.type != "string" and _FULL_WIDTH.search(text):
        return (
            f"{type_problem(spec)}: it has full-width characters; "
            "add nfkc to this column's transform (transform: [nfkc])"
        )
    if spec.type in ("integer", "number"):
        fmt = spec.number_format
        why = _misplaced(text, fmt) if fmt is not None else _separator_hint(text, spec.type)
        if why is None and spec.type == "integer":
            why = _out_of_range(text, fmt)
        if why is not None:
            return f"{_TYPE_PROBLEM[spec.type]}: {why}"
    elif spec.type == "datetime":
        why = _no_such_date(text, spec.format)
        if why is not None:
            return why
    return type_problem(spec)


def _out_of_range(text: str, fmt: NumberFormat | None) -> str | None:
    """For a number with a fraction (12.5), or a whole number past the 64-bit range the
    platform stores integers in."""
    if fmt is not None:
        if fmt.thousands == " ":
            text = text.replace("\u00a0", " ").replace("\u202f", " ")
        t, d = re.escape(fmt.thousands or ""), re.escape(fmt.decimal)
        groups = rf"[1-9][0-9]{{0,2}}(?:{t}[0-9]{{3}})+|" if fmt.thousands else ""
        if not re.fullmatch(rf"[+-]?(?:(?:{groups}[0-9]+)(?:{d}[0-9]*)?|{d}[0-9]+)", text):
            return None
        text = text.replace(fmt.thousands, "") if fmt.thousands else text
        text = text.replace(fmt.decimal, ".")
    if re.fullmatch(r"[+-]?[0-9]*\.[0-9]*[1-9][0-9]*", text):
        return "it has a fraction"
    whole = re.fullmatch(r"([+-]?[0-9]+)(?:\.0*)?", text)
    if whole is None or -(2**63) <= int(whole.group(1)) < 2**63:
        return None
    return f"outside the 64-bit range ({-(2**63)} to {2**63 - 1})"


def _quoted(mark: str) -> str:
    """A mark as a reason quotes it: ``','``, but ``"'"`` for the apostrophe."""
    return '"\'"' if mark == "'" else f"'{mark}'"


def _grouped(thousands: str, decimal: str) -> re.Pattern[str]:
    return re.compile(grouping(thousands, decimal))


def _separator_hint(text: str, type_: str) -> str | None:
    """For a value that would convert with a ``number_format``: which one to add (for an
    ``integer`` column only when the value then is whole: ``1,000.50`` gets none)."""
    for mark, fix, decimal in _GROUPINGS:
        if type_ == "integer" and not re.fullmatch(
            rf"[^{re.escape(decimal)}]*(?:{re.escape(decimal)}0*)?", text
        ):
            continue
        if mark in text and _grouped(mark, decimal).fullmatch(text):
            return (
                f"it has a thousands separator {_quoted(mark)}; "
                f"add number_format: {fix} to this column"
            )
    if _DECIMAL_COMMA.fullmatch(text) and (type_ != "integer" or re.search(",0+$", text)):
        return 'it has a decimal comma; add number_format: {decimal: ","} to this column'
    return None


def _misplaced(text: str, fmt: NumberFormat) -> str | None:
    """For a value with the thousands mark where its digits are not grouped by three."""
    t = fmt.thousands
    if t is None:
        return None
    if t == " ":
        text = text.replace("\u00a0", " ").replace("\u202f", " ")
    d = re.escape(fmt.decimal)
    shaped = re.fullmatch(rf"[+-]?[\d{re.escape(t)}]+(?:{d}\d*)?", text)
    if t in text and shaped and not _grouped(t, fmt.decimal).fullmatch(text):
        if re.match(rf"[+-]?0+{re.escape(t)}", text):
            return (
                f"a thousands separator {_quoted(t)} after a leading 0 "
                f"(is {_quoted(t)} the decimal mark here?)"
            )
        return (
            f"misplaced thousands separator {_quoted(t)} "
            f"(digits are grouped by three: 1{t}234{t}567)"
        )
    return None


_AUTO_DATE = re.compile(
    r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})"
    r"(?:[ T](\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:[.,]\d+)?)?(?:[Zz]|[+-]\d{2}(?::?\d{2})?)?)?"
)
_EPOCH_DIGITS = re.compile(r"[0-9]{1,9}|[0-9]{11,12}|[0-9]{14,}")
_EXCEL_SERIAL = re.compile(r"([0-9]{5})(?:\.[0-9]+)?")
_CHINESE_DATE = re.compile(r"[0-9]{4}年[0-9]{1,2}月[0-9]{1,2}日")


def _no_such_date(text: str, fmt: str | None) -> str | None:
    """For a date that has the shape of one but does not exist (``2024-02-30``, hour 24),
    and, without a ``format``, for the shapes it does not read (11 digits, 1990年3月5日)."""
    fields = _format_fields(text, fmt) if fmt else _auto_fields(text)
    if fields is None:
        compact = {8: "%Y%m%d", 14: "%Y%m%d%H%M%S"}.get(len(text))
        if fmt is None and compact and text.isascii() and text.isdigit():
            return f'is not a datetime without a format: add format: "{compact}" to this column'
        serial = _EXCEL_SERIAL.fullmatch(text) if fmt is None else None
        if serial and 10_000 <= int(serial.group(1)) <= 99_999:
            return (
                "is not a datetime: it looks like an Excel date serial number (days since "
                "1899-12-30); format the column as a date in Excel and export again"
            )
        if fmt is None and _EPOCH_DIGITS.fullmatch(text):
            return (
                f"is not a datetime: {len(text)} digit{'s are' if len(text) > 1 else ' is'} "
                "neither epoch seconds (10 digits) nor epoch milliseconds (13)"
            )
        if fmt is None and _CHINESE_DATE.fullmatch(text):
            return 'is not a datetime without a format: add format: "%Y年%m月%d日" to this column'
        return None
    year, month, day, clock = fields
    if year < 1:
        return "is no such date (there is no year 0)"
    if not 1 <= month <= 12:
        return f"is no such date (there is no month {month})"
    days = calendar.monthrange(year, month)[1]
    if not 1 <= day <= days:
        return f"is no such date ({calendar.month_name[month]} {year} has {days} days)"
    for value, unit, top in zip(clock, ("hour", "minute", "second"), (23, 59, 59), strict=True):
        if value is not None and value > top:
            return f"is no such time (there is no {unit} {value}; {unit}s go 0-{top})"
    return None


Fields = tuple[int, int, int, tuple[int | None, int | None, int | None]]


def _auto_fields(text: str) -> Fields | None:
    m = _AUTO_DATE.fullmatch(text)
    if m is None:
        return None
    clock = tuple(int(g) if g is not None else None for g in m.groups()[3:6])
    return int(m.group(1)), int(m.group(2)), int(m.group(3)), clock  # type: ignore[return-value]


def _format_fields(text: str, fmt: str) -> Fields | None:
    """(year, month, day, (hour, minute, second)) of ``text`` read with ``fmt`` where each
    may be any one or two digits; None when ``fmt`` has no numeric year, month and day or
    ``text`` does not fit."""
    pattern = _loose_format(fmt)
    m = pattern.fullmatch(text) if pattern is not None else None
    if m is None:
        return None
    groups = m.groupdict()
    year = int(groups["Y"]) if groups.get("Y") else 2000 + int(groups["y"])
    clock = tuple(int(groups[k]) if groups.get(k) else None for k in ("H", "M", "S"))
    return year, int(groups["m"]), int(groups["d"]), clock  # type: ignore[return-value]


@lru_cache(maxsize=64)
def _loose_format(fmt: str) -> re.Pattern[str] | None:
    import _strptime  # the stdlib's own strptime regexes (no public form of them)

    if not ("%Y" in fmt or "%y" in fmt) or "%m" not in fmt or "%d" not in fmt:
        return None
    loose = _strptime.TimeRE()
    loose["m"] = r"(?P<m>\d{1,2})"
    loose["d"] = r"(?P<d>\d{1,2})"
    for key in ("H", "M", "S"):
        loose[key] = rf"(?P<{key}>\d{{1,2}})"
    try:
        return re.compile(loose.pattern(fmt), re.IGNORECASE)
    except (re.error, KeyError, ValueError):
        return None
