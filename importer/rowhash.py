"""Stable 64-bit hashes of many byte strings at once: row identities and request bodies.

The ledger keeps them between runs, so they must not change between processes (Python's own
``hash`` is salted per process), and they must be cheap for a million rows: ``hashlib`` costs
about 0.5 microseconds a row in a Python loop, more than reading and checking the row.

``hash64`` works on a whole Arrow array with numpy, a column of 8-byte words at a time, and
costs about 0.1 microseconds a row for 100-byte bodies. The function (``dmh64``) is defined
here and nowhere else, byte for byte:

- the value's bytes (UTF-8 for text), length ``L``, zero-padded to a multiple of 8 and read as
  little-endian 64-bit words ``w[0] .. w[ceil(L/8) - 1]``;
- ``h = SEED ^ (L * P5)``; for each word, ``h = rotl(h ^ rotl(w * P2, 31) * P1, 27) * P1 + P4``
  (xxHash64's round and merge steps; all arithmetic modulo 2**64);
- the result is ``h`` after xxHash64's final avalanche;
- except for values longer than 4,096 bytes (rare: a body past a few kilobytes), where it is
  BLAKE2b with an 8-byte digest, read as a little-endian integer: numpy works a word column at
  a time, so one long value would cost a pass per word, where ``hashlib`` costs a
  microsecond per kilobyte.

Because the length goes in first, the zero padding cannot make two values collide. It is not a
cryptographic hash and need not be: it tells whether a row changed since the last night, and
a changed body keeps its old hash with odds of about 2**-64. Tests pin known values, so that a
change to this file that changed them fails loudly instead of making one night re-send every
row.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["ALGORITHM", "hash64", "hex16", "keys64"]

#: What the ledger's hashes are (``dmh64`` above).
ALGORITHM = "dmh64"

_P1 = np.uint64(0x9E3779B185EBCA87)
_P2 = np.uint64(0xC2B2AE3D27D4EB4F)
_P3 = np.uint64(0x165667B19E3779F9)
_P4 = np.uint64(0x85EBCA77C2B2AE63)
_P5 = np.uint64(0x27D4EB2F165667C5)
_SEED = np.uint64(0x646D696D706F7274)  # "dmimport"
_FLIP = np.uint64(1 << 63)
#: values longer than this many 8-byte words are hashed with BLAKE2b
_LONG_WORDS = 512


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


def _words_hash(words: np.ndarray, counts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``dmh64`` of rows given as an (n, k) uint64 matrix of words, ``counts`` words each."""
    with np.errstate(over="ignore"):
        h = _SEED ^ (lengths.astype(np.uint64) * _P5)
        all_rows = bool(len(counts)) and int(counts.min()) >= words.shape[1]
        for k in range(words.shape[1]):
            w = words[:, k] * _P2
            step = _rotl(h ^ (_rotl(w, 31) * _P1), 27) * _P1 + _P4
            h = step if all_rows else np.where(counts > k, step, h)
        h ^= h >> np.uint64(33)
        h *= _P2
        h ^= h >> np.uint64(29)
        h *= _P3
        h ^= h >> np.uint64(32)
    return h


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
    lengths = pc.binary_length(arr).to_numpy(zero_copy_only=False).astype(np.int64)
    counts = (lengths + 7) // 8
    most = int(counts.max())
    # Rows are hashed in groups of similar length, so that one long value does not pad a
    # whole batch to its size: most rows in one pass, longer ones in doubling groups.
    bound = max(4, 2 * int(np.median(counts)))
    if most <= min(bound, _LONG_WORDS):
        return _hash_group(arr, lengths, counts)
    out = np.zeros(n, dtype=np.uint64)
    for i in np.flatnonzero(lengths > 8 * _LONG_WORDS).tolist():
        digest = hashlib.blake2b(arr[i].as_buffer() or b"", digest_size=8).digest()
        out[i] = int.from_bytes(digest, "little")
    most = min(most, _LONG_WORDS)
    low = 0
    while low <= most:
        rows = np.flatnonzero((counts >= low) & (counts <= min(bound, _LONG_WORDS)))
        if len(rows):
            out[rows] = _hash_group(arr.take(pa.array(rows)), lengths[rows], counts[rows])
        low, bound = bound + 1, 2 * bound
    return out


def _hash_group(arr: pa.Array, lengths: np.ndarray, counts: np.ndarray) -> np.ndarray:
    n = len(arr)
    width = int(counts.max())
    if width == 0:
        return _words_hash(np.zeros((n, 0), np.uint64), counts, lengths)
    # every value padded with zero bytes to ``width`` words: one contiguous (n, width) matrix
    pad = pc.binary_repeat(b"\0", pa.array(8 * width - lengths))
    joined = pc.binary_join_element_wise(arr, pad, b"")
    _, offsets, data_buf = joined.buffers()
    first = int(np.frombuffer(offsets, dtype=np.int32, count=1, offset=joined.offset * 4)[0])
    data = np.frombuffer(data_buf, dtype=np.uint8)[first : first + 8 * width * n]
    words = data.view("<u8").reshape(n, width)
    if sys.byteorder != "little":
        words = words.astype(np.uint64)
    return _words_hash(words, counts, lengths)


def keys64(values: pa.Array | pa.ChunkedArray | Sequence[bytes | str]) -> np.ndarray:
    """``hash64`` as int64 sort keys: ``int(hex16(h), 16) - 2**63`` for each hash ``h``."""
    return (hash64(values) ^ _FLIP).view(np.int64)


def hex16(h: int | np.integer) -> str:
    """A hash as the 16 hex digits the ledger stores."""
    return f"{int(h):016x}"
