"""Local checks in the server's order, and the config-time checks of constants.

``RowChecks.check`` gives each row the verdict the server would: an ``ErrCode`` (0 = passes),
the column at fault and a reason. ``constant_problems`` runs a config's ``value`` and
``default`` texts through the same converters, so a default the mapper would reject is a
config error, not a million row errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..config import CREATE_TIME, EVENT_ID, ColumnSpec
from ..errcodes import ErrCode
from ..protocol import DATETIME_FORMAT
from .arrays import bools, byte_lengths
from .bodies import string_literals
from .values import Prop, PropValues, convert_values

_TYPE_PROBLEM = {
    "integer": "is not an integer",
    "number": "is not a number",
    "boolean": "is not a boolean (true/false, 1/0, yes/no, y/n, 是/否)",
    "datetime": f"is not a datetime (e.g. {datetime(2024, 1, 31, 8).strftime(DATETIME_FORMAT)})",
}


def type_problem(spec: ColumnSpec) -> str:
    """What a value that does not convert under ``spec`` is not."""
    if spec.type == "datetime" and spec.format:
        return f"is not a datetime in format '{spec.format}'"
    return _TYPE_PROBLEM[spec.type]


def show(value: Any, limit: int = 60) -> str:
    """A value as a reason quotes it, cut after ``limit`` characters."""
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return repr(text)


def scalar_json(spec: ColumnSpec, text: str) -> tuple[str | None, str | None]:
    """(JSON text, problem) of one constant under ``spec``."""
    arr = pa.array([text.strip() if spec.type != "string" else text], pa.string())
    out, invalid = convert_values(spec, arr)
    if invalid[0]:
        return None, f"{show(text)} {type_problem(spec)}"
    if spec.type in ("string", "datetime"):
        out = string_literals(out)
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
            _, problem = scalar_json(spec, text)
            if problem:
                out.append((path, problem, None))
            elif spec.type == "string" and len(text) > limit:
                out.append((path, f"longer than max_value_length ({limit})", None))
            elif spec.pattern is not None and not fits(pa.array([text]), spec.pattern)[0]:
                out.append((path, f"{show(text)} does not match pattern {spec.pattern!r}", None))
    return out


def fits(text: pa.Array, pattern: str) -> np.ndarray:
    """Values that match ``pattern`` as a whole (RE2, like the config check of the pattern)."""
    return bools(pc.match_substring_regex(text, f"^(?:{pattern})$"))


def blank(text: pa.Array) -> np.ndarray:
    """Present values that are whitespace only."""
    return bools(pc.equal(pc.utf8_trim_whitespace(text), ""))


def bad_values(prop: Prop, text: pa.Array, problem: str) -> Callable[[np.ndarray], list[str]]:
    """The reasons of the rejected rows ``idx``, built only for them."""

    def build(idx: np.ndarray) -> list[str]:
        shown = text.take(pa.array(idx)).to_pylist()
        return [f"{prop.label}: {show(value)} {problem}" for value in shown]

    return build


class Verdict:
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


class RowChecks:
    """The local checks of one job, in the server's order: a row's first failure is its
    verdict (see the package docstring for the order)."""

    def __init__(
        self,
        props: Sequence[Prop],
        *,
        is_event: bool,
        primary_keys: Sequence[str],
        event_name_from: str | None,
        max_value_length: int,
        wrong_type: ErrCode = ErrCode.DATA_CHECK_FAILED,
    ):
        self.props = list(props)
        #: the errcode of a value that does not convert to its type: the profile's
        #: ``wrong_type`` (20003 under import-api, 10002 under signed)
        self.wrong_type = wrong_type
        self.is_event = is_event
        self.primary_keys = list(primary_keys)
        self.event_name_from = event_name_from
        self.max_value_length = max_value_length
        self._by_name = {p.name: p for p in self.props}

    def usable_keys(self, values: Mapping[str, PropValues]) -> dict[str, np.ndarray]:
        """Per primary key, the rows whose value is present and not blank."""
        return {k: values[k].present & ~blank(values[k].text) for k in self.primary_keys}

    def check(
        self,
        values: Mapping[str, PropValues],
        names: pa.Array | None,
        usable: Mapping[str, np.ndarray],
        n: int,
    ) -> Verdict:
        """Every row's verdict; ``values`` are converted (``json`` and ``invalid`` set),
        ``names`` are the per-row event names (null where empty) when they come from a
        column, ``usable`` is ``usable_keys(values)``."""
        verdict = Verdict(n)
        name_from = self.event_name_from
        # 1. event name from a column
        if names is not None:
            verdict.reject(
                ~bools(pc.is_valid(names)),
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
                event_id.present & blank(event_id.text),
                ErrCode.PRIMARY_KEY_EMPTY,
                eid.spec.source,
                "event_id is blank",
            )

        # 5. types, 6. data checks
        create_time = self._by_name.get(CREATE_TIME) if self.is_event else None
        for prop in self.props:
            invalid = values[prop.name].invalid
            if invalid is None or prop is create_time or prop.spec.type == "string":
                continue
            verdict.reject(
                invalid,
                self.wrong_type,
                prop.spec.source,
                bad_values(prop, values[prop.name].text, type_problem(prop.spec)),
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
                    bad_values(create_time, ct.text, type_problem(create_time.spec)),
                )
        if names is not None and (byte_lengths(names) > self.max_value_length).any():
            long_name = bools(pc.greater(pc.utf8_length(names), self.max_value_length))
            verdict.reject(
                long_name,
                ErrCode.DATA_CHECK_FAILED,
                name_from,
                f"event name is longer than max_value_length {self.max_value_length}",
            )
        for prop in self.props:
            if prop.constant is None:
                self._data_checks(prop, values[prop.name], verdict)
        return verdict

    def _data_checks(self, prop: Prop, v: PropValues, verdict: Verdict) -> None:
        """``required``, string length and ``pattern`` of one property."""
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
        if spec.type == "string" and (byte_lengths(v.text) > limit).any():
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
            verdict.reject(
                v.present & ~fits(v.text, spec.pattern),
                ErrCode.DATA_CHECK_FAILED,
                spec.source,
                bad_values(prop, v.text, f"does not match pattern {spec.pattern!r}"),
            )
