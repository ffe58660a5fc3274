"""Read input files into bounded batches of text: the first stage of loader -> mapper -> sender.

``expand_inputs`` turns paths, directories and globs into files; ``open_source`` checks one file
(format, encoding, header) before anything is sent; ``iter_batches`` streams it as ``Batch``es.

Every record of a file ends up exactly once, in file order, either as a row of a batch's table
(with its physical line in ``lines``) or as a ``BadRecord`` saying why not. A problem with the
whole file is a ``LoadError`` naming the file.

Text files (CSV/TSV, JSON Lines) are read through ``_Utf8Stream``, which decodes the file's
encoding incrementally and hands UTF-8 on: undecodable bytes become U+FFFD there, and a value
holding U+FFFD becomes a bad record here, so a wrong encoding never reaches the platform as
garbled text. Valid UTF-8 passes through untouched (Arrow validates it, no Python decoding).
docs/input-files.md describes the behaviour for users.
"""

from __future__ import annotations

import codecs
import csv
import errno
import functools
import glob
import gzip
import io
import json
import logging
import os
import re
import stat
import sys
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from .errors import ConfigError, ConfigProblem, LoadError

__all__ = [
    "BadRecord",
    "Batch",
    "InputOptions",
    "Source",
    "expand_inputs",
    "iter_batches",
    "open_source",
]

#: extension -> format; text formats may also end in ``.gz``
EXTENSIONS = {
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
FORMATS = ("auto", "csv", "tsv", "jsonl", "parquet")

_SAMPLE = 1 << 20  # bytes looked at to choose the encoding and read the header
_CHUNK = 4 << 20  # bytes read from the file at a time
_BLOCK = 2 << 20  # Arrow CSV block; a record that does not fit is read again with a larger one
_BLOCK_SLACK = 1 << 20  # room beyond two maximal fields in the larger block
_READAHEAD = 3  # blocks Arrow may read beyond the batches taken (it would read 32)
_RELEASE_WAIT = 30.0  # seconds to wait for Arrow's reader thread to stop (it takes ms)
_FFFD = "\ufffd".encode()
_EOL = (b"\n", b"\r")

# Magic numbers of files people rename to .csv by mistake.
_MAGIC = (
    (b"PAR1", "a Parquet file"),
    (b"PARE", "an encrypted Parquet file"),
    (b"PK\x03\x04", "a ZIP archive (an Excel .xlsx workbook?)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Excel 97-2003 (.xls) workbook"),
    (b"%PDF-", "a PDF document"),
    (b"\xfd7zXZ\x00", "an xz-compressed file"),
    (b"\x28\xb5\x2f\xfd", "a zstd-compressed file"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"SQLite format 3\x00", "an SQLite database"),
)
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
    (b"\x84\x31\x95\x33", "gb18030"),
)

log = logging.getLogger("importer")

# Decoding errors are replaced by U+FFFD through this handler, which also counts them (per
# thread: a stream decodes and reads the count in the same call).
_ERRORS = "dmimport.replace"
_local = threading.local()


def _count_and_replace(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    _local.count = getattr(_local, "count", 0) + 1
    return "\ufffd", exc.end


codecs.register_error(_ERRORS, _count_and_replace)


# --------------------------------------------------------------------------------------------
# Public types


@dataclass(frozen=True)
class InputOptions:
    """How to read input files (the config's ``input:`` section)."""

    format: str = "auto"
    encoding: str = "auto"
    delimiter: str | None = None
    #: CSV: a character that makes the next one literal (``\\`` for ``\\"`` in MySQL or PHP
    #: exports); None: quotes are escaped only by doubling them (RFC 4180)
    escape_char: str | None = None
    batch_rows: int = 10_000
    max_field_bytes: int = 10 * 1024 * 1024
    max_decompressed_bytes: int = 20 * 1024**3

    def __post_init__(self) -> None:
        problems = []
        if self.format not in FORMATS:
            problems.append(
                ConfigProblem("input.format", f"unknown format '{self.format}'", ", ".join(FORMATS))
            )
        if self.encoding != "auto":
            try:
                codecs.lookup(self.encoding)
            except LookupError:
                problems.append(
                    ConfigProblem(
                        "input.encoding",
                        f"unknown encoding '{self.encoding}'",
                        "e.g. auto, utf-8, gb18030",
                    )
                )
        d = self.delimiter
        if d is not None and (len(d) != 1 or not d.isascii() or d in '"\r\n'):
            problems.append(
                ConfigProblem(
                    "input.delimiter",
                    f"delimiter must be one ASCII character other than a quote or newline, "
                    f"got {d!r}",
                    r"e.g. ',', ';', '|' or '\t'",
                )
            )
        e = self.escape_char
        if e is not None and (len(e) != 1 or not e.isascii() or e in '"\r\n' or e == d):
            problems.append(
                ConfigProblem(
                    "input.escape_char",
                    f"escape_char must be one ASCII character other than a quote, a newline or "
                    f"the delimiter, got {e!r}",
                    r"e.g. '\\' (a backslash)",
                )
            )
        for name in ("batch_rows", "max_field_bytes", "max_decompressed_bytes"):
            if getattr(self, name) < 1:
                problems.append(ConfigProblem(f"input.{name}", "must be at least 1"))
        if problems:
            raise ConfigError(problems)


@dataclass(frozen=True)
class Source:
    """One input file, checked and ready to read."""

    path: Path
    format: str  # csv | jsonl | parquet (TSV is csv with delimiter '\t')
    encoding: str  # the encoding used, e.g. 'utf-8', 'utf-8-sig', 'gb18030'; 'binary' for parquet
    delimiter: str | None
    compressed: bool
    columns: list[str]  # CSV header / Parquet schema; JSONL: keys of the first object
    has_header_columns: bool  # False for JSONL: a missing key is an empty value
    #: Parquet columns that cannot be read as text (nested, or of another unsupported type),
    #: as "name (type)" by name: fine while the job does not read them
    unsupported: dict[str, str] = field(default_factory=dict)
    #: why this encoding: 'declared (input.encoding)', 'detected: valid UTF-8', ...
    encoding_reason: str = ""
    escape_char: str | None = None  # CSV: ``input.escape_char``

    def refuse_unsupported(self, columns: Sequence[str]) -> None:
        """LoadError when the job reads a column this file cannot give as text."""
        read = [self.unsupported[c] for c in columns if c in self.unsupported]
        if not read:
            return
        nested = [c for c in read if "<" in c]
        what = "nested Parquet columns are" if nested else "Parquet column types"
        raise LoadError(
            f"{self.path}: {what} not supported: {', '.join(read)}; the config reads "
            + ("them" if len(read) > 1 else "it")
            + ": export flat columns of text, numbers, booleans or dates"
        )


@dataclass
class BadRecord:
    """A record that cannot be delivered, and why."""

    line: int  # CSV: line where the record starts (header = 1); JSONL: line; Parquet: row
    reason: str
    column: str | None
    raw: str | None  # the record's text, for the rejects file; None when unknowable


@dataclass
class Batch:
    """Up to ``batch_rows`` good rows of one source, and the bad records among them."""

    source: Source
    index: int
    table: pa.Table  # every column pa.string()
    lines: np.ndarray  # int64, the physical line of each table row
    raw: list[str] | None  # JSONL only: the original line of each table row
    bad: list[BadRecord]
    #: Parquet only: the rows as read, original types, good and bad; row i is line first+i
    original: pa.RecordBatch | None = None


# --------------------------------------------------------------------------------------------
# Finding files


def expand_inputs(
    paths: Sequence[str | Path], skipped: list[tuple[Path, str]] | None = None
) -> list[Path]:
    """Files, directories (their input files, not recursive) and glob patterns -> sorted files.

    An entry of a directory, or a match of a pattern, that is not a regular file (a named pipe,
    a device, a symbolic link loop or to nothing, a folder named like an input file) is never
    opened: it is appended to ``skipped`` with the reason. Raises ``LoadError`` for a path
    that matches nothing.
    """
    found: dict[Path, Path] = {}
    for item in paths:
        text = os.path.expanduser(str(item))
        path = Path(text)
        passed: list[tuple[Path, str]] = []
        if path.is_dir():
            entries = [p for p in path.iterdir() if not p.name.startswith(".")]
            matches = _regular_files(
                sorted(p for p in entries if _known_extension(p)), passed, subfolders=True
            )
            if not matches:
                known = ", ".join(EXTENSIONS)
                raise LoadError(
                    f"{text}: directory has no input files ({known}, or .gz)"
                    + "".join(f"; skipped {p.name}: {why}" for p, why in passed)
                )
        elif path.is_file():
            matches = [path]
        elif glob.has_magic(text):
            matches = _regular_files(sorted(Path(p) for p in glob.glob(text)), passed)
            if not matches:
                raise LoadError(
                    f"{text}: no file matches this pattern"
                    + "".join(f"; skipped {p}: {why}" for p, why in passed)
                )
        elif path.exists() or path.is_symlink():
            raise LoadError(f"{text}: {_not_regular(path)}")
        else:
            raise LoadError(f"{text}: no such file or directory")
        if skipped is not None:
            skipped += passed
        for match in matches:
            found.setdefault(match.resolve(), match)
    return sorted(found.values(), key=str)


def _regular_files(
    candidates: list[Path], skipped: list[tuple[Path, str]], subfolders: bool = False
) -> list[Path]:
    """The regular files among ``candidates`` (symbolic links followed); the rest go to
    ``skipped`` with the reason. Only ``stat`` is used: a named pipe is never opened, since
    opening one waits for a writer."""
    files = []
    for p in candidates:
        if p.is_file():
            files.append(p)
        elif subfolders or not p.is_dir() or _known_extension(p):
            # a pattern may name folders on its way (data/*), but data/*.csv names x.csv/
            skipped.append((p, _not_regular(p)))
    return files


def _not_regular(path: Path) -> str:
    """Why ``path``, which exists (or is a symbolic link), is not a file dmimport reads."""
    link = ""
    if path.is_symlink():
        try:
            link = f"a symbolic link to {os.readlink(path)}, "
            mode = path.stat().st_mode
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "a symbolic link loop"
            if exc.errno == errno.ENOENT:
                return f"{link}which does not exist"
            return f"{link}which cannot be inspected ({exc.strerror or exc})"
    else:
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            return f"cannot be inspected ({exc.strerror or exc})"
    if stat.S_ISDIR(mode):
        return f"{link}a folder (subfolders are not read)"
    kinds = (
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    kind = next((name for test, name in kinds if test(mode)), "not a regular file")
    return f"{link}{kind}, not a regular file"


def _known_extension(path: Path) -> bool:
    name = path.name.lower()
    if name.endswith(".gz"):
        return EXTENSIONS.get(os.path.splitext(name[:-3])[1]) not in (None, "parquet")
    return os.path.splitext(name)[1] in EXTENSIONS


# --------------------------------------------------------------------------------------------
# Opening a file


def open_source(path: Path, options: InputOptions) -> Source:
    """Check ``path`` and read its header: format, encoding, columns. Reads no data rows.

    Raises ``LoadError`` for a file that cannot be read: missing, empty, not what its name says,
    an encoding that cannot be told, a truncated gzip file, duplicate column names, nested
    Parquet columns.
    """
    path = Path(path)
    fmt, delimiter, compressed = _resolve_format(path, options)
    head = _read_head(path)
    if compressed:
        if head[:2] != b"\x1f\x8b":
            raise LoadError(f"{path}: the name ends in .gz but the file is not gzip-compressed")
        sample, at_eof, later = _check_gzip(
            path, options.max_decompressed_bytes, options.encoding == "auto"
        )
        if not sample:
            raise LoadError(f"{path}: file is empty (after decompression)")
    else:
        if head[:2] == b"\x1f\x8b":
            raise LoadError(
                f"{path}: the file is gzip-compressed but its name does not end in .gz; "
                f"rename it to {path.name}.gz"
            )
        sample, at_eof = _read_sample(path)
        later = None

    if fmt == "parquet":
        return _open_parquet(path, sample)
    if sample.startswith(b"PAR1"):
        raise LoadError(
            f"{path}: this is a Parquet file, not {fmt.upper()}; "
            "name it .parquet or set input.format: parquet"
        )
    for magic, what in _MAGIC:
        if sample.startswith(magic):
            raise LoadError(f"{path}: this is {what}, not a {fmt.upper()} text file")
    # a first MiB of ASCII is no evidence: look on to the first bytes that are not ASCII
    ascii_so_far = not (compressed or at_eof) and sample.isascii()
    if ascii_so_far and options.encoding == "auto":
        with _RawInput(path, compressed=False, limit=0) as raw:
            later = _non_ascii_sample(raw)
    encoding, why = _resolve_encoding(path, sample, at_eof, options.encoding, later)
    text = codecs.getincrementaldecoder(encoding)(errors="replace").decode(sample, final=at_eof)
    text = text.removeprefix("\ufeff")
    if fmt == "csv":
        assert delimiter is not None
        escape = options.escape_char
        columns, _ = _parse_header(path, text, delimiter, at_eof, encoding, escape)
        return Source(
            path,
            "csv",
            encoding,
            delimiter,
            compressed,
            columns,
            True,
            encoding_reason=why,
            escape_char=escape,
        )
    return Source(
        path, "jsonl", encoding, None, compressed, _jsonl_keys(text), False, encoding_reason=why
    )


def _resolve_format(path: Path, options: InputOptions) -> tuple[str, str | None, bool]:
    name = path.name.lower()
    compressed = name.endswith(".gz")
    ext = os.path.splitext(name[:-3] if compressed else name)[1]
    fmt = options.format
    if fmt == "auto":
        found = EXTENSIONS.get(ext)
        if found is None:
            raise LoadError(
                f"{path}: cannot tell the format from the extension '{ext or path.name}'; "
                "set input.format (csv, tsv, jsonl or parquet)"
            )
        fmt = found
    if fmt == "parquet":
        if compressed:
            raise LoadError(
                f"{path}: gzip-compressed Parquet is not supported (Parquet compresses "
                "internally); decompress it first"
            )
        return "parquet", None, False
    if fmt == "jsonl":
        return "jsonl", None, compressed
    default = "\t" if fmt == "tsv" or ext == ".tsv" else ","
    return "csv", options.delimiter or default, compressed


def _read_head(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except FileNotFoundError:
        raise LoadError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise LoadError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise LoadError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not head:
        raise LoadError(f"{path}: file is empty")
    return head


def _read_sample(path: Path) -> tuple[bytes, bool]:
    with open(path, "rb") as fh:
        sample = fh.read(_SAMPLE + 1)
    return sample[:_SAMPLE], len(sample) <= _SAMPLE


def _check_gzip(
    path: Path, limit: int, detect: bool
) -> tuple[bytes, bool, tuple[bytes, bool, int, int] | None]:
    """Decompress the whole file once, before anything is sent: a truncated or corrupt file,
    or one that decompresses past ``limit``, is refused now rather than half-way through.
    With ``detect``, a first MiB of ASCII is followed by ``_non_ascii_sample``'s answer."""
    later = None
    with _RawInput(path, compressed=True, limit=limit) as raw:
        sample = raw.read(_SAMPLE + 1)
        at_eof = len(sample) <= _SAMPLE
        if detect and not at_eof and sample.isascii():
            later = _non_ascii_sample(raw, sample)
        while raw.read(_CHUNK):
            pass
    return sample[:_SAMPLE], at_eof, later


def _non_ascii_sample(raw: _RawInput, data: bytes = b"") -> tuple[bytes, bool, int, int] | None:
    """For a file whose first MiB is ASCII: from the start of the line holding its first
    non-ASCII byte, up to ``_SAMPLE`` bytes, whether they reach the end of the file, and that
    line's number and offset. None if the whole file is ASCII. ``data``: what was read of
    ``raw`` so far, from its start."""
    line, offset, carry = 1, 0, b""  # carry: the start of the line the chunk continues
    while data or (data := raw.read(_CHUNK)):
        if data.isascii():  # the chunk alone, not copied after carry (ASCII, no line end)
            cut = data.rfind(b"\n") + 1
            line += data.count(b"\n")
            if cut:
                offset, carry = offset + len(carry) + cut, data[cut:]
            else:
                carry += data
            carry, data = carry[-_SAMPLE:], b""  # a line longer than that is cut short
            continue
        data = carry + data
        first = len(data) - len(data.lstrip(bytes(range(0x80))))
        start = data.rfind(b"\n", 0, first) + 1
        line, offset, data = line + data.count(b"\n", 0, start), offset + start, data[start:]
        while len(data) <= _SAMPLE and (more := raw.read(_CHUNK)):
            data += more
        return data[:_SAMPLE], len(data) <= _SAMPLE, line, offset
    return None


def _resolve_encoding(
    path: Path,
    sample: bytes,
    at_eof: bool,
    requested: str,
    later: tuple[bytes, bool, int, int] | None = None,
) -> tuple[str, str]:
    """The encoding to read ``path`` with, and why (for the summary). ``later``: for a file
    whose ``sample`` is ASCII, the bytes from its first non-ASCII line (``_non_ascii_sample``)."""
    if requested != "auto":
        name = codecs.lookup(requested).name
        if _ascii_compatible(name):
            _refuse_binary(path, sample)
        if name == "utf-8" and sample.startswith(codecs.BOM_UTF8):
            return "utf-8-sig", "declared (input.encoding), with a byte-order mark"
        return name, "declared (input.encoding)"
    for bom, name in _BOMS:
        if sample.startswith(bom):
            return name, "detected: byte-order mark"
    _refuse_binary(path, sample)
    if later is not None:
        return _detect_encoding(path, *later)
    return _detect_encoding(path, sample, at_eof)


# GB18030 needs strong evidence: at least this share of the non-ASCII characters a GB18030
# reading gives must be common Chinese (the GB2312 set). Latin-1 text read as GB18030 gives
# rare characters ('Õakman' -> '誥kman', 誥 is outside GB2312), and UTF-8 Chinese read as
# GB18030 gives mostly rare ones ('张三' -> '寮犱笁').
_GB_COMMON_SHARE = 0.9
# A short line of GB18030 Chinese is valid UTF-8 by chance about once in 150: such lines are
# not held against GB18030 while they are under 1 in 20 of the lines that are not UTF-8.
_GB_CHANCE_UTF8 = 20


def _detect_encoding(
    path: Path, sample: bytes, at_eof: bool, first_line: int = 1, first_offset: int = 0
) -> tuple[str, str]:
    """UTF-8 or GB18030, judged line by line over ``sample`` (the first MiB, or a MiB from the
    first line that is not ASCII, its number and offset given); refuse when neither holds.

    UTF-8 when the lines holding non-ASCII bytes are mostly valid UTF-8 (the others become
    bad records when read); GB18030 only when no line reads as UTF-8 text and the text is
    common Chinese. Anything else could only be read by guessing, which would garble it.
    """
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=at_eof)
    except UnicodeDecodeError:
        pass
    else:
        return "utf-8", "detected: valid UTF-8"
    lines = sample.split(b"\n")
    if not at_eof and len(lines) > 1:
        lines.pop()  # cut short by the end of the sample
    utf8 = ambiguous = other = chars = common = 0
    seen: set[str] = set()  # the distinct characters a GB18030 reading gives
    first_bad: tuple[int, int, int] | None = None  # byte, offset, line
    offset = 0
    for number, line in enumerate(lines, first_line):
        start, offset = offset, offset + len(line) + 1
        if line.isascii():
            continue
        try:
            whole = at_eof or start + len(line) < len(sample)  # a line break follows
            codecs.getincrementaldecoder("utf-8")().decode(line, final=whole)
        except UnicodeDecodeError as exc:
            other += 1
            if first_bad is None:
                first_bad = (line[exc.start], first_offset + start + exc.start, number)
            n, c = _gb_common(line, seen)
            chars, common = chars + n, common + c
            continue
        found: set[str] = set()
        n, c = _gb_common(line, found)
        if n and c == n:
            ambiguous += 1  # valid both ways: no evidence for either
            chars, common = chars + n, common + c
            seen |= found
        else:
            utf8 += 1
    if first_bad is None:  # the sample ends inside a character: valid as far as it goes
        return "utf-8", "detected: valid UTF-8"
    if utf8 == 0 and ambiguous * _GB_CHANCE_UTF8 <= other and common >= _GB_COMMON_SHARE * chars:
        share = 100 * common // chars
        if _looks_korean(seen):
            byte, where, number = first_bad
            raise LoadError(
                f"{path}: cannot tell the encoding: byte 0x{byte:02x} on line {number} (offset "
                f"{where}) is not UTF-8, and read as GB18030 every Chinese character would "
                "fall in the rows where EUC-KR puts Korean Hangul: this looks like Korean "
                "text; set input.encoding to the encoding it was written in (cp949 or euc-kr "
                "for Korean, gb18030 if it really is Chinese)"
            )
        return "gb18030", f"detected: GB18030 (no UTF-8 text; {share}% common Chinese characters)"
    if utf8 + ambiguous > other:
        return "utf-8", (
            f"detected: mostly UTF-8 ({other} of {utf8 + ambiguous + other} lines with non-ASCII "
            "bytes in the first MiB are not UTF-8: they are bad records)"
        )
    byte, where, number = first_bad
    raise LoadError(
        f"{path}: cannot tell the encoding: byte 0x{byte:02x} on line {number} (offset {where}) "
        "is not UTF-8, and the file is not GB18030 Chinese either; set input.encoding to the "
        "encoding it was written in (e.g. input.encoding: latin-1 for Western European text, "
        "or gb18030, big5, shift_jis), or input.encoding: utf-8 to reject the lines that are "
        "not UTF-8"
    )


def _gb_common(line: bytes, seen: set[str]) -> tuple[int, int]:
    """How many non-ASCII characters ``line`` holds read as GB18030, and how many of them are
    common Chinese: in the GB2312 area of GBK (the 6,763 everyday hanzi, CJK punctuation,
    fullwidth forms; not its Japanese kana, which EUC-JP and EUC-KR text give). Undecodable
    bytes count as characters that are not common. The characters are added to ``seen``."""
    text = line.decode("gb18030", errors="replace")
    wide = _ASCII_RUNS.sub("", text)
    seen.update(wide)
    return len(wide), len(wide) - len(wide.translate(_common_chinese()))


# EUC-KR (and CP949, Korean Excel's encoding) puts the 2,350 Hangul syllables at lead bytes
# B0-C8, where GB2312 has its hanzi of pinyin a to r: Korean read as GB18030 is all common
# Chinese ('김민준' -> '辫刮霖'). Chinese text of this many distinct hanzi has some from rows
# C9-F7 (pinyin s to z, and the second level: 是, 王, 张, 中 ...): about 2 in 5 of the hanzi
# of Chinese names are there, so 20 distinct hanzi all below C9 is about 1 file in 25,000.
_KOREAN_DISTINCT = 20


def _looks_korean(chars: set[str]) -> bool:
    """True if the hanzi of a GB18030 reading are many and all in EUC-KR's Hangul rows."""
    common = _common_chinese()
    leads = [c.encode("gb18030")[0] for c in chars if ord(c) in common]
    hanzi = [lead for lead in leads if lead >= 0xB0]
    return len(hanzi) >= _KOREAN_DISTINCT and max(hanzi) <= 0xC8


@functools.cache
def _common_chinese() -> dict[int, None]:
    """``str.translate`` table deleting the characters GBK encodes in its GB2312 area (lead
    byte A1-A9 but the kana rows A4 and A5, or B0-F7, trail A1-FE), as GB18030 decodes them
    (A1A4 is U+00B7 '·', as in Uyghur names, where Python's gb2312 codec has U+30FB)."""
    table: dict[int, None] = {}
    for lead in (0xA1, 0xA2, 0xA3, *range(0xA6, 0xAA), *range(0xB0, 0xF8)):  # A4, A5: kana
        for trail in range(0xA1, 0xFF):
            char = bytes((lead, trail)).decode("gb18030", errors="replace")
            if not "\ue000" <= char <= "\uf8ff" and char != "\ufffd":  # unassigned cells
                table[ord(char)] = None
    return table


_ASCII_RUNS = re.compile(r"[\x00-\x7f]+")


def _refuse_binary(path: Path, sample: bytes) -> None:
    # A stray NUL is a bad record; a file made of them is not text.
    if sample.count(0) > max(8, len(sample) // 100):
        raise LoadError(
            f"{path}: this is binary data, not a text file "
            "(for UTF-16 text without a byte-order mark set input.encoding: utf-16-le)"
        )


def _ascii_compatible(encoding: str) -> bool:
    """True when ASCII bytes mean ASCII characters and never occur inside a multibyte
    character, so a file can be split on b'\\n' before decoding."""
    name = codecs.lookup(encoding).name
    if name.startswith(("utf-16", "utf-32", "utf-7", "hz", "iso2022")):
        return False
    probe = bytes(range(1, 128))
    try:
        return probe.decode(name) == probe.decode("ascii")
    except UnicodeDecodeError:
        return False


def _display(encoding: str) -> str:
    return "utf-8" if encoding == "utf-8-sig" else encoding


def _parse_header(
    path: Path, text: str, delimiter: str, at_eof: bool, encoding: str, escape: str | None
) -> tuple[list[str], int]:
    """The header's column names and how many physical lines it spans."""
    _check_header_quotes(path, text, delimiter, escape, at_eof)
    consumed = 0

    def lines() -> Iterator[str]:
        nonlocal consumed
        for line in io.StringIO(text, newline=""):
            consumed += len(line)
            yield line

    reader = csv.reader(lines(), **_csv_dialect(delimiter, escape))
    try:
        names = next(reader)
    except StopIteration:
        raise LoadError(f"{path}: no header line") from None
    except csv.Error as exc:
        raise LoadError(f"{path}: cannot read the header: {exc}") from None
    if not at_eof and consumed >= len(text):
        raise LoadError(f"{path}: the header is longer than {_SAMPLE} bytes (unbalanced quote?)")
    if not names or names == [""]:
        raise LoadError(f"{path}: line 1 is empty; the first line must be the header")
    bad = [n for n in names if "\ufffd" in n or "\x00" in n]
    if bad:
        raise LoadError(
            f"{path}: the header has undecodable bytes (not valid {_display(encoding)}) in "
            f"{_quoted(bad)}; set input.encoding"
        )
    seen: dict[str, list[int]] = {}
    for i, name in enumerate(names, 1):
        seen.setdefault(name, []).append(i)
    dups = {n: cols for n, cols in seen.items() if len(cols) > 1}
    if dups:
        detail = "; ".join(f'"{n}" (columns {", ".join(map(str, c))})' for n, c in dups.items())
        raise LoadError(f"{path}: duplicate column names in the header: {detail}")
    return names, reader.line_num


def _check_header_quotes(
    path: Path, text: str, delimiter: str, escape: str | None, at_eof: bool
) -> None:
    """LoadError for a header whose quoting is broken (read as Arrow and ``_Quotes`` read it):
    a quote that never closes, or text after a closing quote."""
    esc = re.escape(escape) if escape else ""
    inner = rf'(?:[^"{esc}]|{esc}.|"")*+' if escape else r'(?:[^"]|"")*+'
    quoted = re.compile(rf'"{inner}"', re.DOTALL)
    unquoted = re.compile(rf"(?:[^{re.escape(delimiter)}\r\n{esc}]|{esc}.)*+" if escape
                          else rf"[^{re.escape(delimiter)}\r\n]*+", re.DOTALL)  # fmt: skip
    pos = 0
    column = 1
    while pos < len(text):
        if text[pos] == '"':
            found = quoted.match(text, pos)
            line = text.count("\n", 0, pos) + 1
            if found is None:
                where = "" if at_eof else f" within the first {_SAMPLE} bytes"
                raise LoadError(
                    f"{path}: line {line}: the header has an unterminated quote: the quote "
                    f"that opens column {column} is never closed{where}"
                )
            pos = found.end()
            if pos < len(text) and text[pos] not in (delimiter, "\r", "\n"):
                raise LoadError(
                    f"{path}: line {line}: malformed quoting in the header: text after the "
                    f"closing quote of column {column}"
                )
        else:
            found = unquoted.match(text, pos)
            assert found is not None
            pos = found.end()
        if pos >= len(text) or text[pos] != delimiter:
            return
        pos += 1
        column += 1


def _jsonl_keys(text: str) -> list[str]:
    for line in text.split("\n")[:1000]:
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(obj, dict):
            return list(obj)
    return []


#: what follows the footer of an encrypted file whose footer is plaintext: its signature, an
#: AES-GCM nonce (12 bytes) and tag (16)
_SIGNATURE_BYTES = 28
_ENCRYPTED = (
    "this is an encrypted Parquet file (Parquet modular encryption), which is not supported: "
    "export it unencrypted"
)


def _open_parquet(path: Path, head: bytes) -> Source:
    if head.startswith(b"PARE"):  # the footer is encrypted too: not even the schema is readable
        raise LoadError(f"{path}: {_ENCRYPTED}")
    if not head.startswith(b"PAR1"):
        raise LoadError(f"{path}: not a Parquet file (it does not start with PAR1)")
    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
        signed = _footer_length(path) - pf.metadata.serialized_size == _SIGNATURE_BYTES
    except (pa.ArrowException, OSError) as exc:
        raise LoadError(f"{path}: not a readable Parquet file: {exc}") from None
    if signed:
        # An encrypted file with a plaintext footer: the schema reads, and its encrypted
        # columns fail only when read. Read the first rows now, before anything is sent.
        try:
            next(pf.iter_batches(batch_size=1, use_threads=False), None)
        except (pa.ArrowException, OSError) as exc:
            if "crypt" in str(exc):
                raise LoadError(f"{path}: {_ENCRYPTED}") from None
            # any other fault is reported where the rows are read, after the rows before it
    unsupported = {
        f.name: f"{f.name} ({f.type})"
        for f in schema
        if pa.types.is_nested(_value_type(f.type)) or not _castable(f.type)
    }
    names = schema.names
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise LoadError(f"{path}: duplicate column names in the schema: {_quoted(dups)}")
    return Source(path, "parquet", "binary", None, False, names, True, unsupported)


def _footer_length(path: Path) -> int:
    """The footer length a Parquet file states in its last 8 bytes."""
    with open(path, "rb") as fh:
        fh.seek(-8, os.SEEK_END)
        return int.from_bytes(fh.read(4), "little")


def _value_type(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def _castable(t: pa.DataType) -> bool:
    try:
        _to_text(pa.array([], t), "", 0)
    except (pa.ArrowException, ValueError):
        return False
    return True


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


# --------------------------------------------------------------------------------------------
# Byte streams


class _RawInput:
    """The file's bytes, gunzipped if compressed, refusing to decompress past ``limit``.

    A gzip stream that breaks (truncated, corrupt) first hands on what it decompressed, then
    raises ``LoadError`` on the next read: everything before the break is delivered.
    """

    def __init__(self, path: Path, *, compressed: bool, limit: int) -> None:
        self.path = path
        self.limit = limit
        self.total = 0
        self.compressed = compressed
        self._fh: Any = gzip.open(path, "rb") if compressed else open(path, "rb")  # noqa: SIM115
        self._broken: LoadError | None = None

    def read(self, n: int) -> bytes:
        if self._broken is not None:
            raise self._broken
        if not self.compressed:
            data: bytes = self._call(self._fh.read, n)
        else:
            parts = []
            size = 0
            while size < n:
                try:
                    piece = self._call(self._fh.read1, n - size)
                except LoadError as exc:
                    self._broken = exc
                    break
                if not piece:
                    break
                parts.append(piece)
                size += len(piece)
            data = b"".join(parts)
            if not data and self._broken is not None:
                raise self._broken
        self._count(len(data))
        return data

    def readinto(self, view: memoryview) -> int:
        """Fill ``view`` (short only at the end of the file)."""
        if self.compressed:
            data = self.read(len(view))
            view[: len(data)] = data
            return len(data)
        filled = 0
        while filled < len(view):
            got = self._call(self._fh.readinto, view[filled:])
            if not got:
                break
            filled += got
        self._count(filled)
        return filled

    def _call(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        try:
            return fn(arg)
        except EOFError:
            raise LoadError(
                f"{self.path}: truncated gzip file (it ends before the end of the compressed "
                f"stream, after {self.total} bytes of data)"
            ) from None
        except (OSError, zlib.error) as exc:
            raise LoadError(f"{self.path}: cannot read: {exc}") from None

    def _count(self, n: int) -> None:
        self.total += n
        if self.compressed and self.total > self.limit:
            raise LoadError(
                f"{self.path}: decompresses to more than {self.limit} bytes "
                "(input.max_decompressed_bytes); refusing to read further"
            )

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> _RawInput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _utf8_cut(data: bytes | bytearray, end: int) -> int:
    """Where ``data[:end]`` stops, without an incomplete UTF-8 sequence at its end."""
    for k in range(1, min(4, end) + 1):
        b = data[end - k]
        if b < 0x80:
            return end
        if b >= 0xC0:
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return end - k if need > k else end
    return end


def _valid_utf8(data: Any, start: int, end: int) -> bool:
    offsets = pa.py_buffer(np.array([0, end - start], dtype=np.int32))
    values = pa.py_buffer(data).slice(start, end - start)
    try:
        pa.StringArray.from_buffers(1, offsets, values).validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


class _Quotes:
    """Finds malformed quoting in a CSV byte stream, and marks it for Arrow's reader.

    Arrow, like most CSV readers, repairs a value with text after its closing quote:
    ``a,"b"c,d`` gives ``bc``, and ``"Bret \\"Hit Man\\" Hart"`` (a backslash-escaped quote
    without ``input.escape_char``) something else again. Such a record must be a bad record,
    never sent altered. This follows the quoting state of the whole stream, vectorized over
    the quote characters of each piece (a piece without a quote costs one ``find``), exactly
    as Arrow reads it: a quote opens a quoted value only at the start of a field (elsewhere it
    is a literal character), inside quotes ``""`` is a quote, and with an escape character an
    escaped quote is a literal character. Where a closing quote is followed by anything but a
    delimiter or a line end, ``MARK`` (a delimiter, a token no file holds, and ``width`` more
    delimiters) is inserted after it: the record then has too many fields, so Arrow hands it
    to the invalid-row handler, which finds the token, takes it out again and reports the
    record as malformed (``malformed_reason``).
    """

    def __init__(self, delimiter: str, escape: str | None, width: int) -> None:
        self.delim = ord(delimiter)
        self.esc = ord(escape) if escape else None
        nonce = os.urandom(8).hex()
        self.token = f"\x1admimport-malformed-quote-{nonce}\x1a"
        self.mark = (delimiter + self.token + delimiter * width).encode()
        # an unknown escape (\N with escape_char \): the same, before the escape character;
        # inside quotes the mark closes the quotes before it and opens them again after it
        self.escape_token = f"\x1admimport-unknown-escape-{nonce}\x1a"
        self.escape_mark = (delimiter + self.escape_token + delimiter * width).encode()
        self._escapable = np.array([0x22, self.esc or 0x22, self.delim, 0x0A, 0x0D], np.uint8)
        self.inside = False  # inside quotes at the end of what was handed on
        self.prev = -1  # the last byte handed on; -1 at the start of the file (a field start)
        self.prev_escaped = False
        self._hold = b""  # trailing quotes (and escapes) kept back: what follows decides
        self._special = b'"' + (escape.encode() if escape else b"")

    def feed(self, piece: bytes | memoryview, final: bool) -> bytes | memoryview:
        """``piece`` as Arrow must get it: marked where the quoting is malformed."""
        if self._hold:
            piece, self._hold = self._hold + bytes(piece), b""
        n = len(piece)
        if not n:
            return piece
        if not final:
            keep = n
            while keep and piece[keep - 1] in self._special:
                keep -= 1
            if keep < n:
                self._hold = bytes(piece[keep:])
                piece, n = piece[:keep], keep
                if not n:
                    return piece
        v = np.frombuffer(piece, dtype=np.uint8)
        escaped = None
        unknown = np.zeros(0, dtype=np.int64)  # escape characters that escape nothing known
        carry = self.inside
        if self.esc is not None:
            escaped, after = self._escaped(v)
            known = np.isin(v[after], self._escapable)
            unknown = after[~known] - 1
            quote = v == 0x22
            quote &= ~escaped
            q = np.flatnonzero(quote).astype(np.int32)
        else:
            q = np.flatnonzero(v == 0x22).astype(np.int32)
        if not len(q):
            self._advance(v, escaped)
            marks = [(int(p), self._escape_mark(carry)) for p in unknown.tolist()]
            return self._marked(piece, marks)
        if escaped is None and self._alternating(v, q):
            self.inside ^= bool(len(q) % 2)
            self._advance(v, escaped)
            return piece
        # runs of consecutive quotes: where each starts (rs), its length, where it ends (re)
        first = np.flatnonzero(np.diff(q, prepend=-2) != 1)
        rs = q[first]
        odd = (np.diff(first, append=len(q)) & 1).astype(bool)
        re_ = q[np.append(first[1:], len(q)) - 1] + 1
        before = v[rs - 1]  # rs[0] - 1 may be -1: fixed below
        d = self.delim
        start = (before == d) | (before == 0x0A) | (before == 0x0D)
        if escaped is not None:
            start &= ~escaped[rs - 1]
        if rs[0] == 0:
            start[0] = (self.prev in (d, 0x0A, 0x0D, -1)) and not self.prev_escaped
        # Per run, outside quotes: an odd run at a field start opens a value (a toggle), an
        # odd run elsewhere is literal (the state stays 'outside'); inside quotes an odd run
        # closes the value: after an odd run not at a field start the state is 'outside'
        # whatever it was (a reset); an even run leaves it as it was.
        toggles = np.cumsum(odd & start, dtype=np.int32)
        base = np.where(odd & ~start, toggles, np.int32(-int(self.inside)))
        np.maximum.accumulate(base, out=base)  # toggles at the last reset (never decreases)
        state = ((toggles - base) & 1).astype(bool)
        was = np.empty_like(state)
        was[0] = self.inside
        was[1:] = state[:-1]
        closes = np.where(was, odd, start & ~odd)
        follows = v[np.minimum(re_, n - 1)]
        ends = (follows == d) | (follows == 0x0A) | (follows == 0x0D)
        ends[-1] |= re_[-1] >= n
        bad = np.flatnonzero(closes & ~ends)
        self.inside = bool(state[-1])
        self._advance(v, escaped)
        marks = [(pos, self.mark) for pos in re_[bad].tolist()]
        if len(unknown):
            run = np.searchsorted(re_, unknown, side="right") - 1
            within = np.where(run >= 0, state[np.maximum(run, 0)], carry)
            marks += [
                (int(p), self._escape_mark(bool(w)))
                for p, w in zip(unknown.tolist(), within.tolist(), strict=True)
            ]
        return self._marked(piece, sorted(marks, key=lambda m: m[0]))

    def _escape_mark(self, inside: bool) -> bytes:
        return b'"' + self.escape_mark + b'"' if inside else self.escape_mark

    @staticmethod
    def _marked(piece: bytes | memoryview, marks: list[tuple[int, bytes]]) -> bytes | memoryview:
        if not marks:
            return piece
        parts = []
        at = 0
        for pos, mark in marks:
            parts.append(piece[at:pos])
            parts.append(mark)
            at = pos
        parts.append(piece[at:])
        return b"".join(parts)

    def _alternating(self, v: np.ndarray, q: np.ndarray) -> bool:
        """The common case, checked in a few passes: single quotes that open a value at a
        field start and close it before a delimiter or line end, in turn. True means the
        piece is well quoted; False that the exact state machine must decide."""
        if len(q) > 1 and np.diff(q).min() < 2:
            return False  # a doubled quote
        d = self.delim
        opening = q[int(self.inside) :: 2]
        if len(opening):
            before = v[opening - 1]
            if opening[0] == 0:
                before[0] = self.prev if self.prev >= 0 else d
            if not ((before == d) | (before == 0x0A) | (before == 0x0D)).all():
                return False
        closing = q[1 - int(self.inside) :: 2]
        if len(closing) and closing[-1] == len(v) - 1:
            closing = closing[:-1]  # the end of the file (pieces keep a last quote back)
        after = v[closing + 1]
        return bool(((after == d) | (after == 0x0A) | (after == 0x0D)).all())

    def _escaped(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which bytes an escape character makes literal (the one after an odd run), as a
        mask and as positions."""
        n = len(v)
        escaped = np.zeros(n, dtype=bool)
        after = np.zeros(0, dtype=np.int64)
        e = np.flatnonzero(v == self.esc)
        if len(e):
            first = np.flatnonzero(np.diff(e, prepend=-2) != 1)
            lengths = np.diff(first, append=len(e))
            after = e[first] + lengths
            after = after[(lengths & 1).astype(bool) & (after < n)]
            escaped[after] = True
        return escaped, after

    def _advance(self, v: np.ndarray, escaped: np.ndarray | None) -> None:
        self.prev = int(v[-1])
        self.prev_escaped = bool(escaped[-1]) if escaped is not None else False

    def malformed_reason(
        self, text: str, names: Sequence[str], delimiter: str, escape: str | None
    ) -> tuple[str, str, str | None] | None:
        """For a record Arrow found invalid: (its text without the marks, the reason, the
        column) if it was marked here, else None."""
        at_quote = text.find(self.token)
        at_escape = text.find(self.escape_token)
        if at_quote < 0 and at_escape < 0:
            return None
        escape_mark = self.escape_mark.decode()
        original = text.replace(f'"{escape_mark}"', "").replace(escape_mark, "")
        original = original.replace(self.mark.decode(), "")
        if at_escape < 0 or 0 <= at_quote < at_escape:
            head = text[: at_quote - 1]  # the record up to the closing quote
            what = "malformed quoting: text after the closing quote in {}"
        else:
            start = at_escape - 1
            end = start + len(escape_mark)
            if text.startswith(f'"{escape_mark}"', start - 1):
                start, end = start - 1, end + 1
            head = text[:start]  # the record up to the escape character
            sequence = text[end : end + 2].replace('"', '\\"')
            what = (
                f'unknown escape sequence "{sequence}" in {{}} (input.escape_char escapes only '
                "quotes, delimiters, line ends and itself)"
            )
        fields = next(csv.reader(io.StringIO(head, newline=""), **_csv_dialect(delimiter, escape)))
        column = names[len(fields) - 1] if 0 < len(fields) <= len(names) else None
        where = f'column "{column}"' if column is not None else f"column {len(fields)}"
        return original, what.format(where), column


def _csv_dialect(delimiter: str, escape: str | None) -> dict[str, Any]:
    """Python's ``csv`` options that read as Arrow does with these options."""
    return {"delimiter": delimiter, "quotechar": '"', "doublequote": True, "escapechar": escape}


class _Utf8Stream:
    """A file-like object giving the file's text as valid UTF-8, for Arrow's CSV reader.

    Undecodable bytes become U+FFFD (``substitutions`` counts them). The flags ``nul`` and
    ``fffd`` say whether a NUL or a U+FFFD has been handed on so far: a batch parsed from the
    bytes already read needs no check for either while the flag is down. ``final_newline``
    appends a newline to a file that does not end with one.

    Memory: Arrow's streaming CSV reader reads up to 32 blocks ahead on a background thread;
    with ``throttle``, ``read`` holds that thread back to ``_READAHEAD`` blocks beyond the
    batches the consumer has taken (see ``wanted``). UTF-8 input is read into one reused
    scratch buffer and copied into blocks that Arrow's allocator owns: handing Arrow large
    Python ``bytes`` instead makes glibc's heap grow with the file.
    """

    closed = False

    def __init__(
        self,
        raw: _RawInput,
        encoding: str,
        *,
        final_newline: bool,
        throttle: bool = False,
        quotes: _Quotes | None = None,
    ) -> None:
        self._raw = raw
        self.quotes = quotes
        self.encoding = encoding
        self._passthrough = encoding in ("utf-8", "utf-8-sig")
        self._decoder = (
            None if self._passthrough else codecs.getincrementaldecoder(encoding)(errors=_ERRORS)
        )
        self._final_newline = final_newline
        self._scratch = bytearray(_CHUNK + 4) if self._passthrough else bytearray()
        self._carry = b""  # an incomplete UTF-8 sequence at the end of the last chunk
        self._first = True
        self._done = False
        self._piece: bytes | memoryview = b""  # decoded, not yet handed on
        self._held = b""  # handed back by the last read, comes first in the next
        self._pos = 0
        self._last = b""  # the last bytes handed on
        self.substitutions = 0
        self.nul = False
        self.fffd = False
        self._throttle = throttle
        self._cond = threading.Condition()
        self._handed = 0  # blocks handed to Arrow
        self._taken = 0  # batches the consumer has taken
        self._wanted = False  # the consumer is waiting for a batch
        self._wanted_since = 0.0
        self.error: LoadError | None = None  # the file broke off (truncated gzip, size limit)
        self._lent = 0  # objects Arrow holds: the file object and the blocks it read

    # -- the file-like API Arrow uses
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def read(self, n: int | None = -1) -> Any:
        if self._throttle:
            with self._cond:
                while not self._room():
                    # polls, so an abandoned reader cannot hold the interpreter at exit
                    self._cond.wait(0.25)
                    if sys.is_finalizing():
                        break
                    if self._wanted and time.monotonic() - self._wanted_since > 1.0:
                        break  # the batch the consumer waits for needs this block after all
                self._handed += 1
        if self.closed:
            return b""
        return self._read(n)

    def lend(self, obj: Any) -> Any:
        """Count ``obj`` among what Arrow holds until it is dropped. Arrow may drop it on its
        own thread, which then needs the interpreter: ``wait_returned`` waits for that."""
        with self._cond:
            self._lent += 1
        weakref.finalize(obj, self._returned)
        return obj

    def _returned(self) -> None:
        with self._cond:
            self._lent -= 1
            self._cond.notify_all()

    def wait_returned(self, timeout: float) -> bool:
        """Wait until Arrow holds nothing of this stream any more; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._lent == 0, timeout)

    def _room(self) -> bool:
        # A batch comes from one block, or two when a record straddles a block boundary.
        ahead = self._handed - self._taken
        return self.closed or ahead < _READAHEAD or (self._wanted and ahead < _READAHEAD + 2)

    @contextmanager
    def wanted(self) -> Iterator[None]:
        """Wrap the consumer's wait for the next batch: Arrow may read what it needs."""
        with self._cond:
            self._wanted = True
            self._wanted_since = time.monotonic()
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._wanted = False
                self._taken += 1
                self._cond.notify_all()

    def _read(self, n: int | None) -> Any:
        if n is None or n < 0:
            parts = []
            while chunk := self._read(_CHUNK):
                parts.append(bytes(chunk))
            return b"".join(parts)
        out: Any = None
        view: memoryview | None = None
        filled = 0
        piece: bytes | memoryview
        while filled < n:
            if self._held:
                piece, start, self._held = self._held, 0, b""
            else:
                if self._pos >= len(self._piece) and not self._fill():
                    break
                piece, start = self._piece, self._pos
            take = min(len(piece) - start, n - filled)
            if view is None:
                out = pa.allocate_buffer(n, resizable=True)
                view = memoryview(out).cast("B")
            view[filled : filled + take] = piece[start : start + take]
            filled += take
            if piece is self._piece:
                self._pos += take
            else:
                self._held = bytes(piece[take:])
        if view is None:
            return b""
        if filled > 1 and view[filled - 1] == 0x0D and self._more():
            # Never end a block with CR: Arrow drops a LF that starts the next block, even
            # inside quotes (apache/arrow#51368), so a quoted CRLF would lose its LF. (At the
            # end of the file a CR stays: a block of a lone CR is an empty CSV to Arrow.)
            filled -= 1
            self._held = b"\r" + self._held
        view.release()
        if filled < n:
            out.resize(filled, shrink_to_fit=True)
        return out

    def _more(self) -> bool:
        """Whether bytes remain to be read."""
        return bool(self._held) or self._pos < len(self._piece) or self._fill()

    def read_bytes(self, n: int) -> bytes:
        """``read`` for Python callers: plain bytes, unthrottled."""
        return bytes(self._read(n))

    def peek(self, n: int) -> bytes:
        """Up to ``n`` bytes ahead, not consumed."""
        ahead = bytes(self._read(n))
        self._piece = ahead + self._held + bytes(self._piece[self._pos :])
        self._pos = 0
        self._held = b""
        return ahead

    @property
    def last_bytes(self) -> bytes:
        return self._last

    # -- decoding
    def _fill(self) -> bool:
        """Make the next decoded piece current; False at the end of the file."""
        while not self._done:
            piece = self._produce()
            if len(piece):
                self._piece, self._pos = piece, 0
                tail = bytes(piece[-8:])
                self._last = (self._last + tail)[-8:] if len(tail) < 8 else tail
                return True
        return False

    def _produce(self) -> bytes | memoryview:
        before = getattr(_local, "count", 0)
        if self._passthrough:
            piece, final = self._produce_utf8()
        else:
            assert self._decoder is not None
            raw = self._raw_read()
            final = not raw
            text = self._decoder.decode(raw, final=final)
            if self._first and text.startswith("\ufeff"):
                text = text[1:]
            piece = text.encode()
            if not self.nul and b"\x00" in piece:
                self.nul = True
            if not self.fffd and piece.rfind(_FFFD) >= 0:
                self.fffd = True
        self.substitutions += getattr(_local, "count", 0) - before
        if len(piece):
            self._first = False
        if self.quotes is not None:
            piece = self.quotes.feed(piece, final)
        if final:
            self._done = True
            end = bytes(piece[-1:]) or self._last[-1:]
            if self._final_newline and end and end not in _EOL:
                piece = bytes(piece) + b"\n"
        return piece

    def _raw_read(self) -> bytes:
        # A broken file ends here for Arrow; the consumer raises ``error`` after the batches.
        try:
            return self._raw.read(_CHUNK)
        except LoadError as exc:
            # kept without its traceback: the frames would hold Arrow's file object (and the
            # block being read) alive, and ``_CsvInput.close`` waits for Arrow to let go of them
            self.error = exc.with_traceback(None)
            return b""

    def _produce_utf8(self) -> tuple[bytes | memoryview, bool]:
        scratch = self._scratch
        k = len(self._carry)
        scratch[:k] = self._carry
        view = memoryview(scratch)
        try:
            got = self._raw.readinto(view[k : k + _CHUNK])
        except LoadError as exc:
            self.error, got = exc.with_traceback(None), 0  # no frames kept (see _raw_read)
        end = k + got
        final = got == 0
        cut = end if final else _utf8_cut(scratch, end)
        self._carry = bytes(scratch[cut:end])
        start = 3 if self._first and scratch.startswith(codecs.BOM_UTF8, 0, cut) else 0
        if start >= cut:
            return b"", final
        # rfind: much faster than find for this pattern on CJK text
        if not self.fffd and scratch.rfind(_FFFD, start, cut) >= 0:
            self.fffd = True
        piece: bytes | memoryview
        if not _valid_utf8(scratch, start, cut):
            piece = bytes(view[start:cut]).decode("utf-8", _ERRORS).encode()
            self.fffd = True
        else:
            piece = view[start:cut]
        if not self.nul and scratch.find(b"\x00", start, cut) >= 0:
            self.nul = True
        return piece, final


# --------------------------------------------------------------------------------------------
# Batches


def iter_batches(
    source: Source, options: InputOptions, columns: Sequence[str] | None = None
) -> Iterator[Batch]:
    """Stream ``source`` as batches of at most ``options.batch_rows`` rows.

    ``columns`` are the source columns the job needs. JSONL builds only these (all keys of the
    first object when None); CSV and Parquet keep every column, because a rejected row is
    written back whole.
    """
    if source.format == "csv":
        return _iter_csv(source, options)
    if source.format == "jsonl":
        names = list(columns) if columns is not None else list(source.columns)
        return _iter_jsonl(source, options, names)
    if source.format == "parquet":
        read = list(columns) if columns is not None else list(source.columns)
        source.refuse_unsupported(read)
        return _iter_parquet(source, options, read)
    raise LoadError(f"{source.path}: unknown format '{source.format}'")


class _Assembler:
    """Collects good rows and bad records in file order; cuts batches of at most ``limit``
    records, each bad record in the batch whose stretch of the file holds it. It always keeps
    the last record back until ``finish``, so the end of the file can still be inspected."""

    def __init__(self, source: Source, limit: int, names: Sequence[str]) -> None:
        self.source = source
        self.limit = limit
        self.schema = pa.schema([(n, pa.string()) for n in names])
        self.tables: list[pa.Table] = []
        self.lines: list[np.ndarray] = []
        self.bad: list[BadRecord] = []
        self.rows = 0
        self.index = 0

    def add(self, table: pa.Table, lines: np.ndarray, bad: list[BadRecord]) -> None:
        if len(lines):
            self.tables.append(table)
            self.lines.append(lines)
            self.rows += len(lines)
        self.bad.extend(bad)

    def ready(self) -> Iterator[Batch]:
        while self.rows + len(self.bad) > self.limit:
            yield self._emit()

    def finish(self) -> Iterator[Batch]:
        while self.rows + len(self.bad) > 0:
            yield self._emit()

    def last_row(self) -> tuple[dict[str, Any], int] | None:
        """The last pending row and its line, when it is the last record."""
        if not self.lines:
            return None
        line = int(self.lines[-1][-1])
        if self.bad and self.bad[-1].line > line:
            return None
        table = self.tables[-1]
        return table.slice(table.num_rows - 1).to_pylist()[0], line

    def drop_last_row(self) -> None:
        table, lines = self.tables[-1], self.lines[-1]
        if len(lines) == 1:
            self.tables.pop()
            self.lines.pop()
        else:
            self.tables[-1] = table.slice(0, table.num_rows - 1)
            self.lines[-1] = lines[:-1]
        self.rows -= 1

    def _emit(self) -> Batch:
        if len(self.lines) == 1:
            lines = self.lines[0]
        elif self.lines:
            lines = np.concatenate(self.lines)
        else:
            lines = np.zeros(0, dtype=np.int64)
        total = self.rows + len(self.bad)
        r, b = self.rows, len(self.bad)
        if total > self.limit:
            if self.bad:
                bad_lines = np.fromiter((x.line for x in self.bad), np.int64, len(self.bad))
                cutoff = np.sort(np.concatenate([lines, bad_lines]))[self.limit]
                r = int(np.searchsorted(lines, cutoff))
                b = int(np.searchsorted(bad_lines, cutoff))
            else:
                r = self.limit
        if self.tables:
            table = self.tables[0] if len(self.tables) == 1 else pa.concat_tables(self.tables)
        else:
            table = self.schema.empty_table()
        out, rest = table.slice(0, r), table.slice(r)
        self.tables = [rest] if rest.num_rows else []
        self.lines = [lines[r:]] if r < len(lines) else []
        bad, self.bad = self.bad[:b], self.bad[b:]
        self.rows -= r
        batch = Batch(self.source, self.index, out, lines[:r], None, bad)
        self.index += 1
        return batch


# -- CSV ------------------------------------------------------------------------------------


def _iter_csv(source: Source, options: InputOptions) -> Iterator[Batch]:
    csv_in = _CsvInput(source, options)
    try:
        csv_in.open(_BLOCK)
        yield from _csv_records(source, options, csv_in)
    finally:
        csv_in.close()


class _CsvInput:
    """Arrow's streaming CSV reader over one file, and what reading it again takes.

    Arrow fails on a record that does not fit in a block, and it holds a few blocks at a time
    (read ahead, decoded, parsed), so the block size sets the memory used. Reading starts with
    blocks of ``_BLOCK``. A record too long for them makes ``restart`` read the file again from
    the start with ``large`` blocks, which hold two maximal fields: a too-long field is then a
    bad record of its own, and a runaway quote a clear error. The file's rest is read with the
    larger blocks (a file with one huge field tends to have more), so it is read again at most
    once.
    """

    def __init__(self, source: Source, options: InputOptions) -> None:
        self.source = source
        self.options = options
        # a record read with blocks of B is at most 2 B long: it always fits the larger block
        self.large = max(2 * _BLOCK, 2 * options.max_field_bytes + _BLOCK_SLACK)
        self.block = 0
        self.raw: _RawInput | None = None
        self.stream: _Utf8Stream | None = None
        self.reader: Any = None
        #: Arrow's invalid rows (wrong width, or marked by ``_Quotes``): record, text, reason,
        #: column
        self.invalid: list[tuple[int, str, str, str | None]] = []
        self.header_lines = 0

    def open(self, block: int) -> None:
        """Open the file (again) with blocks of ``block`` bytes, up to its first batch."""
        self.close()
        source = self.source
        path = source.path
        delimiter = source.delimiter or ","
        self.block = block
        self.raw = _RawInput(
            path, compressed=source.compressed, limit=self.options.max_decompressed_bytes
        )
        quotes = _Quotes(delimiter, source.escape_char, len(source.columns))
        self.stream = stream = _Utf8Stream(
            self.raw, source.encoding, final_newline=True, throttle=True, quotes=quotes
        )
        head = stream.peek(_SAMPLE + 1)
        text = head[:_SAMPLE].decode("utf-8", "replace")
        names, self.header_lines = _parse_header(
            path, text, delimiter, len(head) <= _SAMPLE, source.encoding, source.escape_char
        )
        if names != source.columns:
            raise LoadError(f"{path}: the header changed since the file was opened")
        self.invalid = invalid = []
        width = len(names)

        def on_invalid(row: Any) -> str:
            text = row.text
            marked = quotes.malformed_reason(text, names, delimiter, source.escape_char)
            if marked is not None:
                invalid.append((row.number, *marked))
            else:
                invalid.append((row.number, text, f"expected {width} fields, found "
                                f"{row.actual_columns}", None))  # fmt: skip
            return "skip"

        try:
            # Arrow reads its first blocks now, as many as the first record needs
            with stream.wanted():
                self.reader = pacsv.open_csv(
                    _ArrowFile(stream),
                    read_options=pacsv.ReadOptions(use_threads=False, block_size=block),
                    parse_options=pacsv.ParseOptions(
                        delimiter=delimiter,
                        quote_char='"',
                        double_quote=True,
                        escape_char=source.escape_char or False,
                        newlines_in_values=True,
                        ignore_empty_lines=False,
                        invalid_row_handler=on_invalid,
                    ),
                    convert_options=pacsv.ConvertOptions(
                        column_types={n: pa.string() for n in names},
                        strings_can_be_null=False,
                        quoted_strings_can_be_null=False,
                        check_utf8=False,  # the stream hands on valid UTF-8 only
                    ),
                )
        except pa.ArrowInvalid as exc:
            if self.can_grow(exc):
                self.open(self.large)
                return
            raise _csv_failure(path, self.header_lines + 1, exc) from None
        if self.reader.schema.names != names:
            raise LoadError(f"{path}: cannot read the header as CSV")

    def can_grow(self, exc: Exception) -> bool:
        """Whether ``exc`` is Arrow failing on a record longer than a block smaller than
        ``large``."""
        return self.block < self.large and "straddl" in str(exc)

    def next_batch(self) -> pa.RecordBatch:
        assert self.stream is not None
        with self.stream.wanted():
            return self.reader.read_next_batch()

    def restart(self, record: int) -> pa.RecordBatch:
        """Read the file again with the larger block, up to ``record`` (Arrow's numbering:
        the header is 1). Returns the rest of the batch that holds it, which starts with its
        first good row from ``record`` on; ``invalid`` holds the bad ones from ``record`` on.
        Raises what reading from ``record`` on raises (StopIteration at the end).
        """
        self.open(self.large)
        at = 2
        while True:
            try:
                rb = self.next_batch()
            except (StopIteration, pa.ArrowException, OSError) as exc:
                if at < record:  # records read before cannot fail now
                    raise LoadError(
                        f"{self.source.path}: the file changed while it was read ({exc})"
                    ) from None
                raise
            m = rb.num_rows
            invalid = self.invalid
            # the bad records before this batch's last row are in its stretch (as in
            # _csv_records)
            c = 0
            while c < len(invalid) and invalid[c][0] < at + m + c:
                c += 1
            if at + m + c <= record:
                del invalid[:c]
                at += m + c
                continue
            before = sum(1 for n, _, _, _ in invalid[:c] if n < record)
            del invalid[:before]
            rest: pa.RecordBatch = rb.slice(record - at - before)
            return rest

    def close(self) -> None:
        """Stop Arrow's reader and wait until its background thread has let go of the stream.

        Arrow's streaming reader reads ahead on a thread of its own, which calls the stream's
        ``read`` and holds a reference to it. Left running (the file failed, or the caller
        stopped early, as ``preview`` does), that thread may call into Python, or drop its
        reference, while the interpreter is shutting down: the process then aborts
        ("PyGILState_Release") or hangs at exit. So the stream is closed (every ``read``
        returns at once with the end of the file), the reader dropped, and this waits until
        Arrow has released the stream and every block it read (see ``_Utf8Stream.lend``).
        """
        reader, self.reader = self.reader, None
        if self.stream is not None:
            self.stream.close()
            if reader is not None:
                reader.close()
                del reader
            if not self.stream.wait_returned(_RELEASE_WAIT):
                log.warning("%s: Arrow's CSV reader did not stop in time", self.source.path)
        if self.raw is not None:
            self.raw.close()


class _ArrowFile:
    """The file object Arrow's CSV reader gets: the stream's reading side, in an object only
    Arrow holds, counted by the stream among what Arrow holds (``_Utf8Stream.lend``)."""

    def __init__(self, stream: _Utf8Stream) -> None:
        self._stream = stream
        stream.lend(self)

    @property
    def closed(self) -> bool:
        return self._stream.closed

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, n: int | None = -1) -> Any:
        return self._stream.lend(memoryview(self._stream.read(n)))

    def close(self) -> None:
        self._stream.close()


def _csv_records(source: Source, options: InputOptions, csv_in: _CsvInput) -> Iterator[Batch]:
    names = source.columns
    delimiter = source.delimiter or ","
    asm = _Assembler(source, options.batch_rows, names)
    raw_sub = _raw_substitute(source.encoding)
    record = 2  # logical record number of the next record (Arrow's numbering: header = 1)
    line = csv_in.header_lines + 1  # physical line where the next record starts
    last_kind = None  # 'row', 'bad' or 'empty': what the last record was
    failure: LoadError | None = None
    while True:
        try:
            try:
                rb = csv_in.next_batch()
            except (pa.ArrowException, OSError) as exc:
                if not csv_in.can_grow(exc):
                    raise
                # a record too long for the block: read again from it with larger blocks
                rb = csv_in.restart(record)
        except StopIteration:
            break
        except (pa.ArrowException, OSError) as exc:
            failure = _csv_failure(source.path, line, exc)
            break
        stream = csv_in.stream
        assert stream is not None
        invalid = csv_in.invalid
        m = rb.num_rows
        if m == 0:
            continue
        # Invalid records that come before this batch's last row belong to its stretch: the
        # next one, numbered n, has n - record - c good rows before it; fewer than m -> here.
        c = 0
        while c < len(invalid) and invalid[c][0] < record + m + c:
            c += 1
        here, invalid[:c] = invalid[:c], []
        seg = m + c
        newlines = np.zeros(seg, dtype=np.int64)
        counts = _newline_counts(rb)
        if c:
            at = np.array([n - record for n, _, _, _ in here], dtype=np.int64)
            is_bad = np.zeros(seg, dtype=bool)
            is_bad[at] = True
            if counts is not None:
                newlines[~is_bad] = counts
            newlines[at] = [t.count("\n") for _, t, _, _ in here]
        elif counts is not None:
            newlines[:] = counts
        starts = line + np.arange(seg, dtype=np.int64) + np.cumsum(newlines) - newlines
        row_lines = starts[~is_bad] if c else starts
        record += seg
        line += seg + int(newlines.sum())
        bad = (
            [
                BadRecord(int(starts[i]), reason, column, text)
                for i, (_, text, reason, column) in zip(at.tolist(), here, strict=True)
                if not _blank_text(text, delimiter)
            ]
            if c
            else []
        )
        table, row_lines, row_bad, last_empty = _screen(
            rb,
            row_lines,
            names,
            delimiter,
            stream,
            options.max_field_bytes,
            raw_sub,
            source.escape_char,
        )
        if row_bad:
            bad = sorted(bad + row_bad, key=lambda b: b.line)
        if c and at[-1] == seg - 1:
            last_kind = "empty" if _blank_text(here[-1][1], delimiter) else "bad"
        else:
            last_kind = "empty" if last_empty else "row"
        if raw_sub != "\ufffd":
            for b in bad:
                b.raw = b.raw and b.raw.replace("\ufffd", raw_sub)
        asm.add(table, row_lines, bad)
        yield from asm.ready()

    stream = csv_in.stream
    assert stream is not None
    if failure is None:
        # invalid records after the last good row
        trailing = []
        for _, text, reason, column in csv_in.invalid:
            if _blank_text(text, delimiter):
                last_kind = "empty"
            else:
                last_kind = "bad"
                trailing.append(BadRecord(line, reason, column, text))
            line += 1 + text.count("\n")
        asm.add(asm.schema.empty_table(), np.zeros(0, dtype=np.int64), trailing)
        if stream.error is not None:
            _cut_off(asm, last_kind, delimiter)
            failure = stream.error
        else:
            _check_end(asm, last_kind, stream, delimiter)
    yield from asm.finish()
    if failure is not None:
        raise failure


def _blank_text(text: str, delimiter: str) -> bool:
    """A record of nothing but delimiters (and empty quotes): no data, not a record."""
    return not text.strip(delimiter + '"\r\n')


def _csv_failure(path: Path, line: int, exc: Exception) -> LoadError:
    text = str(exc)
    if "straddl" in text:
        return LoadError(
            f"{path}: line {line}: a record is too long to read (an unbalanced quote?); "
            f"nothing from line {line} on was read"
        )
    return LoadError(
        f"{path}: line {line}: cannot read CSV ({text}); nothing from line {line} on was read"
    )


def _cut_off(asm: _Assembler, last_kind: str | None, delimiter: str) -> None:
    """The file broke off: its last record may be cut short, so it is not delivered."""
    reason = "incomplete record: the file breaks off here"
    if last_kind == "bad":
        asm.bad[-1].reason = f"{reason} ({asm.bad[-1].reason})"
    elif last_kind == "row" and (found := asm.last_row()) is not None:
        row, line = found
        asm.drop_last_row()
        text = _csv_text(list(row.values()), delimiter, asm.source.escape_char)
        asm.bad.append(BadRecord(line, reason, None, text))


def _check_end(asm: _Assembler, last_kind: str | None, stream: _Utf8Stream, delim: str) -> None:
    """A quote opened in the last record and never closed swallows the rest of the file into
    one value, which Arrow accepts: find that case and make the record a bad one."""
    if last_kind == "bad":
        bad = asm.bad[-1]
        if stream.quotes is not None and stream.quotes.inside:  # the file ends inside quotes
            bad.reason = f"unterminated quoted field at the end of the file ({bad.reason})"
        return
    if last_kind != "row":
        return
    found = asm.last_row()
    if found is None:
        return
    row, line = found
    values = list(row.values())
    last = values[-1]
    if not last.endswith(("\n", "\r")):
        return  # an unterminated value runs to the end of the file, newline included
    tail = stream.last_bytes
    for eol in (b"\r\n", b"\n", b"\r"):
        if tail.endswith(eol):
            tail = tail[: -len(eol)]
            break
    if tail.endswith((b'\n"', b'\r"')):
        return  # closed after its final newline
    asm.drop_last_row()
    escape = asm.source.escape_char
    raw = _csv_text(values[:-1], delim, escape) + delim if len(values) > 1 else ""
    raw += '"' + last.removesuffix("\n").replace('"', '""')
    asm.bad.append(
        BadRecord(
            line,
            "unterminated quoted field: the file ends inside quotes",
            asm.schema.names[-1],
            raw,
        )
    )


def _newline_counts(rb: pa.RecordBatch) -> np.ndarray | None:
    """Newlines inside each row's values (quoted newlines), or None if there are none."""
    total = None
    for col in rb.columns:
        data = col.buffers()[2]
        if data is None or data.to_pybytes().find(b"\n") < 0:
            continue
        counts = pc.count_substring(col, "\n").to_numpy(zero_copy_only=False)
        total = counts.astype(np.int64) if total is None else total + counts
    return total


def _screen(
    rb: pa.RecordBatch,
    lines: np.ndarray,
    names: list[str],
    delimiter: str,
    stream: _Utf8Stream,
    max_bytes: int,
    raw_sub: str,
    escape: str | None = None,
) -> tuple[pa.Table, np.ndarray, list[BadRecord], bool]:
    """Drop empty records (blank lines) and take out rows with bad values."""
    n = rb.num_rows
    keep = None
    empty = _empty_rows(rb)
    if empty is not None:
        keep = ~empty
    last_empty = bool(empty is not None and empty[-1])
    problems = _value_problems(rb.columns, names, stream, max_bytes)
    bad: list[BadRecord] = []
    if problems:
        if keep is None:
            keep = np.ones(n, dtype=bool)
        rows = sorted(problems)
        keep[rows] = False
        picked = rb.take(pa.array(rows, pa.int64())).to_pylist()
        for i, values in zip(rows, picked, strict=True):
            reason, column = problems[i]
            text = _csv_text(list(values.values()), delimiter, escape).replace("\ufffd", raw_sub)
            bad.append(BadRecord(int(lines[i]), reason, column, text))
    table = pa.Table.from_batches([rb])
    if keep is not None and not keep.all():
        table = table.filter(pa.array(keep))
        lines = lines[keep]
    return table, lines, bad, last_empty


def _lengths(arr: pa.Array) -> np.ndarray:
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[
        arr.offset : arr.offset + len(arr) + 1
    ]
    return np.diff(offsets)


def _empty_rows(rb: pa.RecordBatch) -> np.ndarray | None:
    """Rows whose every value is empty (blank lines, or only delimiters), or None."""
    empty = None
    for col in rb.columns:
        zero = _lengths(col) == 0
        empty = zero if empty is None else empty & zero
        if not empty.any():
            return None
    return empty


def _value_problems(
    arrays: Sequence[pa.Array], names: Sequence[str], stream: _Utf8Stream | None, max_bytes: int
) -> dict[int, tuple[str, str]]:
    """row -> (reason, column) for values that must not be sent: too long, holding a NUL, or
    holding U+FFFD (undecodable bytes). The first column with a problem names it."""
    found: dict[int, tuple[str, str]] = {}
    check_nul = stream is None or stream.nul
    check_fffd = stream is not None and stream.fffd
    for name, arr in zip(names, arrays, strict=True):
        data = arr.buffers()[2]
        if data is None or data.size == 0:
            continue
        checks: list[tuple[np.ndarray, str]] = []
        if data.size > max_bytes:
            lengths = pc.binary_length(arr).to_numpy(zero_copy_only=False)
            lengths = np.nan_to_num(lengths.astype(np.float64))
            over = np.flatnonzero(lengths > max_bytes)
            for i in over.tolist():
                found.setdefault(
                    i,
                    (
                        f'value in column "{name}" is {int(lengths[i])} bytes, over the '
                        f"{max_bytes}-byte limit (input.max_field_bytes)",
                        name,
                    ),
                )
        if check_nul or check_fffd:
            blob = data.to_pybytes()
            if check_nul and b"\x00" in blob:
                checks.append((_matches(arr, "\x00"), f'NUL byte in column "{name}"'))
            if check_fffd and _FFFD in blob:
                checks.append((_matches(arr, "\ufffd"), _fffd_reason(stream, name)))
        for rows, reason in checks:
            for i in rows.tolist():
                found.setdefault(i, (reason, name))
    return found


def _matches(arr: pa.Array, pattern: str) -> np.ndarray:
    hit = pc.fill_null(pc.match_substring(arr, pattern), False)
    return np.flatnonzero(hit.to_numpy(zero_copy_only=False))


def _fffd_reason(stream: _Utf8Stream | None, column: str | None) -> str:
    where = f' in column "{column}"' if column else ""
    if stream is None or stream.substitutions:
        enc = _display(stream.encoding) if stream else "utf-8"
        return f"undecodable bytes (not valid {enc}){where}"
    return f"replacement character U+FFFD{where} (the text was garbled before export)"


def _csv_text(values: Sequence[str | None], delimiter: str, escape: str | None = None) -> str:
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, escapechar=escape, lineterminator="\n").writerow(values)
    return buf.getvalue()[:-1]


def _raw_substitute(encoding: str) -> str:
    """What stands for undecodable bytes in a raw text: U+FFFD if the rejects file (written
    in the source's encoding) can hold it, '?' otherwise."""
    try:
        "\ufffd".encode(encoding)
    except UnicodeEncodeError:
        return "?"
    return "\ufffd"


# -- JSON Lines -----------------------------------------------------------------------------


class _DuplicateKey(ValueError):
    pass


class _Constant(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def _constant(name: str) -> Any:
    raise _Constant(name)


# Numbers arrive as their text (parse_int/parse_float=str): exactly as written. One decoder
# for all lines: json.loads with hooks would build a new one per call.
_JSON = json.JSONDecoder(
    object_pairs_hook=_pairs, parse_constant=_constant, parse_int=str, parse_float=str
)
# The same without the Python hook, for a line that is a flat object: each object is a tuple
# of its pairs. Anything else it reads, or fails to, goes to _JSON again for the exact result.
_SCAN = json.JSONDecoder(
    object_pairs_hook=tuple, parse_constant=_constant, parse_int=str, parse_float=str
).scan_once  # type: ignore[attr-defined]
_BOOL_TEXT = {True: "true", False: "false"}
_PLAIN_TYPES = frozenset({str, type(None)})
_FLAT_TYPES = frozenset({str, type(None), bool})


def _split_blocks(
    read: Callable[[int], bytes], max_line: int
) -> Iterator[tuple[int, bytes | None]]:
    """(number of the first line, lines) for the whole lines of each piece read: their bytes
    joined by newlines, without the last newline; or None for a line longer than ``max_line``,
    which is skipped without holding it in memory."""
    carry = b""
    number = 0  # lines handed on so far
    skipping = False
    while chunk := read(_CHUNK):
        if skipping:
            i = chunk.find(b"\n")
            if i < 0:
                continue
            number += 1
            yield number, None
            chunk, skipping = chunk[i + 1 :], False
        data = carry + chunk if carry else chunk
        cut = data.rfind(b"\n")
        if cut >= 0:
            block, carry = data[:cut], data[cut + 1 :]
            parts = block.split(b"\n") if len(block) > max_line else None
            if parts is None or max(map(len, parts)) <= max_line:
                yield number + 1, block
                number += len(parts) if parts is not None else block.count(b"\n") + 1
            else:
                short: list[bytes] = []  # the lines since the last one too long
                for part in parts:
                    if len(part) <= max_line:
                        short.append(part)
                        continue
                    if short:
                        yield number + 1, b"\n".join(short)
                        number += len(short)
                        short = []
                    number += 1
                    yield number, None
                if short:
                    yield number + 1, b"\n".join(short)
                    number += len(short)
        else:
            carry = data
        if len(carry) > max_line:
            carry, skipping = b"", True
    if skipping:
        yield number + 1, None
    elif carry:
        yield number + 1, carry


def _iter_jsonl(source: Source, options: InputOptions, names: list[str]) -> Iterator[Batch]:
    path = source.path
    encoding = source.encoding
    max_line = 2 * options.max_field_bytes + _BLOCK_SLACK
    raw = _RawInput(path, compressed=source.compressed, limit=options.max_decompressed_bytes)
    stream: _Utf8Stream | None = None
    if _ascii_compatible(encoding):
        read = raw.read  # split on b"\n", then decode each line: exact per-line errors
        codec = "utf-8" if encoding == "utf-8-sig" else encoding
    else:
        stream = _Utf8Stream(raw, encoding, final_newline=False)
        read, codec = stream.read_bytes, "utf-8"
    if not names:
        raw.close()
        raise LoadError(
            f"{path}: no JSON object in the first lines to take column names from; "
            "name the columns in the config"
        )
    line_reader = _JsonLines(names, codec, stream, options.max_field_bytes)
    fast = _JsonBlocks(names, codec, options.max_field_bytes)
    out = _JsonBatches(source, names, options.batch_rows)
    blocks = _split_blocks(read, max_line)
    try:
        while True:
            try:
                first, block = next(blocks)
            except StopIteration:
                break
            except LoadError:
                # deliver what was read before the file broke, then say so
                if out.count:
                    yield out.batch()
                raise
            if block is None:
                bad = BadRecord(first, f"line longer than {max_line} bytes", None, None)
                if out.add_bad(bad):
                    yield out.batch()
                continue
            parts: list[bytes] | None = None
            for start, end, table, texts in fast.runs(block):
                if table is not None:
                    assert texts is not None
                    yield from out.add_table(table, first + start, texts)
                    continue
                if parts is None:
                    parts = block.split(b"\n")
                for i in range(start, end):
                    number = first + i
                    if record := line_reader.read(number, parts[i]):
                        if type(record) is BadRecord:
                            full = out.add_bad(record)
                        else:
                            text, row = record  # type: ignore[misc]
                            full = out.add_row(number, text, row)
                        if full:
                            yield out.batch()
        if out.count:
            yield out.batch()
        if stream is not None and stream.error is not None:
            raise stream.error
    finally:
        raw.close()


class _JsonBatches:
    """Good rows (runs read by Arrow, and single rows) and bad records of a JSON Lines file, in
    file order, cut into batches of ``limit`` records."""

    def __init__(self, source: Source, names: list[str], limit: int) -> None:
        self.source = source
        self.names = names
        self.limit = limit
        self.schema = pa.schema([(n, pa.string()) for n in names])
        self.index = 0
        self.count = 0  # records (rows and bad ones) in the batch being filled
        self.tables: list[pa.Table] = []
        self.lines: list[np.ndarray] = []
        self.rows: list[tuple[str | None, ...]] = []  # single rows not yet in ``tables``
        self.row_lines: list[int] = []
        self.raws: list[str] = []
        self.bad: list[BadRecord] = []

    def add_row(self, number: int, text: str, row: tuple[str | None, ...]) -> bool:
        """Add one row; True when the batch is full."""
        self.rows.append(row)
        self.row_lines.append(number)
        self.raws.append(text)
        self.count += 1
        return self.count >= self.limit

    def add_bad(self, bad: BadRecord) -> bool:
        """Add one bad record; True when the batch is full."""
        self.bad.append(bad)
        self.count += 1
        return self.count >= self.limit

    def add_table(self, table: pa.Table, first: int, texts: list[str]) -> Iterator[Batch]:
        """Rows on consecutive lines from ``first``, and their texts."""
        n = table.num_rows
        done = 0
        while done < n:
            take = min(n - done, self.limit - self.count)
            self._flush_rows()
            piece = table if take == n else table.slice(done, take)
            self.tables.append(piece)
            self.lines.append(np.arange(first + done, first + done + take, dtype=np.int64))
            self.raws.extend(texts if take == n else texts[done : done + take])
            self.count += take
            done += take
            if self.count >= self.limit:
                yield self.batch()

    def _flush_rows(self) -> None:
        if self.rows:
            columns = list(zip(*self.rows, strict=True))
            arrays = [pa.array(c, pa.string()) for c in columns]
            self.tables.append(pa.Table.from_arrays(arrays, schema=self.schema))
            self.lines.append(np.array(self.row_lines, dtype=np.int64))
            self.rows, self.row_lines = [], []

    def batch(self) -> Batch:
        self._flush_rows()
        if not self.tables:
            table = self.schema.empty_table()
            lines = np.zeros(0, dtype=np.int64)
        elif len(self.tables) == 1:
            table, lines = self.tables[0], self.lines[0]
        else:
            table = pa.concat_tables(self.tables)
            lines = np.concatenate(self.lines)
        out = Batch(self.source, self.index, table, lines, self.raws, self.bad)
        self.index += 1
        self.count = 0
        self.tables, self.lines, self.raws, self.bad = [], [], [], []
        return out


_NAN_WORDS = (b"NaN", b"Infinity")  # Arrow reads them as numbers; Python's decoder refuses them
# '{' and '[' on a line beyond which it never goes to Arrow: Arrow's reader crashes the process
# (a C stack overflow) some thousands of levels deep, and Python's decoder refuses a line
# deeper than its recursion limit, which Arrow would accept
_NESTING = 64
_ARROW_TRIES = 8  # Arrow reads of a block that may fail before its rest goes line by line
_ARROW_BACKOFF = 16  # most blocks read line by line after blocks Arrow could not read
_ROW_RE = re.compile(r" in row (\d+)")
_Run = tuple[int, int, "pa.Table | None", "list[str] | None"]


class _JsonBlocks:
    """Reads runs of lines of a JSON Lines file with Arrow's JSON reader, many at once.

    The per-line reader (``_JsonLines``) defines the result. A run of lines goes to Arrow only
    where Arrow gives the same, and Arrow's rows are taken only when it reads the whole run:

    - every line of the run is one JSON object on its own: it starts with '{' and ends with
      '}', and Arrow reads as many rows as there are lines (a value cannot go on across a
      newline, as the next line starts with '{'). A blank line, a BOM, surrounding spaces go
      line by line;
    - the requested columns are read as strings while they hold strings. Once one holds a
      number or a boolean, Arrow infers its type: booleans become 'true' and 'false', integers
      their digits (a zero may have been '-0': that line goes line by line); any other type
      (a fraction, whose text Arrow does not keep, a nested value) sends the run line by line;
    - the other keys are read with inferred types, so Arrow checks every key at any depth: a
      duplicate key is an error, and that line goes line by line (where it is a bad record);
    - a line with more than ``_NESTING`` '{' and '[' goes line by line before Arrow sees it:
      Arrow crashes the process on deep enough nesting (a count of the block's brackets
      decides whether a line can hold that many), and Python's decoder refuses it where Arrow
      might not;
    - what Arrow accepts and Python's decoder does not (NaN, Infinity) goes line by line, and
      so does what needs a closer look: undecodable bytes, U+FFFD, a NUL in a requested value,
      a line longer than ``max_bytes``.

    Arrow's error names the row (the object) it stopped at: that line goes line by line and the
    lines around it are read again, at most ``_ARROW_TRIES`` times per block. After a block
    Arrow could read nothing of, the next few blocks go line by line (more after each such
    block): Arrow's attempts cost little then.
    """

    use_arrow = True  # False: every line one at a time (tests compare the two)

    def __init__(self, names: list[str], codec: str, max_bytes: int) -> None:
        self.names = names
        self.codec = codec
        self.max_bytes = max_bytes
        self.enabled = self.use_arrow and len(set(names)) == len(names)
        self.typed: set[str] = set()  # requested columns found to hold other than strings
        self.parse_options = self._options()
        self.tries = 0
        self.skip = 0  # blocks to read line by line before trying Arrow again
        self.backoff = 0
        self.block = b""
        self.starts = self.ends = np.zeros(0, dtype=np.int64)  # each line's bytes in ``block``

    def _options(self) -> pajson.ParseOptions:
        strings = [(n, pa.string()) for n in self.names if n not in self.typed]
        return pajson.ParseOptions(
            explicit_schema=pa.schema(strings), unexpected_field_behavior="infer"
        )

    def runs(self, block: bytes) -> list[_Run]:
        """The block's lines in order, as (start, end, table, texts): a run of lines Arrow
        read, its table (the requested columns) and the lines' texts; or lines to read one at a
        time (table and texts None)."""
        view = np.frombuffer(block, dtype=np.uint8)
        newlines = np.flatnonzero(view == 10)
        n = len(newlines) + 1
        if not self.enabled or self.skip:
            self.skip = max(0, self.skip - 1)
            return [(0, n, None, None)]
        if b"\r" in block:  # the lines' texts end before a CR
            block = b"\n".join(p[:-1] if p.endswith(b"\r") else p for p in block.split(b"\n"))
            view = np.frombuffer(block, dtype=np.uint8)
            newlines = np.flatnonzero(view == 10)
        self.block = block
        self.starts = np.concatenate(([0], newlines + 1))
        self.ends = np.append(newlines, len(block))
        self.tries = _ARROW_TRIES
        try:
            runs = self._runs(view, newlines, n)
        finally:
            self.block = b""
        if any(table is not None for _, _, table, _ in runs):
            self.backoff = 0
        else:
            self.backoff = min(2 * self.backoff or 1, _ARROW_BACKOFF)
            self.skip = self.backoff
        return runs

    def _runs(self, view: np.ndarray, newlines: np.ndarray, n: int) -> list[_Run]:
        block = self.block
        # A line's depth is at most its count of '{' and '[', and every line Arrow reads
        # starts with '{': when the block holds fewer than ``_NESTING`` more of them than it
        # has such lines, no line can hold more than ``_NESTING``.
        openings = int(np.count_nonzero(view == 0x7B)) + int(np.count_nonzero(view == 0x5B))
        if (
            block.startswith(b"{")
            and block.endswith(b"}")
            and (view[newlines - 1] == 0x7D).all()
            and (view[newlines + 1] == 0x7B).all()
            and len(block) <= self.max_bytes
            and openings - n < _NESTING
        ):
            return self._read(0, n)
        lengths = self.ends - self.starts
        nonempty = lengths > 0
        plain = nonempty.copy()
        plain[nonempty] = (view[self.starts[nonempty]] == 0x7B) & (
            view[self.ends[nonempty] - 1] == 0x7D
        )
        plain &= lengths <= self.max_bytes
        if openings - int(np.count_nonzero(plain)) >= _NESTING:  # then count them line by line
            counts = np.cumsum((view == 0x7B) | (view == 0x5B), dtype=np.int64)
            counts = np.concatenate(([0], counts))
            plain &= counts[self.ends] - counts[self.starts] <= _NESTING
        out: list[_Run] = []
        start = 0
        for i in np.flatnonzero(~plain).tolist():
            out += self._read(start, i)
            out.append((i, i + 1, None, None))
            start = i + 1
        out += self._read(start, n)
        return out

    def _read(self, start: int, end: int) -> list[_Run]:
        if start >= end:
            return []
        if self.tries <= 0:
            return [(start, end, None, None)]
        first, last = int(self.starts[start]), int(self.ends[end - 1])
        whole = first == 0 and last == len(self.block)
        data = self.block if whole else self.block[first:last]
        # decoded after Arrow read it when UTF-8: an Arrow error comes first, and cheaply
        text = None if self.codec == "utf-8" else self._decode(data)
        if isinstance(text, int):
            return self._split(start, end, start + text)
        utf8 = data if text is None else text.encode()
        try:
            table = pajson.read_json(
                pa.BufferReader(utf8),
                read_options=pajson.ReadOptions(use_threads=False, block_size=len(utf8) + 1),
                parse_options=self.parse_options,
            )
        except pa.ArrowInvalid as exc:
            message = str(exc)
            for name in self.names:
                if name not in self.typed and f"Column(/{name}) changed from string to" in message:
                    self.typed.add(name)  # read it with its inferred type from now on
                    self.parse_options = self._options()
                    return self._read(start, end)
            found = _ROW_RE.search(message)
            row = int(found.group(1)) if found else end - start
            if row >= end - start:
                self.tries -= 1
                return [(start, end, None, None)]
            return self._split(start, end, start + row)
        if table.num_rows != end - start:
            self.tries -= 1
            return [(start, end, None, None)]
        if text is None:
            text = self._decode(data)
            if isinstance(text, int):
                return self._split(start, end, start + text)
        texts = text.split("\n")
        odd: set[int] = set()
        columns = self._columns(table, odd)
        if columns is None:
            self.tries -= 1
            return [(start, end, None, None)]
        self._odd_rows(table, columns, data, text, texts, odd)
        table = pa.Table.from_arrays(columns, names=self.names)
        if not odd:
            return [(start, end, table, texts)]
        out: list[_Run] = []
        at = 0
        for row in sorted(odd):
            if row > at:
                out.append((start + at, start + row, table.slice(at, row - at), texts[at:row]))
            out.append((start + row, start + row + 1, None, None))
            at = row + 1
        if at < end - start:
            out.append((start + at, end, table.slice(at), texts[at:]))
        return out

    def _columns(self, table: pa.Table, odd: set[int]) -> list[pa.ChunkedArray] | None:
        """The requested columns as text, or None if one cannot be: adds to ``odd`` the rows
        whose text may differ (a zero that may have been '-0')."""
        columns = []
        for name in self.names:
            if name not in self.typed:
                columns.append(table.column(name))
                continue
            if name not in table.column_names:  # in no line of the run
                columns.append(pa.chunked_array([pa.nulls(table.num_rows, pa.string())]))
                continue
            column = table.column(name)
            t = column.type
            if pa.types.is_string(t):
                pass
            elif pa.types.is_null(t):
                column = pa.chunked_array([pa.nulls(table.num_rows, pa.string())])
            elif pa.types.is_boolean(t):
                column = pc.if_else(column, "true", "false")
            elif pa.types.is_int64(t):
                zero = pc.fill_null(pc.equal(column, 0), False).to_numpy(zero_copy_only=False)
                odd.update(np.flatnonzero(zero).tolist())
                column = pc.cast(column, pa.string())
            else:
                return None
            columns.append(column)
        return columns

    def _decode(self, data: bytes) -> str | int:
        """The text, or the line (counted from 0) of the first undecodable bytes."""
        try:
            return data.decode(self.codec)
        except UnicodeDecodeError as exc:
            return data.count(b"\n", 0, exc.start)

    def _odd_rows(
        self,
        table: pa.Table,
        columns: list[pa.ChunkedArray],
        data: bytes,
        text: str,
        texts: list[str],
        odd: set[int],
    ) -> None:
        """Add the rows of a run Arrow read that must go line by line after all."""
        if "\ufffd" in text:
            odd.update(i for i, t in enumerate(texts) if "\ufffd" in t)
        if _has_float(table.schema) and any(word in data for word in _NAN_WORDS):
            odd.update(i for i, t in enumerate(texts) if "NaN" in t or "Infinity" in t)
        for column in columns:
            for chunk in column.chunks:
                buf = chunk.buffers()[2]
                if buf is not None and buf.size and not np.frombuffer(buf, np.uint8).all():
                    odd.update(_matches(column.combine_chunks(), "\x00").tolist())
                    break

    def _split(self, start: int, end: int, at: int) -> list[_Run]:
        """Line ``at`` one at a time, the lines around it with Arrow again."""
        self.tries -= 1
        return [*self._read(start, at), (at, at + 1, None, None), *self._read(at + 1, end)]


def _has_float(schema: pa.Schema) -> bool:
    """True if the schema has a floating-point type, at any depth."""
    todo = [f.type for f in schema]
    while todo:
        t = todo.pop()
        if pa.types.is_floating(t):
            return True
        if pa.types.is_struct(t):
            todo.extend(t.field(i).type for i in range(t.num_fields))
        elif pa.types.is_list(t) or pa.types.is_large_list(t):
            todo.append(t.value_type)
    return False


class _JsonLines:
    """Turns one line of a JSON Lines file into the requested columns' text, or a bad record."""

    def __init__(
        self, names: list[str], codec: str, stream: _Utf8Stream | None, max_bytes: int
    ) -> None:
        self.names = names
        self.codec = codec
        self.encoding = _display(stream.encoding if stream else codec)
        self.stream = stream
        self.max_bytes = max_bytes
        self.raw_sub = _raw_substitute(stream.encoding if stream else codec)

    def read(
        self, number: int, data: bytes
    ) -> BadRecord | tuple[str, tuple[str | None, ...]] | None:
        """None for a blank line, a BadRecord, or (the line's text, the values)."""
        if data.endswith(b"\r"):
            data = data[:-1]
        undecodable = False
        try:
            text = data.decode(self.codec)
        except UnicodeDecodeError:
            text = data.decode(self.codec, "replace")
            undecodable = True
        if number == 1:
            text = text.removeprefix("\ufeff")
        if not text.strip(" \t"):
            return None
        try:
            obj = _flat_object(text) or _JSON.decode(text)
        except _DuplicateKey as exc:
            return self.bad(number, text, f'duplicate key "{exc.args[0]}"', exc.args[0])
        except _Constant as exc:
            return self.bad(number, text, f"invalid JSON: {exc.args[0]} is not a JSON value")
        except json.JSONDecodeError as exc:
            if undecodable:
                return self.bad(number, text, f"undecodable bytes (not valid {self.encoding})")
            where = "column" if exc.msg.endswith(" at") else "at column"
            return self.bad(number, text, f"invalid JSON: {exc.msg} {where} {exc.colno}")
        except RecursionError:
            return self.bad(number, text, "invalid JSON: nested too deeply")
        if type(obj) is not dict:
            return self.bad(number, text, "line is not a JSON object")
        if undecodable or "\ufffd" in text:
            column = next(
                (n for n in self.names if isinstance(obj.get(n), str) and "\ufffd" in obj[n]), None
            )
            if undecodable:
                where = f' in column "{column}"' if column else ""
                reason = f"undecodable bytes (not valid {self.encoding}){where}"
            else:
                reason = _fffd_reason(self.stream, column)
            return self.bad(number, text, reason, column)
        row = tuple(map(obj.get, self.names))
        if not _PLAIN_TYPES.issuperset(map(type, row)):
            return self._convert(number, text, obj)  # booleans, or a nested value
        if "\\u" in text or len(data) > self.max_bytes:  # \u0000, or a lone surrogate
            for name, value in zip(self.names, row, strict=True):
                problem = _text_problem(value, name, self.max_bytes)
                if problem:
                    return self.bad(number, text, problem, name)
        return text, row

    def _convert(
        self, number: int, text: str, obj: dict[str, Any]
    ) -> BadRecord | tuple[str, tuple[str | None, ...]]:
        row: list[str | None] = []
        for name in self.names:
            value = obj.get(name)
            if type(value) is bool:
                value = _BOOL_TEXT[value]
            elif value is not None and type(value) is not str:
                return self.bad(
                    number, text, f'nested value in column "{name}" is not supported', name
                )
            problem = _text_problem(value, name, self.max_bytes)
            if problem:
                return self.bad(number, text, problem, name)
            row.append(value)
        return text, tuple(row)

    def bad(self, number: int, text: str, reason: str, column: str | None = None) -> BadRecord:
        if self.raw_sub != "\ufffd":
            text = text.replace("\ufffd", self.raw_sub)
        return BadRecord(number, reason, column, text)


def _flat_object(text: str) -> dict[str, Any] | None:
    """The object on a line that holds just a flat JSON object without duplicate keys (what
    ``_JSON.decode`` returns for it), read without its Python hook; None for any other line."""
    if not text.startswith("{"):
        return None
    try:
        pairs, end = _SCAN(text, 0)
    except (StopIteration, ValueError, RecursionError):  # JSONDecodeError, _Constant
        return None
    if end != len(text) or type(pairs) is not tuple:
        return None
    obj = dict(pairs)
    if len(obj) != len(pairs) or not _FLAT_TYPES.issuperset(map(type, obj.values())):
        return None  # a duplicate key, or a nested value (which may hold one)
    return obj


def _text_problem(value: str | None, name: str, max_bytes: int) -> str | None:
    if value is None:
        return None
    if "\x00" in value:
        return f'NUL byte in column "{name}"'
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:  # an escaped surrogate without its pair: not text
            return f'unpaired surrogate (\\ud800-\\udfff escape) in column "{name}"'
    if len(value) * 4 > max_bytes and (size := len(value.encode())) > max_bytes:
        return (
            f'value in column "{name}" is {size} bytes, over the {max_bytes}-byte limit '
            "(input.max_field_bytes)"
        )
    return None


# -- Parquet --------------------------------------------------------------------------------


def _iter_parquet(source: Source, options: InputOptions, read: list[str]) -> Iterator[Batch]:
    """Batches whose table holds the columns in ``read`` as text, checked. The other columns
    are neither converted nor checked, so they decide nothing; a batch's ``original`` keeps
    every column for the rejects file."""
    path = source.path
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise LoadError(f"{path}: not a readable Parquet file: {exc}") from None
    names = source.columns
    if pf.schema_arrow.names != names:
        raise LoadError(f"{path}: the schema changed since the file was opened")
    wanted = set(read)
    kept = [c for c in names if c in wanted]
    row = 0
    index = 0
    try:
        for rb in pf.iter_batches(batch_size=options.batch_rows, use_threads=False):
            n = rb.num_rows
            lines = np.arange(row + 1, row + n + 1, dtype=np.int64)
            row += n
            arrays: list[pa.Array] = []
            problems: dict[int, tuple[str, str]] = {}
            for name, col in zip(names, rb.columns, strict=True):
                if name not in wanted:  # not read by the job: kept in ``original``
                    continue
                text, undecodable = _to_text(col, name, n)
                arrays.append(text)
                for i in undecodable:
                    problems.setdefault(
                        i, (f'undecodable bytes (not valid utf-8) in column "{name}"', name)
                    )
            for i, found in _value_problems(arrays, kept, None, options.max_field_bytes).items():
                problems.setdefault(i, found)
            table = pa.Table.from_arrays(arrays, names=kept)
            bad = [BadRecord(int(lines[i]), r, c, None) for i, (r, c) in sorted(problems.items())]
            if problems:
                keep = np.ones(n, dtype=bool)
                keep[sorted(problems)] = False
                table, lines = table.filter(pa.array(keep)), lines[keep]
            yield Batch(source, index, table, lines, None, bad, original=rb)
            index += 1
    except (pa.ArrowException, OSError) as exc:
        raise LoadError(
            f"{path}: cannot read Parquet after row {row}: {exc}; nothing after row {row} was read"
        ) from None


def _to_text(arr: pa.Array, name: str, n: int) -> tuple[pa.Array, list[int]]:
    """A Parquet column as strings, and the rows whose bytes are not UTF-8."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return _to_text(arr.dictionary_decode(), name, n)
    if pa.types.is_string(t):
        return arr, []
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.string()), []
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        try:
            return pc.cast(arr, pa.string()), []
        except pa.ArrowInvalid:
            out: list[str | None] = []
            bad: list[int] = []
            for i, v in enumerate(arr.to_pylist()):
                try:
                    out.append(None if v is None else v.decode("utf-8"))
                except UnicodeDecodeError:
                    out.append(None)
                    bad.append(i)
            return pa.array(out, pa.string()), bad
    if pa.types.is_floating(t):
        # NaN is pandas' missing value: null, like a missing cell
        arr = pc.if_else(pc.is_nan(arr), pa.scalar(None, t), arr)
        if pa.types.is_float16(t):
            return _float16_text(arr), []
    if pa.types.is_timestamp(t):
        return _timestamp_text(arr), []
    if pa.types.is_time(t):  # '09:15:00.005000' in us: as a timestamp's time of day
        text = pc.replace_substring_regex(pc.cast(arr, pa.string()), r"\.0+$", "")
        return pc.replace_substring_regex(text, r"(\.\d*[1-9])0+$", r"\1"), []
    return pc.cast(arr, pa.string()), []


@functools.cache
def _float16_texts() -> pa.Array:
    """The text of each of the 65,536 float16 values, by bit pattern: the shortest decimal that
    reads back as the same float16 (10.3, where its exact value is 10.296875), written as a
    float64 of that value is (``1e-7``, ``65500``)."""
    values = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    shortest = [float(np.format_float_scientific(v, unique=True)) for v in values]
    return pc.cast(pa.array(shortest, pa.float64()), pa.string())


def _float16_text(arr: pa.Array) -> pa.Array:
    """A float16 column in shortest form: Arrow writes a float16 as the float32 it widens to
    (``10.296875`` for 10.3)."""
    bits = pc.cast(arr.view(pa.uint16()), pa.int32())  # nulls stay null
    return _float16_texts().take(bits)


def _timestamp_text(arr: pa.Array) -> pa.Array:
    """'YYYY-MM-DD HH:MM:SS' (+ '+0800' when zoned), fractions only when there are some, and
    without trailing zeros (``.005`` whether the unit is ms, us or ns)."""
    t = arr.type
    fmt = "%Y-%m-%d %H:%M:%S" + ("%z" if t.tz else "")
    seconds = pc.cast(arr, pa.timestamp("s", t.tz), safe=False)
    whole = pc.strftime(seconds, format=fmt)
    if t.unit == "s":
        return whole
    exact = pc.equal(pc.cast(seconds, t), arr)
    fraction = pc.replace_substring_regex(
        pc.strftime(arr, format=fmt), pattern=r"(\.\d*[1-9])0+([+-]\d{4})?$", replacement=r"\1\2"
    )
    return pc.if_else(pc.fill_null(exact, True), whole, fraction)
