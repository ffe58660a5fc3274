"""``rejects.reasons.csv``: why each row of the rejects files did not get through, next to
the row itself, for a person to read (``ReasonsWriter``).

The rejects files (``rejects.<ext>``) hold the undelivered rows exactly as they were read, to
fix and import again; they cannot also say why without stopping being importable. This side
file, one per run whatever the inputs, has one line per row of them:

    file, line, column, errcode, reason, <the row's fields under their header names>

``file`` and ``line`` as in ``results.csv``; ``column`` the failing column(s), ``errcode`` the
platform's error code (empty for a row refused before sending), ``reason`` the results'
``errmsg``. The fields that follow are the input's header names, in order (several inputs:
every name once, in the order met; a row fills its own file's); a JSON Lines row is its line
as read, under ``record``. A record the reader could not split as the header says (a wrong
number of fields) shows the fields it has, positionally; its full text is in the rejects file.

It is written in ``report.encoding`` (UTF-8 with a byte-order mark by default, which Excel
needs), and, being for reading and not for import, like ``results.csv``: a cell that starts
with ``=``, ``+``, ``-``, ``@``, tab or carriage return gets a leading apostrophe.
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..atomic import finish_atomic, private_opener, temp_path
from .files import writing
from .results import DEFAULT_REPORT_ENCODING, ResultRows

#: the side file's name, in the run's report folder
REASONS_NAME = "rejects.reasons.csv"
#: its first columns; the rows' own fields follow
REASON_COLUMNS = ("file", "line", "column", "errcode", "reason")
#: the one field of a JSON Lines row: its line as read
RECORD_COLUMN = "record"

_FORMULA = re.compile(r"^[=+\-@\t\r]")


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if _FORMULA.match(text) else text


class ReasonsWriter:
    """``rejects.reasons.csv`` of one run over ``sources`` (opened on its first row)."""

    def __init__(
        self, path: Path, sources: Sequence[Any], encoding: str = DEFAULT_REPORT_ENCODING
    ) -> None:
        self.path = path
        self.sources = sources
        self.encoding = encoding
        self.rows = 0
        self._tmp = temp_path(path)
        self._fh: IO[str] | None = None
        self._csv: Any = None
        header: list[str] = []
        #: for each source, where each of its fields goes among the row's fields
        self._places: list[list[int]] = []
        for source in sources:
            names = [RECORD_COLUMN] if source.format == "jsonl" else list(source.columns)
            places = []
            for name in names:
                if name not in header:
                    header.append(name)
                places.append(header.index(name))
            self._places.append(places)
        self.header = [*REASON_COLUMNS, *header]

    def write(
        self, index: int, lines: Sequence[int], fields: Sequence[Sequence[Any]], why: ResultRows
    ) -> None:
        """Append the rows on ``lines`` of ``sources[index]`` (their ``fields`` as read, in
        the source's column order), with their reasons from ``why`` (the batch's report
        lines, in line order); DiskFullError when the disk is full."""
        if not lines:
            return
        with writing(self.path):
            self._write(index, lines, fields, why)

    def _write(
        self, index: int, lines: Sequence[int], fields: Sequence[Sequence[Any]], why: ResultRows
    ) -> None:
        if self._fh is None:
            self._fh = open(  # noqa: SIM115
                self._tmp,
                "w",
                encoding=self.encoding,
                errors="replace",
                newline="",
                opener=private_opener,
            )
            self._csv = csv.writer(self._fh, lineterminator="\n")
            self._csv.writerow(self.header)
        # each row's report line: the report lines are in line order (vectorised lookup)
        known = np.asarray(why.line, dtype=np.int64)
        wanted = np.asarray(lines, dtype=np.int64)
        at = np.searchsorted(known, wanted)
        at[at >= len(known)] = 0
        found = (known[at] == wanted) if len(known) else np.zeros(len(wanted), dtype=bool)
        places = self._places[index]
        width = len(self.header) - len(REASON_COLUMNS)
        name = _cell(str(self.sources[index].path))
        out = []
        for line, values, i, ok in zip(lines, fields, at.tolist(), found.tolist(), strict=True):
            row = [""] * width
            for place, value in zip(places, values, strict=False):
                row[place] = _cell(value)
            if ok:
                code = why.errcode[i]
                head = [name, line, _cell(why.column[i]), "" if code is None else code]
                head.append(_cell(why.errmsg[i]))
            else:  # cannot happen: every undelivered row has its report line
                head = [name, line, "", "", ""]
            out.append(head + row)
        self._csv.writerows(out)
        self.rows += len(out)

    def close(self) -> Path | None:
        """Finish the file; its path, or None when no row was rejected."""
        if self._fh is None:
            return None
        with writing(self.path):
            self._fh.close()
            finish_atomic(self._tmp, self.path)
        return self.path

    def abandon(self) -> None:
        """Drop the unfinished file."""
        with contextlib.suppress(OSError):
            if self._fh is not None:
                self._fh.close()
        self._tmp.unlink(missing_ok=True)


def split_record(text: str | None, source: Any) -> list[str]:
    """The fields of a CSV record's text as the source's dialect splits them (a record the
    reader refused: its fields as they are, perhaps more or fewer than the header's)."""
    if text is None:
        return []
    if source.format != "csv":
        return [text.rstrip("\r\n")]
    try:
        rows = list(
            csv.reader(
                io.StringIO(text, newline=""),
                delimiter=source.delimiter or ",",
                escapechar=getattr(source, "escape_char", None),
            )
        )
    except csv.Error:
        return [text.rstrip("\r\n")]
    return [v for row in rows for v in row]
