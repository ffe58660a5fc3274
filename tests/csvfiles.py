"""CSV files for the tests: writing one, and the records a straightforward reader (Python's
``csv``) finds in one (what the loader's tests compare it with)."""

from __future__ import annotations

import csv
import io
from pathlib import Path


def reference(text: str, width: int) -> tuple[list[tuple[int, list[str]]], list[int]]:
    """What a straightforward reader finds: good (line, values), and the lines of bad ones."""
    good: list[tuple[int, list[str]]] = []
    bad: list[int] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    next(reader)
    line = reader.line_num + 1
    for record in reader:
        if record and any(record):
            if len(record) == width:
                good.append((line, record))
            else:
                bad.append(line)
        line = reader.line_num + 1
    return good, bad


def write_csv(
    path: Path, header: list[str], rows: list[list[str]], encoding: str = "utf-8"
) -> Path:
    """A CSV file of ``header`` and ``rows`` (quoted where needed, LF line ends)."""
    with open(path, "w", encoding=encoding, newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return path
