"""Byte streams: the file's bytes (gunzipped, bounded), and ``Utf8Stream``, which transcodes
them incrementally to valid UTF-8 for Arrow, with a throttle on Arrow's read-ahead.

Undecodable bytes become U+FFFD there (counted by the ``dmimport.replace`` error handler), and
a value holding U+FFFD becomes a bad record later, so a wrong encoding never reaches the
platform as garbled text. Valid UTF-8 passes through untouched (Arrow validates it).
"""

from __future__ import annotations

import codecs
import gzip
import sys
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import LoadError, TruncatedInput
from .options import ReadStats, Tuning
from .quotes import Quotes

CHUNK = Tuning.chunk  # bytes read from the file at a time, unless tuned


_READAHEAD = 3  # blocks Arrow may read beyond the batches taken (it would read 32)
FFFD_BYTES = "\ufffd".encode()
_EOL = (b"\n", b"\r")


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


def ascii_compatible(encoding: str) -> bool:
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


def display_encoding(encoding: str) -> str:
    """The encoding's name as messages give it (``utf-8-sig`` is ``utf-8``)."""
    return "utf-8" if encoding == "utf-8-sig" else encoding


class RawInput:
    """The file's bytes, gunzipped if compressed, refusing to decompress past ``limit``.

    A gzip stream that breaks (truncated, corrupt) first hands on what it decompressed, then
    raises ``LoadError`` on the next read: everything before the break is delivered.
    """

    def __init__(
        self, path: Path, *, compressed: bool, limit: int, stats: ReadStats | None = None
    ) -> None:
        self.path = path
        self.limit = limit
        self.total = 0
        self.compressed = compressed
        self._fh: Any = gzip.open(path, "rb") if compressed else open(path, "rb")  # noqa: SIM115
        self._broken: LoadError | None = None
        #: ``stats.position`` follows the reading (bytes of the file as stored)
        self._stats = stats

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
            raise TruncatedInput(
                f"{self.path}: truncated gzip file (it ends before the end of the compressed "
                f"stream, after {self.total} bytes of data)",
                self.path,
            ) from None
        except (OSError, zlib.error) as exc:
            raise LoadError(f"{self.path}: cannot read: {exc}") from None

    def _count(self, n: int) -> None:
        self.total += n
        if self._stats is not None:  # once per read of megabytes
            stored = getattr(self._fh, "fileobj", None) if self.compressed else None
            self._stats.position = stored.tell() if stored is not None else self.total
        if self.compressed and self.total > self.limit:
            raise LoadError(
                f"{self.path}: decompresses to more than {self.limit} bytes "
                "(input.max_decompressed_bytes); refusing to read further"
            )

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> RawInput:
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


class Utf8Stream:
    """The file's text as valid UTF-8, for Arrow's CSV reader (``read``) and for Python
    (``read_bytes``).

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
        raw: RawInput,
        encoding: str,
        *,
        final_newline: bool,
        throttle: bool = False,
        quotes: Quotes | None = None,
        chunk: int = CHUNK,
    ) -> None:
        self._raw = raw
        self._chunk = chunk
        self.quotes = quotes
        self.encoding = encoding
        self._passthrough = encoding in ("utf-8", "utf-8-sig")
        self._decoder = (
            None if self._passthrough else codecs.getincrementaldecoder(encoding)(errors=_ERRORS)
        )
        self._final_newline = final_newline
        self._scratch = bytearray(chunk + 4) if self._passthrough else bytearray()
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

    # -- the reading side Arrow gets (through the file object csv.py's ``_ArrowFile`` wraps it in)
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
            while chunk := self._read(self._chunk):
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
            if not self.fffd and piece.rfind(FFFD_BYTES) >= 0:
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
            return self._raw.read(self._chunk)
        except LoadError as exc:
            # kept without its traceback: the frames would hold Arrow's file object (and the
            # block being read) alive, and csv's ``_CsvInput.close`` waits for Arrow to let go
            # of them
            self.error = exc.with_traceback(None)
            return b""

    def _produce_utf8(self) -> tuple[bytes | memoryview, bool]:
        scratch = self._scratch
        k = len(self._carry)
        scratch[:k] = self._carry
        view = memoryview(scratch)
        try:
            got = self._raw.readinto(view[k : k + self._chunk])
        except LoadError as exc:
            self.error, got = exc.with_traceback(None), 0  # no frames kept (see _raw_read)
        end = k + got
        final = got == 0
        cut = end if final else _utf8_cut(scratch, end)
        self._carry = bytes(scratch[cut:end])
        start = 3 if self._first and scratch.startswith(codecs.BOM_UTF8, 0, cut) else 0
        if start >= cut:
            return b"", final
        piece, fffd, nul = _utf8_piece(scratch, view, start, cut, self.fffd, self.nul)
        self.fffd, self.nul = fffd, nul
        return piece, final


def _utf8_piece(
    scratch: bytearray, view: memoryview, start: int, cut: int, fffd: bool, nul: bool
) -> tuple[bytes | memoryview, bool, bool]:
    """``scratch[start:cut]`` as valid UTF-8 (invalid bytes become U+FFFD), and whether text
    so far holds a U+FFFD and a NUL (``fffd`` and ``nul``: whether it did before)."""
    # rfind: much faster than find for this pattern on CJK text
    fffd = fffd or scratch.rfind(FFFD_BYTES, start, cut) >= 0
    piece: bytes | memoryview
    if not _valid_utf8(scratch, start, cut):
        piece = bytes(view[start:cut]).decode("utf-8", _ERRORS).encode()
        fffd = True
    else:
        piece = view[start:cut]
    nul = nul or scratch.find(b"\x00", start, cut) >= 0
    return piece, fffd, nul
