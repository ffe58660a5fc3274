"""Stable 64-bit hashes of many byte strings at once: row identities and property values.

The ledger keeps them between runs (as ``as_keys``), so they must not change between
processes (Python's own ``hash`` is salted per process), and they must be cheap for a million
rows: ``hashlib`` costs about 0.5 microseconds a row in a Python loop, more than reading and
checking the row.

``hash64`` works on a whole Arrow array with numpy, word ``j`` of every value at once (read
straight from the Arrow buffer at each value's offset), about 0.2 microseconds for a
100-byte value and less for short ones. ``combine`` hashes rows of such hashes (a row's
properties). The function (``dmh64``) is defined here and nowhere else, byte for byte:

- the value's bytes (UTF-8 for text), length ``L``, zero-padded to a multiple of 8 and read as
  little-endian 64-bit words ``w[0] .. w[ceil(L/8) - 1]``;
- ``h = SEED ^ (L * P5)``; for each word, ``h = rotl(h ^ rotl(w * P2, 31) * P1, 27) * P1 + P4``
  (xxHash64's round and merge steps; all arithmetic modulo 2**64);
- the result is ``h`` after xxHash64's final avalanche;
- except for values longer than 4,096 bytes (rare: a body past a few kilobytes), where it is
  BLAKE2b with an 8-byte digest, read as a little-endian integer: numpy works a word position
  at a time, so one long value would cost a pass per word, where ``hashlib`` costs a
  microsecond per kilobyte.

Because the length goes in first, the zero padding cannot make two values collide. It is not a
cryptographic hash and need not be: it tells whether a row changed since the last night. Each
step is a bijection of ``h`` for a given word, so values that differ in one word never collide;
otherwise a changed value keeps its old hash with odds of about 2**-64. Tests pin known
values, so that a change to this file that changed them fails loudly instead of making one
night re-send every row.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

__all__ = ["ABSENT", "as_keys", "combine", "hash64", "hex16", "keys64"]


_P1 = np.uint64(0x9E3779B185EBCA87)
_P2 = np.uint64(0xC2B2AE3D27D4EB4F)
_P3 = np.uint64(0x165667B19E3779F9)
_P4 = np.uint64(0x85EBCA77C2B2AE63)
_P5 = np.uint64(0x27D4EB2F165667C5)
_SEED = np.uint64(0x646D696D706F7274)  # "dmimport"
_FLIP = np.uint64(1 << 63)
#: what ``combine`` callers put for a value that is absent (null): no value hashes to it in
#: practice (odds 2**-64)
ABSENT = np.uint64(0)
#: values longer than this many 8-byte words are hashed with BLAKE2b
_LONG_WORDS = 512


def _words_hash(words: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``dmh64`` of rows of equal word count, given as an (n, k) uint64 matrix of words."""
    h = _start(lengths)
    scratch = (np.empty(len(h), dtype=np.uint64), np.empty(len(h), dtype=np.uint64))
    for j in range(words.shape[1]):
        _round(h, words[:, j], *scratch)
    return _finish(h)


def _start(lengths: np.ndarray) -> np.ndarray:
    h = lengths.astype(np.uint64)
    with np.errstate(over="ignore"):
        np.multiply(h, _P5, out=h)
    np.bitwise_xor(h, _SEED, out=h)
    return h


def _round(h: np.ndarray, w: np.ndarray, t: np.ndarray, u: np.ndarray) -> None:
    """``h = rotl(h ^ rotl(w * P2, 31) * P1, 27) * P1 + P4``, in place (t, u: scratch)."""
    with np.errstate(over="ignore"):
        np.multiply(w, _P2, out=t)
        np.right_shift(t, _R33, out=u)
        np.left_shift(t, _R31, out=t)
        np.bitwise_or(t, u, out=t)
        np.multiply(t, _P1, out=t)
        np.bitwise_xor(h, t, out=h)
        np.right_shift(h, _R37, out=u)
        np.left_shift(h, _R27, out=h)
        np.bitwise_or(h, u, out=h)
        np.multiply(h, _P1, out=h)
        np.add(h, _P4, out=h)


def _finish(h: np.ndarray) -> np.ndarray:
    u = np.empty_like(h)
    with np.errstate(over="ignore"):
        for shift, prime in ((_R33, _P2), (_R29, _P3)):
            np.right_shift(h, shift, out=u)
            np.bitwise_xor(h, u, out=h)
            np.multiply(h, prime, out=h)
    np.right_shift(h, _R32, out=u)
    np.bitwise_xor(h, u, out=h)
    return h


_R27, _R29, _R31, _R32, _R33, _R37 = (np.uint64(r) for r in (27, 29, 31, 32, 33, 37))


def _as_binary(values: pa.Array | pa.ChunkedArray | Sequence[bytes | str]) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        values = pa.array(
            [v.encode() if isinstance(v, str) else v for v in values], type=pa.binary()
        )
    if not pa.types.is_binary(values.type):
        values = values.cast(pa.binary())
    if values.null_count:
        values = values.fill_null(b"")
    return values


def hash64(values: pa.Array | pa.ChunkedArray | Sequence[bytes | str]) -> np.ndarray:
    """uint64 ``dmh64`` of each value's bytes (UTF-8 for text). A null hashes like b""."""
    arr = _as_binary(values)
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32, count=n + 1, offset=arr.offset * 4)
    starts = offsets[:-1].astype(np.int64)
    lengths = np.diff(offsets).astype(np.int64)
    counts = (lengths + 7) // 8
    long_rows = np.flatnonzero(counts > _LONG_WORDS)
    if len(long_rows):
        counts[long_rows] = 0  # hashed below
    # The values' bytes plus 8 zero bytes, read as 8-byte words at any byte offset: word j of
    # value i is at starts[i] + 8 * j, its bytes past the value's end masked off.
    first, last = int(offsets[0]), int(offsets[-1])
    data = np.zeros(last - first + 8, dtype=np.uint8)
    if data_buf is not None and last > first:
        data[: last - first] = np.frombuffer(data_buf, dtype=np.uint8)[first:last]
    starts -= first
    h = _start(lengths)
    scratch = (np.empty(n, dtype=np.uint64), np.empty(n, dtype=np.uint64))
    low = int(counts.min())
    for j in range(int(counts.max())):
        if j < low:  # every value has this word
            w = _gather(data, starts + 8 * j)
            if j == low - 1:  # the last word of some: keep only their bytes
                w &= _MASKS[np.minimum(lengths - 8 * j, 8)]
            _round(h, w, *scratch)
            continue
        rows = np.flatnonzero(counts > j)
        w = _gather(data, starts[rows] + 8 * j)
        w &= _MASKS[np.minimum(lengths[rows] - 8 * j, 8)]
        sub = h[rows]
        m = len(rows)
        _round(sub, w, scratch[0][:m], scratch[1][:m])
        h[rows] = sub
    h = _finish(h)
    for i in long_rows.tolist():
        digest = hashlib.blake2b(arr[i].as_buffer() or b"", digest_size=8).digest()
        h[i] = int.from_bytes(digest, "little")
    return h


def _gather(data: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The little-endian 8-byte words of ``data`` at byte offsets ``at``."""
    view = np.ndarray(shape=(len(data) - 7,), dtype="<u8", buffer=data, strides=(1,))
    w = view[at]
    return w if sys.byteorder == "little" else w.astype(np.uint64)


#: ``_MASKS[r]`` keeps the first r bytes of a little-endian word (r <= 8)
_MASKS = np.array([(1 << (8 * r)) - 1 for r in range(9)], dtype=np.uint64)


def combine(columns: Sequence[np.ndarray]) -> np.ndarray:
    """Per row, ``dmh64`` of the row's uint64 values in ``columns`` as 8-byte little-endian
    words: one hash of several (a row's hash from its columns' hashes)."""
    words = np.column_stack([np.asarray(c, dtype=np.uint64) for c in columns])
    n, k = words.shape
    return _words_hash(words, np.full(n, 8 * k, dtype=np.int64))


def keys64(values: pa.Array | pa.ChunkedArray | Sequence[bytes | str]) -> np.ndarray:
    """``hash64`` as int64 sort keys (``as_keys``)."""
    return as_keys(hash64(values))


def as_keys(hashes: np.ndarray) -> np.ndarray:
    """uint64 hashes as int64 sort keys: ``h - 2**63`` for each hash ``h`` (unsigned order is
    kept). The ledger stores hashes this way, as SQLite's signed 64-bit INTEGER."""
    return (np.asarray(hashes, dtype=np.uint64) ^ _FLIP).view(np.int64)


def hex16(h: int | np.integer) -> str:
    """A hash as 16 hex digits (how a row's properties hash is shown; the ledger stores
    ``as_keys`` of it, an integer)."""
    return f"{int(h):016x}"
