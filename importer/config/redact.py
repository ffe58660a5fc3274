"""Secrets in a config: which keys and values are credentials, and their redaction from
every message."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigProblem
from .base import ENV_NAME, HEADER_NAME

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


def secret_values(data: Mapping[str, Any]) -> tuple[str, ...]:
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
            plain_name = ENV_NAME.match(text) or HEADER_NAME.match(text)
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


def redact_problem(problem: ConfigProblem, secrets: tuple[str, ...]) -> ConfigProblem:
    if not secrets:
        return problem
    hint = redact_secrets(problem.hint, secrets) if problem.hint else problem.hint
    return dataclasses.replace(problem, message=redact_secrets(problem.message, secrets), hint=hint)
