"""The ``job:`` section, and the rules that span job and columns."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator

from ..errors import rule_error
from ..protocol import Kind
from .base import StrictModel, did_you_mean, show
from .columns import CREATE_TIME, EVENT_ID
from .placeholders import PLACEHOLDER

#: What ``dmimport init`` sets ``event_name`` to when no ``--event-name`` is given: every
#: command that loads the config refuses it until replaced (``placeholders``).
EVENT_NAME_PLACEHOLDER = PLACEHOLDER

_JOB_NAME = re.compile(r"^\w[\w.-]*$")

#: ``job.duplicates``: what a run does with rows of the same identity (``importer.duplicates``)
#: ``keep_all``: none of it, every row is sent (what dmimport did before ``job.duplicates``)
DuplicatePolicy = Literal["keep_last", "keep_first", "reject", "keep_all"]


class Job(StrictModel):
    name: str | None = None
    kind: Kind
    event_name: str | None = None
    event_name_from: str | None = None
    primary_keys: list[str] = Field(min_length=1)
    max_value_length: int = Field(default=1024, ge=1)
    #: rows of one run with the same identity: None = the kind's default (``duplicate_policy``)
    duplicates: DuplicatePolicy | None = None

    @property
    def duplicate_policy(self) -> DuplicatePolicy:
        """``duplicates``, or the kind's default: ``keep_last`` for customers and deletes (a
        customer's later row overrides the earlier ones), ``reject`` for events (the platform
        keeps an event's first row: a later one with the same ``event_id`` would be lost)."""
        if self.duplicates is not None:
            return self.duplicates
        return "reject" if self.kind == "event" else "keep_last"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not _JOB_NAME.match(v):
            raise rule_error(
                f"job name '{v}' is not usable as a directory name",
                "use letters, digits, '.', '_' or '-'",
            )
        return v

    @field_validator("event_name", "event_name_from")
    @classmethod
    def _not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise rule_error("must not be empty")
        return v

    @field_validator("primary_keys")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        seen = [k for i, k in enumerate(v) if k in v[:i]]
        if seen:
            raise rule_error(f"primary key '{seen[0]}' is listed twice")
        return v


def cross_problems(data: Mapping[str, Any]) -> list[tuple[tuple[str, ...], str, str | None]]:
    """Rules that span sections, checked on the raw dict so they never hide behind type errors.

    Anything malformed is skipped here: pydantic already reports it.
    """
    out: list[tuple[tuple[str, ...], str, str | None]] = []
    job = data.get("job")
    columns = data.get("columns")
    if not isinstance(job, Mapping):
        return out
    kind = job.get("kind")
    if not isinstance(columns, Mapping):
        columns = None
    names = [k for k in columns if isinstance(k, str)] if columns is not None else None
    pks = job.get("primary_keys")
    if columns is not None and names is not None and isinstance(pks, list):
        for i, pk in enumerate(pks):
            if not isinstance(pk, str):
                continue
            if pk not in names:
                out.append(
                    (
                        ("job", "primary_keys", str(i)),
                        f"primary key '{pk}' is not a property in columns",
                        did_you_mean(pk, names) or f"add '{pk}' under columns",
                    )
                )
            elif isinstance(columns[pk], Mapping) and "value" in columns[pk]:
                out.append(
                    (
                        ("columns", pk, "value"),
                        f"primary key '{pk}' must be read from the file, not a constant",
                        f"use from: <column> for '{pk}'",
                    )
                )
    has_name = job.get("event_name") is not None
    has_from = job.get("event_name_from") is not None
    if kind == "event":
        if has_name and has_from:
            out.append(
                (
                    ("job", "event_name_from"),
                    "set either event_name or event_name_from, not both",
                    "event_name is a constant; event_name_from names a source column",
                )
            )
        elif not has_name and not has_from:
            out.append(
                (
                    ("job", "event_name"),
                    "events need event_name (a constant) or event_name_from (a source column)",
                    "e.g. event_name: order_detail",
                )
            )
        limit = job.get("max_value_length", 1024)
        name = job.get("event_name")
        if isinstance(name, str) and isinstance(limit, int) and len(name) > limit:
            out.append((("job", "event_name"), f"longer than max_value_length ({limit})", None))
        if columns is not None and names is not None:
            for needed in (EVENT_ID, CREATE_TIME):
                if needed not in names:
                    out.append(
                        (
                            ("columns",),
                            f"events need the property '{needed}'",
                            f"add e.g. {needed}: {{from: <column>}}",
                        )
                    )
            spec = columns.get(CREATE_TIME)
            if isinstance(spec, Mapping) and spec.get("type", "datetime") != "datetime":
                out.append(
                    (
                        ("columns", CREATE_TIME, "type"),
                        f"create_time of an event must be datetime, got {show(spec['type'])}",
                        "remove the type or set type: datetime",
                    )
                )
    elif kind in ("user", "user_delete"):
        for key, present in (("event_name", has_name), ("event_name_from", has_from)):
            if present:
                out.append(
                    (
                        ("job", key),
                        f"'{key}' only applies when kind is event, not {kind}",
                        "remove it",
                    )
                )
    return out
