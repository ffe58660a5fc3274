"""``input.ready: manifest``: a sidecar ``<file>.manifest.json``, or a ``_SUCCESS`` marker in
the file's folder, says the export is complete.

The manifest is a JSON object; each of its fields that is given must match the file:

- ``rows`` (also ``row_count``, ``record_count``, ``num_rows``): data rows, the header not
  counted;
- ``bytes`` (also ``size``, ``content_length``): the file's size as stored;
- ``sha256``: the SHA-256 of the file as stored, in hex (``sha256:`` in front is allowed).

An Amazon Redshift ``UNLOAD ... MANIFEST VERBOSE`` manifest is read too: the entry of
``entries`` whose ``url`` ends with the file's name, its ``meta`` holding ``content_length``
and ``record_count``. A manifest with none of these fields, and a ``_SUCCESS`` marker, say
only that the export finished: either must then be at least as new as the file (yesterday's
marker beside a file being written again does not count).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..load.discover import MANIFEST_SUFFIX as SUFFIX

MARKER = "_SUCCESS"

_NAMES = {
    "rows": ("rows", "row_count", "record_count", "num_rows"),
    "bytes": ("bytes", "size", "content_length"),
    "sha256": ("sha256",),
}


def manifest_path(path: Path) -> Path:
    """The sidecar manifest of ``path``: ``customers.csv`` -> ``customers.csv.manifest.json``."""
    return path.with_name(path.name + SUFFIX)


def sha256_of(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def expected(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    """What a manifest says of the file called ``name``: ``rows``, ``bytes``, ``sha256``."""
    found: dict[str, Any] = {}
    for entry in data.get("entries") or []:  # Redshift: per-file meta
        if isinstance(entry, Mapping) and str(entry.get("url", "")).endswith("/" + name):
            meta = entry.get("meta")
            data = meta if isinstance(meta, Mapping) else {}
            break
    for field, names in _NAMES.items():
        for key in names:
            if key in data and data[key] is not None:
                found[field] = data[key]
                break
    return found


def manifest_problem(path: Path) -> str | None:
    """Why ``path`` is not ready by its manifest or marker, or None; the manifest's ``rows``
    are ``manifest_rows_problem``'s (counting them needs the file opened)."""
    sidecar = manifest_path(path)
    marker = path.parent / MARKER
    st = path.stat()
    size, mtime = st.st_size, st.st_mtime
    if not sidecar.is_file():
        if not marker.is_file():
            return (
                f"no manifest {sidecar.name} and no {MARKER} marker in {path.parent} "
                "(input.ready: manifest): the export has not said it is complete"
            )
        return _older(marker, mtime, f"the {MARKER} marker")
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return (
            f"its manifest {sidecar.name} cannot be read ({type(exc).__name__}: {exc}); "
            "it may still be being written (input.ready: manifest)"
        )
    if not isinstance(data, Mapping):
        return f"its manifest {sidecar.name} is not a JSON object (input.ready: manifest)"
    want = expected(data, path.name)
    if not want:
        return _older(sidecar, mtime, f"its manifest {sidecar.name}")
    said = f"the manifest {sidecar.name} says"
    if "bytes" in want and _int(want["bytes"]) != size:
        return f"{size:,} bytes, {said} {_show_int(want['bytes'])} (input.ready: manifest)"
    if "sha256" in want:
        digest = str(want["sha256"]).strip().lower().removeprefix("sha256:")
        actual = sha256_of(path)
        if actual != digest:
            return f"SHA-256 {actual[:12]}..., {said} {digest[:12]}... (input.ready: manifest)"
    return None


def manifest_rows_problem(path: Path, count_rows: Callable[[], int]) -> str | None:
    """Why ``path`` does not have the rows its manifest says (``count_rows`` counts them), or
    None (also when there is no manifest, or it gives no rows)."""
    sidecar = manifest_path(path)
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    want = expected(data, path.name) if isinstance(data, Mapping) else {}
    if "rows" not in want:
        return None
    rows = count_rows()
    if _int(want["rows"]) == rows:
        return None
    said = f"the manifest {sidecar.name} says {_show_int(want['rows'])}"
    return f"{rows:,} rows, {said} (input.ready: manifest)"


def _older(marker: Path, mtime: float, what: str) -> str | None:
    if marker.stat().st_mtime >= mtime:
        return None
    return (
        f"{what} is older than the file (the file was written again after it): the export "
        "has not said it is complete (input.ready: manifest)"
    )


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _show_int(value: Any) -> str:
    number = _int(value)
    return f"{number:,}" if number is not None else repr(value)
