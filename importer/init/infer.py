"""What type (and format, transform) a column's sample values support, with the evidence."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..config import ColumnSpec
from ..map import FALSE_WORDS, TRUE_WORDS, convert_values
from ..map.reasons import value_problem
from ..map.transforms import transform as apply_transform
from ..protocol import DEFAULT_PROFILE

#: the errcode of a value of the wrong type under the protocol a proposal targets (import-api)
WRONG_TYPE = int(DEFAULT_PROFILE.wrong_type)

#: A share of sample values at least this large makes a column "look like" phones or e-mails,
#: and is worth a comment when a type almost fits.
_MOSTLY = 0.8


#: Words in a header or property name that say the column holds a time, or an id.
_TIME_WORDS = ("时间", "日期", "生日", "time", "date", "_at")
_ID_WORDS = ("号", "编号", "编码", "id", "code", "no")

_PHONE_CHARS = re.compile(r"^\+?[\d\s\-().]+$", re.ASCII)
_PHONE = re.compile(r"^(?:\+?86)?1[3-9]\d{9}$|^0\d{9,11}$", re.ASCII)
_LANDLINE = re.compile(r"^0\d{9,11}$", re.ASCII)
#: a mobile number a spreadsheet turned into scientific notation: 1.38001E+10
_MOBILE_EXPONENT = re.compile(r"^1(?:\.\d+)?[eE]\+?10$", re.ASCII)
_PHONE_HEADER = re.compile(r"phone|mobile|\btel\b|cellphone|手机|电话|联系方式", re.IGNORECASE)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", re.ASCII)
_INT = re.compile(r"^[+-]?\d+$", re.ASCII)
_LEADING_ZERO = re.compile(r"^[+-]?0\d", re.ASCII)
_DECIMAL = re.compile(r"^[+-]?(?:\d+\.\d*|\.\d+|\d+)$", re.ASCII)
_EXCEL_EXPONENT = re.compile(r"^[+-]?\d(?:\.\d+)?[eE]\+\d+$", re.ASCII)
# a first group with a leading 0 (0,999) is no thousands grouping: the mapper refuses it
_THOUSANDS = re.compile(r"^[+-]?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?$", re.ASCII)
_THOUSANDS_DOT = re.compile(r"^[+-]?[1-9]\d{0,2}(?:\.\d{3})+(?:,\d+)?$", re.ASCII)
_DECIMAL_COMMA = re.compile(r"^[+-]?\d+,\d+$", re.ASCII)
#: a cell ending in a UTC offset or Z: 2024-03-05T10:20:30+08:00
_OFFSET = re.compile(r"\d(?:Z|[+-]\d{2}:?\d{2})$", re.ASCII)
_EPOCH = re.compile(r"^\d{10}(?:\d{3})?$", re.ASCII)
_DATE_START = re.compile(r"^\d{1,4}[-/.年]\d{1,2}", re.ASCII)
_BOOL_WORDS = frozenset(TRUE_WORDS + FALSE_WORDS)

#: strptime formats tried, most specific first; the first one every sample value fits wins.
DATETIME_FORMATS = (
    "%Y-%m-%d %H:%M:%S",
    "%Y/%m/%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%d %H:%M:%S%z",
    "%Y-%m-%d %H:%M",
    "%Y/%m/%d %H:%M",
    "%Y-%m-%d",
    "%Y/%m/%d",
    "%Y.%m.%d %H:%M:%S",
    "%Y.%m.%d",
    "%Y年%m月%d日 %H:%M:%S",
    "%Y年%m月%d日 %H:%M",
    "%Y年%m月%d日",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y",
)
#: Digit-only formats: tried only for columns whose header says they hold a time.
_DIGIT_FORMATS = ("%Y%m%d%H%M%S", "%Y%m%d")


@dataclass
class ColumnGuess:
    """What ``init`` concluded about one source column."""

    header: str
    position: int  # 1-based
    name: str  # property name
    type: str = "string"
    format: str | None = None
    transform: list[str] = field(default_factory=list)
    why: str = ""
    looks_like: str | None = None  # phone | email | None
    number_format: dict[str, str] | None = None
    timezone: str | None = None
    #: datetime columns: why a timezone is needed ("cells carry offsets like +08:00"), or None
    zoned: str | None = None
    #: the offsets the sampled cells carry (``+08:00``, ``Z``)
    offsets: tuple[str, ...] = ()
    filled: int = 0  # non-empty sample values
    unique: bool = False  # the non-empty sample values are all different
    warning: str | None = None

    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {"from": self.header}
        if self.type != "string":
            out["type"] = self.type
        if self.format:
            out["format"] = self.format
        if self.timezone:
            out["timezone"] = self.timezone
        if self.number_format:
            out["number_format"] = dict(self.number_format)
        if self.transform:
            out["transform"] = list(self.transform)
        return out


def _share(k: int, n: int) -> str:
    return f"all {n}" if k == n and n > 1 else f"{k}/{n}"


def _spec(
    type_: str, fmt: str | None = None, number_format: dict[str, str] | None = None
) -> ColumnSpec:
    raw: dict[str, Any] = {"from": "sample", "type": type_, "format": fmt}
    if number_format:
        raw["number_format"] = number_format
    return ColumnSpec.model_validate(raw)


def _fits(values: Sequence[str], spec: ColumnSpec) -> int:
    """How many values the mapper converts under ``spec``."""
    _, invalid = convert_values(spec, pa.array(list(values), pa.string()))
    return len(values) - int(invalid.sum())


def _datetime_format(values: Sequence[str], timeish: bool) -> tuple[str | None, int, str | None]:
    """(format every value fits, or None; most values one format fits; that format)."""
    formats = DATETIME_FORMATS + (_DIGIT_FORMATS if timeish else ())
    best, best_fmt = 0, None
    fitting: list[str] = []
    for fmt in formats:
        try:
            datetime.strptime(values[0], fmt)
        except ValueError:
            continue
        fit = _fits(values, _spec("datetime", fmt))
        if fit == len(values):
            fitting.append(fmt)
        elif fit > best:
            best, best_fmt = fit, fmt
    day_first = [f for f in fitting if f.startswith("%d/")]
    month_first = [f for f in fitting if f.startswith("%m/")]
    if day_first and month_first and len(fitting) == len(day_first) + len(month_first):
        return None, 0, "ambiguous"  # 03/04/2024: March or April? The user must say.
    if fitting:
        return fitting[0], len(values), None
    return None, best, best_fmt


def infer(header: str, name: str, values: Sequence[str | None], sampled: int) -> ColumnGuess:
    """Guess the type and transforms of one column from its sample ``values``."""
    guess = ColumnGuess(header, 0, name)
    present = [v.strip() for v in values if v is not None and v.strip()]
    n = guess.filled = len(present)
    guess.unique = n > 0 and len(set(present)) == n
    if n == 0:
        guess.transform = ["strip"]
        guess.why = f"empty in all {sampled} sample rows -> text"
        return guess
    lowered = name.casefold() + " " + header.casefold()
    timeish = any(w in lowered for w in _TIME_WORDS)
    idish = name.endswith("_id") or name == "id" or any(w in lowered for w in _ID_WORDS)
    empties = f" ({sampled - n} empty)" if sampled > n else ""

    folded = [unicodedata.normalize("NFKC", v) for v in present]
    if _phone(guess, header, name, present, folded, empties):
        return guess
    emails = sum(1 for v in present if _EMAIL.match(v))
    if emails >= _MOSTLY * n:
        guess.looks_like = "email"
        guess.transform = ["strip", "lower"]
        guess.why = f"{_share(emails, n)} sample values look like e-mail addresses{empties} -> text"
        return guess
    guess.transform = ["strip"]

    exponent = [v for v in present if _EXCEL_EXPONENT.match(v)]
    if exponent:
        guess.warning = (
            f"values like {exponent[0]!r} are long numbers a spreadsheet turned into scientific "
            "notation: their digits are lost; re-export the column as text (docs/faq.md)"
        )
        guess.why = "kept as text, see the WARNING"
        return guess

    ints = [v for v in present if _INT.match(v)]
    if len(ints) == n:
        lengths = {len(v.lstrip("+-")) for v in ints}
        if timeish and lengths <= {8, 10, 13, 14}:
            dated = _as_datetime(replace(guess), present, timeish, empties)
            if dated.type == "datetime":
                return dated
        zeros = [v for v in ints if _LEADING_ZERO.match(v)]
        if zeros:
            guess.why = f"leading zeros ({zeros[0]!r}) would be lost as a number -> text"
        elif max(lengths) >= 16:
            guess.why = f"{max(lengths)}-digit values are ids, not quantities -> text"
        elif idish:
            guess.why = "digits, but named like an id -> text"
        elif set(ints) <= {"0", "1"}:
            guess.why = (
                "only 0 and 1: a flag (type: boolean) or a count (type: integer)? -> text "
                "until you say"
            )
        else:
            guess.type = "integer"
            guess.transform = []
            guess.why = f"{_share(n, n)} sample values are plain integers{empties}"
            epochs = [v for v in ints if _EPOCH.match(v)]
            if timeish and epochs and len(epochs) + ints.count("0") == n:
                # pay_time 0 on unpaid orders: as a datetime, 0 would be sent as 1970-01-01
                unit = "milliseconds" if len(epochs[0]) == 13 else "seconds"
                guess.why = (
                    f"named like a time and {len(epochs)}/{n} sample values are epoch {unit} "
                    f"like {epochs[0]!r}, but {n - len(epochs)} are 0{empties} -> integer, sent "
                    "as written (type: datetime would send 0 as 1970-01-01: leave those cells "
                    "empty in the export, then set type: datetime and a timezone)"
                )
        return guess

    def decimal(v: str) -> bool:
        return bool(_DECIMAL.match(v)) and not _LEADING_ZERO.match(v)

    decimals = [v for v in present if decimal(v)]
    if len(decimals) == n:
        guess.type = "number"
        guess.transform = []
        guess.why = f"{_share(n, n)} sample values are decimal numbers{empties}"
        return guess

    grouped = _number_format(present, decimal)
    if grouped is not None:
        type_, number_format, example = grouped
        if _fits(present, _spec(type_, None, number_format)) == n:
            guess.type, guess.number_format, guess.transform = type_, number_format, []
            marks = "thousands separators" + (
                f" and a decimal {number_format['decimal']!r}" if "decimal" in number_format else ""
            )
            guess.why = (
                f"{_share(n, n)} sample values are numbers, cells like {example!r} with "
                f"{marks}{empties} -> number_format"
            )
            return guess

    booleans = sum(1 for v in present if v.casefold() in _BOOL_WORDS)
    if booleans == n:
        guess.type = "boolean"
        guess.transform = []
        shown = "/".join(sorted({v.casefold() for v in present}))
        guess.why = f"{_share(n, n)} sample values are yes/no words ({shown}){empties}"
        return guess

    if _DATE_START.match(present[0]) or timeish:
        dated = _as_datetime(replace(guess), present, timeish, empties)
        if dated.type == "datetime" or dated.why:
            return dated

    # Nothing fits every value: say what almost did, so the user can decide.
    almost = _almost_number_format(present, decimal)
    if almost is not None:
        guess.why = almost
        return guess
    for label, type_, k, example_ok in (
        ("integers", "integer", len(ints), _INT.match),
        ("decimal numbers", "number", len(decimals), decimal),
        ("yes/no words", "boolean", booleans, lambda v: v.casefold() in _BOOL_WORDS),
    ):
        if k >= _MOSTLY * n:
            odd = next(v for v in present if not example_ok(v))
            guess.why = (
                f"{k}/{n} sample values are {label}, but not {odd!r} -> text "
                f"(type: {type_} would reject such rows with {WRONG_TYPE})"
            )
            return guess
    guess.why = "text"
    if guess.unique and n > 1 and idish:
        guess.why = "text, unique in the sample"
    return guess


def _as_datetime(
    guess: ColumnGuess, present: list[str], timeish: bool, empties: str
) -> ColumnGuess:
    guess = _datetime_guess(guess, present, timeish, empties)
    if guess.type == "datetime":
        offset = next((v for v in present if _OFFSET.search(v)), None)
        epoch = next((v for v in present if _EPOCH.match(v)), None)
        if offset is not None:
            guess.offsets = tuple(sorted({_offset(v) for v in present if _OFFSET.search(v)}))
            guess.zoned = f"cells carry offsets like {_offset(offset)}"
        elif epoch is not None:
            unit = "milliseconds" if len(epoch) == 13 else "seconds"
            guess.zoned = f"cells are epoch {unit} like {epoch}"
            if all(_EPOCH.match(v) for v in present):
                n = len(present)
                guess.why = f"{_share(n, n)} sample values are epoch {unit}{empties} -> datetime"
    return guess


def _datetime_guess(
    guess: ColumnGuess, present: list[str], timeish: bool, empties: str
) -> ColumnGuess:
    n = len(present)
    fmt, best, best_fmt = _datetime_format(present, timeish)
    if best_fmt == "ambiguous":
        guess.why = "dates like 03/04/2024 fit day/month and month/day order -> text; set format"
        return guess
    auto = _fits(present, _spec("datetime"))
    if fmt is not None and auto == n and not _vectorized(present, fmt):
        # The mapper parses a configured format in bulk only for zero-padded values
        # (2024/03/01 09:05); 2024/3/1 9:05 would take it to Python strptime, row by row,
        # several times slower. Its built-in recognition reads them in bulk, with the same result.
        guess.type, guess.transform = "datetime", []
        guess.why = (
            f"{_share(n, n)} sample values are datetimes like {present[0]!r}{empties}; "
            f"recognised without a format (format {fmt!r} would work too, but slower)"
        )
        return guess
    if fmt is not None:
        guess.type, guess.format, guess.transform = "datetime", fmt, []
        guess.why = f"{_share(n, n)} sample values are datetimes in this format{empties}"
        return guess
    if auto == n:
        guess.type, guess.transform = "datetime", []
        guess.why = (
            f"{_share(n, n)} sample values are datetimes, in mixed formats dmimport recognises"
            f"{empties}"
        )
        return guess
    k = max(best, auto)
    if k >= _MOSTLY * n:
        fmt = best_fmt if best > auto else None
        unfit = _unfit(present, fmt)
        impossible = [v for v in unfit if _impossible(v, fmt)]
        if impossible and len(impossible) == len(unfit):
            # 2024-02-30 among real dates is a bad row of a date column, not a sign of text:
            # sent as text it would reach a datetime property as is. Rejected with its reason.
            guess.type, guess.format, guess.transform = "datetime", fmt, []
            how = "in this format" if fmt else "in formats dmimport recognises"
            guess.why = (
                f"{k}/{n} sample values are datetimes {how}{empties}; "
                f"{len(impossible)} would be rejected as no such date, e.g. {impossible[0]!r}"
            )
            return guess
        shown = f" (format {best_fmt!r})" if best >= auto and best_fmt else ""
        odd = _unfit(present, best_fmt if best >= auto else None)[0]
        guess.why = (
            f"{k}/{n} sample values are datetimes{shown}, but not {odd!r} -> text "
            f"(type: datetime would reject such rows with {WRONG_TYPE})"
        )
    return guess


def _offset(cell: str) -> str:
    """The offset ending ``cell``, as ``+08:00`` (or ``Z``)."""
    if cell.endswith("Z"):
        return "Z"
    tail = re.search(r"[+-]\d{2}:?\d{2}$", cell)
    text = tail.group(0) if tail else ""
    return text if ":" in text else f"{text[:3]}:{text[3:]}"


def _vectorized(values: list[str], fmt: str) -> bool:
    """True when every value survives a bulk strptime/strftime round trip under ``fmt``."""
    if "%z" in fmt or "%Z" in fmt:
        return False
    arr = pa.array(values, pa.string())
    try:
        ts = pc.strptime(arr, format=fmt, unit="s", error_is_null=True)
        same = pc.equal(pc.strftime(ts, format=fmt), arr)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return bool(pc.all(pc.fill_null(same, False)).as_py())


def _unfit(values: list[str], fmt: str | None) -> list[str]:
    """The values that do not convert to a datetime under ``fmt``."""
    _, invalid = convert_values(_spec("datetime", fmt), pa.array(values, pa.string()))
    return [v for v, bad in zip(values, invalid.tolist(), strict=True) if bad]


def _impossible(value: str, fmt: str | None) -> bool:
    """True for a value shaped like a date that names no real day (``2024-02-30``)."""
    return value_problem(_spec("datetime", fmt), value).startswith("is no such date")


def _digits(value: str) -> str:
    kept = re.sub(r"\D", "", value)
    return "+" + kept if value.startswith("+") else kept


def _phone(
    guess: ColumnGuess,
    header: str,
    name: str,
    present: list[str],
    folded: list[str],
    empties: str,
) -> bool:
    """Make ``guess`` a phone column when its header or most of its values say so: mobiles
    get ``phone_cn`` (never ``digits``, which made keys of junk), landlines ``digits``. A column
    only its values call phones keeps the transform only when it refuses no sample value (the
    rows it would reject are the user's call); a phone header keeps it anyway, and the comment
    counts the values it rejects."""
    n = len(present)
    # a mobile is what phone_cn itself reads as one: 13800138000.0, '+86 138 0013 8000
    read = apply_transform(pa.array(present, pa.string()), ["nfkc", "strip", "phone_cn"])
    mobiles = [
        v
        for v, t, bad in zip(present, read.text.to_pylist(), read.refused.tolist(), strict=True)
        if t and not bad
    ]
    landlines = [
        v
        for v, f in zip(present, folded, strict=True)
        if _PHONE_CHARS.match(f) and _LANDLINE.match(re.sub(r"\D", "", f))
    ]
    mangled = [v for v in folded if _MOBILE_EXPONENT.match(v)]
    phoneish = len(mobiles) + len(landlines) + len(mangled)
    by_header = bool(_PHONE_HEADER.search(header)) or name == "phone"
    legacy = sum(1 for v in folded if _PHONE_CHARS.match(v) and _PHONE.match(_digits(v)))
    if not (by_header and phoneish >= n / 2) and max(phoneish, legacy) < _MOSTLY * n:
        return False
    named = "the header and " if by_header else ""
    if len(landlines) > (1 - _MOSTLY) * (len(mobiles) + len(landlines)):
        transform = "digits"
        cleaned = apply_transform(pa.array(present, pa.string()), ["nfkc", "strip", transform])
        refused = [v for v, bad in zip(present, cleaned.refused.tolist(), strict=True) if bad]
        looks = (
            f"{named}{_share(phoneish, n)} sample values look like phone numbers, "
            f"{len(landlines)} of them landlines like {landlines[0]!r}{empties}"
        )
        does = "digits drops spaces and dashes (phone_cn takes mobile numbers only)"
    else:
        transform = "phone_cn"
        refused = [v for v, bad in zip(present, read.refused.tolist(), strict=True) if bad]
        looks = (
            f"{named}{_share(n - len(refused), n)} sample values look like Chinese mobile numbers"
            f"{empties}"
        )
        does = (
            "phone_cn drops +86/0086, spaces and dashes and rejects anything that is not an "
            "11-digit mobile number"
        )
    if refused and not by_header:
        guess.transform = ["strip"]
        guess.why = (
            f"{looks}, but not {refused[0]!r} -> text ({transform} would reject such rows; "
            "add it if they should be rejected)"
        )
        return True
    guess.looks_like = "phone"
    guess.transform = ["strip", transform]
    guess.why = f"{looks} -> kept as text; {does}"
    if refused:
        guess.why += f" ({len(refused)} sample value(s) would be rejected, e.g. {refused[0]!r})"
    if mangled:
        guess.warning = (
            f"values like {mangled[0]!r} are phone numbers a spreadsheet turned into scientific "
            "notation: their digits are lost, so those rows are rejected; re-export the column "
            "as text (docs/faq.md)"
        )
    if folded != present:  # full-width digits
        guess.transform.insert(0, "nfkc")
        guess.why += "; nfkc makes full-width digits plain"
    return True


def _almost_number_format(present: list[str], decimal: Any) -> str | None:
    """The reason for text when most values are numbers written with thousands separators
    (8,280.04) and a few are not numbers at all ('abc'): which number_format would read them."""
    n = len(present)
    numbers = [
        v
        for v in present
        if _THOUSANDS.match(v) or _THOUSANDS_DOT.match(v) or _DECIMAL_COMMA.match(v) or decimal(v)
    ]
    grouped = _number_format(numbers, decimal) if len(numbers) >= _MOSTLY * n else None
    if grouped is None:
        return None
    type_, number_format, example = grouped
    _, invalid = convert_values(_spec(type_, None, number_format), pa.array(present, pa.string()))
    refused = [v for v, bad in zip(present, invalid.tolist(), strict=True) if bad]
    if not refused or len(refused) > n - _MOSTLY * n:
        return None
    marks = ", ".join(f"{k}: {v!r}" for k, v in number_format.items()).replace("'", '"')
    return (
        f"{n - len(refused)}/{n} sample values are numbers, cells like {example!r} with "
        f"thousands separators, but not {refused[0]!r} -> text (type: {type_} with "
        f"number_format: {{{marks}}} would reject such rows with {WRONG_TYPE})"
    )


def _number_format(present: list[str], decimal: Any) -> tuple[str, dict[str, str], str] | None:
    """(integer or number, its number_format, an example cell) when every value is a number
    and some are written with thousands separators (1,299.00) or a decimal comma (1.234,56)."""
    comma = [v for v in present if _THOUSANDS.match(v)]
    if comma and all(_THOUSANDS.match(v) or decimal(v) for v in present):
        type_ = "number" if any("." in v for v in present) else "integer"
        return type_, {"thousands": ","}, comma[0]
    dotted = [v for v in present if _THOUSANDS_DOT.match(v) or _DECIMAL_COMMA.match(v)]
    # 1.234 alone reads as a decimal: a decimal comma (12,5) or two dot groups (1.234.567)
    # must say the dots group thousands
    said = any("," in v or v.count(".") > 1 for v in dotted)
    if said and all(
        _THOUSANDS_DOT.match(v)
        or _DECIMAL_COMMA.match(v)
        or (_INT.match(v) and not _LEADING_ZERO.match(v))
        for v in present
    ):
        type_ = "number" if any("," in v for v in present) else "integer"
        return type_, {"thousands": ".", "decimal": ","}, dotted[0]
    return None
