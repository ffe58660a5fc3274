"""Reading the header and the first rows of a file for ``dmimport init``."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import LoadError
from ..load import Batch, InputOptions, Source, iter_batches, open_source


@dataclass
class Sample:
    source: Source
    options: InputOptions
    columns: list[str]
    values: dict[str, list[str | None]]
    rows: int
    malformed: int
    delimiter_guessed: bool
    #: Parquet binary columns that hold no text (a WKB geometry, say): not proposed
    not_text: list[str] = field(default_factory=list)
    #: columns holding lists or objects, not flat values, with what they hold
    #: (``items`` -> ``list of objects``): not proposed
    nested: dict[str, str] = field(default_factory=dict)


def read_sample(path: Path, options: InputOptions, rows: int) -> Sample:
    options = options.replace(batch_rows=rows)
    source = open_source(path, options)
    guessed = False
    if source.format == "csv" and options.delimiter is None and len(source.columns) == 1:
        # One column named 'a;b;c': a file with another delimiter than the default.
        counts = {d: source.columns[0].count(d) for d in ";|\t,"}
        best = max(counts, key=lambda d: counts[d])
        if counts[best]:
            options = options.replace(delimiter=best)
            source = open_source(path, options)
            guessed = True
    nested: dict[str, str] = {}
    if source.format == "parquet" and source.unsupported:
        schema = pq.read_schema(path)
        nested = {c: _describe_type(schema.field(c).type) for c in source.unsupported}
    columns = [c for c in source.columns if c not in source.unsupported]  # nested: left out
    if source.columns and not columns:
        raise LoadError(
            f"{path}: every column is nested, not a flat value ({nested_list(nested)}); "
            "dmimport sends flat values: flatten the export"
        )
    batch = _first_batch(source, options, columns)
    if source.format == "jsonl" and batch is not None:
        # JSON Lines objects may have keys the first one lacks, and lists or objects a row
        # cannot be read with (each such row is a bad record): take both from the sample.
        lines = (batch.raw or []) + [b.raw for b in batch.bad if b.raw is not None]
        more, nested = _json_keys(lines, columns)
        if more or nested:
            columns = [c for c in columns + more if c not in nested]
            if not columns:
                raise LoadError(
                    f"{path}: every field of the sampled objects is nested, not a flat value "
                    f"({nested_list(nested)}); dmimport sends flat values: flatten the export"
                )
            batch = _first_batch(source, options, columns)
    not_text: list[str] = []
    if source.format == "parquet" and batch is not None and batch.bad:
        # A binary column of bytes that are not text makes most rows bad: proposed, it would
        # reject them, and they would be missing from the sample. Leave it out.
        sampled = batch.table.num_rows + len(batch.bad)
        bad = Counter(b.column for b in batch.bad if b.column is not None)
        schema = pq.read_schema(path)
        not_text = [
            c for c in columns
            if 2 * bad[c] > sampled and _is_binary(schema.field(c).type)
        ]  # fmt: skip
        if not_text:
            columns = [c for c in columns if c not in not_text]
            batch = _first_batch(source, options, columns)
    if batch is None:
        empty: dict[str, list[str | None]] = {c: [] for c in columns}
        return Sample(source, options, columns, empty, 0, 0, guessed, not_text, nested)
    table = batch.table
    values = {c: (table.column(c).to_pylist() if c in table.column_names else []) for c in columns}
    rows, malformed = table.num_rows, len(batch.bad)
    return Sample(source, options, columns, values, rows, malformed, guessed, not_text, nested)


def nested_list(nested: dict[str, str]) -> str:
    """The nested columns as messages list them: ``items (list of objects), meta (object)``."""
    return ", ".join(f"{name} ({what})" for name, what in nested.items())


def _describe_type(t: pa.DataType) -> str:
    """What a nested Parquet column holds, in words: ``list of objects``, ``object``."""
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return "list of " + _plural(_describe_type(t.value_type))
    if pa.types.is_struct(t):
        return "object"
    if pa.types.is_map(t):
        return "map"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    return str(t)


def _plural(word: str) -> str:
    return {"text": "texts", "object": "objects", "number": "numbers", "map": "maps"}.get(
        word, word if word.startswith("list") else f"{word} values"
    )


def _describe_json(value: list[object] | dict[str, object]) -> str:
    if isinstance(value, dict):
        return "object"
    kinds = {type(v) for v in value if v is not None}
    if kinds == {dict}:
        return "list of objects"
    if kinds == {list}:
        return "list of lists"
    if kinds and kinds <= {int, float}:
        return "list of numbers"
    if kinds == {str}:
        return "list of texts"
    return "list"


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)


def _first_batch(source: Source, options: InputOptions, columns: list[str]) -> Batch | None:
    batches = iter_batches(source, options, columns)
    try:
        return next(iter(batches), None)
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def _json_keys(lines: Sequence[str], known: list[str]) -> tuple[list[str], dict[str, str]]:
    """(the keys of the sampled objects that ``known`` lacks, in the order first seen; the
    keys holding a list or an object in some sampled line, with what they hold)."""
    seen = set(known)
    more: list[str] = []
    nested: dict[str, str] = {}
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            for key, value in obj.items():
                if key not in seen:
                    seen.add(key)
                    more.append(key)
                if isinstance(value, list | dict) and key not in nested:
                    nested[key] = _describe_json(value)
    return more, nested
