"""The sandbox's account schema: secrets, primary keys, declared property types, limits, paths.

A schema comes from a YAML file (``--schema PATH``). Without one the sandbox uses
``configs/sandbox-schema.yaml`` when run from a checkout, else the copy packaged beside this
module. Secrets may also come from the environment (``DMART_SANDBOX_SECRETS``, comma-separated)
so that no real secret has to be written into a committed file.

A bad file raises ``ConfigError`` listing every problem at once, each with its key path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, ConfigProblem
from ..protocol import SIGNED_PATHS, KINDS

#: The property types the contract knows.
TYPES = ("string", "integer", "number", "boolean", "datetime")

#: Environment variable with extra accepted secrets, comma-separated.
SECRETS_ENV = "DMART_SANDBOX_SECRETS"

#: The schema packaged with the code (identical to configs/sandbox-schema.yaml).
PACKAGED_SCHEMA = Path(__file__).with_name("default_schema.yaml")

#: The editable copy in a checkout, used when the sandbox starts from the project root.
CHECKOUT_SCHEMA = Path("configs") / "sandbox-schema.yaml"

_KEYS = (
    "secrets",
    "primary_keys",
    "properties",
    "max_value_length",
    "timestamp_window_s",
    "verify_signature",
    "paths",
)


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
            f"verify_signature={self.verify_signature}, paths={dict(self.paths)!r})"
        )

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
            "paths": dict(self.paths),
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
        )


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
    return out
