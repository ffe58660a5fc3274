"""How to read input files: ``InputOptions`` (the config's ``input:`` section)."""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from ..errors import ConfigError, ConfigProblem

FORMATS = ("auto", "csv", "tsv", "jsonl", "parquet")


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
