"""Reading the header and the first rows of a file for ``dmimport init``."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

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
    columns = [c for c in source.columns if c not in source.unsupported]  # nested: left out
    batch = _first_batch(source, options, columns)
    if source.format == "jsonl" and batch is not None and batch.raw is not None:
        # JSON Lines objects may have keys the first one lacks: take them from the sample.
        more = _json_keys(batch.raw, columns)
        if more:
            columns += more
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
        return Sample(source, options, columns, {c: [] for c in columns}, 0, 0, guessed, not_text)
    table = batch.table
    values = {c: (table.column(c).to_pylist() if c in table.column_names else []) for c in columns}
    rows, malformed = table.num_rows, len(batch.bad)
    return Sample(source, options, columns, values, rows, malformed, guessed, not_text)


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


def _json_keys(lines: Sequence[str], known: list[str]) -> list[str]:
    seen = set(known)
    more: list[str] = []
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            for key in obj:
                if key not in seen:
                    seen.add(key)
                    more.append(key)
    return more
