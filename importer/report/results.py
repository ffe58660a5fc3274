"""``results.csv`` / ``results.jsonl``: exactly one line per input row.

Columns: file, line, kind, identity, status, errcode, errmsg, column, attempts, latency_ms,
request_id (which request finally carried the row: its number in the run; empty when none did).

Spreadsheet safety: in ``results.csv`` a text cell that starts with ``=``, ``+``, ``-``, ``@``,
tab or carriage return gets a leading apostrophe (OWASP's advice against formula injection);
``results.jsonl`` keeps values byte for byte.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ..atomic import finish_atomic, private_opener, temp_path
from .files import writing
from .masking import PiiMask

if TYPE_CHECKING:
    from ..ledger import QuietRows

RESULT_COLUMNS = (
    "file",
    "line",
    "kind",
    "identity",
    "status",
    "errcode",
    "errmsg",
    "column",
    "attempts",
    "latency_ms",
    "request_id",
)

_FORMULA_START = r"^[=+\-@\t\r]"


def neutralize(values: pa.Array) -> pa.Array:
    """Prefix spreadsheet-formula-looking text with an apostrophe (vectorized)."""
    if len(values) == 0:
        return values
    risky = pc.match_substring_regex(values, _FORMULA_START)
    if not pc.any(risky).as_py():
        return values
    return pc.if_else(risky, pc.binary_join_element_wise("'", values, ""), values)


@dataclass
class ResultRows:
    """One batch of report lines, column-wise."""

    file: str
    kind: str
    line: list[int]
    identity: list[str]
    status: list[str]
    errcode: list[int | None]
    errmsg: list[str | None]
    column: list[str | None]
    attempts: list[int]
    latency_ms: list[float | None]
    #: the request that finally carried each row (None: no request did); None: none at all
    request_id: list[int | None] | None = None

    def __len__(self) -> int:
        return len(self.line)

    def to_table(self) -> pa.Table:
        n = len(self.line)
        return pa.table(
            {
                "file": pa.array([self.file] * n, pa.string()),
                "line": pa.array(self.line, pa.int64()),
                "kind": pa.array([self.kind] * n, pa.string()),
                "identity": pa.array(self.identity, pa.string()),
                "status": pa.array(self.status, pa.string()),
                "errcode": pa.array(self.errcode, pa.int32()),
                "errmsg": pa.array(self.errmsg, pa.string()),
                "column": pa.array(self.column, pa.string()),
                "attempts": pa.array(self.attempts, pa.int32()),
                "latency_ms": pa.array(self.latency_ms, pa.float64()),
                "request_id": (
                    pa.array(self.request_id, pa.int64())
                    if self.request_id is not None
                    else pa.nulls(n, pa.int64())
                ),
            }
        )

    @classmethod
    def held(cls, rows: QuietRows, paths: Sequence[Path], kind: str) -> ResultRows:
        """The report lines of held rows that need no send (the end of a changed-only user
        run), of the file ``paths[rows.file_index]``: ``unchanged`` (a customer's last row),
        or ``skipped``, superseded by that row (``paths`` name its file)."""
        status: list[str] = []
        reason: list[str | None] = []
        for unchanged, by in zip(rows.unchanged, rows.superseded_by, strict=True):
            if unchanged:
                status.append("unchanged")
                reason.append(None)
                continue
            assert by is not None
            status.append("skipped")
            where = f"line {by[1]}"
            if by[0] != rows.file_index:
                where = f"{paths[by[0]].name} {where}"
            reason.append(f"superseded by {where}, this customer's last row, unchanged")
        n = len(rows.lines)
        return cls(
            file=str(paths[rows.file_index]),
            kind=kind,
            line=rows.lines,
            identity=rows.identities,
            status=status,
            errcode=[None] * n,
            errmsg=reason,
            column=[None] * n,
            attempts=[0] * n,
            latency_ms=[None] * n,
        )


class ResultsWriter:
    """Streams result lines to ``results.<fmt>`` (temporary name until ``close``)."""

    def __init__(self, run_dir: Path, fmt: str = "csv", *, mask: PiiMask | None = None) -> None:
        self.fmt = fmt
        self.mask = mask
        self.path = run_dir / f"results.{fmt}"
        self._tmp = temp_path(self.path)
        with writing(self.path):
            self._fh: IO[bytes] = open(self._tmp, "wb", opener=private_opener)  # noqa: SIM115
        self._csv: pacsv.CSVWriter | None = None
        self.rows = 0

    def write(self, rows: ResultRows) -> None:
        """Append ``rows``; DiskFullError when the disk is full."""
        with writing(self.path):
            self._write(rows)

    def _write(self, rows: ResultRows) -> None:
        if len(rows) == 0:
            return
        if self.mask is not None:
            # in place: the run's summary counts its reasons from these lines afterwards
            self.mask.lines(rows.identity, rows.errmsg)
        self.rows += len(rows)
        table = rows.to_table()
        if self.fmt == "jsonl":
            buf = io.StringIO()
            for rec in table.to_pylist():
                buf.write(json.dumps(rec, ensure_ascii=False))
                buf.write("\n")
            self._fh.write(buf.getvalue().encode())
            return
        for name in ("identity", "errmsg", "column", "file"):
            idx = table.schema.get_field_index(name)
            table = table.set_column(idx, name, neutralize(table.column(name).combine_chunks()))
        if self._csv is None:
            self._csv = pacsv.CSVWriter(
                self._fh,
                table.schema,
                write_options=pacsv.WriteOptions(quoting_style="needed"),
            )
        self._csv.write_table(table)

    def close(self) -> Path:
        with writing(self.path):
            if self._csv is not None:
                self._csv.close()
            elif self.fmt == "csv":
                self._fh.write((",".join(f'"{c}"' for c in RESULT_COLUMNS) + "\n").encode())
            self._fh.close()
            finish_atomic(self._tmp, self.path)
        return self.path

    def abandon(self) -> None:
        """Drop the unfinished file (also after a full disk made writing it fail)."""
        with contextlib.suppress(OSError):  # what is still buffered cannot matter now
            self._fh.close()
        self._tmp.unlink(missing_ok=True)


#: the endings of a results file (``report.format``)
RESULT_SUFFIXES = (".csv", ".jsonl")


@dataclass(frozen=True)
class ResultLine:
    """One line of a results file as written, read back (what ``retry`` needs of it)."""

    file: str
    line: int
    identity: str
    status: str


def unprotect(text: str) -> str:
    """A ``results.csv`` cell as it was before formula protection (``neutralize``)."""
    if text[:1] == "'" and re.match(_FORMULA_START, text[1:2]):
        return text[1:]
    return text


def read_results(path: Path) -> Iterator[ResultLine]:
    """The lines of a results file (``results.csv`` or ``results.jsonl``), in order, with the
    apostrophe that formula protection put before a text cell of ``results.csv`` taken off."""
    with open(path, encoding="utf-8", newline="") as fh:
        if path.suffix == ".csv":
            for rec in csv.DictReader(fh):
                yield ResultLine(
                    unprotect(rec["file"]),
                    int(rec["line"]),
                    unprotect(rec.get("identity") or ""),
                    rec["status"],
                )
        else:
            for text in fh:
                if text.strip():
                    obj = json.loads(text)
                    yield ResultLine(
                        str(obj["file"]),
                        int(obj["line"]),
                        str(obj.get("identity") or ""),
                        str(obj["status"]),
                    )
