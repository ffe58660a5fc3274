"""Value conversion: a column of cell text -> the JSON text of each value under its type.

Each conversion has a fast path, taken when a byte scan of the whole column shows the common
shape (plain digits, ``YYYY-MM-DD HH:MM:SS``), and a general path for everything else. Python
touches single values only for numbers it prints in exponent form, integers past 18 digits and
datetimes a configured ``format`` cannot parse vectorised. Every path yields the same text for
the same value, so one odd cell never changes another row's output.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..config import ColumnSpec, NumberFormat
from ..protocol import DATETIME_FORMAT
from .arrays import bools, byte_lengths, nulls, patch, value_bytes, within

#: Spreadsheet exports write booleans many ways; 是/否 is what Chinese exports use.
TRUE_WORDS = ("true", "1", "yes", "y", "是")
FALSE_WORDS = ("false", "0", "no", "n", "否")

#: A number prints as a JSON integer when integral and below this magnitude, else as a float.
INTEGRAL_LIMIT = 1e15

_AUTO_DATETIME = (
    r"^(?:(?P<ep>\d{10}|\d{13})"
    r"|(?P<y>\d{4})[-/](?P<mo>\d{1,2})[-/](?P<d>\d{1,2})"
    r"(?:[ T](?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:[.,]\d+)?)?"
    r"(?P<off>[Zz]|[+-]\d{2}(?::?\d{2})?)?)?)$"
)
_INTEGER = r"^-?\d+(?:\.0*)?$"
_NUMBER = r"^-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"
#: a leading ``+`` before a digit or the decimal point: dropped (``+-1`` keeps it, and fails)
_PLUS = r"^\+([\d.])"

#: The wire datetime (``protocol.DATETIME_FORMAT``) of the epoch: its length, and the separator
#: at each position (digits elsewhere), for the byte scan of the fast path.
_WIRE_EPOCH = datetime(1970, 1, 1).strftime(DATETIME_FORMAT)
_WIRE_LENGTH = len(_WIRE_EPOCH)
_WIRE_SEPARATORS = {i: ord(c) for i, c in enumerate(_WIRE_EPOCH) if not c.isdigit()}
_WIRE_DIGITS = [i for i in range(_WIRE_LENGTH) if i not in _WIRE_SEPARATORS]


def _integers(text: pa.Array) -> tuple[pa.Array, np.ndarray]:
    present = bools(pc.is_valid(text))
    if within(text, "0", "9") and (byte_lengths(text)[present] <= 18).all():
        return pc.cast(pc.cast(text, pa.int64()), pa.string()), np.zeros(len(text), dtype=bool)
    norm = pc.replace_substring_regex(text, _PLUS, r"\1")
    valid = bools(pc.match_substring_regex(norm, _INTEGER))
    norm = pc.replace_substring_regex(norm, r"\.0*$", "")
    norm = pc.replace_substring_regex(norm, r"^(-?)0+(\d)", r"\1\2")
    digits = pc.subtract(pc.utf8_length(norm), pc.cast(pc.starts_with(norm, "-"), pa.int32()))
    short = valid & bools(pc.less_equal(digits, 18))
    ints = pc.cast(pc.if_else(pa.array(short), norm, "0"), pa.int64())
    out = pc.if_else(pa.array(short), pc.cast(ints, pa.string()), None)
    long = valid & ~short
    if long.any():
        fixed: list[str | None] = []
        for s in norm.filter(pa.array(long)).to_pylist():
            v = int(s)
            fixed.append(str(v) if -(2**63) <= v < 2**63 else None)
        out = patch(out, long, fixed)
        valid = short | (long & bools(pc.is_valid(out)))
    return out, present & ~valid


def _number_text(x: float) -> str:
    return json.dumps(int(x) if x.is_integer() and abs(x) < INTEGRAL_LIMIT else x)


def _numbers(text: pa.Array) -> tuple[pa.Array, np.ndarray]:
    present = bools(pc.is_valid(text))
    vals: pa.Array | None = None
    if within(text, "-", "9"):  # digits, "-", "." (and "/", which the cast refuses)
        try:
            vals = pc.cast(text, pa.float64())
            matched = present
        except pa.ArrowInvalid:
            vals = None
    if vals is None:
        norm = pc.replace_substring_regex(text, _PLUS, r"\1")
        matched_arrow = pc.match_substring_regex(norm, _NUMBER)
        vals = pc.cast(pc.if_else(matched_arrow, norm, None), pa.float64())
        matched = bools(matched_arrow)
    valid = matched & bools(pc.is_finite(vals))
    mag = pc.abs(vals)
    integral = valid & bools(pc.equal(pc.floor(vals), vals)) & bools(pc.less(mag, INTEGRAL_LIMIT))
    as_float = pc.cast(vals, pa.string())
    # Arrow and Python print the same shortest digits, and the same layout in fixed notation
    # inside Python's fixed range [1e-4, 1e16); anything else is printed by Python.
    plain = (
        valid
        & ~integral
        & ~bools(pc.match_substring(as_float, "e"))
        & bools(pc.greater_equal(mag, 1e-4))
        & bools(pc.less(mag, 1e16))
    )
    out = pc.if_else(pa.array(plain), as_float, None)
    if integral.any():
        ints = pc.cast(pc.if_else(pa.array(integral), vals, 0.0), pa.int64())
        out = pc.if_else(pa.array(integral), pc.cast(ints, pa.string()), out)
    rest = valid & ~integral & ~plain
    if rest.any():
        out = patch(out, rest, [_number_text(x) for x in vals.filter(pa.array(rest)).to_pylist()])
    return out, present & ~valid


def _booleans(text: pa.Array) -> tuple[pa.Array, np.ndarray]:
    low = pc.utf8_lower(text)
    yes = pc.is_in(low, pa.array(TRUE_WORDS))
    no = pc.is_in(low, pa.array(FALSE_WORDS))
    out = pc.if_else(yes, "true", pc.if_else(no, "false", None))
    return out, bools(pc.is_valid(text)) & ~bools(pc.or_(yes, no))


def _zone_text(epoch_s: pa.Array, zone: str | None) -> pa.Array:
    """Wall-clock ``YYYY-MM-DD HH:MM:SS`` of epoch seconds in ``zone`` (UTC when None)."""
    return pc.strftime(pc.cast(epoch_s, pa.timestamp("s", tz=zone or "UTC")), DATETIME_FORMAT)


def _python_datetime(value: str, fmt: str, zone: str | None) -> str | None:
    """The exact (slow) path for one value of a configured ``format``."""
    try:
        dt = datetime.strptime(value, fmt)
    except ValueError:
        return None
    if dt.tzinfo is not None:
        dt = (dt.astimezone(ZoneInfo(zone)) if zone else dt).replace(tzinfo=None)
    out = dt.strftime(DATETIME_FORMAT)
    return out if len(out) == _WIRE_LENGTH else None


def _datetimes_format(text: pa.Array, fmt: str, zone: str | None) -> tuple[pa.Array, np.ndarray]:
    present = bools(pc.is_valid(text))
    out = nulls(len(text))
    good = np.zeros(len(text), dtype=bool)
    if "%z" not in fmt and "%Z" not in fmt:
        try:
            ts = pc.strptime(text, fmt, unit="s", error_is_null=True)
            # Arrow accepts some values Python's strptime refuses (Feb 30 rolls over) and
            # misses some it takes: only an exact round trip is trusted, the rest go slow.
            good = bools(pc.equal(pc.strftime(ts, fmt), text))
            out = pc.if_else(pa.array(good), pc.strftime(ts, DATETIME_FORMAT), None)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            good = np.zeros(len(text), dtype=bool)
    slow = present & ~good
    if slow.any():
        fixed = [_python_datetime(v, fmt, zone) for v in text.filter(pa.array(slow)).to_pylist()]
        out = patch(out, slow, fixed)
    return out, present & ~bools(pc.is_valid(out))


def _datetimes_wire(text: pa.Array, present: np.ndarray) -> tuple[pa.Array, np.ndarray] | None:
    """Fast path: every value already is in the wire format (``YYYY-MM-DD HH:MM:SS``, whose
    bytes 8-9 are the day); None when not."""
    lengths = byte_lengths(text)
    count = int(present.sum())
    if not ((lengths[present] == _WIRE_LENGTH).all() and (lengths[~present] == 0).all()):
        return None
    grid = value_bytes(text).reshape(count, _WIRE_LENGTH)
    for pos, sep in _WIRE_SEPARATORS.items():
        if not (grid[:, pos] == sep).all():
            return None
    for pos in _WIRE_DIGITS:
        column = grid[:, pos]
        if count and (column.min() < ord("0") or column.max() > ord("9")):
            return None
    ts = pc.strptime(text, DATETIME_FORMAT, unit="s", error_is_null=True)
    day = (grid[:, 8].astype(np.int64) - 48) * 10 + grid[:, 9] - 48
    parsed_day = pc.fill_null(pc.day(ts), -1).to_numpy(zero_copy_only=False)[present]
    invalid = np.zeros(len(text), dtype=bool)
    invalid[present] = parsed_day != day  # strptime rolls Feb 30 over to Mar 1
    if invalid.any():
        return pc.if_else(pa.array(invalid), None, text), invalid
    return text, invalid


def _datetimes_auto(text: pa.Array, zone: str | None) -> tuple[pa.Array, np.ndarray]:
    n = len(text)
    present = bools(pc.is_valid(text))
    fast = _datetimes_wire(text, present)
    if fast is not None:
        return fast
    parts = pc.extract_regex(text, _AUTO_DATETIME)
    matched = bools(pc.is_valid(parts))
    if not matched.any():
        return nulls(n), present

    def field(name: str) -> pa.Array:
        return pc.fill_null(pc.struct_field(parts, name), "")

    ep, off, day_text = field("ep"), field("off"), field("d")
    date = pc.binary_join_element_wise(
        field("y"), pc.utf8_lpad(field("mo"), 2, "0"), pc.utf8_lpad(day_text, 2, "0"), "-"
    )
    clock = pc.binary_join_element_wise(
        *(pc.utf8_lpad(field(k), 2, "0") for k in ("H", "M", "S")), ":"
    )
    canonical = pc.binary_join_element_wise(date, clock, " ")  # protocol.DATETIME_FORMAT
    is_ep = bools(pc.not_equal(ep, ""))
    ts = pc.strptime(
        pc.if_else(pa.array(is_ep), _WIRE_EPOCH, canonical),
        DATETIME_FORMAT,
        unit="s",
        error_is_null=True,
    )
    # strptime rolls Feb 30 over to Mar 1: the day must come back unchanged.
    day = pc.cast(pc.if_else(pc.equal(day_text, ""), "1", day_text), pa.int64())
    valid = matched & (is_ep | bools(pc.equal(pc.day(ts), day)))
    out = pc.if_else(pa.array(valid & ~is_ep), canonical, None)

    aware = valid & ~is_ep & bools(pc.not_equal(off, ""))
    if aware.any():
        digits = pc.replace_substring(pc.replace_substring_regex(off, "^[Zz]$", "+00"), ":", "")
        digits = pc.if_else(pa.array(aware), digits, "+00")
        hours = pc.cast(pc.utf8_slice_codeunits(digits, 1, 3), pa.int64())
        minutes = pc.cast(
            pc.if_else(
                pc.greater(pc.utf8_length(digits), 3), pc.utf8_slice_codeunits(digits, 3, 5), "0"
            ),
            pa.int64(),
        )
        sane = bools(pc.less(hours, 24)) & bools(pc.less(minutes, 60))
        valid &= ~(aware & ~sane)
        out = pc.if_else(pa.array(aware & ~sane), None, out)
        if zone:
            sign = pc.if_else(pc.starts_with(digits, "-"), -1, 1)
            offset_s = pc.multiply(sign, pc.add(pc.multiply(hours, 3600), pc.multiply(minutes, 60)))
            epoch = pc.subtract(pc.cast(pc.fill_null(ts, 0), pa.int64()), offset_s)
            convert = aware & sane
            converted = _zone_text(pc.if_else(pa.array(convert), epoch, 0), zone)
            out = pc.if_else(pa.array(convert), converted, out)
    if is_ep.any():
        seconds = pc.cast(pc.if_else(pa.array(is_ep), ep, "0"), pa.int64())
        seconds = pc.if_else(pc.equal(pc.utf8_length(ep), 13), pc.divide(seconds, 1000), seconds)
        out = pc.if_else(pa.array(is_ep), _zone_text(seconds, zone), out)
    return out, present & ~valid


def grouping(thousands: str, decimal: str) -> str:
    """The regex of a value whose digits before the ``decimal`` mark are grouped by three with
    ``thousands``, the first group without a leading 0 (``0,999`` is no thousand-grouped
    number: a decimal mark in a file that also groups thousands, more likely than 999)."""
    t, d = re.escape(thousands), re.escape(decimal)
    return rf"^[+-]?[1-9]\d{{0,2}}(?:{t}\d{{3}})+(?:{d}\d*)?$"


def grouped(fmt: NumberFormat) -> str:
    """``grouping`` of ``fmt``'s marks."""
    return grouping(fmt.thousands or "", fmt.decimal)


def plain_numbers(text: pa.Array, fmt: NumberFormat) -> tuple[pa.Array, np.ndarray]:
    """``text`` written under ``fmt`` -> as the converters read it (no grouping, ``.`` as the
    decimal mark), and the mask of values that cannot be read under ``fmt``: a thousands mark
    where the digits are not grouped by three, or a ``.`` that is neither of the two marks.
    A value without either mark is left as it is."""
    bad = np.zeros(len(text), dtype=bool)
    t = fmt.thousands
    if t == " ":
        text = pc.replace_substring_regex(text, "[\u00a0\u202f]", " ")
    has_t = bools(pc.match_substring(text, t)) if t is not None else None
    if t is not None and has_t is not None and has_t.any():
        bad |= has_t & ~bools(pc.match_substring_regex(text, grouped(fmt)))
        text = pc.replace_substring(text, t, "")
    if fmt.decimal == ",":
        if t != ".":
            bad |= bools(pc.match_substring(text, "."))
        text = pc.replace_substring(text, ",", ".")
    if bad.any():
        text = pc.if_else(pa.array(bad), None, text)
    return text, bad


def convert_values(spec: ColumnSpec, text: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """JSON text of each value under ``spec.type`` (null where absent or invalid) and the mask
    of present values that do not convert. Strings and datetimes come back unquoted."""
    if spec.type in ("integer", "number"):
        bad = None
        if spec.number_format is not None:
            text, bad = plain_numbers(text, spec.number_format)
        out, invalid = (_integers if spec.type == "integer" else _numbers)(text)
        return out, invalid if bad is None else invalid | bad
    if spec.type == "boolean":
        return _booleans(text)
    if spec.type == "datetime":
        if spec.format:
            out, invalid = _datetimes_format(text, spec.format, spec.timezone)
        else:
            out, invalid = _datetimes_auto(text, spec.timezone)
        # Arrow reads year 0, which no calendar (nor the platform) has: 0000-01-01
        year0 = bools(pc.fill_null(pc.starts_with(out, "0000"), False))
        if year0.any():
            out, invalid = pc.if_else(pa.array(year0), None, out), invalid | year0
        return out, invalid
    return text, np.zeros(len(text), dtype=bool)


@dataclass(frozen=True)
class Prop:
    """One property of the job's ``columns``, as the mapper plans it."""

    name: str
    spec: ColumnSpec
    #: ``"name":`` -- the body fragment of a value starts with it
    prefix: str
    label: str
    #: JSON text of a constant ``value``, else None
    constant: str | None


def label(name: str, spec: ColumnSpec) -> str:
    """How a reason names the property: by its column, or by name when it is a constant."""
    if spec.source is None:
        return f"property {name}"
    if spec.source == name:
        return f"column {name}"
    return f"column {spec.source} (property {name})"


@dataclass
class PropValues:
    """One property's state across the table."""

    text: pa.Array  # after transforms and default; null = omitted
    present: np.ndarray
    json: pa.Array | None = None  # converted JSON text (strings/datetimes unquoted)
    #: per row: the value was refused by a transform or does not convert
    invalid: np.ndarray | None = None
    #: per row the reason a transform refused the value (null elsewhere); None when no
    #: transform refused any (see ``transforms.Cleaned``)
    problem: pa.Array | None = None
