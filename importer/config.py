"""The job config: one YAML file that says where to send, what kind of rows, and how columns map.

``load_config(path)`` reads and validates it; ``parse_config(data)`` validates a dict already in
memory. Both collect **every** problem and raise one ``ConfigError`` whose ``problems`` each
carry the dotted key path (``columns.age.type``), a plain message, a hint when there is a likely
fix ("did you mean 'concurrency'?") and the YAML line when the file is known.

Validation happens in three layers, and all three always run so nothing hides behind an
earlier problem:

1. pydantic checks each key's type and range (``extra="forbid"`` everywhere, so a typo is an
   error, never silently ignored);
2. cross-field rules that span sections (primary keys must be columns, events need
   ``event_id`` and ``create_time``, ...) run on the raw dict, defensively, so they are
   reported next to the type errors;
3. constants (``value``) and ``default`` values are run through the mapper's own converters,
   so a default that the mapper would reject is a config error, not a million row errors.

The models are frozen; the mapper, loader and sender read them, never change them.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import difflib
import os
import re
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .errors import ConfigError, ConfigProblem
from .protocol import DEFAULT_PATHS, Headers, Profile

PropertyType = Literal["string", "integer", "number", "boolean", "datetime"]
Transform = Literal["strip", "lower", "upper", "digits", "collapse_spaces", "nfkc"]
Kind = Literal["user", "user_delete", "event"]

#: Properties every ``event`` call needs (seed: "event_id" and "create_time").
EVENT_ID = "event_id"
CREATE_TIME = "create_time"

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_JOB_NAME = re.compile(r"^\w[\w.-]*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


_SECRET_WORDS = frozenset(
    ("secret", "secrets", "token", "password", "passwd", "pwd", "key", "apikey", "credentials")
)
#: a UUID (the platform's SECRETs are UUIDs) or 16+ letters and digits mixed, as API keys are
_SECRET_LIKE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-|(?=[A-Za-z0-9]*[0-9])(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{16}"
)


def looks_like_secret(value: str) -> bool:
    """A value no config should hold and no message may print: a UUID or an API-key-like run
    (``sk_live_abc123def456ghi789``); environment variable names (``DMART_SECRET``) do not."""
    return _SECRET_LIKE.search(value) is not None


def is_secret_key(name: str) -> bool:
    """A key whose value may be a credential (``secret_env``, ``api_key``, ``accessKeySecret``,
    ``password``): its value is never printed in a config excerpt."""
    words = re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+", name)
    return any(w.lower() in _SECRET_WORDS for w in words)


def _problem(message: str, hint: str | None = None) -> PydanticCustomError:
    """A validator error that keeps its own message and hint through pydantic. A value quoted
    in them has its lone surrogates escaped: pydantic cannot render them (UnicodeEncodeError)."""
    hint = None if hint is None else _escaped(hint)
    return PydanticCustomError(
        "dmimport", "{message}", {"message": _escaped(message), "hint": hint}
    )


def _did_you_mean(word: str, choices: Iterator[str] | list[str] | set[str]) -> str | None:
    pool = list(choices)
    lowered = {c.casefold(): c for c in pool}
    if word.casefold() in lowered:
        return f"did you mean '{lowered[word.casefold()]}'?"
    swapped = [c for c in pool if sorted(c.casefold()) == sorted(word.casefold())]
    if swapped:  # 'form' is a typo of 'from' far more often than of 'format'
        return f"did you mean '{swapped[0]}'?"
    close = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class PathsConfig(_Model):
    user: str = DEFAULT_PATHS["user"]
    user_delete: str = DEFAULT_PATHS["user_delete"]
    event: str = DEFAULT_PATHS["event"]

    @field_validator("user", "user_delete", "event")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/"):
            raise _problem(f"a path must start with '/', got '{v}'", f"write '/{v}'")
        for position, char in enumerate(v, 1):
            # it goes in the request line as is: a space, a line break or a non-ASCII
            # character would fail (or split) every request
            if not "!" <= char <= "~":
                raise _problem(
                    f"the path contains a character that cannot be sent in a request line "
                    f"(U+{ord(char):04X} at position {position})",
                    "percent-encode it (a space is %20, 用 is %E7%94%A8)",
                )
        return v


class HeaderNames(_Model):
    secret: str = "X-Secret"
    timestamp: str = "X-Timestamp"
    signature: str = "X-Signature"

    @field_validator("secret", "timestamp", "signature")
    @classmethod
    def _token(cls, v: str) -> str:
        if not _HEADER_NAME.match(v):
            raise _problem(f"'{v}' is not a valid HTTP header name")
        return v


class Target(_Model):
    base_url: str = "http://127.0.0.1:8080"
    secret_env: str = "DMART_SECRET"
    debug: bool = False
    timeout_s: float = Field(default=10.0, gt=0)
    paths: PathsConfig = PathsConfig()
    headers: HeaderNames = HeaderNames()
    sign: bool = True
    tls_verify: bool = True
    ca_file: str | None = None

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise _problem(
                f"expected an http:// or https:// URL, got '{v}'", "e.g. https://api.example.com"
            )
        if parts.query or parts.fragment:
            raise _problem("base_url must not carry a query string or fragment")
        return v.rstrip("/")

    @field_validator("secret_env")
    @classmethod
    def _env_name(cls, v: str) -> str:
        # neither message quotes the value: it may be the SECRET pasted in the wrong place
        if looks_like_secret(v):
            raise _problem(
                "secret_env looks like the SECRET itself; it must be the NAME of an environment "
                "variable",
                "put the SECRET in an environment variable (e.g. DMART_SECRET) and name it here",
            )
        if not _ENV_NAME.match(v):
            raise _problem(
                "secret_env is not an environment variable name (letters, digits and '_', "
                "not starting with a digit)",
                "e.g. DMART_SECRET",
            )
        return v

    @model_validator(mode="after")
    def _tls(self) -> Target:
        if self.ca_file is not None and not self.tls_verify:
            raise _problem(
                "ca_file is set but tls_verify is false, so it would be ignored",
                "remove one of the two",
            )
        return self

    def profile(self) -> Profile:
        """The wire-format profile (paths, header names, signing) for protocol functions."""
        return Profile(
            paths=self.paths.model_dump(),
            headers=Headers(**self.headers.model_dump()),
            sign=self.sign,
        )


class Job(_Model):
    name: str | None = None
    kind: Kind
    event_name: str | None = None
    event_name_from: str | None = None
    primary_keys: list[str] = Field(min_length=1)
    max_value_length: int = Field(default=1024, ge=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not _JOB_NAME.match(v):
            raise _problem(
                f"job name '{v}' is not usable as a directory name",
                "use letters, digits, '.', '_' or '-'",
            )
        return v

    @field_validator("event_name", "event_name_from")
    @classmethod
    def _not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise _problem("must not be empty")
        return v

    @field_validator("primary_keys")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        seen = [k for i, k in enumerate(v) if k in v[:i]]
        if seen:
            raise _problem(f"primary key '{seen[0]}' is listed twice")
        return v


def _scalar_to_text(v: Any) -> Any:
    """YAML scalars -> the text a cell would hold (``true`` -> 'true', ``12`` -> '12')."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, date):
        return v.isoformat()
    return v


def strptime_format_problem(fmt: str) -> str | None:
    """Why ``fmt`` is not a usable ``datetime.strptime`` format, or None when it is."""
    if "%" not in fmt:
        return f"format '{fmt}' has no %-directives"
    try:
        datetime.strptime("", fmt)
    except ValueError as exc:
        text = str(exc)
        # An empty string never matches a real format: that error means the format compiled.
        return None if text.startswith("time data") else text
    return None


class ColumnSpec(_Model):
    """How one property is filled: from a source column (``from``) or a constant (``value``)."""

    source: str | None = Field(default=None, alias="from")
    value: str | None = None
    type: PropertyType = "string"
    format: str | None = None
    timezone: str | None = None
    default: str | None = None
    transform: list[Transform] = []
    pattern: str | None = None
    required: bool = False

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str | int | float) and not isinstance(data, bool):
            return {"from": _scalar_to_text(data)}
        if isinstance(data, dict):
            data = dict(data)
            for key in ("value", "default"):
                if key in data:
                    data[key] = _scalar_to_text(data[key])
            if isinstance(data.get("from"), int | float) and not isinstance(data["from"], bool):
                data["from"] = _scalar_to_text(data["from"])
        return data

    @field_validator("source", "value", "default", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        if isinstance(v, list | dict):
            raise _problem("expected a single value, got a " + type(v).__name__)
        return v

    @field_validator("source")
    @classmethod
    def _source(cls, v: str | None) -> str | None:
        if v is not None and v == "":
            raise _problem("column name must not be empty")
        return v

    @field_validator("format")
    @classmethod
    def _format(cls, v: str | None) -> str | None:
        if v is not None:
            why = strptime_format_problem(v)
            if why:
                raise _problem(
                    f"invalid datetime format: {why}", "see Python's strptime directives"
                )
        return v

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise _problem(
                f"unknown time zone '{v}'",
                _did_you_mean(v, available_timezones()) or "use an IANA name like Asia/Shanghai",
            ) from None
        return v

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            re.compile(v)
        except re.error as exc:
            raise _problem(f"invalid regular expression: {exc}") from None
        why = _re2_problem(v)
        if why:
            raise _problem(
                f"regular expression not supported: {why}",
                "patterns use RE2 syntax: no look-around or back-references",
            )
        return v

    @model_validator(mode="after")
    def _combination(self) -> ColumnSpec:
        if (self.source is None) == (self.value is None):
            raise _problem(
                "set exactly one of 'from' (a source column) or 'value' (a constant)",
                None if self.source else "e.g. {from: 手机号} or {value: crm}",
            )
        if self.value is not None:
            used = [k for k in ("default", "pattern") if getattr(self, k) is not None]
            used += ["transform"] if self.transform else []
            used += ["required"] if self.required else []
            if used:
                raise _problem(
                    f"'{used[0]}' only applies to a column read from the file ('from'), "
                    "not to a constant 'value'"
                )
        if self.type != "datetime":
            for key in ("format", "timezone"):
                if getattr(self, key) is not None:
                    raise _problem(
                        f"'{key}' only applies to type datetime, this column is {self.type}",
                        "add type: datetime",
                    )
        return self


def _re2_problem(pattern: str) -> str | None:
    """The mapper matches with pyarrow (RE2); a Python-only regex must fail here, not later."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        pc.match_substring_regex(pa.array([""]), f"^(?:{pattern})$")
    except pa.ArrowInvalid as exc:
        return str(exc).removeprefix("Invalid regular expression: ")
    return None


class InputOptions(_Model):
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
                raise _problem(f"unknown encoding '{v}'", "e.g. utf-8, gb18030, auto") from None
        return v

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, v: str | None) -> str | None:
        if v is not None and len(v) != 1:
            raise _problem(f"delimiter must be one character, got '{v}'", r"e.g. ',' or '\t'")
        return v

    @field_validator("escape_char")
    @classmethod
    def _escape_char(cls, v: str | None) -> str | None:
        if v is not None and (len(v) != 1 or v in '"\r\n'):
            raise _problem(
                f"escape_char must be one character other than a quote or a newline, got {v!r}",
                r"e.g. '\\' (a backslash)",
            )
        return v


class RetryOptions(_Model):
    max_attempts: int = Field(default=5, ge=1, le=100)
    initial_backoff_s: float = Field(default=0.5, ge=0)
    max_backoff_s: float = Field(default=30.0, ge=0)
    retry_after_cap_s: float = Field(default=120.0, ge=0)


class SendOptions(_Model):
    concurrency: int = Field(default=32, ge=1, le=1024)
    rate_limit: float | None = Field(default=None, gt=0)
    retry: RetryOptions = RetryOptions()
    abort_after_signature_failures: int = Field(default=5, ge=1)
    #: stop the run when this many rows in a row failed after every attempt (0: never)
    abort_after_failed_rows: int = Field(default=200, ge=0)
    #: stop the run when this many requests in a row failed (429, 5xx, no answer), over at
    #: least retry.max_backoff_s (0: never)
    abort_after_failed_requests: int = Field(default=100, ge=0)
    #: sender processes; each owns a share of the customers (see docs/benchmarks.md)
    workers: int = Field(default=1, ge=1, le=64)


class ReportOptions(_Model):
    dir: str = "reports"
    format: Literal["csv", "jsonl"] = "csv"
    mask_pii: bool = False


class StateOptions(_Model):
    #: the SQLite ledger; default ``<report.dir>/state.db`` (never ``--report-dir``)
    path: str | None = None
    #: full: send every valid row (resuming a killed run); incremental: only changed rows
    mode: Literal["full", "incremental"] = "full"
    #: false: no ledger at all (no resume, no changed-only, no retry by run id, no lock)
    enabled: bool = True


class Config(_Model):
    target: Target = Target()
    job: Job
    columns: dict[str, ColumnSpec] = Field(min_length=1)
    input: InputOptions = InputOptions()
    send: SendOptions = SendOptions()
    report: ReportOptions = ReportOptions()
    state: StateOptions = StateOptions()

    @model_validator(mode="before")
    @classmethod
    def _event_defaults(cls, data: Any) -> Any:
        return _with_event_defaults(data)

    @property
    def job_name(self) -> str:
        return self.job.name or "job"

    @property
    def kind(self) -> Kind:
        return self.job.kind

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


def _with_event_defaults(data: Any) -> Any:
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


# --------------------------------------------------------------------------------------------
# Loading, and turning every kind of failure into ConfigProblems


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read, validate and return the config at ``path``; ConfigError lists every problem."""
    path = Path(path)
    source = str(path)
    try:
        with open(path, "rb") as fh:
            # read one byte past the bound: /dev/zero or a wrong multi-GB file stops here
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(
                [
                    ConfigProblem(
                        "",
                        f"the file is larger than {MAX_CONFIG_BYTES // 1024**2} MiB; "
                        "a config is a few KB",
                        "is this the right file?",
                    )
                ],
                source=source,
            )
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ConfigError(_not_utf8(raw, exc), source=source) from None
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {source}", source=source) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc}", source=source) from None
    try:
        data, node = _load_yaml(text)
        lines, duplicates = _key_lines(node)
    except _YamlBomb as exc:
        problem = ConfigProblem("", exc.problem, exc.hint, exc.line)
        raise ConfigError([problem], source=source) from None
    except yaml.reader.ReaderError as exc:
        # a character YAML refuses anywhere (NUL, most control characters): PyYAML's message
        # names an offset into "<unicode string>" over two lines
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise ConfigError(
            [
                ConfigProblem(
                    "",
                    f"character U+{exc.character:04X} at column {column} cannot be in YAML "
                    "(special characters are not allowed)",
                    "remove it; a config is plain text",
                    line,
                )
            ],
            source=source,
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        what = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            [
                ConfigProblem(
                    "",
                    f"YAML syntax error: {what}",
                    "check indentation, colons and quotes around this line",
                    mark.line + 1 if mark is not None else None,
                )
            ],
            source=source,
        ) from None
    return _validate(data, source, overrides, lines, duplicates, default_name=path.stem)


def _not_utf8(raw: bytes, exc: UnicodeDecodeError) -> list[ConfigProblem]:
    """Why a config's bytes are not UTF-8, with the line of the first bad byte."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return [ConfigProblem("", "the file is UTF-16 text (Windows Notepad's 'Unicode')",
                              "save it as UTF-8")]  # fmt: skip
    line = raw.count(b"\n", 0, exc.start) + 1
    return [
        ConfigProblem(
            "",
            f"byte 0x{raw[exc.start]:02x} is not UTF-8",
            "a config is UTF-8 text: save it as UTF-8",
            line,
        )
    ]


#: a config is a few KB; a larger file is refused before YAML reads it
MAX_CONFIG_BYTES = 1024**2
#: mappings and lists inside one another; a config needs four or five levels
MAX_YAML_DEPTH = 100
#: nodes (keys, values, items) of the document once every alias is expanded
MAX_YAML_NODES = 100_000


class _YamlBomb(Exception):
    """A YAML document too deep or too large (after aliases) to be a config."""

    def __init__(self, problem: str, hint: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem = problem
        self.hint = hint
        self.line = mark.line + 1 if mark is not None else None


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with bounds on nesting depth and on the expanded size.

    The composer recurses once per level (a 50,000-deep ``[[[...]]]`` is a RecursionError)
    and an alias is a reference that every later walk expands (``_key_lines``, the deep copy,
    pydantic): nine levels of nine aliases ("billion laughs") are 9**9 nodes. Both are
    refused while composing, before anything walks the document.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0  # expanded nodes composed so far
        self._size: dict[int, int] = {}  # id(node) -> its expanded size, once complete

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = super().compose_node(parent, index)
            size = self._size.get(id(node))
            if size is None:
                raise _YamlBomb(
                    f"alias *{event.anchor} is used inside its own anchor (a structure that "
                    "contains itself)",
                    "write the values out instead of the alias",
                    event.start_mark,
                )
            self._count(size, f"alias *{event.anchor}", event.start_mark)
            return node
        mark = self.peek_event().start_mark
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise _YamlBomb(
                f"nesting deeper than {MAX_YAML_DEPTH} levels",
                "a config needs a few levels; is this the right file?",
                mark,
            )
        before = self._nodes
        node = super().compose_node(parent, index)
        self._depth -= 1
        self._count(1, "this value", mark)
        self._size[id(node)] = self._nodes - before
        return node

    def _count(self, size: int, what: str, mark: Any) -> None:
        self._nodes += size
        if self._nodes > MAX_YAML_NODES:
            raise _YamlBomb(
                f"{what} expands the document past {MAX_YAML_NODES:,} values "
                "(aliases repeating aliases)",
                "a config needs a few hundred; use fewer aliases (*name)",
                mark,
            )


def _load_yaml(text: str) -> tuple[Any, yaml.Node | None]:
    """(the data, the node tree) of one YAML document, within the bounds above."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return data, node


def parse_config(
    data: Mapping[str, Any], source: str = "<config>", overrides: Mapping[str, Any] | None = None
) -> Config:
    """Validate an in-memory config dict (the parsed YAML)."""
    stem = None if source.startswith("<") else Path(source).stem
    return _validate(data, source, overrides, {}, [], default_name=stem)


def _validate(
    data: Any,
    source: str,
    overrides: Mapping[str, Any] | None,
    lines: dict[tuple[str, ...], int],
    duplicates: list[ConfigProblem],
    default_name: str | None,
) -> Config:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            [ConfigProblem("", "the config must be a mapping of sections (target, job, columns)")],
            source=source,
        )
    data = _deep_copy(data)
    problems = list(duplicates)
    overridden: list[tuple[str, ...]] = []
    for dotted, value in (overrides or {}).items():
        why = _apply_override(data, dotted, value)
        if why:
            problems.append(ConfigProblem(dotted, why, "fix the override"))
        overridden.append(tuple(dotted.split(".")))
    job = data.get("job")
    if default_name and isinstance(job, dict) and job.get("name") is None:
        # the file's name stands in for job.name; make it usable as a directory name
        data["job"] = {**job, "name": re.sub(r"[^\w.-]+", "_", default_name).strip("._-") or "job"}

    def line_of(path: tuple[str, ...]) -> int | None:
        if any(path[: len(o)] == o for o in overridden):
            return None
        while path:
            if path in lines:
                return lines[path]
            path = path[:-1]
        return None

    config: Config | None = None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(str(p) for p in err["loc"])
            message, hint = _explain(err, loc, data)
            # Line of the key itself; a missing key points at its parent.
            problems.append(ConfigProblem(".".join(loc), message, hint, line_of(loc)))
    for path, message, hint in _text_problems(data):
        shown = tuple(_escaped(p) for p in path)
        problems.append(ConfigProblem(".".join(shown), message, hint, line_of(path)))
    for path, message, hint in _cross_problems(data):
        problems.append(ConfigProblem(".".join(path), message, hint, line_of(path)))
    for path, message, hint in _constant_problems(_with_event_defaults(data)):
        problems.append(ConfigProblem(".".join(path), message, hint, line_of(path)))
    if problems:
        unique = list(dict.fromkeys(problems))
        unique.sort(key=lambda p: (p.line is None, p.line or 0))
        secrets = _secret_values(data)
        unique = [_redact(p, secrets) for p in unique]
        raise ConfigError(unique, source=source, secrets=secrets)
    assert config is not None
    return config


_SURROGATE = re.compile("[\ud800-\udfff]")


def _escaped(text: str) -> str:
    """``text`` printable and encodable: a lone surrogate becomes ``\\udfaa``."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _text_problems(data: Any) -> list[tuple[tuple[str, ...], str, str | None]]:
    """Every key and string value that is not valid Unicode text: a lone surrogate (YAML's
    ``"\\uDFAA"``, or a command-line override of undecodable bytes) can be neither a column
    name in a file nor sent, so it is refused here rather than fail the run later."""
    out: list[tuple[tuple[str, ...], str, str | None]] = []

    def problem(path: tuple[str, ...], text: str) -> None:
        bad = _escaped(_SURROGATE.findall(text)[0])
        out.append(
            (
                path,
                f"not valid Unicode text: holds a lone surrogate ({bad})",
                "a \\uD800-\\uDFFF escape is half of a pair; write the character itself",
            )
        )

    def walk(value: Any, path: tuple[str, ...]) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                here = (*path, str(k))
                if isinstance(k, str) and _SURROGATE.search(k):
                    problem(here, k)
                walk(v, here)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, (*path, str(i)))
        elif isinstance(value, str) and _SURROGATE.search(value):
            problem(path, value)

    walk(data, ())
    return out


def _secret_values(data: Mapping[str, Any]) -> tuple[str, ...]:
    """Text no message may repeat: values under keys named like a credential (``secret_env``,
    ``password``, ...) unless they are plain names, anything that looks like a SECRET, and the
    SECRET the environment holds now. Longest first, so a longer one is replaced whole."""
    found: set[str] = set()

    def walk(value: Any, secret_key: bool) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(k, False)
                walk(v, secret_key or (isinstance(k, str) and is_secret_key(k)))
        elif isinstance(value, list):
            for v in value:
                walk(v, secret_key)
        elif value is not None and not isinstance(value, bool):
            text = str(value)
            plain_name = _ENV_NAME.match(text) or _HEADER_NAME.match(text)
            if looks_like_secret(text) or (secret_key and not plain_name and len(text) >= 4):
                found.add(text)

    walk(data, False)
    target = data.get("target")
    env = target.get("secret_env") if isinstance(target, Mapping) else None
    found.update(env_secrets(env if isinstance(env, str) else None))
    return tuple(sorted(found, key=len, reverse=True))


def env_secrets(secret_env: str | None = None) -> tuple[str, ...]:
    """The SECRETs this process holds now: ``$DMART_SECRET`` and ``$<secret_env>``."""
    found = []
    for name in ("DMART_SECRET", secret_env):
        with contextlib.suppress(ValueError):  # a name no environment can hold
            value = os.environ.get(name or "", "")
            if len(value.strip()) >= 4:
                found.append(value)
    return tuple(found)


def redact_secrets(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every one of ``secrets`` replaced by ``****``."""
    for secret in secrets:
        text = text.replace(secret, "****")
    return text


def _redact(problem: ConfigProblem, secrets: tuple[str, ...]) -> ConfigProblem:
    if not secrets:
        return problem
    hint = redact_secrets(problem.hint, secrets) if problem.hint else problem.hint
    return dataclasses.replace(problem, message=redact_secrets(problem.message, secrets), hint=hint)


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _apply_override(data: dict[str, Any], dotted: str, value: Any) -> str | None:
    parts = dotted.split(".")
    if not all(parts):
        return f"override key '{dotted}' is not a dotted path"
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            return f"cannot set '{dotted}': '{'.'.join(parts[: i + 1])}' is not a mapping"
        node = child
    node[parts[-1]] = value
    return None


def _key_lines(
    node: yaml.Node | None,
) -> tuple[dict[tuple[str, ...], int], list[ConfigProblem]]:
    """Map every key path to the 1-based line of its key; also report duplicate keys."""
    lines: dict[tuple[str, ...], int] = {}
    duplicates: list[ConfigProblem] = []

    def walk(n: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(n, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in n.value:
                key = str(key_node.value)
                here = (*path, key)
                line = key_node.start_mark.line + 1
                if key in seen and key != "<<":
                    duplicates.append(
                        ConfigProblem(
                            ".".join(here), f"duplicate key '{key}'", "keep only one", line
                        )
                    )
                seen.add(key)
                lines.setdefault(here, line)
                walk(value_node, here)
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                here = (*path, str(i))
                lines.setdefault(here, item.start_mark.line + 1)
                walk(item, here)

    if node is not None:
        walk(node, ())
    return lines, duplicates


_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "list": "a list",
    "dict": "a mapping (key: value)",
    "model": "a mapping (key: value)",
}


def _show(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return str(value)


def _explain(err: Any, loc: tuple[str, ...], data: Any) -> tuple[str, str | None]:
    """A plain-language message and hint for one pydantic error."""
    kind: str = err["type"]
    ctx = err.get("ctx") or {}
    got = err.get("input")
    if kind == "dmimport":
        return ctx["message"], ctx.get("hint")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = _did_you_mean(loc[-1], allowed) if allowed else None
        if hint is None and allowed:
            hint = "allowed keys: " + ", ".join(allowed)
        return f"unknown key '{loc[-1]}'", hint
    if kind == "missing":
        return f"required key '{loc[-1]}' is missing", None
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", ctx.get("expected", ""))
        hint = _did_you_mean(str(got), choices) if isinstance(got, str) else None
        return f"expected one of {', '.join(choices)}, got {_show(got)}", hint
    base = kind.split("_")[0]
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<"}.get(kind, "<=")
        bound = next(iter(ctx.values()))
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return f"must be {op} {bound}, got {_show(got)}", None
    if kind == "too_short":
        if loc == ("job", "primary_keys"):
            return "list at least one primary-key property", "e.g. primary_keys: [phone, email]"
        return f"must have at least {ctx.get('min_length', 1)} entry", None
    if kind in ("int_from_float", "int_parsing", "float_parsing", "bool_parsing") or (
        kind.endswith("_type") and base in _TYPE_WORDS
    ):
        word = _TYPE_WORDS.get(base, base)
        hint = "quote it in YAML to make it text" if base == "string" else None
        if loc[:1] == ("columns",) and base == "model":
            word = "a column name or a mapping like {from: 列名, type: string}"
        return f"expected {word}, got {_show(got)}", hint
    return err["msg"], None


def _allowed_keys(loc: tuple[str, ...]) -> list[str]:
    """Keys allowed at ``loc`` (used for did-you-mean on unknown keys)."""
    model: type[BaseModel] = Config
    rest = list(loc)
    while rest:
        part = rest.pop(0)
        if model is Config and part == "columns":
            if not rest:
                return []
            rest.pop(0)
            model = ColumnSpec
            continue
        field = model.model_fields.get(part)
        ann = field.annotation if field is not None else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return [f.alias or name for name, f in model.model_fields.items()]


def _constant_problems(data: Mapping[str, Any]) -> list[tuple[tuple[str, ...], str, str | None]]:
    """``value`` and ``default`` run through the mapper's converters, for every column that is
    otherwise valid (so they are reported alongside any other problem)."""
    from .map import constant_problems  # the mapper owns conversion; imported late

    columns = data.get("columns")
    if not isinstance(columns, Mapping):
        return []
    specs: dict[str, ColumnSpec] = {}
    for name, raw in columns.items():
        if _text_problems(raw):
            continue  # a lone surrogate is reported already; the converters cannot take it
        try:
            specs[str(name)] = ColumnSpec.model_validate(raw)
        except ValidationError:
            continue
    job = data.get("job")
    limit = job.get("max_value_length") if isinstance(job, Mapping) else None
    return constant_problems(specs, limit if isinstance(limit, int) and limit > 0 else 1024)


def _cross_problems(data: Mapping[str, Any]) -> list[tuple[tuple[str, ...], str, str | None]]:
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
                        _did_you_mean(pk, names) or f"add '{pk}' under columns",
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
                        f"create_time of an event must be datetime, got {_show(spec['type'])}",
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
            hint = _did_you_mean(column, header)
        if hint is None:
            shown = ", ".join(header[:20]) + (", ..." if len(header) > 20 else "")
            hint = f"the file's columns are: {shown}" if header else "the file has no header"
        for path in _paths_reading(config, column):
            problems.append(ConfigProblem(path, f"column '{column}' is not in {source_path}", hint))
    if problems:
        raise ConfigError(problems)


def _paths_reading(config: Config, column: str) -> list[str]:
    paths = [f"columns.{name}.from" for name, s in config.columns.items() if s.source == column]
    if config.job.event_name_from == column:
        paths.append("job.event_name_from")
    return paths[:1]
