"""Checks on the values of a batch that all formats share, and how bad records show them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .textstream import FFFD_BYTES, Utf8Stream, display_encoding


def quote_names(names: Sequence[str]) -> str:
    """``"a", "b"``: column names as messages quote them."""
    return ", ".join(f'"{n}"' for n in names)


def value_problems(
    arrays: Sequence[pa.Array], names: Sequence[str], stream: Utf8Stream | None, max_bytes: int
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
                checks.append((rows_matching(arr, "\x00"), f'NUL byte in column "{name}"'))
            if check_fffd and FFFD_BYTES in blob:
                checks.append((rows_matching(arr, "\ufffd"), fffd_reason(stream, name)))
        for rows, reason in checks:
            for i in rows.tolist():
                found.setdefault(i, (reason, name))
    return found


def rows_matching(arr: pa.Array, pattern: str) -> np.ndarray:
    """The indices of the values of ``arr`` that contain ``pattern``."""
    hit = pc.fill_null(pc.match_substring(arr, pattern), False)
    return np.flatnonzero(hit.to_numpy(zero_copy_only=False))


def fffd_reason(stream: Utf8Stream | None, column: str | None) -> str:
    """Why a value holding U+FFFD is a bad record: undecodable bytes, or a U+FFFD the file
    itself holds."""
    where = f' in column "{column}"' if column else ""
    if stream is None or stream.substitutions:
        enc = display_encoding(stream.encoding) if stream else "utf-8"
        return f"undecodable bytes (not valid {enc}){where}"
    return f"replacement character U+FFFD{where} (the text was garbled before export)"


def raw_substitute(encoding: str) -> str:
    """What stands for undecodable bytes in a raw text: U+FFFD if the rejects file (written
    in the source's encoding) can hold it, '?' otherwise."""
    try:
        "\ufffd".encode(encoding)
    except UnicodeEncodeError:
        return "?"
    return "\ufffd"
