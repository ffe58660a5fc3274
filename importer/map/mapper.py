"""The mapper: a table of source text in, per-row local verdicts and exact request bodies out.

Work is column-at-a-time with ``pyarrow.compute``. Each conversion has a fast path, taken when
a byte scan of the whole column (numpy over the Arrow data buffer) shows the common shape
(plain digits, ``YYYY-MM-DD HH:MM:SS``, text without quotes or control characters), and a
general path for everything else. Python touches single values only for rare cases: reasons
of rejected rows, odd control characters, numbers Python prints in exponent form, integers
past 18 digits, datetimes a configured ``format`` cannot parse vectorized. Every path yields
the same bytes for the same value, so one odd cell never changes another row's output.

Per property, in config order:

1. cell text -> ``transform`` steps -> for typed columns, surrounding whitespace dropped;
2. empty (null or "") -> omitted, then ``default`` (if any) fills it;
3. typed conversion to the JSON text the body will carry.

Local checks then mirror the server, first failure wins (``ErrCode`` values):

1. event name empty (``event_name_from``)                   DATA_CHECK_FAILED   20003
2. no property has a value                                  PROPERTIES_EMPTY    10004
3. no primary-key property; event without ``event_id``      PRIMARY_KEY_MISSING 20001
4. primary keys all whitespace; ``event_id`` whitespace     PRIMARY_KEY_EMPTY   20002
5. a value does not convert to its type (config order)      INVALID_TYPE        10002
6. ``create_time`` missing or invalid; event name longer    DATA_CHECK_FAILED   20003
   than ``max_value_length``; then per property in config
   order: ``required`` empty, string longer than
   ``max_value_length``, ``pattern`` mismatch

Bodies are joined per row from ``"key":value`` fragments and are byte-identical to
``protocol.user_body`` / ``protocol.event_body`` of the same dict. They stay in one Arrow
buffer: ``Mapped.bodies`` hands out ``bytes`` per row on access, so a million-row table never
becomes a million Python objects before the sender needs them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar, overload
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..config import CREATE_TIME, EVENT_ID, ColumnSpec, Config
from ..errcodes import ErrCode
from ..errors import ConfigError, ConfigProblem
from ..ledger import ABSENT, as_keys, combine, hash64, hex16

__all__ = [
    "BodyList",
    "HashList",
    "LazyList",
    "Mapped",
    "Mapper",
    "constant_problems",
    "convert_values",
]

T = TypeVar("T")

WIRE_DATETIME = "%Y-%m-%d %H:%M:%S"

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
#: Control characters json.dumps writes as \b, \f or \u00XX: rare, left to json.dumps itself.
_ODD_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f]"

_TYPE_PROBLEM = {
    "integer": "is not an integer",
    "number": "is not a number",
    "boolean": "is not a boolean (true/false, 1/0, yes/no, y/n, 是/否)",
    "datetime": "is not a datetime (e.g. 2024-01-31 08:00:00)",
}


#: ``YYYY-MM-DD HH:MM:SS``: the separator at each position, digits elsewhere.
_WIRE_SEPARATORS = {4: ord("-"), 7: ord("-"), 10: ord(" "), 13: ord(":"), 16: ord(":")}
_WIRE_DIGITS = [i for i in range(19) if i not in _WIRE_SEPARATORS]


class _BatchLike(Protocol):
    table: pa.Table
    lines: np.ndarray


# --------------------------------------------------------------------------------------------
# Results


class _Texts:
    """Zero-copy view of an Arrow string array's values as bytes."""

    def __init__(self, values: pa.Array):
        offsets, data = _buffers(values)
        self.offsets = offsets.tolist()
        self.data = data.data  # a memoryview over the Arrow buffer

    def __getitem__(self, i: int) -> memoryview:
        return self.data[self.offsets[i] : self.offsets[i + 1]]


class BodyList(Sequence[bytes | None]):
    """Request bodies of one table, kept in Arrow buffers; ``bytes`` are made on access.

    Reads like ``list[bytes | None]`` (index, slice, iterate, ``len``, ``==``), with ``None``
    for rows rejected locally. A body is ``head + properties + "}}"``; ``head`` is shared
    (``{"properties":{``) unless the event name comes from a column. Given a function instead
    of the arrays, the arrays are built on first use (``build``): a changed-only run that
    finds nothing changed never builds them.
    """

    def __init__(
        self,
        head: bytes | pa.Array | None,
        properties: pa.Array | Callable[[], tuple[bytes | pa.Array, pa.Array]],
        ok: np.ndarray,
    ):
        self._ok = ok
        self._make: Callable[[], tuple[bytes | pa.Array, pa.Array]] | None = None
        if callable(properties):
            self._make = properties
        else:
            assert head is not None
            self._set(head, properties)

    def _set(self, head: bytes | pa.Array, properties: pa.Array) -> None:
        self._head = head if isinstance(head, bytes) else None
        self._heads = _Texts(head) if not isinstance(head, bytes) else None
        self._properties = _Texts(properties)
        self._arrays = (head, properties)  # keeps the buffers alive

    def build(self) -> None:
        """Build the bodies now (they are otherwise built on first access)."""
        if self._make is not None:
            make, self._make = self._make, None
            self._set(*make())

    def __len__(self) -> int:
        return len(self._ok)

    def _body(self, i: int) -> bytes:
        if self._make is not None:
            self.build()
        head = self._head if self._heads is None else self._heads[i]
        assert head is not None
        return b"".join((head, self._properties[i], b"}}"))

    @overload
    def __getitem__(self, i: int) -> bytes | None: ...
    @overload
    def __getitem__(self, i: slice) -> list[bytes | None]: ...
    def __getitem__(self, i: int | slice) -> bytes | list[bytes | None] | None:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("body index out of range")
        return self._body(i) if self._ok[i] else None

    def __iter__(self) -> Iterator[bytes | None]:
        self.build()
        for i, ok in enumerate(self._ok.tolist()):
            yield self._body(i) if ok else None

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"BodyList({len(self)} rows, {int(self._ok.sum())} bodies)"


class LazyList(Sequence[T]):
    """A list built on first use: reading the mapper's ``keys`` costs nothing until the sender
    asks (events and validate-only runs never do)."""

    def __init__(self, n: int, build: Callable[[], list[T]]):
        self._n = n
        self._build: Callable[[], list[T]] | None = build
        self._items: list[T] | None = None

    def _list(self) -> list[T]:
        if self._items is None:
            assert self._build is not None
            self._items, self._build = self._build(), None
        return self._items

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> T: ...
    @overload
    def __getitem__(self, i: slice) -> list[T]: ...
    def __getitem__(self, i: int | slice) -> T | list[T]:
        return self._list()[i]

    def __iter__(self) -> Iterator[T]:
        return iter(self._list())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return self._list() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"LazyList({self._list()!r})"


class HashList(Sequence[str | None]):
    """``properties_hash``: 16 hex digits of a 64-bit hash of each row's mapped properties
    (``Mapper.properties_hash``), None for rows rejected locally. Computed for the whole
    table at once on first use: reading one hash or a million costs the same pass."""

    def __init__(self, compute: Callable[[], np.ndarray], ok: np.ndarray):
        self._compute: Callable[[], np.ndarray] | None = compute
        self._ok = ok
        self._values: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self._ok)

    def values(self) -> np.ndarray:
        """The uint64 hash of every row (0 where the row has no body)."""
        if self._values is None:
            assert self._compute is not None
            self._values, self._compute = self._compute(), None
        return self._values

    @overload
    def __getitem__(self, i: int) -> str | None: ...
    @overload
    def __getitem__(self, i: slice) -> list[str | None]: ...
    def __getitem__(self, i: int | slice) -> str | list[str | None] | None:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        ok = self._ok
        if i < 0:
            i += len(ok)
        if not 0 <= i < len(ok):
            raise IndexError("hash index out of range")
        return hex16(self.values()[i]) if ok[i] else None

    def __iter__(self) -> Iterator[str | None]:
        pairs = zip(self.values().tolist(), self._ok.tolist(), strict=True)
        return (hex16(v) if ok else None for v, ok in pairs)

    def take(self, rows: Sequence[int] | np.ndarray) -> list[str | None]:
        """The hashes of ``rows``, as ``self[i]`` gives them."""
        return [self[int(i)] for i in rows]

    def keys(self, rows: np.ndarray) -> np.ndarray:
        """int64 keys of the hashes of ``rows`` (all with bodies): ``int(hex, 16) - 2**63``,
        what the ledger compares."""
        return as_keys(self.values()[rows])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


@dataclass
class Mapped:
    """The mapper's verdict on one table; every sequence has one entry per row, in row order."""

    n: int
    lines: np.ndarray
    #: int32 per row: 0 = passes local checks, else the ErrCode the server would answer
    errcode: np.ndarray
    #: the source column that failed (None when ok, or when the row as a whole is at fault)
    column: list[str | None]
    reason: list[str | None]
    #: exact JSON body per row (None for rejected rows); None when build_bodies=False
    bodies: BodyList | None
    #: "phone=138...;email=a@b.cn" (+ ";event_id=..." for events), absent values left out
    identity: list[str]
    #: non-blank primary-key values as ("phone:138...", "email:a@b.cn"); built on first use
    keys: LazyList[tuple[str, ...]]
    #: per-row event names when the name comes from a column (None where empty), else None
    event_names: list[str | None] | None
    #: 64-bit hash (16 hex) of each body (None for rejected rows); None when build_bodies=False
    properties_hash: HashList | None
    #: ``identity`` as one Arrow string array (for hashing many at once)
    identity_text: pa.Array | None = None

    @property
    def ok(self) -> np.ndarray:
        return self.errcode == 0


# --------------------------------------------------------------------------------------------
# Vectorized helpers


def _buffers(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(int32 offsets, uint8 data) of a string array, without copying."""
    n = len(values)
    _, offsets_buf, data_buf = values.buffers()
    if n == 0 or offsets_buf is None:
        return np.zeros(n + 1, dtype=np.int32), np.zeros(0, dtype=np.uint8)
    offsets = np.frombuffer(offsets_buf, dtype=np.int32, count=n + 1, offset=values.offset * 4)
    if data_buf is None:
        return offsets, np.zeros(0, dtype=np.uint8)
    return offsets, np.frombuffer(data_buf, dtype=np.uint8)


def _value_bytes(values: pa.Array) -> np.ndarray:
    """Every byte of every value (a null slot's bytes too: scans may only over-report)."""
    offsets, data = _buffers(values)
    return data[offsets[0] : offsets[-1]]


def _within(values: pa.Array, low: str, high: str) -> bool:
    """Every byte of every value lies in ``low..high`` (two SIMD reductions, no copies)."""
    data = _value_bytes(values)
    return len(data) == 0 or (int(data.min()) >= ord(low) and int(data.max()) <= ord(high))


def _needs_escape(values: pa.Array) -> bool:
    """Some value holds '"', '\\' or a control character (a JSON string must escape them)."""
    data = _value_bytes(values)
    if len(data) == 0:
        return False
    if int(data.min()) < 0x20:
        return True
    step = 1 << 18  # chunks stay in cache: far faster than one pass with big temporaries
    for start in range(0, len(data), step):
        chunk = data[start : start + step]
        if (chunk == 0x22).any() or (chunk == 0x5C).any():
            return True
    return False


def _has_control(values: pa.Array) -> bool:
    data = _value_bytes(values)
    return len(data) > 0 and int(data.min()) < 0x20


def _np(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Arrow boolean -> numpy bool, null as False."""
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


def _nulls(n: int) -> pa.Array:
    return pa.nulls(n, pa.string())


def _patch(values: pa.Array, mask: np.ndarray, replacements: list[str | None]) -> pa.Array:
    """``values`` with the rows in ``mask`` replaced, in order, by ``replacements``."""
    return pc.replace_with_mask(values, pa.array(mask), pa.array(replacements, pa.string()))


def _string_literals(values: pa.Array, prefix: str = "") -> pa.Array:
    """``prefix`` + the JSON string literal of each value, exactly as ``json.dumps`` with
    ``ensure_ascii=False`` writes it; nulls stay null."""
    out = values
    if _needs_escape(values):
        out = pc.replace_substring(out, "\\", "\\\\")
        out = pc.replace_substring(out, '"', '\\"')
        if _has_control(values):
            out = pc.replace_substring(out, "\n", "\\n")
            out = pc.replace_substring(out, "\r", "\\r")
            out = pc.replace_substring(out, "\t", "\\t")
            odd = _np(pc.match_substring_regex(values, _ODD_CONTROL))
            if odd.any():
                raw = values.filter(pa.array(odd)).to_pylist()
                out = _patch(out, odd, [json.dumps(v, ensure_ascii=False)[1:-1] for v in raw])
    return pc.binary_join_element_wise(prefix + '"', out, '"', "")


def _join(fragments: list[pa.Array | str], sep: str, n: int) -> pa.Array:
    """Join per row, skipping null fragments; a row with none gives "".

    (pyarrow 26 drops the rows whose inputs are all null under ``null_handling="skip"``, so
    such rows get an empty first fragment first.)
    """
    fragments = list(fragments)
    positions = [i for i, f in enumerate(fragments) if not isinstance(f, str)]
    if not positions:  # constants only: still n rows
        fragments.append(_nulls(n))
        positions = [len(fragments) - 1]
    if len(positions) < len(fragments):  # a constant is in every row: nothing to patch
        return pc.binary_join_element_wise(*fragments, sep, null_handling="skip")
    some = np.zeros(n, dtype=bool)
    for i in positions:
        some |= _np(pc.is_valid(fragments[i]))
    if not some.all():
        first = positions[0]
        fragments[first] = pc.if_else(pa.array(some), fragments[first], "")
    return pc.binary_join_element_wise(*fragments, sep, null_handling="skip")


# --------------------------------------------------------------------------------------------
# Type conversion: text (null = absent) -> (JSON text or null, mask of present-but-invalid)


def _lengths(values: pa.Array) -> np.ndarray:
    offsets, _ = _buffers(values)
    return np.diff(offsets)


def _integers(text: pa.Array) -> tuple[pa.Array, np.ndarray]:
    present = _np(pc.is_valid(text))
    if _within(text, "0", "9") and (_lengths(text)[present] <= 18).all():
        return pc.cast(pc.cast(text, pa.int64()), pa.string()), np.zeros(len(text), dtype=bool)
    norm = pc.replace_substring_regex(text, r"^\+", "")
    valid = _np(pc.match_substring_regex(norm, _INTEGER))
    norm = pc.replace_substring_regex(norm, r"\.0*$", "")
    norm = pc.replace_substring_regex(norm, r"^(-?)0+(\d)", r"\1\2")
    digits = pc.subtract(pc.utf8_length(norm), pc.cast(pc.starts_with(norm, "-"), pa.int32()))
    short = valid & _np(pc.less_equal(digits, 18))
    ints = pc.cast(pc.if_else(pa.array(short), norm, "0"), pa.int64())
    out = pc.if_else(pa.array(short), pc.cast(ints, pa.string()), None)
    long = valid & ~short
    if long.any():
        fixed: list[str | None] = []
        for s in norm.filter(pa.array(long)).to_pylist():
            v = int(s)
            fixed.append(str(v) if -(2**63) <= v < 2**63 else None)
        out = _patch(out, long, fixed)
        valid = short | (long & _np(pc.is_valid(out)))
    return out, present & ~valid


def _number_text(x: float) -> str:
    return json.dumps(int(x) if x.is_integer() and abs(x) < INTEGRAL_LIMIT else x)


def _numbers(text: pa.Array) -> tuple[pa.Array, np.ndarray]:
    present = _np(pc.is_valid(text))
    vals: pa.Array | None = None
    if _within(text, "-", "9"):  # digits, "-", "." (and "/", which the cast refuses)
        try:
            vals = pc.cast(text, pa.float64())
            matched = present
        except pa.ArrowInvalid:
            vals = None
    if vals is None:
        norm = pc.replace_substring_regex(text, r"^\+", "")
        matched_arrow = pc.match_substring_regex(norm, _NUMBER)
        vals = pc.cast(pc.if_else(matched_arrow, norm, None), pa.float64())
        matched = _np(matched_arrow)
    valid = matched & _np(pc.is_finite(vals))
    mag = pc.abs(vals)
    integral = valid & _np(pc.equal(pc.floor(vals), vals)) & _np(pc.less(mag, INTEGRAL_LIMIT))
    as_float = pc.cast(vals, pa.string())
    # Arrow and Python print the same shortest digits, and the same layout in fixed notation
    # inside Python's fixed range [1e-4, 1e16); anything else is printed by Python.
    plain = (
        valid
        & ~integral
        & ~_np(pc.match_substring(as_float, "e"))
        & _np(pc.greater_equal(mag, 1e-4))
        & _np(pc.less(mag, 1e16))
    )
    out = pc.if_else(pa.array(plain), as_float, None)
    if integral.any():
        ints = pc.cast(pc.if_else(pa.array(integral), vals, 0.0), pa.int64())
        out = pc.if_else(pa.array(integral), pc.cast(ints, pa.string()), out)
    rest = valid & ~integral & ~plain
    if rest.any():
        out = _patch(out, rest, [_number_text(x) for x in vals.filter(pa.array(rest)).to_pylist()])
    return out, present & ~valid


def _booleans(text: pa.Array) -> tuple[pa.Array, np.ndarray]:
    low = pc.utf8_lower(text)
    yes = pc.is_in(low, pa.array(TRUE_WORDS))
    no = pc.is_in(low, pa.array(FALSE_WORDS))
    out = pc.if_else(yes, "true", pc.if_else(no, "false", None))
    return out, _np(pc.is_valid(text)) & ~_np(pc.or_(yes, no))


def _zone_text(epoch_s: pa.Array, zone: str | None) -> pa.Array:
    """Wall-clock ``YYYY-MM-DD HH:MM:SS`` of epoch seconds in ``zone`` (UTC when None)."""
    return pc.strftime(pc.cast(epoch_s, pa.timestamp("s", tz=zone or "UTC")), WIRE_DATETIME)


def _python_datetime(value: str, fmt: str, zone: str | None) -> str | None:
    """The exact (slow) path for one value of a configured ``format``."""
    try:
        dt = datetime.strptime(value, fmt)
    except ValueError:
        return None
    if dt.tzinfo is not None:
        dt = (dt.astimezone(ZoneInfo(zone)) if zone else dt).replace(tzinfo=None)
    out = dt.strftime(WIRE_DATETIME)
    return out if len(out) == 19 else None


def _datetimes_format(text: pa.Array, fmt: str, zone: str | None) -> tuple[pa.Array, np.ndarray]:
    present = _np(pc.is_valid(text))
    out = _nulls(len(text))
    good = np.zeros(len(text), dtype=bool)
    if "%z" not in fmt and "%Z" not in fmt:
        try:
            ts = pc.strptime(text, fmt, unit="s", error_is_null=True)
            # Arrow accepts some values Python's strptime refuses (Feb 30 rolls over) and
            # misses some it takes: only an exact round trip is trusted, the rest go slow.
            good = _np(pc.equal(pc.strftime(ts, fmt), text))
            out = pc.if_else(pa.array(good), pc.strftime(ts, WIRE_DATETIME), None)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            good = np.zeros(len(text), dtype=bool)
    slow = present & ~good
    if slow.any():
        fixed = [_python_datetime(v, fmt, zone) for v in text.filter(pa.array(slow)).to_pylist()]
        out = _patch(out, slow, fixed)
    return out, present & ~_np(pc.is_valid(out))


def _datetimes_wire(text: pa.Array, present: np.ndarray) -> tuple[pa.Array, np.ndarray] | None:
    """Fast path: every value already is ``YYYY-MM-DD HH:MM:SS``; None when not."""
    lengths = _lengths(text)
    count = int(present.sum())
    if not ((lengths[present] == 19).all() and (lengths[~present] == 0).all()):
        return None
    grid = _value_bytes(text).reshape(count, 19)
    for pos, sep in _WIRE_SEPARATORS.items():
        if not (grid[:, pos] == sep).all():
            return None
    for pos in _WIRE_DIGITS:
        column = grid[:, pos]
        if count and (column.min() < ord("0") or column.max() > ord("9")):
            return None
    ts = pc.strptime(text, WIRE_DATETIME, unit="s", error_is_null=True)
    day = (grid[:, 8].astype(np.int64) - 48) * 10 + grid[:, 9] - 48
    parsed_day = pc.fill_null(pc.day(ts), -1).to_numpy(zero_copy_only=False)[present]
    invalid = np.zeros(len(text), dtype=bool)
    invalid[present] = parsed_day != day  # strptime rolls Feb 30 over to Mar 1
    if invalid.any():
        return pc.if_else(pa.array(invalid), None, text), invalid
    return text, invalid


def _datetimes_auto(text: pa.Array, zone: str | None) -> tuple[pa.Array, np.ndarray]:
    n = len(text)
    present = _np(pc.is_valid(text))
    fast = _datetimes_wire(text, present)
    if fast is not None:
        return fast
    parts = pc.extract_regex(text, _AUTO_DATETIME)
    matched = _np(pc.is_valid(parts))
    if not matched.any():
        return _nulls(n), present

    def field(name: str) -> pa.Array:
        return pc.fill_null(pc.struct_field(parts, name), "")

    ep, off, day_text = field("ep"), field("off"), field("d")
    date = pc.binary_join_element_wise(
        field("y"), pc.utf8_lpad(field("mo"), 2, "0"), pc.utf8_lpad(day_text, 2, "0"), "-"
    )
    clock = pc.binary_join_element_wise(
        *(pc.utf8_lpad(field(k), 2, "0") for k in ("H", "M", "S")), ":"
    )
    canonical = pc.binary_join_element_wise(date, clock, " ")
    is_ep = _np(pc.not_equal(ep, ""))
    ts = pc.strptime(
        pc.if_else(pa.array(is_ep), "1970-01-01 00:00:00", canonical),
        WIRE_DATETIME,
        unit="s",
        error_is_null=True,
    )
    # strptime rolls Feb 30 over to Mar 1: the day must come back unchanged.
    day = pc.cast(pc.if_else(pc.equal(day_text, ""), "1", day_text), pa.int64())
    valid = matched & (is_ep | _np(pc.equal(pc.day(ts), day)))
    out = pc.if_else(pa.array(valid & ~is_ep), canonical, None)

    aware = valid & ~is_ep & _np(pc.not_equal(off, ""))
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
        sane = _np(pc.less(hours, 24)) & _np(pc.less(minutes, 60))
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


def convert_values(spec: ColumnSpec, text: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """JSON text of each value under ``spec.type`` (null where absent or invalid) and the mask
    of present values that do not convert. Strings and datetimes come back unquoted."""
    if spec.type == "integer":
        return _integers(text)
    if spec.type == "number":
        return _numbers(text)
    if spec.type == "boolean":
        return _booleans(text)
    if spec.type == "datetime":
        if spec.format:
            return _datetimes_format(text, spec.format, spec.timezone)
        return _datetimes_auto(text, spec.timezone)
    return text, np.zeros(len(text), dtype=bool)


def _type_problem(spec: ColumnSpec) -> str:
    if spec.type == "datetime" and spec.format:
        return f"is not a datetime in format '{spec.format}'"
    return _TYPE_PROBLEM[spec.type]


def _transform(text: pa.Array, steps: Sequence[str]) -> pa.Array:
    for step in steps:
        if step == "strip":
            text = pc.utf8_trim_whitespace(text)
        elif step == "lower":
            text = pc.utf8_lower(text)
        elif step == "upper":
            text = pc.utf8_upper(text)
        elif step == "nfkc":
            text = pc.utf8_normalize(text, "NFKC")
        elif step == "collapse_spaces":
            text = pc.utf8_trim_whitespace(pc.replace_substring_regex(text, r"\s+", " "))
        elif step == "digits" and not _within(text, "0", "9"):
            plus = pc.starts_with(pc.utf8_trim_whitespace(text), "+")
            only = pc.replace_substring_regex(text, r"[^0-9]+", "")
            keep_plus = pc.and_(plus, pc.not_equal(only, ""))
            text = pc.if_else(keep_plus, pc.binary_join_element_wise("+", only, ""), only)
    return text


def _show(value: Any, limit: int = 60) -> str:
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return repr(text)


# --------------------------------------------------------------------------------------------
# Per-property plan


@dataclass(frozen=True)
class _Prop:
    name: str
    spec: ColumnSpec
    #: ``"name":`` -- the body fragment of a value starts with it
    prefix: str
    label: str
    #: JSON text of a constant ``value``, else None
    constant: str | None


def _label(name: str, spec: ColumnSpec) -> str:
    if spec.source is None:
        return f"property {name}"
    if spec.source == name:
        return f"column {name}"
    return f"column {spec.source} (property {name})"


@dataclass
class _Values:
    """One property's state across the table."""

    text: pa.Array  # after transforms and default; null = omitted
    present: np.ndarray
    json: pa.Array | None = None  # converted JSON text (strings/datetimes unquoted)
    invalid: np.ndarray | None = None


def _scalar_json(spec: ColumnSpec, text: str) -> tuple[str | None, str | None]:
    """(JSON text, problem) of one constant under ``spec``."""
    arr = pa.array([text.strip() if spec.type != "string" else text], pa.string())
    out, invalid = convert_values(spec, arr)
    if invalid[0]:
        return None, f"{_show(text)} {_type_problem(spec)}"
    if spec.type in ("string", "datetime"):
        out = _string_literals(out)
    return out[0].as_py(), None


def constant_problems(
    columns: Mapping[str, ColumnSpec], max_value_length: int
) -> list[tuple[tuple[str, ...], str, str | None]]:
    """Config-time checks of ``value`` and ``default`` with the mapper's own converters:
    ``(key path, message, hint)`` for each one the mapper would reject."""
    out: list[tuple[tuple[str, ...], str, str | None]] = []
    limit = max_value_length
    for name, spec in columns.items():
        for key in ("value", "default"):
            text = getattr(spec, key)
            if text is None:
                continue
            path = ("columns", name, key)
            _, problem = _scalar_json(spec, text)
            if problem:
                out.append((path, problem, None))
            elif spec.type == "string" and len(text) > limit:
                out.append((path, f"longer than max_value_length ({limit})", None))
            elif (
                spec.pattern is not None
                and not _np(pc.match_substring_regex(pa.array([text]), f"^(?:{spec.pattern})$"))[0]
            ):
                out.append((path, f"{_show(text)} does not match pattern {spec.pattern!r}", None))
    return out


class Mapper:
    """Turns tables of source text into local verdicts and request bodies for one config."""

    def __init__(self, config: Config):
        problems = constant_problems(config.columns, config.job.max_value_length)
        if problems:
            raise ConfigError([ConfigProblem(".".join(p), m, h) for p, m, h in problems])
        self.config = config
        job = config.job
        self.is_event = job.kind == "event"
        self.primary_keys = list(job.primary_keys)
        self.max_value_length = job.max_value_length
        self.props: list[_Prop] = []
        for name, spec in config.columns.items():
            constant = _scalar_json(spec, spec.value)[0] if spec.value is not None else None
            prefix = json.dumps(name, ensure_ascii=False) + ":"
            self.props.append(_Prop(name, spec, prefix, _label(name, spec), constant))
        self._by_name = {p.name: p for p in self.props}
        self._head = '{"properties":{'
        if self.is_event and job.event_name is not None:
            name = json.dumps(job.event_name, ensure_ascii=False)
            self._head = '{"eventName":' + name + ',"properties":{'
        layout = [self._head, [(p.name, p.spec.type, p.constant) for p in self.props]]
        self._layout_hash = hash64([json.dumps(layout, ensure_ascii=False)])[0]

    def map(self, batch: _BatchLike, *, build_bodies: bool = True) -> Mapped:
        """Map a loader ``Batch`` (its ``table`` and ``lines``)."""
        return self.map_table(batch.table, batch.lines, build_bodies=build_bodies)

    def map_table(self, table: pa.Table, lines: np.ndarray, *, build_bodies: bool = True) -> Mapped:
        """Check every row of ``table`` and, unless told not to, build the bodies that pass."""
        n = table.num_rows
        values = {p.name: self._values(table, p) for p in self.props}
        verdict = _Verdict(n)

        # 1. event name from a column
        names: pa.Array | None = None
        name_from = self.config.job.event_name_from
        if self.is_event and name_from is not None:
            names = pc.utf8_trim_whitespace(self._column(table, name_from))
            names = pc.if_else(pc.not_equal(names, ""), names, None)
            verdict.reject(
                ~_np(pc.is_valid(names)),
                ErrCode.DATA_CHECK_FAILED,
                name_from,
                f"event name column {name_from} is empty",
            )

        # 2. properties empty
        anything = np.zeros(n, dtype=bool)
        for v in values.values():
            anything |= v.present
        verdict.reject(
            ~anything,
            ErrCode.PROPERTIES_EMPTY,
            None,
            "Properties are empty: every mapped column is empty",
        )

        # 3. and 4. primary keys, then event_id
        usable = {k: values[k].present & ~_blank(values[k].text) for k in self.primary_keys}
        pk_any = np.logical_or.reduce([values[k].present for k in self.primary_keys])
        pk_usable = np.logical_or.reduce(list(usable.values()))
        pk_list = ", ".join(self.primary_keys)
        verdict.reject(
            ~pk_any,
            ErrCode.PRIMARY_KEY_MISSING,
            None,
            f"no primary-key property has a value ({pk_list})",
        )
        event_id = values.get(EVENT_ID) if self.is_event else None
        if event_id is not None:
            eid = self._by_name[EVENT_ID]
            verdict.reject(
                ~event_id.present,
                ErrCode.PRIMARY_KEY_MISSING,
                eid.spec.source,
                f"event_id is missing ({eid.label} is empty)",
            )
        verdict.reject(
            pk_any & ~pk_usable,
            ErrCode.PRIMARY_KEY_EMPTY,
            None,
            f"primary-key values are all blank ({pk_list})",
        )
        if event_id is not None:
            verdict.reject(
                event_id.present & _blank(event_id.text),
                ErrCode.PRIMARY_KEY_EMPTY,
                eid.spec.source,
                "event_id is blank",
            )

        # 5. types, 6. data checks
        for prop in self.props:
            v = values[prop.name]
            if prop.constant is None:
                v.json, v.invalid = convert_values(prop.spec, v.text)
        create_time = self._by_name.get(CREATE_TIME) if self.is_event else None
        for prop in self.props:
            invalid = values[prop.name].invalid
            if invalid is None or prop is create_time or prop.spec.type == "string":
                continue
            verdict.reject(
                invalid,
                ErrCode.INVALID_TYPE,
                prop.spec.source,
                _bad_values(prop, values[prop.name].text, _type_problem(prop.spec)),
            )
        if create_time is not None:
            ct = values[CREATE_TIME]
            verdict.reject(
                ~ct.present,
                ErrCode.DATA_CHECK_FAILED,
                create_time.spec.source,
                f"create_time is missing ({create_time.label} is empty)",
            )
            if ct.invalid is not None:
                verdict.reject(
                    ct.invalid,
                    ErrCode.DATA_CHECK_FAILED,
                    create_time.spec.source,
                    _bad_values(create_time, ct.text, _type_problem(create_time.spec)),
                )
        if names is not None and (_lengths(names) > self.max_value_length).any():
            long_name = _np(pc.greater(pc.utf8_length(names), self.max_value_length))
            verdict.reject(
                long_name,
                ErrCode.DATA_CHECK_FAILED,
                name_from,
                f"event name is longer than max_value_length {self.max_value_length}",
            )
        for prop in self.props:
            if prop.constant is None:
                self._data_checks(prop, values[prop.name], verdict)

        ok = verdict.errcode == 0
        identity_text = self._identity(values, n)
        identity = identity_text.to_pylist()
        pk_texts = {k: values[k].text for k in self.primary_keys}
        keys = LazyList(n, lambda: self._keys(pk_texts, usable))
        bodies = hashes = None
        if build_bodies:
            bodies = BodyList(None, lambda: self._bodies(values, names, n), ok)
            hashes = HashList(lambda: self._properties_hash(values, names, ok), ok)
        return Mapped(
            n=n,
            lines=np.asarray(lines, dtype=np.int64),
            errcode=verdict.errcode,
            column=verdict.column,
            reason=verdict.reason,
            bodies=bodies,
            identity=identity,
            keys=keys,
            event_names=names.to_pylist() if names is not None else None,
            properties_hash=hashes,
            identity_text=identity_text,
        )

    # -- steps ---------------------------------------------------------------------------------

    def _column(self, table: pa.Table, name: str) -> pa.Array:
        if name not in table.column_names:
            return _nulls(table.num_rows)
        col = table.column(name)
        arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        if col.num_chunks == 0:
            arr = pa.array([], pa.string())
        return arr if arr.type == pa.string() else pc.cast(arr, pa.string())

    def _values(self, table: pa.Table, prop: _Prop) -> _Values:
        n = table.num_rows
        spec = prop.spec
        if prop.constant is not None:
            return _Values(_nulls(n), np.ones(n, dtype=bool))
        assert spec.source is not None
        text = _transform(self._column(table, spec.source), spec.transform)
        if spec.type != "string":
            text = pc.utf8_trim_whitespace(text)
        present = _np(pc.is_valid(text)) & (_lengths(text) > 0)
        if spec.default is not None:
            if not present.all():
                default = spec.default.strip() if spec.type != "string" else spec.default
                text = pc.if_else(pa.array(present), text, default)
            present = np.ones(n, dtype=bool)
        elif not present.all():
            text = pc.if_else(pa.array(present), text, None)
        return _Values(text, present)

    def _data_checks(self, prop: _Prop, v: _Values, verdict: _Verdict) -> None:
        spec = prop.spec
        if spec.required:
            verdict.reject(
                ~v.present,
                ErrCode.DATA_CHECK_FAILED,
                spec.source,
                f"required {prop.label} is empty",
            )
        limit = self.max_value_length
        # Only a value with more bytes than the limit can have more characters than it.
        if spec.type == "string" and (_lengths(v.text) > limit).any():
            chars = pc.fill_null(pc.utf8_length(v.text), 0).to_numpy()
            verdict.reject(
                chars > limit,
                ErrCode.DATA_CHECK_FAILED,
                spec.source,
                lambda idx: [
                    f"{prop.label}: value is {chars[i]} characters, longer than "
                    f"max_value_length {limit}"
                    for i in idx
                ],
            )
        if spec.pattern is not None:
            fits = _np(pc.match_substring_regex(v.text, f"^(?:{spec.pattern})$"))
            verdict.reject(
                v.present & ~fits,
                ErrCode.DATA_CHECK_FAILED,
                spec.source,
                _bad_values(prop, v.text, f"does not match pattern {spec.pattern!r}"),
            )

    @property
    def identity_keys(self) -> list[str]:
        """The names in a row's identity, in order: the primary keys, and ``event_id``."""
        shown = list(self.primary_keys)
        if self.is_event and EVENT_ID not in shown:
            shown.append(EVENT_ID)
        return shown

    def _identity(self, values: dict[str, _Values], n: int) -> pa.Array:
        parts: list[pa.Array | str] = [
            pc.binary_join_element_wise(f"{k}=", values[k].text, "") for k in self.identity_keys
        ]
        return _join(parts, ";", n)

    def _keys(
        self, texts: dict[str, pa.Array], usable: dict[str, np.ndarray]
    ) -> list[tuple[str, ...]]:
        columns = []
        for key, text in texts.items():
            frag = pc.binary_join_element_wise(f"{key}:", text, "")
            if not usable[key].all():
                frag = pc.if_else(pa.array(usable[key]), frag, None)
            columns.append(frag.to_pylist())
        keys: list[tuple[str, ...]] = list(zip(*columns, strict=True))
        complete = np.logical_and.reduce(list(usable.values()))
        for i in np.flatnonzero(~complete).tolist():
            keys[i] = tuple(k for k in keys[i] if k is not None)
        return keys

    def _bodies(
        self, values: dict[str, _Values], names: pa.Array | None, n: int
    ) -> tuple[bytes | pa.Array, pa.Array]:
        """(head, properties) arrays of every row's body."""
        fragments: list[pa.Array | str] = []
        for prop in self.props:
            v = values[prop.name]
            if prop.constant is not None:
                fragments.append(prop.prefix + prop.constant)
            elif prop.spec.type == "string":
                assert v.json is not None
                fragments.append(_string_literals(v.json, prop.prefix))
            elif prop.spec.type == "datetime":  # digits, '-', ':' and ' ': nothing to escape
                fragments.append(pc.binary_join_element_wise(prop.prefix + '"', v.json, '"', ""))
            else:
                fragments.append(pc.binary_join_element_wise(prop.prefix, v.json, ""))
        properties = _join(fragments, ",", n)
        if names is None:
            return self._head.encode(), properties
        heads = _string_literals(pc.fill_null(names, ""), '{"eventName":')
        heads = pc.binary_join_element_wise(heads, ',"properties":{', "")
        return heads, properties

    def _properties_hash(
        self, values: dict[str, _Values], names: pa.Array | None, ok: np.ndarray
    ) -> np.ndarray:
        """Per row with a body (0 elsewhere): ``rowhash.combine`` of the job's layout (event
        name, property names, types and constants) and of each property's JSON value (or
        "absent"), plus the row's event name when it comes from a column. The same values
        make the same body, and the other way round, so this tells a changed body from an
        unchanged one without building bodies."""
        rows = np.flatnonzero(ok)
        every = len(rows) == len(ok)
        picked = pa.array(rows)
        arrays: list[pa.Array] = [
            a for p in self.props if p.constant is None and (a := values[p.name].json) is not None
        ]
        if names is not None:
            arrays.append(names)
        if not every:
            arrays = [a.take(picked) for a in arrays]
        columns = [np.full(len(rows), self._layout_hash, dtype=np.uint64)]
        if arrays:  # one pass over every column's values: fewer, larger numpy operations
            flat = pa.concat_arrays([a.cast(pa.string()) for a in arrays])
            h = hash64(flat)
            if flat.null_count:
                h[~_np(pc.is_valid(flat))] = ABSENT
            columns.extend(h.reshape(len(arrays), len(rows)))
        out = np.zeros(len(ok), dtype=np.uint64)
        out[rows] = combine(columns)
        return out


def _blank(text: pa.Array) -> np.ndarray:
    """Present values that are whitespace only."""
    return _np(pc.equal(pc.utf8_trim_whitespace(text), ""))


def _bad_values(prop: _Prop, text: pa.Array, problem: str) -> Callable[[np.ndarray], list[str]]:
    def build(idx: np.ndarray) -> list[str]:
        shown = text.take(pa.array(idx)).to_pylist()
        return [f"{prop.label}: {_show(value)} {problem}" for value in shown]

    return build


class _Verdict:
    """Per-row errcode, column and reason; the first rejection of a row sticks."""

    def __init__(self, n: int):
        self.errcode = np.zeros(n, dtype=np.int32)
        self.column: list[str | None] = [None] * n
        self.reason: list[str | None] = [None] * n

    def reject(
        self,
        mask: np.ndarray,
        code: ErrCode,
        column: str | None,
        why: str | Callable[[np.ndarray], list[str]],
    ) -> None:
        new = mask & (self.errcode == 0)
        if not new.any():
            return
        idx = np.flatnonzero(new)
        self.errcode[idx] = int(code)
        texts = [why] * len(idx) if isinstance(why, str) else why(idx)
        for i, text in zip(idx.tolist(), texts, strict=True):
            self.column[i] = column
            self.reason[i] = text
