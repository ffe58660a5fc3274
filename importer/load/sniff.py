"""Opening a file: format, compression, encoding and header are checked before anything is
read or sent (``open_source``).
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from ..errors import LoadError
from .batch import Source
from .discover import EXTENSIONS
from .options import InputOptions
from .parquet import open_parquet
from .quotes import csv_dialect
from .textstream import CHUNK, RawInput, ascii_compatible, display_encoding
from .values import quote_names

SAMPLE = 1 << 20  # bytes looked at to choose the encoding and read the header


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
        return open_parquet(path, sample)
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
    if ascii_so_far and (options.encoding == "auto" or _checks_utf8(options.encoding)):
        with RawInput(path, compressed=False, limit=0) as raw:
            later = _non_ascii_sample(raw)
    encoding, why = _resolve_encoding(path, sample, at_eof, options.encoding, later)
    if fmt == "csv" and options.encoding != "auto" and ascii_compatible(encoding):
        check_declared_header(path, sample, at_eof, encoding)
    text = codecs.getincrementaldecoder(encoding)(errors="replace").decode(sample, final=at_eof)
    text = text.removeprefix("\ufeff")
    if fmt == "csv":
        assert delimiter is not None
        escape = options.escape_char
        columns, _ = parse_header(path, text, delimiter, at_eof, encoding, escape)
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


#: workbook extensions: named for what to do, rather than "set input.format"
_SPREADSHEETS = frozenset((".xlsx", ".xlsm", ".xls", ".xlsb", ".ods", ".numbers"))


def _resolve_format(path: Path, options: InputOptions) -> tuple[str, str | None, bool]:
    name = path.name.lower()
    compressed = name.endswith(".gz")
    ext = os.path.splitext(name[:-3] if compressed else name)[1]
    fmt: str = options.format
    if fmt == "auto":
        found = EXTENSIONS.get(ext)
        if found is None and ext in _SPREADSHEETS:
            raise LoadError(
                f"{path}: a spreadsheet workbook is not read; save it as CSV (in Excel: Save As, "
                "'CSV UTF-8 (Comma delimited)') and import the .csv"
            )
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
        sample = fh.read(SAMPLE + 1)
    return sample[:SAMPLE], len(sample) <= SAMPLE


def _check_gzip(
    path: Path, limit: int, detect: bool
) -> tuple[bytes, bool, tuple[bytes, bool, int, int] | None]:
    """Decompress the whole file once, before anything is sent: a truncated or corrupt file,
    or one that decompresses past ``limit``, is refused now rather than half-way through.
    With ``detect``, a first MiB of ASCII is followed by ``_non_ascii_sample``'s answer."""
    later = None
    with RawInput(path, compressed=True, limit=limit) as raw:
        sample = raw.read(SAMPLE + 1)
        at_eof = len(sample) <= SAMPLE
        if detect and not at_eof and sample.isascii():
            later = _non_ascii_sample(raw, sample)
        while raw.read(CHUNK):
            pass
    return sample[:SAMPLE], at_eof, later


def _non_ascii_sample(raw: RawInput, data: bytes = b"") -> tuple[bytes, bool, int, int] | None:
    """For a file whose first MiB is ASCII: from the start of the line holding its first
    non-ASCII byte, up to ``SAMPLE`` bytes, whether they reach the end of the file, and that
    line's number and offset. None if the whole file is ASCII. ``data``: what was read of
    ``raw`` so far, from its start."""
    line, offset, carry = 1, 0, b""  # carry: the start of the line the chunk continues
    while data or (data := raw.read(CHUNK)):
        if data.isascii():  # the chunk alone, not copied after carry (ASCII, no line end)
            cut = data.rfind(b"\n") + 1
            line += data.count(b"\n")
            if cut:
                offset, carry = offset + len(carry) + cut, data[cut:]
            else:
                carry += data
            carry, data = carry[-SAMPLE:], b""  # a line longer than that is cut short
            continue
        data = carry + data
        first = len(data) - len(data.lstrip(bytes(range(0x80))))
        start = data.rfind(b"\n", 0, first) + 1
        line, offset, data = line + data.count(b"\n", 0, start), offset + start, data[start:]
        while len(data) <= SAMPLE and (more := raw.read(CHUNK)):
            data += more
        return data[:SAMPLE], len(data) <= SAMPLE, line, offset
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
        if not ascii_compatible(name):
            return name, "declared (input.encoding)"
        for bom, wide in _BOMS[:2] + _BOMS[3:5]:
            if sample.startswith(bom):
                # as bytes of an ASCII-compatible encoding it would be NULs between letters
                return wide, (
                    f"the file starts with a {wide.upper()} byte-order mark: read as "
                    f"{wide.upper()}, not as {name} (input.encoding)"
                )
        _refuse_binary(path, sample)
        if name == "utf-8" and sample.startswith(codecs.BOM_UTF8):
            return "utf-8-sig", "declared (input.encoding), with a byte-order mark"
        if name != "utf-8-sig" and sample.startswith(codecs.BOM_UTF8):
            # a UTF-8 byte-order mark is unambiguous (as bytes of another encoding it would be
            # mojibake before the first column's name): Excel's "CSV UTF-8" of a fixed file
            return "utf-8-sig", (
                f"the file starts with a UTF-8 byte-order mark: read as UTF-8, not as {name} "
                "(input.encoding)"
            )
        if name not in ("utf-8", "utf-8-sig"):
            if later is not None:  # a first MiB of ASCII is no evidence: its first non-ASCII
                _refuse_utf8(path, later[0], later[1], name, later[2])
            else:
                _refuse_utf8(path, sample, at_eof, name)
        return name, "declared (input.encoding)"
    for bom, name in _BOMS:
        if sample.startswith(bom):
            return name, "detected: byte-order mark"
    _refuse_binary(path, sample)
    if later is not None:
        return _detect_encoding(path, *later)
    return _detect_encoding(path, sample, at_eof)


#: the names Python gives the GB encodings (cp936 is gbk)
_GB_FAMILY = ("gb18030", "gbk", "gb2312")


def _single_byte(name: str) -> bool:
    """True for an encoding of one character a byte (latin-1, cp1252, ...)."""
    high = bytes(range(0xA1, 0xFF))
    return len(high.decode(name, errors="replace")) == len(high)


def _checks_utf8(requested: str) -> bool:
    """True for a declared encoding ``_refuse_utf8`` checks the text against."""
    try:
        name = codecs.lookup(requested).name
    except LookupError:
        return False
    return ascii_compatible(name) and (name in _GB_FAMILY or _single_byte(name))


def _refuse_utf8(path: Path, sample: bytes, at_eof: bool, name: str, first_line: int = 1) -> None:
    """LoadError when a file declared ``name`` (GB18030, or a one-byte encoding such as
    latin-1) is plainly UTF-8: its text is valid UTF-8 and some line reads as something no
    one writes in ``name`` (for GB18030: not common Chinese; ``张三`` gives ``寮犱笁``). Read as
    declared it would be stored as mojibake, without a single bad record. Another multibyte
    encoding (big5, shift_jis, cp949) is not second-guessed: a short line of it is valid
    UTF-8 once in about 150."""
    gb = name in _GB_FAMILY
    if sample.isascii() or not (gb or _single_byte(name)):
        return
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=at_eof)
    except UnicodeDecodeError:
        return
    for number, line in enumerate(sample.split(b"\n"), first_line):
        if line.isascii():
            continue
        if gb:
            n, common = _gb_common(line, set())
            if n == common:
                continue  # valid both ways: no evidence
        whole = (
            "the file"
            if at_eof and first_line == 1
            else ("its first MiB" if first_line == 1 else "a MiB from there")
        )
        raise LoadError(
            f"{path}: input.encoding is {name}, but the bytes at line {number} are not {name} "
            f"but valid UTF-8 (as is all the text of {whole}): the file is UTF-8; set "
            "input.encoding: utf-8 or auto, or --encoding utf-8"
        )


def check_declared_header(path: Path, sample: bytes, at_eof: bool, name: str) -> None:
    """LoadError when the first line of a CSV file (its header) is not text in ``name``, the
    declared encoding, saying what it looks like instead (UTF-8, GB18030 Chinese) rather
    than to set what is set."""
    end = sample.find(b"\n")
    line = sample if end < 0 else sample[:end]
    try:
        codecs.getincrementaldecoder(name)().decode(line, final=at_eof or end >= 0)
    except UnicodeDecodeError:
        pass
    else:
        return
    # (a GB18030 byte-order mark, U+FEFF, is no character of the header's text)
    line = line.removesuffix(b"\r").removeprefix(b"\x84\x31\x95\x33")
    shown = display_encoding(name)
    start = f"{path}: input.encoding is {shown}, but line 1 (the header) is not {shown} text"
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        raise LoadError(
            f"{start}: it is valid UTF-8; set input.encoding: utf-8 or auto, or --encoding utf-8"
        )
    n, common = _gb_common(line, set())
    if name not in _GB_FAMILY and n and n == common:
        shown = line.decode("gb18030")[:80]
        raise LoadError(
            f"{start}: it reads as GB18030 Chinese ({shown!r}); set input.encoding: gb18030 "
            "or auto, or --encoding gb18030"
        )
    others = " or ".join(n for n in ("UTF-8", "GB18030 Chinese") if n.lower()[:5] != name[:5])
    raise LoadError(
        f"{start}, nor {others}: set input.encoding (or --encoding) to the encoding the file "
        "was written in (e.g. latin-1, big5, shift_jis, cp949)"
    )


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


def parse_header(
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

    reader = csv.reader(lines(), **csv_dialect(delimiter, escape))
    try:
        names = next(reader)
    except StopIteration:
        raise LoadError(f"{path}: no header line") from None
    except csv.Error as exc:
        raise LoadError(f"{path}: cannot read the header: {exc}") from None
    if not at_eof and consumed >= len(text):
        raise LoadError(f"{path}: the header is longer than {SAMPLE} bytes (unbalanced quote?)")
    if not names or names == [""]:
        raise LoadError(f"{path}: line 1 is empty; the first line must be the header")
    bad = [n for n in names if "\ufffd" in n or "\x00" in n]
    if bad:
        raise LoadError(
            f"{path}: the header has undecodable bytes (not valid {display_encoding(encoding)}) in "
            f"{quote_names(bad)}; set input.encoding (or --encoding)"
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
    """LoadError for a header whose quoting is broken (read as Arrow and ``Quotes`` read it):
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
                where = "" if at_eof else f" within the first {SAMPLE} bytes"
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
