"""``results.csv`` / ``results.jsonl``: exactly one line per input row.

Columns: file, line, kind, identity, status, errcode, errmsg, column, attempts, latency_ms,
request_id (which request finally carried the row: its number in the run; empty when none did).

Encoding (``report.encoding``): ``results.csv`` is UTF-8 with a byte-order mark by default
(``utf-8-sig``: without it Excel reads UTF-8 as the machine's code page, and Chinese text comes
out garbled), plain ``utf-8`` or ``gb18030``; ``results.jsonl`` is always UTF-8 without a mark
(JSON Lines allows no other). ``read_results`` reads each of them back.

Spreadsheet safety: in ``results.csv`` a text cell that starts with ``=``, ``+``, ``-``, ``@``,
tab or carriage return gets a leading apostrophe (OWASP's advice against formula injection);
``results.jsonl`` keeps values byte for byte.
"""

from __future__ import annotations

import codecs
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


#: the ``report.encoding`` values, and the default
REPORT_ENCODINGS = ("utf-8-sig", "utf-8", "gb18030")
DEFAULT_REPORT_ENCODING = "utf-8-sig"


class Transcoder:
    """A binary sink that takes UTF-8 (what Arrow's CSV writer gives) and writes it to ``fh``
    in ``encoding``, a block at a time; for ``utf-8-sig`` it starts with the byte-order mark."""

    def __init__(self, fh: IO[bytes], encoding: str) -> None:
        self.fh = fh
        self.encoding = encoding
        self.closed = False
        self._utf8 = encoding in ("utf-8", "utf-8-sig")
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        if encoding == "utf-8-sig":
            fh.write(codecs.BOM_UTF8)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._utf8:
            self.fh.write(data)
        else:  # gb18030 encodes every character, so nothing is lost
            self.fh.write(self._decoder.decode(bytes(data)).encode(self.encoding, "replace"))
        return len(data)

    def flush(self) -> None:
        self.fh.flush()


class ResultsWriter:
    """Streams result lines to ``results.<fmt>`` (temporary name until ``close``); a CSV one
    in ``encoding`` (``report.encoding``), a JSON Lines one in UTF-8."""

    def __init__(
        self,
        run_dir: Path,
        fmt: str = "csv",
        *,
        mask: PiiMask | None = None,
        encoding: str = DEFAULT_REPORT_ENCODING,
    ) -> None:
        self.fmt = fmt
        self.mask = mask
        self.path = run_dir / f"results.{fmt}"
        self._tmp = temp_path(self.path)
        with writing(self.path):
            self._fh: IO[bytes] = open(self._tmp, "wb", opener=private_opener)  # noqa: SIM115
            self._sink = Transcoder(self._fh, encoding if fmt == "csv" else "utf-8")
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
                self._sink,
                table.schema,
                write_options=pacsv.WriteOptions(quoting_style="needed"),
            )
        self._csv.write_table(table)

    def close(self) -> Path:
        with writing(self.path):
            if self._csv is not None:
                self._csv.close()
            elif self.fmt == "csv":
                self._sink.write((",".join(f'"{c}"' for c in RESULT_COLUMNS) + "\n").encode())
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


def protect(text: str) -> str:
    """One cell as ``neutralize`` gives a column: formula-looking text behind an apostrophe."""
    return "'" + text if re.match(_FORMULA_START, text) else text


def unprotect(text: str) -> str:
    """A ``results.csv`` cell as it was before formula protection (``neutralize``)."""
    if text[:1] == "'" and re.match(_FORMULA_START, text[1:2]):
        return text[1:]
    return text


def report_encoding(path: Path, encoding: str | None = None) -> str:
    """The encoding to read a report file (``results.csv``, ``rejects.reasons.csv``) written
    with ``report.encoding`` back with: UTF-8 when it starts with the byte-order mark (the
    mark dropped); UTF-8 when the file is valid UTF-8 (Chinese text in GB18030 never is:
    a file written without a mark before the config said ``report.encoding: gb18030`` is
    read right), else GB18030, whatever ``encoding`` (the config's ``report.encoding``) says.
    A ``results.jsonl`` is always UTF-8."""
    with open(path, "rb") as fh:
        if fh.read(3) == codecs.BOM_UTF8:
            return "utf-8-sig"
        if path.suffix != ".csv":
            return "utf-8"
        fh.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            while chunk := fh.read(1 << 20):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return "gb18030"
    return "utf-8"


def read_results(path: Path, encoding: str | None = None) -> Iterator[ResultLine]:
    """The lines of a results file (``results.csv`` or ``results.jsonl``), in order, with the
    apostrophe that formula protection put before a text cell of ``results.csv`` taken off.
    ``encoding``: the ``report.encoding`` it was written with, for a file without a
    byte-order mark (``report_encoding``)."""
    with open(path, encoding=report_encoding(path, encoding), newline="") as fh:
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
