"""Small Arrow helpers of the map stage: byte scans of a whole string column (numpy over the
Arrow data buffer, no copies) that pick the fast paths, and mask conversions."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def buffers(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(int32 offsets, uint8 data) of a string array, without copying."""
    n = len(values)
    _, offsets_buf, data_buf = values.buffers()
    if n == 0 or offsets_buf is None:
        return np.zeros(n + 1, dtype=np.int32), np.zeros(0, dtype=np.uint8)
    offsets = np.frombuffer(offsets_buf, dtype=np.int32, count=n + 1, offset=values.offset * 4)
    if data_buf is None:
        return offsets, np.zeros(0, dtype=np.uint8)
    return offsets, np.frombuffer(data_buf, dtype=np.uint8)


def value_bytes(values: pa.Array) -> np.ndarray:
    """Every byte of every value (a null slot's bytes too: scans may only over-report)."""
    offsets, data = buffers(values)
    return data[offsets[0] : offsets[-1]]


def within(values: pa.Array, low: str, high: str) -> bool:
    """Every byte of every value lies in ``low..high`` (two SIMD reductions, no copies)."""
    data = value_bytes(values)
    return len(data) == 0 or (int(data.min()) >= ord(low) and int(data.max()) <= ord(high))


def needs_escape(values: pa.Array) -> bool:
    """Some value holds '"', '\\' or a control character (a JSON string must escape them)."""
    data = value_bytes(values)
    if len(data) == 0:
        return False
    if int(data.min()) < 0x20:
        return True
    step = 1 << 18  # chunks stay in cache: far faster than one pass with big temporaries
    for start in range(0, len(data), step):
        chunk = data[start : start + step]
        if (chunk == 0x22).any() or (chunk == 0x5C).any():
            return True
    return False


def has_control(values: pa.Array) -> bool:
    """Some value holds a control character (below U+0020)."""
    data = value_bytes(values)
    return len(data) > 0 and int(data.min()) < 0x20


def bools(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Arrow boolean -> numpy bool, null as False."""
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


def nulls(n: int) -> pa.Array:
    """``n`` null strings."""
    return pa.nulls(n, pa.string())


def patch(values: pa.Array, mask: np.ndarray, replacements: list[str | None]) -> pa.Array:
    """``values`` with the rows in ``mask`` replaced, in order, by ``replacements``."""
    return pc.replace_with_mask(values, pa.array(mask), pa.array(replacements, pa.string()))


def byte_lengths(values: pa.Array) -> np.ndarray:
    """UTF-8 length in bytes of each value (0 for a null)."""
    offsets, _ = buffers(values)
    return np.diff(offsets)
