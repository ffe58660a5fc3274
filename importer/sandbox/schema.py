"""The sandbox's account schema: secrets, primary keys, declared property types, limits, paths.

A schema comes from a YAML file (``--schema PATH``). Without one the sandbox uses
``configs/sandbox-schema.yaml`` when run from a checkout, else the copy packaged beside this
module. Secrets may also come from the environment (``DMART_SANDBOX_SECRETS``, comma-separated)
so that no real secret has to be written into a committed file.

A bad file raises ``ConfigError`` listing every problem at once, each with its key path.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from ..errors import ConfigError, ConfigProblem
from ..opensign import key_problem
from ..protocol import IMPORT_PATH, KINDS, QUOTA_TIMEZONE, SIGNED_PATHS

#: The property types the contract knows.
TYPES = ("string", "integer", "number", "boolean", "datetime")

#: Environment variable with extra accepted secrets, comma-separated.
SECRETS_ENV = "DMART_SANDBOX_SECRETS"

#: The schema packaged with the code (identical to configs/sandbox-schema.yaml).
PACKAGED_SCHEMA = Path(__file__).with_name("default_schema.yaml")

#: The editable copy in a checkout, used when the sandbox starts from the project root.
CHECKOUT_SCHEMA = Path("configs") / "sandbox-schema.yaml"

#: ``batch_errors``: what a batch with a bad item stores (its answer is the first bad item's
#: errcode either way): nothing, or its valid items.
BATCH_ERRORS = ("reject_all", "store_valid")
#: ``unknown_properties`` (``import-api`` only): a property the schema does not declare is
#: refused with 20003, or accepted as given. ``signed`` always accepts it, as version 1 did.
UNKNOWN_PROPERTIES = ("reject", "accept")
#: ``too_big``: past ``max_body_bytes`` / ``max_batch_rows``, answer HTTP 413, or close the
#: connection without an answer (while the body is being sent, when it is still coming).
TOO_BIG = ("answer_413", "close")
DEFAULT_QUOTA_TIMEZONE = QUOTA_TIMEZONE
#: The default ``max_body_bytes``: generous (a 500-row batch of wide rows is well under it).
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024

_KEYS = (
    "secrets",
    "primary_keys",
    "properties",
    "max_value_length",
    "timestamp_window_s",
    "verify_signature",
    "import_path",
    "paths",
    "unknown_properties",
    "batch_errors",
    "max_batch_rows",
    "max_body_bytes",
    "error_http_status",
    "too_big",
    "rate_limit_per_s",
    "daily_quota",
    "quota_timezone",
    "openapi_keys",
    "display_names",
    "masked_fields",
    "searchable",
)

#: The Open API's demo access-key and accessKeySecret (16 bytes: AES-128), like the demo SECRET.
DEMO_ACCESS_KEY = "demo-access-key"
DEMO_ACCESS_SECRET = "0123456789abcdef"


@dataclass(frozen=True)
class Schema:
    """What the sandbox knows about the one account it serves."""

    secrets: tuple[str, ...]
    primary_keys: tuple[str, ...] = ("phone", "email")
    properties: Mapping[str, str] = field(default_factory=dict)
    max_value_length: int = 1024
    timestamp_window_s: float = 300.0
    verify_signature: bool = True
    paths: Mapping[str, str] = field(default_factory=lambda: dict(SIGNED_PATHS))
    #: ``import-api``: the one endpoint of every call
    import_path: str = IMPORT_PATH
    unknown_properties: str = "reject"
    batch_errors: str = "reject_all"
    #: items a batch may carry; more -> HTTP 413 (0: no limit)
    max_batch_rows: int = 0
    #: bytes a request body may have; more -> HTTP 413 (every path)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    #: the HTTP status of an ``import-api`` answer with a non-zero errcode (documented: 404)
    error_http_status: int = 404
    #: past a size limit: ``answer_413`` or ``close`` (the connection, no answer)
    too_big: str = "answer_413"
    #: API requests a second (all paths together; 0: no limit); past it HTTP 429
    rate_limit_per_s: float = 0.0
    #: API requests a day (0: no quota); past it HTTP 429 until the next midnight
    daily_quota: int = 0
    #: the time zone of the account's day (``daily_quota`` and the per-day stats)
    quota_timezone: str = DEFAULT_QUOTA_TIMEZONE
    #: Open API: accepted access-keys and their accessKeySecrets
    openapi_keys: Mapping[str, str] = field(
        default_factory=lambda: {DEMO_ACCESS_KEY: DEMO_ACCESS_SECRET}
    )
    #: Open API: each property's display name (``name``; absent: the property name)
    display_names: Mapping[str, str] = field(default_factory=dict)
    #: Open API: properties shown masked (``138****8000``)
    masked_fields: tuple[str, ...] = ()
    #: Open API: properties usable as ``searchField`` (``searchType: 1``); empty: the primary keys
    searchable: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = _problems(self.to_dict())
        if problems:
            raise ConfigError(problems, source="(sandbox schema)")

    def __repr__(self) -> str:
        # Secrets stay out of reprs, tracebacks and logs.
        return (
            f"Schema(secrets=<{len(self.secrets)} hidden>, primary_keys={self.primary_keys!r}, "
            f"properties={dict(self.properties)!r}, max_value_length={self.max_value_length}, "
            f"timestamp_window_s={self.timestamp_window_s}, "
            f"verify_signature={self.verify_signature}, import_path={self.import_path!r}, "
            f"paths={dict(self.paths)!r}, unknown_properties={self.unknown_properties!r}, "
            f"batch_errors={self.batch_errors!r}, max_batch_rows={self.max_batch_rows}, "
            f"max_body_bytes={self.max_body_bytes}, error_http_status={self.error_http_status}, "
            f"too_big={self.too_big!r}, rate_limit_per_s={self.rate_limit_per_s:g}, "
            f"daily_quota={self.daily_quota}, quota_timezone={self.quota_timezone!r}, "
            f"openapi_keys=<{len(self.openapi_keys)} hidden>, "
            f"display_names={dict(self.display_names)!r}, masked_fields={self.masked_fields!r}, "
            f"searchable={self.searchable!r})"
        )

    def replace(self, **changes: Any) -> Schema:
        """A copy with some keys changed (validated like a file: ``ConfigError``). Keys are
        the YAML file's, e.g. ``schema.replace(batch_errors="store_valid")``."""
        unknown = sorted(set(changes) - set(_KEYS))
        if unknown:
            raise ConfigError(
                [
                    ConfigProblem(k, "unknown key", f"known keys: {', '.join(_KEYS)}")
                    for k in unknown
                ],
                source="(sandbox schema)",
            )
        return Schema.from_dict({**self.to_dict(), **changes}, env={})

    @property
    def secret(self) -> str:
        """The first accepted secret (what a test client should send)."""
        return self.secrets[0]

    def to_dict(self) -> dict[str, Any]:
        """The schema as the YAML file spells it (``Schema.from_dict`` reads it back)."""
        return {
            "secrets": list(self.secrets),
            "primary_keys": list(self.primary_keys),
            "properties": dict(self.properties),
            "max_value_length": self.max_value_length,
            "timestamp_window_s": self.timestamp_window_s,
            "verify_signature": self.verify_signature,
            "import_path": self.import_path,
            "paths": dict(self.paths),
            "unknown_properties": self.unknown_properties,
            "batch_errors": self.batch_errors,
            "max_batch_rows": self.max_batch_rows,
            "max_body_bytes": self.max_body_bytes,
            "error_http_status": self.error_http_status,
            "too_big": self.too_big,
            "rate_limit_per_s": self.rate_limit_per_s,
            "daily_quota": self.daily_quota,
            "quota_timezone": self.quota_timezone,
            "openapi_keys": dict(self.openapi_keys),
            "display_names": dict(self.display_names),
            "masked_fields": list(self.masked_fields),
            "searchable": list(self.searchable),
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    @classmethod
    def from_dict(
        cls,
        data: Any,
        *,
        source: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Schema:
        """Validate ``data`` (a parsed YAML document) and build the schema.

        ``env`` is where ``DMART_SANDBOX_SECRETS`` is looked up (default ``os.environ``; pass
        ``{}`` to ignore the environment).
        """
        if not isinstance(data, dict):
            raise ConfigError(
                [ConfigProblem("", "the schema must be a YAML mapping", "see docs/sandbox.md")],
                source=source,
            )
        extra = env_secrets(os.environ if env is None else env)
        secrets = data.get("secrets", [])
        if isinstance(secrets, list) and extra:
            secrets = [*secrets, *(s for s in extra if s not in secrets)]
        data = {**data, "secrets": secrets}
        problems = _problems(data)
        if problems:
            raise ConfigError(problems, source=source)
        return cls(
            secrets=tuple(data["secrets"]),
            primary_keys=tuple(data.get("primary_keys", ("phone", "email"))),
            properties=dict(data.get("properties") or {}),
            max_value_length=data.get("max_value_length", 1024),
            timestamp_window_s=float(data.get("timestamp_window_s", 300)),
            verify_signature=data.get("verify_signature", True),
            paths={**SIGNED_PATHS, **(data.get("paths") or {})},
            import_path=data.get("import_path", IMPORT_PATH),
            unknown_properties=data.get("unknown_properties", "reject"),
            batch_errors=data.get("batch_errors", "reject_all"),
            max_batch_rows=data.get("max_batch_rows") or 0,
            max_body_bytes=data.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES),
            error_http_status=data.get("error_http_status", 404),
            too_big=data.get("too_big", "answer_413"),
            rate_limit_per_s=float(data.get("rate_limit_per_s") or 0),
            daily_quota=data.get("daily_quota") or 0,
            quota_timezone=data.get("quota_timezone", DEFAULT_QUOTA_TIMEZONE),
            openapi_keys=dict(data.get("openapi_keys", {DEMO_ACCESS_KEY: DEMO_ACCESS_SECRET})),
            display_names=dict(data.get("display_names") or {}),
            masked_fields=tuple(data.get("masked_fields") or ()),
            searchable=tuple(data.get("searchable") or ()),
        )

    @property
    def search_fields(self) -> tuple[str, ...]:
        """The properties the Open API can search by (``searchable``, else the primary keys)."""
        return self.searchable or self.primary_keys

    def display_name(self, prop: str) -> str:
        """A property's display name in the Open API's answers."""
        return self.display_names.get(prop, prop)


def env_secrets(env: Mapping[str, str]) -> list[str]:
    """Secrets listed in ``DMART_SANDBOX_SECRETS`` (comma-separated, blanks ignored)."""
    return [s.strip() for s in env.get(SECRETS_ENV, "").split(",") if s.strip()]


def default_schema_path() -> Path:
    """``configs/sandbox-schema.yaml`` when it exists under the current directory, else the
    packaged copy."""
    return CHECKOUT_SCHEMA if CHECKOUT_SCHEMA.is_file() else PACKAGED_SCHEMA


def load_schema(
    path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
) -> Schema:
    """Read and validate a schema file (``None``: the default schema)."""
    p = Path(path) if path is not None else default_schema_path()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [ConfigProblem("", f"cannot read the schema file: {exc.strerror or exc}")],
            source=str(p),
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(
            [
                ConfigProblem(
                    "", f"not valid YAML: {getattr(exc, 'problem', None) or exc}", line=line
                )
            ],
            source=str(p),
        ) from None
    return Schema.from_dict(data, source=str(p), env=env)


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _problems(data: dict[str, Any]) -> list[ConfigProblem]:
    """Every problem of a schema mapping, each with its key path and a hint."""
    out: list[ConfigProblem] = []
    add = out.append
    for key in data:
        if key not in _KEYS:
            add(ConfigProblem(str(key), "unknown key", f"known keys: {', '.join(_KEYS)}"))

    secrets = data.get("secrets")
    if not isinstance(secrets, list | tuple):
        add(ConfigProblem("secrets", "must be a list of strings"))
    else:
        for i, s in enumerate(secrets):
            if not _is_name(s):
                add(ConfigProblem(f"secrets[{i}]", "must be a non-empty string"))
            elif not s.isascii() or not s.isprintable() or s != s.strip() or "," in s:
                add(
                    ConfigProblem(
                        f"secrets[{i}]", "must be printable ASCII without spaces or commas"
                    )
                )
        if not secrets:
            add(
                ConfigProblem(
                    "secrets",
                    "no secret is accepted",
                    f"list one under secrets: or set {SECRETS_ENV}=secret1,secret2",
                )
            )

    pks = data.get("primary_keys", ["phone", "email"])
    if not isinstance(pks, list | tuple) or not pks:
        add(ConfigProblem("primary_keys", "must be a non-empty list of property names"))
    else:
        for i, k in enumerate(pks):
            if not _is_name(k):
                add(ConfigProblem(f"primary_keys[{i}]", "must be a non-empty string"))
        if len(set(map(str, pks))) != len(pks):
            add(ConfigProblem("primary_keys", "lists a property twice"))

    props = data.get("properties", {})
    if props is None:
        props = {}
    if not isinstance(props, Mapping):
        add(ConfigProblem("properties", "must be a mapping of property name to type"))
    else:
        for name, typ in props.items():
            if not _is_name(name):
                add(
                    ConfigProblem(
                        f"properties[{name!r}]", "property names must be non-empty strings"
                    )
                )
            if typ not in TYPES:
                add(
                    ConfigProblem(
                        f"properties.{name}",
                        f"unknown type {typ!r}",
                        f"use one of: {', '.join(TYPES)}",
                    )
                )

    mvl = data.get("max_value_length", 1024)
    if not isinstance(mvl, int) or isinstance(mvl, bool) or mvl < 1:
        add(ConfigProblem("max_value_length", "must be a positive integer (characters)"))

    tw = data.get("timestamp_window_s", 300)
    if not isinstance(tw, int | float) or isinstance(tw, bool) or tw <= 0:
        add(ConfigProblem("timestamp_window_s", "must be a positive number of seconds"))

    vs = data.get("verify_signature", True)
    if not isinstance(vs, bool):
        add(ConfigProblem("verify_signature", "must be true or false"))

    paths = data.get("paths", {})
    if paths is None:
        paths = {}
    if not isinstance(paths, Mapping):
        add(
            ConfigProblem(
                "paths", "must be a mapping of call to path", f"calls: {', '.join(KINDS)}"
            )
        )
    else:
        for kind, path in paths.items():
            if kind not in KINDS:
                add(ConfigProblem(f"paths.{kind}", "unknown call", f"calls: {', '.join(KINDS)}"))
            if not isinstance(path, str) or not path.startswith("/") or "?" in path or " " in path:
                add(
                    ConfigProblem(
                        f"paths.{kind}", "must be an absolute path like /v1/user (no query)"
                    )
                )
            elif path.startswith("/_sandbox/"):
                add(
                    ConfigProblem(
                        f"paths.{kind}", "/_sandbox/ is reserved for the sandbox's own endpoints"
                    )
                )
        merged = {**SIGNED_PATHS, **{k: v for k, v in paths.items() if isinstance(v, str)}}
        if len(set(merged.values())) != len(merged):
            add(ConfigProblem("paths", "two calls share one path"))
        if data.get("import_path", IMPORT_PATH) in merged.values():
            add(ConfigProblem("import_path", "is also the path of a signed call (paths)"))
    _account_problems(data, add)
    _openapi_problems(data, add)
    return out


def _openapi_problems(data: dict[str, Any], add: Callable[[ConfigProblem], None]) -> None:
    """The problems of the Open API keys (``openapi_keys``, ``display_names``...)."""
    keys = data.get("openapi_keys", {})
    if keys is None or not isinstance(keys, Mapping):
        add(ConfigProblem("openapi_keys", "must be a mapping of access-key to accessKeySecret"))
    else:
        for key, secret in keys.items():
            if not _is_name(key) or not _is_name(secret):
                add(ConfigProblem(f"openapi_keys.{key}", "access-key and secret must be strings"))
            elif (problem := key_problem(secret)) is not None:
                add(ConfigProblem(f"openapi_keys.{key}", f"the accessKeySecret {problem}"))
    names = data.get("display_names", {})
    if names is not None and (
        not isinstance(names, Mapping) or not all(map(_is_name, names.values()))
    ):
        add(ConfigProblem("display_names", "must be a mapping of property to display name"))
    for key in ("masked_fields", "searchable"):
        value = data.get(key, [])
        if value is not None and (
            not isinstance(value, list | tuple) or not all(map(_is_name, value))
        ):
            add(ConfigProblem(key, "must be a list of property names"))


def _account_problems(data: dict[str, Any], add: Callable[[ConfigProblem], None]) -> None:
    """The problems of the import-api and limit keys."""
    ip = data.get("import_path", IMPORT_PATH)
    if not isinstance(ip, str) or not ip.startswith("/") or "?" in ip or " " in ip:
        add(ConfigProblem("import_path", "must be an absolute path like /api/v1/api/import"))
    elif ip.startswith("/_sandbox/"):
        add(ConfigProblem("import_path", "/_sandbox/ is reserved for the sandbox's own endpoints"))
    for key, choices in (
        ("unknown_properties", UNKNOWN_PROPERTIES),
        ("batch_errors", BATCH_ERRORS),
        ("too_big", TOO_BIG),
    ):
        if key in data and data[key] not in choices:
            add(
                ConfigProblem(
                    key, f"unknown value {data[key]!r}", f"use one of: {', '.join(choices)}"
                )
            )
    rows = data.get("max_batch_rows", 0)
    if rows is not None and (not isinstance(rows, int) or isinstance(rows, bool) or rows < 0):
        add(ConfigProblem("max_batch_rows", "must be a whole number of items (0: no limit)"))
    mbb = data.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES)
    if not isinstance(mbb, int) or isinstance(mbb, bool) or mbb < 1:
        add(ConfigProblem("max_body_bytes", "must be a positive number of bytes"))
    status = data.get("error_http_status", 404)
    if (
        not isinstance(status, int)
        or isinstance(status, bool)
        or not (status == 200 or 400 <= status <= 499)
        or status in (413, 429)
    ):
        add(
            ConfigProblem(
                "error_http_status",
                f"must be 200 or a 4xx status other than 413 and 429, got {status!r}",
                "the documented platform answers errors with 404",
            )
        )
    rate = data.get("rate_limit_per_s", 0)
    if rate is not None and (
        not isinstance(rate, int | float) or isinstance(rate, bool) or rate < 0
    ):
        add(
            ConfigProblem("rate_limit_per_s", "must be a number of requests a second (0: no limit)")
        )
    quota = data.get("daily_quota", 0)
    if quota is not None and (not isinstance(quota, int) or isinstance(quota, bool) or quota < 0):
        add(ConfigProblem("daily_quota", "must be a whole number of requests a day (0: no quota)"))
    tz = data.get("quota_timezone", DEFAULT_QUOTA_TIMEZONE)
    try:
        if not isinstance(tz, str) or not tz:
            raise ValueError(tz)
        ZoneInfo(tz)
    except (ValueError, OSError, ZoneInfoNotFoundError):
        add(ConfigProblem("quota_timezone", f"unknown time zone {tz!r}", "e.g. Asia/Shanghai, UTC"))
