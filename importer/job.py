"""A job config ready to run: its schema (``importer.config``) and its constants (``importer.map``).

The config package checks the schema only; whether a ``value`` or a ``default`` converts is the
mapper's question, asked with the mapper's own converters so that a default the mapper would
reject is one config error, not a million row errors. ``load_job`` and ``parse_job`` ask both and
report every problem in one ``ConfigError`` (sorted by line, secrets redacted), as
``load_config`` and ``parse_config`` do for the schema alone. Every command that runs, previews
or checks a job loads it here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import Config, load_config, parse_config
from .map import constant_problems

__all__ = ["load_job", "parse_job"]


def load_job(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read and validate the config at ``path`` for a run; ConfigError lists every problem."""
    return load_config(path, overrides, column_check=constant_problems)


def parse_job(
    data: Mapping[str, Any], source: str = "<config>", overrides: Mapping[str, Any] | None = None
) -> Config:
    """Validate an in-memory config dict (the parsed YAML) for a run, as ``load_job`` does."""
    return parse_config(data, source, overrides, column_check=constant_problems)
