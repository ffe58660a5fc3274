"""The ``input:`` section: how source files are read."""

from __future__ import annotations

import codecs
from typing import Literal

from pydantic import (
    Field,
    field_validator,
)

from .base import StrictModel, rule_error


class InputOptions(StrictModel):
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet"] = "auto"
    encoding: str = "auto"
    delimiter: str | None = None
    #: CSV: a character that makes the next one literal, e.g. "\\" for MySQL/PHP exports
    escape_char: str | None = None
    batch_rows: int = Field(default=10_000, ge=1, le=10_000_000)
    #: a larger field rejects its record (not the file)
    max_field_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    #: gzip bomb guard: a .gz that inflates past this is refused
    max_decompressed_bytes: int = Field(default=20 * 1024**3, ge=1024)

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
        if v is not None and len(v) != 1:
            raise rule_error(f"delimiter must be one character, got '{v}'", r"e.g. ',' or '\t'")
        return v

    @field_validator("escape_char")
    @classmethod
    def _escape_char(cls, v: str | None) -> str | None:
        if v is not None and (len(v) != 1 or v in '"\r\n'):
            raise rule_error(
                f"escape_char must be one character other than a quote or a newline, got {v!r}",
                r"e.g. '\\' (a backslash)",
            )
        return v
