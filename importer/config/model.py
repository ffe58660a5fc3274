"""The whole config (``Config``) and the ``send:``, ``report:`` and ``state:`` sections."""

from __future__ import annotations

import os
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from ..errors import ConfigError, ConfigProblem, rule_error
from ..load import InputOptions
from ..protocol import QUOTA_TIMEZONE, Profile, header_problem
from .base import StrictModel, did_you_mean
from .columns import CREATE_TIME, ColumnSpec
from .guard import GuardOptions
from .job import EVENT_NAME_PLACEHOLDER, Job
from .notify import NotifyHook
from .readback import OpenApiOptions, VerifyOptions
from .target import Target


class RetryOptions(StrictModel):
    """``send.retry``: how many attempts a row gets for a retryable outcome, and the waits
    between them. The sender and its ``--workers`` processes use this model as is (see
    ``importer.send.retry``)."""

    #: attempts per row, the first included (1: never retry)
    max_attempts: int = Field(default=5, ge=1, le=100)
    #: the first backoff; doubles per retry, with full jitter
    initial_backoff_s: float = Field(default=0.5, ge=0)
    #: cap on one backoff
    max_backoff_s: float = Field(default=30.0, ge=0)
    #: cap on a server's ``Retry-After``
    retry_after_cap_s: float = Field(default=120.0, ge=0)


#: ``send.batch_rows`` and ``send.batch_bytes`` defaults
DEFAULT_BATCH_ROWS = 500
DEFAULT_BATCH_BYTES = 1024 * 1024


class SendOptions(StrictModel):
    concurrency: int = Field(default=32, ge=1, le=1024)
    #: request starts per second, shared by all workers (the platform allows 20; null: no pacing)
    rate_limit: float | None = Field(default=20.0, gt=0)
    #: records per request, at most (users and events; deletes go one per request)
    batch_rows: int = Field(default=DEFAULT_BATCH_ROWS, ge=1, le=100_000)
    #: bytes of body per request, at most (a single record larger than this goes alone)
    batch_bytes: int = Field(default=DEFAULT_BATCH_BYTES, ge=256)
    #: requests per account and day (the platform allows 10,000); 0: no daily budget
    daily_quota: int = Field(default=10_000, ge=0)
    #: the time zone whose midnight starts the platform's day
    quota_timezone: str = QUOTA_TIMEZONE
    retry: RetryOptions = RetryOptions()
    abort_after_signature_failures: int = Field(default=5, ge=1)
    #: stop the run when this many rows in a row failed after every attempt (0: never)
    abort_after_failed_rows: int = Field(default=200, ge=0)
    #: stop the run when the platform refused this many rows in a row with the very same
    #: answer (a mistake of the job: bisecting each batch would spend the day's quota; 0: never)
    abort_after_same_refusals: int = Field(default=50, ge=0)
    #: stop the run when this many requests in a row failed (429, 5xx, no answer), over at
    #: least retry.max_backoff_s (0: never)
    abort_after_failed_requests: int = Field(default=100, ge=0)
    #: sender processes; each owns a share of the customers (see docs/benchmarks.md)
    workers: int = Field(default=1, ge=1, le=64)
    #: seconds to wait, once every row has its answer, before sending again the last row of
    #: each customer whose earlier request timed out and could still be applied by the
    #: platform after the later row (users and deletes; only when that happened); 0: never
    settle_s: float = Field(default=60.0, ge=0, le=3600)

    @field_validator("quota_timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise rule_error(
                f"'{v}' is not a time zone name", "e.g. Asia/Shanghai or UTC"
            ) from None
        return v


class ReportOptions(StrictModel):
    dir: str = "reports"
    format: Literal["csv", "jsonl"] = "csv"
    mask_pii: bool = False
    #: the text encoding of results.csv and rejects.reasons.csv: utf-8-sig (UTF-8 with a
    #: byte-order mark, which Excel needs to read UTF-8), utf-8 (no mark, for tools that choke
    #: on one) or gb18030 (old Excel on zh-CN Windows); results.jsonl is always UTF-8
    encoding: Literal["utf-8-sig", "utf-8", "gb18030"] = "utf-8-sig"
    #: after a run, the job's report folders under the run's report folder beyond the newest
    #: ``keep_runs`` are removed (``importer.report.retention``); 0: keep them all
    keep_runs: int = Field(default=30, ge=0)


class StateOptions(StrictModel):
    #: the SQLite ledger; default ``<parent of report.dir>/state/state.db`` (never ``--report-dir``)
    path: str | None = None
    #: full: send every valid row (resuming a killed run); incremental: only changed rows
    mode: Literal["full", "incremental"] = "full"
    #: false: no ledger at all (no resume, no changed-only, no retry by run id, no lock)
    enabled: bool = True


class Config(StrictModel):
    target: Target = Target()
    job: Job
    columns: dict[str, ColumnSpec] = Field(min_length=1)
    input: InputOptions = InputOptions()
    send: SendOptions = SendOptions()
    report: ReportOptions = ReportOptions()
    state: StateOptions = StateOptions()
    #: webhooks told about each run (``importer.notify``; docs/notify.md)
    notify: list[NotifyHook] = Field(default_factory=list)
    openapi: OpenApiOptions = OpenApiOptions()
    verify: VerifyOptions = VerifyOptions()
    guard: GuardOptions = GuardOptions()

    @model_validator(mode="before")
    @classmethod
    def _event_defaults(cls, data: Any) -> Any:
        return with_event_defaults(data)

    @property
    def job_name(self) -> str:
        return self.job.name or "job"

    def source_columns(self) -> list[str]:
        """Distinct source columns the job reads, in config order (``event_name_from`` last)."""
        out: list[str] = []
        for spec in self.columns.values():
            if spec.source is not None and spec.source not in out:
                out.append(spec.source)
        if self.job.event_name_from and self.job.event_name_from not in out:
            out.append(self.job.event_name_from)
        return out

    def profile(self) -> Profile:
        return self.target.profile()


def with_event_defaults(data: Any) -> Any:
    """``create_time`` of an event is a datetime unless the config says otherwise."""
    if not isinstance(data, dict):
        return data
    job, columns = data.get("job"), data.get("columns")
    if not (isinstance(job, dict) and job.get("kind") == "event"):
        return data
    if not (isinstance(columns, dict) and CREATE_TIME in columns):
        return data
    spec = columns[CREATE_TIME]
    if isinstance(spec, str):
        spec = {"from": spec, "type": "datetime"}
    elif isinstance(spec, dict) and "type" not in spec:
        spec = {**spec, "type": "datetime"}
    else:
        return data
    return {**data, "columns": {**columns, CREATE_TIME: spec}}


def check_columns(config: Config, source_path: str, header: list[str]) -> None:
    """Refuse a file whose header lacks a column the config reads; name the closest ones."""
    present = set(header)
    problems: list[ConfigProblem] = []
    for column in config.source_columns():
        if column in present:
            continue
        stripped = [h for h in header if h.strip() == column.strip()]
        if stripped:
            hint: str | None = f"did you mean '{stripped[0]}'? (spaces differ)"
        else:
            hint = did_you_mean(column, header)
        if hint is None:
            shown = ", ".join(header[:20]) + (", ..." if len(header) > 20 else "")
            hint = f"the file's columns are: {shown}" if header else "the file has no header"
        for path in _paths_reading(config, column):
            problems.append(ConfigProblem(path, f"column '{column}' is not in {source_path}", hint))
    if problems:
        raise ConfigError(problems)


def sending_problems(config: Config) -> tuple[str, list[ConfigProblem]]:
    """What refuses a run that sends, besides its files' columns: ``job.event_name`` still
    the placeholder ``init`` wrote (a ``--debug`` run accepts it), and the SECRET missing or
    malformed in ``$<target.secret_env>``. Returns the SECRET and those problems; a problem
    never quotes the SECRET."""
    problems: list[ConfigProblem] = []
    if not config.target.debug and config.job.event_name == EVENT_NAME_PLACEHOLDER:
        problems.append(
            ConfigProblem(
                "job.event_name",
                f"still the placeholder '{EVENT_NAME_PLACEHOLDER}' that `dmimport init` wrote",
                hint="set the platform's event name (e.g. order_detail); "
                "--debug and validate accept it",
            )
        )
    name = config.target.secret_env
    secret = os.environ.get(name, "")
    if secret.strip() and any(ord(c) < 0x20 or ord(c) == 0x7F for c in secret):
        problems.append(
            ConfigProblem(
                "target.secret_env",
                f"environment variable {name} contains a control character "
                "(a line break or tab, often from a Windows env file)",
                hint="remove it; a SECRET is a UUID-like string",
            )
        )
    elif secret.strip() and (problem := header_problem(secret)) is not None:
        # sent anyway, it failed every row with UnicodeEncodeError, and the run ended
        # as "the platform failed 200 rows in a row"
        problems.append(
            ConfigProblem(
                "target.secret_env",
                f"environment variable {name} contains {problem}",
                hint="a SECRET is plain ASCII; a dash or quote pasted from a document "
                "or a chat is often a look-alike (an em dash for '-'): retype it",
            )
        )
    elif not secret.strip():
        problems.append(
            ConfigProblem(
                "target.secret_env",
                f"environment variable {name} is not set (it must hold the SECRET)",
                hint=f"export {name}=<your SECRET> before running",
            )
        )
    return secret, problems


def _paths_reading(config: Config, column: str) -> list[str]:
    paths = [f"columns.{name}.from" for name, s in config.columns.items() if s.source == column]
    if config.job.event_name_from == column:
        paths.append("job.event_name_from")
    return paths[:1]
