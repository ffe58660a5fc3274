"""Secrets in a config: the values of a config no message may repeat (``secret_values``), and
a config problem without them. The rules themselves (what is a credential, how it is
redacted) are ``importer.secrets``'s."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigProblem
from ..secrets import env_secrets, is_secret_key, looks_like_secret, redact
from .base import ENV_NAME, HEADER_NAME


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


def redact_problem(problem: ConfigProblem, secrets: tuple[str, ...]) -> ConfigProblem:
    """``problem`` with ``secrets`` redacted from its message and hint."""
    if not secrets:
        return problem
    hint = redact(problem.hint, secrets) if problem.hint else problem.hint
    return dataclasses.replace(problem, message=redact(problem.message, secrets), hint=hint)
