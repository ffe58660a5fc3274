"""The records a straightforward CSV reader (Python's ``csv``) finds: what the loader's
tests compare it with."""

from __future__ import annotations

import csv
import io


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
