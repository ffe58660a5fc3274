"""``Mapper``: one config's plan, run over each table of source text (see the package docstring)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..config import EVENT_ID, Config
from ..errors import ConfigError, ConfigProblem
from ..protocol import encode_body
from .arrays import bools, byte_lengths, nulls
from .bodies import body_head, event_literals, item_array, join_rows
from .checks import RowChecks, constant_problems, scalar_json
from .hashes import HashList, layout_hash, property_hashes
from .sequences import LazyList, TextList
from .transforms import transform
from .values import Prop, PropValues, convert_values, label


class _BatchLike(Protocol):
    table: pa.Table
    lines: np.ndarray


@dataclass
class Mapped:
    """The mapper's verdict on one table; every sequence has one entry per row, in row order."""

    n: int
    lines: np.ndarray
    #: int32 per row: 0 = passes local checks, else the ErrCode the server would answer
    errcode: np.ndarray
    #: the source columns that failed, joined with ";" (None when ok, or when only the row as
    #: a whole is at fault)
    column: list[str | None]
    reason: list[str | None]
    #: per row its item, the encoded properties object ``{"k":v,...}`` that ``Profile.body``
    #: puts into a request (byte-identical to ``protocol.encode_body(properties)``); None for
    #: rejected rows. None when build_bodies=False
    items: TextList | None
    #: "phone=138...;email=a@b.cn" (+ ";event_id=..." for events), absent values left out
    identity: list[str]
    #: non-blank primary-key values as ("phone:138...", "email:a@b.cn"); built on first use
    keys: LazyList[tuple[str, ...]]
    #: per-row event names when the name comes from a column (None where empty), else None
    event_names: list[str | None] | None
    #: the change hash of each row's properties (see ``hashes.properties_hash``; None for
    #: rejected rows); None when build_bodies=False
    properties_hash: HashList | None
    #: ``identity`` as one Arrow string array (for hashing many at once)
    identity_text: pa.Array | None = None
    #: per row the event name as a JSON string literal (``b'"order_detail"'``, what
    #: ``Profile.body`` takes as ``event``) when the name comes from a column (None for
    #: rejected rows); None when the job has one fixed name (``Mapper.event``) or
    #: build_bodies=False
    events: TextList | None = None
    #: events: each row's ``event_id`` as text (null where empty); None for other kinds
    event_ids: pa.Array | None = None
    #: per property read from the file (not a constant), in config order: which rows have a
    #: value for it (the body carries it); what ``job.duplicates: keep_last`` compares
    present: list[np.ndarray] | None = None

    @property
    def ok(self) -> np.ndarray:
        """Per row: passes the local checks."""
        return self.errcode == 0


class Mapper:
    """Turns tables of source text into local verdicts and request items for one config."""

    def __init__(self, config: Config):
        problems = constant_problems(config.columns, config.job.max_value_length)
        if problems:
            raise ConfigError([ConfigProblem(".".join(p), m, h) for p, m, h in problems])
        job = config.job
        is_event = job.kind == "event"
        self._props: list[Prop] = []
        props = self._props
        for name, spec in config.columns.items():
            constant = scalar_json(spec, spec.value)[0] if spec.value is not None else None
            prefix = json.dumps(name, ensure_ascii=False) + ":"
            self._props.append(Prop(name, spec, prefix, label(name, spec), constant))
        self._checks = RowChecks(
            self._props,
            is_event=is_event,
            primary_keys=job.primary_keys,
            event_name_from=job.event_name_from if is_event else None,
            max_value_length=job.max_value_length,
            wrong_type=config.profile().wrong_type,
        )
        self._profile = config.profile()
        self._kind = job.kind
        fixed = job.event_name if is_event and job.event_name_from is None else None
        #: the job's fixed event name as a JSON string literal (None: users, deletes, or
        #: the name comes from a column: ``Mapped.events``)
        self.event: bytes | None = encode_body(fixed) if fixed is not None else None
        self._layout_hash = layout_hash(body_head(job.event_name if is_event else None), props)

    def map(self, batch: _BatchLike, *, build_bodies: bool = True) -> Mapped:
        """Map a loader ``Batch`` (its ``table`` and ``lines``)."""
        return self.map_table(batch.table, batch.lines, build_bodies=build_bodies)

    def map_table(self, table: pa.Table, lines: np.ndarray, *, build_bodies: bool = True) -> Mapped:
        """Check every row of ``table`` and, unless told not to, build the items that pass
        (lazily: ``Mapped.items`` builds them on first use)."""
        n = table.num_rows
        props = self._props
        values = {p.name: self._values(table, p) for p in props}
        for prop in props:
            if prop.constant is None:
                v = values[prop.name]
                v.json, v.invalid = convert_values(prop.spec, v.text)
                if v.problem is not None:
                    v.invalid = v.invalid | bools(pc.is_valid(v.problem))
        names: pa.Array | None = None  # the event names, when they come from a column
        name_from = self._checks.event_name_from
        if name_from is not None:
            names = pc.utf8_trim_whitespace(self._column(table, name_from))
            names = pc.if_else(pc.not_equal(names, ""), names, None)
        usable = self._checks.usable_keys(values)
        verdict = self._checks.check(values, names, usable, n)
        column, reason = verdict.reasons()

        ok = verdict.errcode == 0
        identity_text = self._identity(values, n)
        pk_texts = {k: values[k].text for k in self._checks.primary_keys}
        keys = LazyList(n, lambda: self._keys(pk_texts, usable))
        items = events = hashes = None
        if build_bodies:
            items = TextList(lambda: item_array(props, values, n), ok)
            if names is not None:
                given = names
                events = TextList(lambda: event_literals(given), ok)
            layout = self._layout_hash
            hashes = HashList(lambda: property_hashes(props, values, names, ok), layout, ok)
        return Mapped(
            n=n,
            lines=np.asarray(lines, dtype=np.int64),
            errcode=verdict.errcode,
            column=column,
            reason=reason,
            items=items,
            identity=identity_text.to_pylist(),
            keys=keys,
            event_names=names.to_pylist() if names is not None else None,
            properties_hash=hashes,
            identity_text=identity_text,
            events=events,
            event_ids=values[EVENT_ID].text if self._kind == "event" else None,
            present=[values[p.name].present for p in props if p.constant is None],
        )

    def body(self, mapped: Mapped, i: int) -> bytes | None:
        """Row ``i``'s request body as one record alone (``Profile.body`` of its item; what
        ``preview`` shows); None for a rejected row or without items."""
        if mapped.items is None:
            return None
        item = mapped.items[i]
        if item is None:
            return None
        event = self.event if mapped.events is None else mapped.events[i]
        return self._profile.body(self._kind, [item], event)

    # -- steps ---------------------------------------------------------------------------------

    @staticmethod
    def _column(table: pa.Table, name: str) -> pa.Array:
        """Column ``name`` as one string array (all null when the table lacks it)."""
        if name not in table.column_names:
            return nulls(table.num_rows)
        col = table.column(name)
        arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        if col.num_chunks == 0:
            arr = pa.array([], pa.string())
        return arr if arr.type == pa.string() else pc.cast(arr, pa.string())

    def _values(self, table: pa.Table, prop: Prop) -> PropValues:
        """One property's text after ``transform``, trimming and ``default``; not converted."""
        n = table.num_rows
        spec = prop.spec
        if prop.constant is not None:
            return PropValues(nulls(n), np.ones(n, dtype=bool))
        assert spec.source is not None
        cleaned = transform(self._column(table, spec.source), spec.transform)
        text = cleaned.text
        if spec.type != "string":
            text = pc.utf8_trim_whitespace(text)
        present = bools(pc.is_valid(text)) & (byte_lengths(text) > 0)
        if spec.default is not None:
            if not present.all():
                default = spec.default.strip() if spec.type != "string" else spec.default
                text = pc.if_else(pa.array(present), text, default)
            present = np.ones(n, dtype=bool)
        elif not present.all():
            text = pc.if_else(pa.array(present), text, None)
        return PropValues(text, present, problem=cleaned.problem)

    @property
    def identity_keys(self) -> list[str]:
        """The names in a row's identity, in order: the primary keys, and ``event_id``."""
        shown = list(self._checks.primary_keys)
        if self._checks.is_event and EVENT_ID not in shown:
            shown.append(EVENT_ID)
        return shown

    def _identity(self, values: Mapping[str, PropValues], n: int) -> pa.Array:
        """Each row's ``identity`` ("phone=138...;email=a@b.cn"), absent values left out."""
        parts: list[pa.Array | str] = [
            pc.binary_join_element_wise(f"{k}=", values[k].text, "") for k in self.identity_keys
        ]
        return join_rows(parts, ";", n)

    @staticmethod
    def _keys(
        texts: Mapping[str, pa.Array], usable: Mapping[str, np.ndarray]
    ) -> list[tuple[str, ...]]:
        """Each row's usable primary-key values, as ("phone:138...", "email:a@b.cn")."""
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
