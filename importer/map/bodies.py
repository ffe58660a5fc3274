"""Item assembly: per row, ``"key":value`` fragments joined into the row's *item*, the
encoded properties object ``{"k":v,...}`` that ``Profile.body`` puts into a request body.

Items are byte-identical to ``protocol.encode_body(properties)`` of the same dict, and an
event name from a column to ``encode_body(name)`` (its JSON string literal). They stay in
Arrow arrays (``sequences.TextList`` hands out ``bytes`` per row on access), so a million-row
table never becomes a million Python objects before the sender needs them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .arrays import bools, has_control, needs_escape, nulls, patch
from .values import Prop, PropValues

#: Control characters json.dumps writes as \b, \f or \u00XX: rare, left to json.dumps itself.
_ODD_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f]"


def body_head(event_name: str | None) -> str:
    """What every body of version 1 started with (``{"properties":{``, after the job's fixed
    event name): kept as part of the change hashes' layout (``hashes.layout_hash``), so a
    ledger's hashes stay valid whatever profile sends the rows."""
    if event_name is None:
        return '{"properties":{'
    return '{"eventName":' + json.dumps(event_name, ensure_ascii=False) + ',"properties":{'


def string_literals(values: pa.Array, prefix: str = "") -> pa.Array:
    """``prefix`` + the JSON string literal of each value, exactly as ``json.dumps`` with
    ``ensure_ascii=False`` writes it; nulls stay null."""
    out = values
    if needs_escape(values):
        out = pc.replace_substring(out, "\\", "\\\\")
        out = pc.replace_substring(out, '"', '\\"')
        if has_control(values):
            out = pc.replace_substring(out, "\n", "\\n")
            out = pc.replace_substring(out, "\r", "\\r")
            out = pc.replace_substring(out, "\t", "\\t")
            odd = bools(pc.match_substring_regex(values, _ODD_CONTROL))
            if odd.any():
                raw = values.filter(pa.array(odd)).to_pylist()
                out = patch(out, odd, [json.dumps(v, ensure_ascii=False)[1:-1] for v in raw])
    return pc.binary_join_element_wise(prefix + '"', out, '"', "")


def join_rows(fragments: list[pa.Array | str], sep: str, n: int) -> pa.Array:
    """Join per row, skipping null fragments; a row with none gives "".

    (pyarrow 26 drops the rows whose inputs are all null under ``null_handling="skip"``, so
    such rows get an empty first fragment first.)
    """
    fragments = list(fragments)
    positions = [i for i, f in enumerate(fragments) if not isinstance(f, str)]
    if not positions:  # constants only: still n rows
        fragments.append(nulls(n))
        positions = [len(fragments) - 1]
    if len(positions) < len(fragments):  # a constant is in every row: nothing to patch
        return pc.binary_join_element_wise(*fragments, sep, null_handling="skip")
    some = np.zeros(n, dtype=bool)
    for i in positions:
        some |= bools(pc.is_valid(fragments[i]))
    if not some.all():
        first = positions[0]
        fragments[first] = pc.if_else(pa.array(some), fragments[first], "")
    return pc.binary_join_element_wise(*fragments, sep, null_handling="skip")


def item_array(
    props: Sequence[Prop],
    values: Mapping[str, PropValues],
    n: int,
) -> pa.Array:
    """Every row's item: ``{`` + its ``"key":value`` fragments in config order + ``}``
    (rows without any value give ``{}``; the mapper rejects them)."""
    fragments: list[pa.Array | str] = []
    for prop in props:
        v = values[prop.name]
        if prop.constant is not None:
            fragments.append(prop.prefix + prop.constant)
        elif prop.spec.type == "string":
            assert v.json is not None
            fragments.append(string_literals(v.json, prop.prefix))
        elif prop.spec.type == "datetime":  # digits, '-', ':' and ' ': nothing to escape
            fragments.append(pc.binary_join_element_wise(prop.prefix + '"', v.json, '"', ""))
        else:
            fragments.append(pc.binary_join_element_wise(prop.prefix, v.json, ""))
    return pc.binary_join_element_wise("{", join_rows(fragments, ",", n), "}", "")


def event_literals(names: pa.Array) -> pa.Array:
    """Each row's event name as a JSON string literal (``encode_body(name)``); "" for a row
    without one (the mapper rejects it)."""
    return string_literals(pc.fill_null(names, ""))
