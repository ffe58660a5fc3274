"""Streaming a checked ``Source`` as ``Batch``es, by format."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ..errors import LoadError
from .batch import Batch, Source
from .csv import iter_csv
from .frames import iter_frame
from .jsonl import iter_jsonl
from .options import InputOptions, ReadStats, Tuning
from .parquet import iter_parquet


def iter_batches(
    source: Source,
    options: InputOptions,
    columns: Sequence[str] | None = None,
    *,
    tuning: Tuning | None = None,
    stats: ReadStats | None = None,
) -> Iterator[Batch]:
    """Stream ``source`` as batches of at most ``options.batch_rows`` rows.

    ``columns`` are the source columns the job needs. JSONL builds only these (all keys of the
    first object when None); CSV and Parquet keep every column, because a rejected row is
    written back whole. ``tuning``: block sizes and the JSON Lines engine (the defaults when
    None); ``stats``: filled with counters of how the file is read (CSV restarts, JSON Lines
    lines read by Arrow and one at a time).
    """
    tuning = tuning or Tuning()
    stats = stats if stats is not None else ReadStats()
    if source.format == "csv":
        return iter_csv(source, options, tuning, stats)
    if source.format == "jsonl":
        names = list(columns) if columns is not None else list(source.columns)
        return iter_jsonl(source, options, names, tuning, stats)
    if source.frame is not None:  # in memory (``frames``): Parquet's conversion
        read = list(columns) if columns is not None else list(source.columns)
        source.refuse_unsupported(read)
        return iter_frame(source, options, read)
    if source.format == "parquet":
        read = list(columns) if columns is not None else list(source.columns)
        source.refuse_unsupported(read)
        return iter_parquet(source, options, read, stats)
    raise LoadError(f"{source.path}: unknown format '{source.format}'")
