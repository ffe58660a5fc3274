"""How to read input files: ``InputOptions``, the config's ``input:`` section as is; ``Tuning``
(block sizes and the JSON Lines engine, not in the config) and ``ReadStats`` (read counters).

The config validates its ``input:`` section with this model (a problem is reported with its key
path, ``input.delimiter``, and the config's line); built directly (``InputOptions(...)``), a bad
value raises ``ConfigError`` with the same paths and messages (without the config's
did-you-mean hints and YAML lines).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from ..errors import ConfigError, ConfigProblem, rule_error

FORMATS = ("auto", "csv", "tsv", "jsonl", "parquet")

Format = Literal["auto", "csv", "tsv", "jsonl", "parquet"]


class StableFor(BaseModel):
    """``input.ready: {stable_for_s: N}``: a file is ready once its size and modification
    time have not changed for ``stable_for_s`` seconds (``importer.ready``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stable_for_s: float


#: ``input.ready``: ``none``, ``manifest``, or ``{stable_for_s: N}``
Ready = Literal["none", "manifest"] | StableFor

#: the longest ``stable_for_s`` (a day)
MAX_STABLE_FOR_S = 86_400.0


class InputOptions(BaseModel):
    """How to read input files (the config's ``input:`` section); frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    format: Format = "auto"
    #: ``auto`` (detected: UTF-8, or GB18030 Chinese) or any name Python's codecs know
    encoding: str = "auto"
    #: CSV: one ASCII character other than a quote or a line end; None: ',' ('\t' for TSV)
    delimiter: str | None = None
    #: CSV: a character that makes the next one literal (``\\`` for ``\\"`` in MySQL or PHP
    #: exports); None: quotes are escaped only by doubling them (RFC 4180)
    escape_char: str | None = None
    batch_rows: int = Field(default=10_000, ge=1, le=10_000_000)
    #: a larger field rejects its record (not the file)
    max_field_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    #: gzip bomb guard: a .gz that inflates past this is refused
    max_decompressed_bytes: int = Field(default=20 * 1024**3, ge=1024)
    #: when a file counts as completely written (``importer.ready``): ``none`` (no check but
    #: the cut last record), ``manifest`` (a ``<file>.manifest.json`` or a ``_SUCCESS``
    #: marker), or ``{stable_for_s: N}`` (size and mtime unchanged for N seconds)
    ready: Ready = "none"
    #: refuse a file with fewer data rows (a header-only file has 0); None: no minimum
    min_rows: int | None = Field(default=None, ge=1)
    #: refuse a file smaller than this share of the job's last input (the ledger's
    #: fingerprints of its last run); None: no check
    min_size_ratio: float | None = Field(default=None, gt=0, le=1)

    def __init__(self, **data: Any) -> None:
        """Raises ``ConfigError`` (paths ``input.<key>``) for a bad value. The config does not
        come through here: it validates its ``input:`` section with the model directly."""
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError([_config_problem(err) for err in exc.errors()]) from None

    def replace(self, **changes: Any) -> InputOptions:
        """A copy with ``changes``, validated as ``InputOptions(...)`` is."""
        return InputOptions(**{**self.model_dump(), **changes})

    @field_validator("ready", mode="before")
    @classmethod
    def _ready(cls, v: Any) -> Any:
        return ready_value(v)

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, v: str) -> str:
        if v != "auto":
            try:
                codecs.lookup(v)
            except LookupError:
                raise rule_error(f"unknown encoding '{v}'", "e.g. utf-8, gb18030, auto") from None
        return v

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, v: str | None) -> str | None:
        if v is not None and (len(v) != 1 or not v.isascii() or v in '"\r\n'):
            raise rule_error(
                f"delimiter must be one ASCII character other than a quote or a newline, got {v!r}",
                r"e.g. ',', ';', '|' or '\t'",
            )
        return v

    @field_validator("escape_char")
    @classmethod
    def _escape_char(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and (
            len(v) != 1 or not v.isascii() or v in '"\r\n' or v == info.data.get("delimiter")
        ):
            raise rule_error(
                f"escape_char must be one ASCII character other than a quote, a newline or the "
                f"delimiter, got {v!r}",
                r"e.g. '\\' (a backslash)",
            )
        return v


def ready_value(v: Any) -> Any:
    """``input.ready`` as the model takes it, or the one message that says what is allowed."""
    hint = "e.g. ready: manifest, or ready: {stable_for_s: 60}"
    if v is None:
        return "none"
    if isinstance(v, StableFor) or v in ("none", "manifest"):
        return v
    if isinstance(v, dict) and set(v) == {"stable_for_s"}:
        n = v["stable_for_s"]
        if isinstance(n, bool) or not isinstance(n, int | float):
            raise rule_error(f"stable_for_s must be a number of seconds, got {n!r}", hint)
        if not 0 < n <= MAX_STABLE_FOR_S:
            raise rule_error(
                f"stable_for_s must be > 0 and <= {MAX_STABLE_FOR_S:,.0f} (seconds), got {n}",
                hint,
            )
        return StableFor(stable_for_s=float(n))
    if isinstance(v, dict):
        extra = sorted(map(str, set(v) - {"stable_for_s"}))
        what = f"unknown key '{extra[0]}'" if extra else "missing stable_for_s"
        raise rule_error(f"expected none, manifest or {{stable_for_s: N}}: {what}", hint)
    raise rule_error(f"expected none, manifest or {{stable_for_s: N}}, got {v!r}", hint)


def _config_problem(err: Any) -> ConfigProblem:
    """One pydantic error of a directly built ``InputOptions`` as the config words it."""
    path = ".".join(("input", *map(str, err["loc"])))
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "dmimport":
        return ConfigProblem(path, ctx["message"], ctx.get("hint"))
    if kind == "literal_error":
        return ConfigProblem(path, f"expected one of {', '.join(FORMATS)}, got {err['input']!r}")
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<"}.get(kind, "<=")
        return ConfigProblem(path, f"must be {op} {next(iter(ctx.values()))}, got {err['input']}")
    return ConfigProblem(path, err["msg"])


@dataclass(frozen=True)
class Tuning:
    """How the loader reads, below what the config says: sizes and the JSON Lines engine.

    Not part of the config: the defaults are what runs use. Tests pass small sizes to cross
    many block boundaries with small files, and ``jsonl_engine="lines"`` to compare the engines.
    """

    #: Arrow CSV block (bytes); a record that does not fit is read again with ``large_block``
    block: int = 2 << 20
    #: room beyond two maximal fields in the larger block, and in a JSON Lines line
    block_slack: int = 1 << 20
    #: bytes read from the file at a time (CSV and JSON Lines after opening)
    chunk: int = 4 << 20
    #: JSON Lines: ``auto`` reads runs of lines with Arrow where that gives what reading each
    #: line gives; ``lines`` reads every line one at a time (the reference)
    jsonl_engine: Literal["auto", "lines"] = "auto"

    def large_block(self, max_field_bytes: int) -> int:
        """The CSV block a file is read again with after a record too long for ``block``: it
        holds two maximal fields (and any record read with ``block``, at most twice as long)."""
        return max(2 * self.block, 2 * max_field_bytes + self.block_slack)

    def max_line(self, max_field_bytes: int) -> int:
        """The longest JSON Lines line read; a longer one is a bad record, never held."""
        return 2 * max_field_bytes + self.block_slack


@dataclass
class ReadStats:
    """How a file was read, counted while ``iter_batches`` runs (pass one in to see them)."""

    #: CSV: the records (Arrow's numbering, the header is 1) from which the file was read
    #: again with the larger block
    restarts: list[int] = field(default_factory=list)
    #: CSV: the block size of the last (re)opening
    block: int = 0
    #: JSON Lines: lines taken from runs Arrow read, and lines read one at a time
    arrow_lines: int = 0
    single_lines: int = 0
    #: JSON Lines: Arrow reads that failed (each sent its lines to be learnt, cut or read one
    #: at a time)
    failed_reads: int = 0
    #: how far into the file reading has got, in bytes of the file as stored (of the
    #: compressed file for a ``.gz``; a Parquet file's share of rows read times its size):
    #: against the file's size, what a progress display estimates the rows to come from
    position: int = 0
