"""Local checks in the server's order, and the config-time checks of constants.

``RowChecks.check`` gives each row the verdict the server would: an ``ErrCode`` (0 = passes),
the column at fault and a reason. ``constant_problems`` runs a config's ``value`` and
``default`` texts through the same converters, so a default the mapper would reject is a
config error, not a million row errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..config import CREATE_TIME, EVENT_ID, ColumnSpec
from ..errcodes import ErrCode
from .arrays import bools, byte_lengths
from .bodies import string_literals
from .reasons import value_problem
from .values import Prop, PropValues, convert_values


def show(value: Any, limit: int = 60) -> str:
    """A value as a reason quotes it, cut after ``limit`` characters: as written between
    single quotes, only characters that do not print escaped (a tab as ``\\t``, a no-break
    space as ``\\xa0``); a backslash stays one backslash."""
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return f"'{text}'"


def scalar_json(spec: ColumnSpec, text: str) -> tuple[str | None, str | None]:
    """(JSON text, problem) of one constant under ``spec``."""
    arr = pa.array([text.strip() if spec.type != "string" else text], pa.string())
    out, invalid = convert_values(spec, arr)
    if invalid[0]:
        return None, f"{show(text)} {value_problem(spec, text)}"
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
                problem = f"{show(text)} does not match pattern '{spec.pattern}'"
                out.append((path, problem, None))
    return out


def fits(text: pa.Array, pattern: str) -> np.ndarray:
    """Values that match ``pattern`` as a whole (RE2, like the config check of the pattern)."""
    return bools(pc.match_substring_regex(text, f"^(?:{pattern})$"))


def blank(text: pa.Array) -> np.ndarray:
    """Present values that are whitespace only."""
    return bools(pc.equal(pc.utf8_trim_whitespace(text), ""))


def bad_values(
    prop: Prop, text: pa.Array, problem: str | Callable[[str], str]
) -> Callable[[np.ndarray], list[str]]:
    """The reasons of the rejected rows ``idx``, built only for them, after the property's
    label (``Verdict.reject(about=prop)`` puts it on); ``problem`` is the words after the
    value, or a function of the value giving them."""

    def build(idx: np.ndarray) -> list[str]:
        shown = text.take(pa.array(idx)).to_pylist()
        if isinstance(problem, str):
            return [f"{show(value)} {problem}" for value in shown]
        return [f"{show(value)} {problem(value)}" for value in shown]

    return build


def wrong_values(prop: Prop, v: PropValues) -> Callable[[np.ndarray], list[str]]:
    """The reasons of rows whose value a transform refused (its words) or that does not
    convert (``reasons.value_problem``), built only for the rows ``idx``."""
    typed = bad_values(prop, v.text, lambda value: value_problem(prop.spec, value))
    if v.problem is None:
        return typed
    problem = v.problem

    def build(idx: np.ndarray) -> list[str]:
        rows = pa.array(idx)
        return [
            f"{show(value)} " + (why if why is not None else value_problem(prop.spec, value))
            for value, why in zip(
                v.text.take(rows).to_pylist(), problem.take(rows).to_pylist(), strict=True
            )
        ]

    return build


class Verdict:
    """Per-row errcode, columns and reason. The first failure in check order (the platform's)
    decides a row's errcode; the reason lists every failure: a row-wide one first (only the
    first of them), then one per failing property in config order, joined with ``"; "``, and
    ``column`` their source columns joined with ``";"``. A row with no value at all
    (``close``) gets no further reasons."""

    def __init__(self, n: int):
        self.n = n
        self.errcode = np.zeros(n, dtype=np.int32)
        #: row -> [(rank, order, column, reason, about)]: rank -1 for row-wide failures, else
        #: the property's position in the config; ``about``: the property the reason is put
        #: after (its label), or None when the reason names what it is about itself
        self._found: dict[int, list[tuple[int, int, str | None, str, Prop | None]]] = {}
        self._row_wide = np.zeros(n, dtype=bool)
        self._closed = np.zeros(n, dtype=bool)
        self._by_prop: dict[int, np.ndarray] = {}
        self._calls = 0

    def reject(
        self,
        mask: np.ndarray,
        code: ErrCode,
        column: str | None,
        why: str | Callable[[np.ndarray], list[str]],
        *,
        prop: int | None = None,
        about: Prop | None = None,
        close: bool = False,
    ) -> None:
        """Reject the rows of ``mask``: for a property (its config position ``prop``) or for
        the row as a whole (``prop`` None). With ``about``, ``why`` is said after that
        property's label (``column 年龄 (property age): ...``)."""
        if not mask.any():
            return
        new = mask & (self.errcode == 0)
        self.errcode[new] = int(code)
        done = (
            self._row_wide
            if prop is None
            else self._by_prop.setdefault(prop, np.zeros(self.n, dtype=bool))
        )
        record = mask & ~done & ~self._closed
        done |= mask
        if close:
            self._closed |= mask
        if not record.any():
            return
        idx = np.flatnonzero(record)
        texts = [why] * len(idx) if isinstance(why, str) else why(idx)
        self._calls += 1
        rank, order = (-1 if prop is None else prop), self._calls
        for i, text in zip(idx.tolist(), texts, strict=True):
            self._found.setdefault(i, []).append((rank, order, column, text, about))

    def reasons(self) -> tuple[list[str | None], list[str | None]]:
        """Per row (columns, reason): None for a row that passes."""
        column: list[str | None] = [None] * self.n
        reason: list[str | None] = [None] * self.n
        for i, found in self._found.items():
            if len(found) > 1:
                found.sort(key=lambda f: (f[0], f[1]))
            reason[i] = "; ".join(labelled(found))
            named = dict.fromkeys(f[2] for f in found if f[2] is not None)
            column[i] = ";".join(named) if named else None
        return column, reason


def labelled(found: list[tuple[int, int, str | None, str, Prop | None]]) -> list[str]:
    """A row's reasons in order, each after its property's label; the same problem of one
    column read by several properties (``orderTime`` and ``create_time`` from 下单时间) said
    once, naming them: ``column 下单时间 (properties orderTime, create_time): 'x' is not a
    datetime``."""
    groups: dict[tuple[str, str], list[Prop]] = {}
    order: list[str | tuple[str, str]] = []
    for *_, text, about in found:
        if about is None:
            order.append(text)
            continue
        # a constant (no source column) is its own group
        key = (about.spec.source or f"\0{about.name}", text)
        if key not in groups:
            order.append(key)
        groups.setdefault(key, []).append(about)
    said = []
    for item in order:
        if isinstance(item, str):
            said.append(item)
            continue
        props = groups[item]
        if len(props) == 1:
            said.append(f"{props[0].label}: {item[1]}")
        else:
            names = ", ".join(p.name for p in props)
            said.append(f"column {item[0]} (properties {names}): {item[1]}")
    return said


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
        #: a property's position in the config: the order its reasons are listed in
        self._rank = {p.name: i for i, p in enumerate(self.props)}

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
            close=True,
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
                prop=self._rank[EVENT_ID],
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
                prop=self._rank[EVENT_ID],
            )

        # 5. types, 6. data checks
        create_time = self._by_name.get(CREATE_TIME) if self.is_event else None
        for prop in self.props:
            v = values[prop.name]
            if v.invalid is None or prop is create_time:
                continue
            verdict.reject(
                v.invalid,
                self.wrong_type,
                prop.spec.source,
                wrong_values(prop, v),
                prop=self._rank[prop.name],
                about=prop,
            )
        if create_time is not None:
            ct = values[CREATE_TIME]
            verdict.reject(
                ~ct.present,
                ErrCode.DATA_CHECK_FAILED,
                create_time.spec.source,
                f"create_time is missing ({create_time.label} is empty)",
                prop=self._rank[CREATE_TIME],
            )
            if ct.invalid is not None:
                verdict.reject(
                    ct.invalid,
                    ErrCode.DATA_CHECK_FAILED,
                    create_time.spec.source,
                    wrong_values(create_time, ct),
                    prop=self._rank[CREATE_TIME],
                    about=create_time,
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
        rank = self._rank[prop.name]
        if spec.required:
            verdict.reject(
                ~v.present,
                ErrCode.DATA_CHECK_FAILED,
                spec.source,
                f"required {prop.label} is empty",
                prop=rank,
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
                    f"value is {chars[i]} characters, longer than max_value_length {limit}"
                    for i in idx
                ],
                prop=rank,
                about=prop,
            )
        if spec.pattern is not None:
            verdict.reject(
                v.present & ~fits(v.text, spec.pattern),
                ErrCode.DATA_CHECK_FAILED,
                spec.source,
                bad_values(prop, v.text, f"does not match pattern '{spec.pattern}'"),
                prop=rank,
                about=prop,
            )
