"""The per-run report: one line per input row, the rejected rows ready to re-import, a summary.

A run writes, in its own directory under the report dir::

    results.csv | results.jsonl   file, line, kind, identity, status, errcode, errmsg, column,
                                  attempts, latency_ms -- exactly one line per input row
    rejects.<ext>                 the original rows that did not get through (rejected, failed,
                                  not_sent), in the input's own format, encoding and header;
                                  one file per input file when there are several
                                  (rejects-<name>, unique: ``rejects_names``)
    summary.json                  counts by status and errcode, rate, duration, fingerprints

Every file is written under a temporary name in the same folder and renamed into place when
complete (after an fsync), so a reader never sees half a report.

Spreadsheet safety: in ``results.csv`` a text cell that starts with ``=``, ``+``, ``-``, ``@``,
tab or carriage return gets a leading apostrophe (OWASP's advice against formula injection);
``results.jsonl`` and the rejects files keep values byte for byte, so a phone like
``+8613800138000`` can still be re-imported from them.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .errors import NO_SPACE, DiskFullError

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


def mask_value(text: str) -> str:
    """Mask a phone (``183****6527``) or an email (``ti****@qdum.com``) the way the seed does."""
    if "@" in text:
        local, _, domain = text.partition("@")
        keep = local[:2]
        return f"{keep}****@{domain}"
    if len(text) >= 7:
        return f"{text[:3]}****{text[-4:]}"
    return "****"


_QUOTED = re.compile(r"'([^']*)'")
_PII_LIKE = re.compile(r"\d{7,}|@")


def mask_quoted(message: str) -> str:
    """Mask values quoted in a reason (``'13800138000' is not ...``) that look like a phone
    or an email: a local rejection quotes the offending cell."""

    def repl(m: re.Match[str]) -> str:
        value = m.group(1)
        return f"'{mask_value(value)}'" if _PII_LIKE.search(value) else m.group(0)

    return _QUOTED.sub(repl, message)


#: an e-mail address, or a phone-like run of 7+ digits (``+``, single spaces or dashes between)
_PII_TOKEN = re.compile(
    r"(?P<email>[\w.+-]+@[\w-]+(?:\.[\w-]+)+)|(?<![\d+])(?P<phone>\+?\d(?:[ -]?\d){6,})(?!\d)"
)
#: a date (``2024-12-01``, ``2024-12-01 10``) is not a phone, though its digits run as long
_DATE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}(?: \d{1,2})?")
_ASCII_WORD = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")


def mask_pii_text(text: str, values: Iterable[str] = ()) -> str:
    """``text`` with the given values (a row's own key values: a platform's message may name
    the customer), every e-mail- and phone-like token, and quoted phones and e-mails masked
    the way ``mask_value`` does (``138****5678``, ``al****@corp.cn``)."""
    for value in values:
        if len(value) >= 3 and value in text:
            text = _replace_word(text, value, mask_value(value))
    text = mask_quoted(text)

    def repl(m: re.Match[str]) -> str:
        token = m.group(0)
        if m.group("phone") is not None and _DATE.fullmatch(token):
            return token
        return mask_value(token)

    return _PII_TOKEN.sub(repl, text)


#: a value ``mask_value`` masked (``138****5678``, ``al****@corp.cn``, ``****``)
_MASKED = re.compile(r"[^\s'\"/,;()]*\*\*\*\*[^\s'\"/,;()]*")


def without_row_values(text: str) -> str:
    """``text`` with every e-mail- and phone-like token and every masked value replaced by
    ``…``: the words two rows' messages share, to count reasons by."""

    def repl(m: re.Match[str]) -> str:
        token = m.group(0)
        return token if m.group("phone") is not None and _DATE.fullmatch(token) else "…"

    return _MASKED.sub("…", _PII_TOKEN.sub(repl, text))


def _replace_word(text: str, value: str, masked: str) -> str:
    """Every occurrence of ``value`` in ``text`` that is not part of a longer ASCII word or
    number (``C1024`` in ``customer C1024 is ...``, not in ``C10245``)."""
    out: list[str] = []
    pos = 0
    start = text.find(value)
    while start >= 0:
        end = start + len(value)
        inside = (start > 0 and text[start - 1] in _ASCII_WORD) or (
            end < len(text) and text[end] in _ASCII_WORD
        )
        if not inside:
            out += [text[pos:start], masked]
            pos = end
        start = text.find(value, end if not inside else start + 1)
    return "".join(out) + text[pos:]


class PiiMask:
    """``report.mask_pii``: what a report may show of a row's personal data.

    ``identity_keys`` are the names in a row's identity, in order (``phone=...;email=...``,
    events add ``event_id``); ``customer_keys`` those that identify a customer (the primary
    keys): their values are masked wherever they appear, in the identity and in any message;
    so are e-mail- and phone-like tokens in every message."""

    def __init__(self, identity_keys: Iterable[str], customer_keys: Iterable[str]) -> None:
        keys = list(identity_keys)
        self.customer_keys = frozenset(customer_keys)
        # split on the known keys, so a value holding ';' or '=' stays whole
        self._split = re.compile("(?:^|;)(" + "|".join(re.escape(k) for k in keys) + ")=")

    def identity(self, identity: str) -> tuple[str, list[str]]:
        """(the masked identity, the customer-key values it held)."""
        parts = self._split.split(identity)
        if len(parts) < 3 or parts[0]:
            return mask_pii_text(identity), []
        shown: list[str] = []
        values: list[str] = []
        for key, value in zip(parts[1::2], parts[2::2], strict=True):
            if key in self.customer_keys and value:
                values.append(value)
                shown.append(f"{key}={mask_value(value)}")
            else:
                shown.append(f"{key}={mask_pii_text(value)}")
        return ";".join(shown), values

    def rows(self, rows: ResultRows) -> None:
        """Mask a batch of report lines in place (identity and errmsg)."""
        for i, (identity, errmsg) in enumerate(zip(rows.identity, rows.errmsg, strict=True)):
            masked, values = self.identity(identity) if identity else ("", [])
            rows.identity[i] = masked
            if errmsg:
                rows.errmsg[i] = mask_pii_text(errmsg, values)

    def text(self, text: str) -> str:
        """A message with no row behind it (an abort's reason)."""
        return mask_pii_text(text)


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """A write to ``path`` that finds its disk full raises ``DiskFullError`` naming it."""
    try:
        yield
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise DiskFullError(path) from None
        raise


def _atomic_target(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def finish_atomic(tmp: Path, final: Path) -> None:
    """fsync the finished temporary file, rename it into place, fsync the folder."""
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = _atomic_target(path)
    try:
        with writing(path):
            with open(tmp, "w", encoding="utf-8", opener=_private_opener) as fh:
                json.dump(data, fh, ensure_ascii=False, indent=2, sort_keys=False)
                fh.write("\n")
            finish_atomic(tmp, path)
    except DiskFullError:
        tmp.unlink(missing_ok=True)
        raise


def _private_opener(path: str, flags: int) -> int:
    """Report files hold customer data: readable by their owner only."""
    return os.open(path, flags, 0o600)


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
            }
        )


class ResultsWriter:
    """Streams result lines to ``results.<fmt>`` (temporary name until ``close``)."""

    def __init__(self, run_dir: Path, fmt: str = "csv", *, mask: PiiMask | None = None) -> None:
        self.fmt = fmt
        self.mask = mask
        self.path = run_dir / f"results.{fmt}"
        self._tmp = _atomic_target(self.path)
        with writing(self.path):
            self._fh: IO[bytes] = open(self._tmp, "wb", opener=_private_opener)  # noqa: SIM115
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
            self.mask.rows(rows)
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


@dataclass
class RejectRows:
    """Original rows of one source that did not get through, ordered by line."""

    lines: list[int]
    table: pa.Table | None  # whole original rows (CSV/Parquet), aligned with table_lines
    table_lines: list[int]
    raw: list[tuple[int, str]] = field(default_factory=list)  # (line, original text)


class RejectsWriter:
    """``rejects.<ext>`` for one source, in that source's format, delimiter, encoding, header."""

    def __init__(self, path: Path, source: Any) -> None:
        self.path = path
        self.source = source
        self.fmt = source.format
        self._tmp = _atomic_target(path)
        self.rows = 0
        self._pq: pq.ParquetWriter | None = None
        self._text: IO[str] | None = None
        self._csv: Any = None
        if self.fmt in ("csv", "jsonl"):
            encoding = source.encoding if source.encoding not in ("auto", "binary") else "utf-8"
            with writing(path):
                self._text = open(  # noqa: SIM115
                    self._tmp, "w", encoding=encoding, newline="", opener=_private_opener
                )
                if self.fmt == "csv":
                    self._csv = csv.writer(
                        self._text,
                        delimiter=source.delimiter or ",",
                        escapechar=getattr(source, "escape_char", None),
                        lineterminator="\n",
                    )
                    self._csv.writerow(source.columns)

    def write(self, rows: RejectRows) -> None:
        """Append ``rows``; DiskFullError when the disk is full."""
        with writing(self.path):
            self._write(rows)

    def _write(self, rows: RejectRows) -> None:
        if self.fmt == "parquet":
            if rows.table is not None and rows.table.num_rows:
                if self._pq is None:
                    self._pq_file = open(self._tmp, "wb", opener=_private_opener)  # noqa: SIM115
                    self._pq = pq.ParquetWriter(self._pq_file, rows.table.schema)
                self._pq.write_table(rows.table)
                self.rows += rows.table.num_rows
            return
        assert self._text is not None
        items: list[tuple[int, int, Any]] = []
        if rows.table is not None and rows.table.num_rows:
            names = rows.table.column_names
            cols = [rows.table.column(c).to_pylist() for c in names]
            for j, line in enumerate(rows.table_lines):
                items.append((line, 0, [c[j] for c in cols]))
        items.extend((line, 1, text) for line, text in rows.raw)
        items.sort(key=lambda t: t[0])
        for _, is_raw, value in items:
            if is_raw:
                self._text.write(value if value.endswith("\n") else value + "\n")
            elif self.fmt == "csv":
                self._csv.writerow(["" if v is None else v for v in value])
            self.rows += 1

    def close(self) -> Path | None:
        with writing(self.path):
            if self._pq is not None:
                self._pq.close()
                self._pq_file.close()
            if self._text is not None:
                self._text.close()
            if self.rows == 0:
                self._tmp.unlink(missing_ok=True)
                return None
            finish_atomic(self._tmp, self.path)
        return self.path

    def abandon(self) -> None:
        """Drop the unfinished file (also after a full disk made writing it fail)."""
        with contextlib.suppress(OSError):  # what is still buffered cannot matter now
            if self._pq is not None:
                self._pq.close()
        with contextlib.suppress(OSError):
            if self._pq is not None:
                self._pq_file.close()
            if self._text is not None:
                self._text.close()
        self._tmp.unlink(missing_ok=True)


#: input name endings left out of a rejects file's name (its own extension replaces them)
_INPUT_SUFFIXES = (".gz", ".csv", ".txt", ".tsv", ".jsonl", ".ndjson", ".json", ".parquet", ".pq")
#: bytes of an input's name kept in its rejects file's name (a file name holds 255)
_NAME_BYTES = 120


def rejects_names(sources: Sequence[Any]) -> list[str]:
    """The rejects file name of each source, in order: ``rejects.<ext>`` for a single input,
    else ``rejects-<input name>.<ext>``, unique within the run whatever the inputs are called.

    The input's name loses its format and ``.gz`` endings and every character but letters,
    digits, ``.``, ``-`` and ``_`` (made ``_``); names that then meet, compared without case
    (a case-insensitive file system), get ``-2``, ``-3`` ... in input order.
    """
    exts = [_rejects_ext(s) for s in sources]
    if len(sources) == 1:
        return [f"rejects.{exts[0]}"]
    names: list[str] = []
    taken: set[str] = set()
    for source, ext in zip(sources, exts, strict=True):
        stem = source.path.name
        while stem.lower().endswith(_INPUT_SUFFIXES):
            stem = stem[: stem.rindex(".")]
        stem = "".join(c if c.isalnum() or c in "._-" else "_" for c in stem)
        stem = stem.encode()[:_NAME_BYTES].decode(errors="ignore") or "input"
        name = f"rejects-{stem}.{ext}"
        n = 1
        while name.casefold() in taken:
            n += 1
            name = f"rejects-{stem}-{n}.{ext}"
        taken.add(name.casefold())
        names.append(name)
    return names


def _rejects_ext(source: Any) -> str:
    if source.format == "csv":
        return "tsv" if source.delimiter == "\t" else "csv"
    return str(source.format)


def file_fingerprint(path: Path) -> dict[str, Any]:
    """What decides whether a killed run may be resumed on this file: its size, mtime and the
    SHA-256 of all of it. A sample (say the first and last MiB) would let a file edited in the
    middle with its mtime put back pass as the same, and its edited rows be skipped as done;
    hashing it all costs about 0.8 s per GB from the page cache, small next to reading,
    checking and sending it (and it leaves the file in the cache for that)."""
    st = path.stat()
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    return {
        "path": str(path.resolve()),
        "size": st.st_size,
        "mtime": st.st_mtime,
        "sha256": digest,
    }


_METRIC_LAST_SUCCESS = "dmimport_last_success_timestamp_seconds"


def write_metrics(path: Path, summary: Any) -> None:
    """Prometheus text format for node_exporter's textfile collector, written atomically.

    The last success time survives a failed run: it is carried over from the previous file.
    """
    import time

    job = summary.job.replace("\\", "_").replace('"', "_")
    last_success = None
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith(_METRIC_LAST_SUCCESS + "{"):
                with contextlib.suppress(ValueError):
                    last_success = float(line.rsplit(" ", 1)[1])
    now = time.time()
    if summary.exit_code == 0:
        last_success = now
    lines = [
        "# HELP dmimport_rows Rows of the last run by final status.",
        "# TYPE dmimport_rows gauge",
    ]
    for status, n in summary.counts.items():
        lines.append(f'dmimport_rows{{job="{job}",status="{status}"}} {n}')
    lines += [
        "# HELP dmimport_run_duration_seconds Duration of the last run.",
        "# TYPE dmimport_run_duration_seconds gauge",
        f'dmimport_run_duration_seconds{{job="{job}"}} {summary.duration_s:.3f}',
        "# HELP dmimport_requests Requests made by the last run (retries included).",
        "# TYPE dmimport_requests gauge",
        f'dmimport_requests{{job="{job}"}} {summary.requests}',
        "# HELP dmimport_exit_code Exit code of the last run.",
        "# TYPE dmimport_exit_code gauge",
        f'dmimport_exit_code{{job="{job}"}} {summary.exit_code}',
        "# HELP dmimport_last_run_timestamp_seconds When the last run finished.",
        "# TYPE dmimport_last_run_timestamp_seconds gauge",
        f'dmimport_last_run_timestamp_seconds{{job="{job}"}} {now:.0f}',
    ]
    if last_success is not None:
        lines += [
            f"# HELP {_METRIC_LAST_SUCCESS} When a run of this job last exited 0.",
            f"# TYPE {_METRIC_LAST_SUCCESS} gauge",
            f'{_METRIC_LAST_SUCCESS}{{job="{job}"}} {last_success:.0f}',
        ]
    tmp = _atomic_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with writing(path):
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write("\n".join(lines) + "\n")
            finish_atomic(tmp, path)
    except DiskFullError:
        tmp.unlink(missing_ok=True)
        raise
