"""Secret redaction, in one place: which names and values are credentials, and their removal
from every text dmimport shows or writes (messages, tracebacks with ``--verbose``, log lines,
report cells, URLs).

The SECRET lives in an environment variable whose name the config chooses
(``target.secret_env``, default ``DMART_SECRET``). The config registers that name here when it
is validated (``watch_env``), so that every later redaction -- down to the CLI's last-resort
handler of a bug -- covers that variable's value, not only ``$DMART_SECRET``'s.

A value is redacted in every form it can take in a message: as is, URL-encoded (``quote``,
``quote_plus``: a URL that carries it in a query string), and, in a URL, any query parameter
named like a credential (``?secret=...``, ``&api_key=...``) whatever its value.

A bottom module: it imports nothing of the package.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

#: what a redacted value is replaced by
MASK = "****"
#: the SECRET's environment variable when the config names none
DEFAULT_SECRET_ENV = "DMART_SECRET"
#: values shorter than this are not redacted (they would blank ordinary words)
MIN_SECRET_CHARS = 4

_SECRET_WORDS = frozenset(
    ("secret", "secrets", "token", "password", "passwd", "pwd", "key", "apikey", "credentials")
)
#: a UUID (the platform's SECRETs are UUIDs) or 16+ letters and digits mixed, as API keys are
_SECRET_LIKE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-|(?=[A-Za-z0-9]*[0-9])(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{16}"
)
#: a URL query parameter: ``?name=value`` or ``&name=value`` (``;`` too)
_QUERY_PARAM = re.compile(r"(?P<lead>[?&;](?P<name>[A-Za-z0-9_.\-]+)=)(?P<value>[^&;#\s'\"<>]*)")

#: the environment variables known to hold a SECRET in this process (``watch_env``)
_watched: set[str] = {DEFAULT_SECRET_ENV}


def looks_like_secret(value: str) -> bool:
    """A value no config should hold and no message may print: a UUID or an API-key-like run
    (``sk_live_abc123def456ghi789``); environment variable names (``DMART_SECRET``) do not."""
    return _SECRET_LIKE.search(value) is not None


def is_secret_key(name: str) -> bool:
    """A key whose value may be a credential (``secret_env``, ``api_key``, ``accessKeySecret``,
    ``password``): its value is never printed in a config excerpt or a URL."""
    words = re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+", name)
    return any(w.lower() in _SECRET_WORDS for w in words)


def watch_env(name: str) -> None:
    """Remember that the environment variable ``name`` holds a SECRET (``target.secret_env``):
    ``env_secrets`` and ``redact`` cover its value from now on, in this process."""
    if name:
        _watched.add(name)


def env_secrets(secret_env: str | None = None) -> tuple[str, ...]:
    """The SECRETs this process holds now: the values of ``$DMART_SECRET``, of every variable
    a config named (``watch_env``) and of ``$<secret_env>``. Longest first."""
    found = set()
    for name in (*_watched, secret_env):
        with contextlib.suppress(ValueError):  # a name no environment can hold
            value = os.environ.get(name or "", "")
            if len(value.strip()) >= MIN_SECRET_CHARS:
                found.add(value)
    return tuple(sorted(found, key=len, reverse=True))


def _forms(secrets: Iterable[str]) -> list[str]:
    """Every way each secret can be written in a message, longest first."""
    forms: set[str] = set()
    for secret in secrets:
        if len(secret) >= MIN_SECRET_CHARS:
            forms.update((secret, quote(secret, safe=""), quote(secret), quote_plus(secret)))
    return sorted(forms, key=len, reverse=True)


class Redactor:
    """Redacts a fixed set of secrets (and the SECRETs the environment holds when it is made)
    from texts: made once where many texts go through it (the sender's answers)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.forms = _forms((*secrets, *env_secrets()))

    def __call__(self, text: str, *, cut_at: int | None = None) -> str:
        """``text`` with every form of every secret replaced by ``****``, and the value of every
        URL query parameter named like a credential (``?secret=...``).

        ``cut_at``: ``text`` was cut after that many characters (a ``... (`` note follows): a
        secret that the cut split is redacted too, from its start left before the cut."""
        if cut_at is not None and text[cut_at:].startswith("... ("):
            head, tail = text[:cut_at], text[cut_at:]
            for form in self.forms:
                k = next((k for k in range(len(form) - 1, 3, -1) if head.endswith(form[:k])), 0)
                if k:
                    text = f"{head[:-k]}{MASK}{tail}"
                    break
        for form in self.forms:
            if form in text:
                text = text.replace(form, MASK)
        if "=" in text:
            text = _QUERY_PARAM.sub(_redact_param, text)
        return text


def redact(text: str, secrets: Iterable[str] = (), *, cut_at: int | None = None) -> str:
    """``text`` with each of ``secrets`` and of ``env_secrets()`` replaced by ``****``, in every
    form (as is, URL-encoded), and the value of every URL query parameter named like a
    credential (``?secret=...``). See ``Redactor``."""
    return Redactor(secrets)(text, cut_at=cut_at)


def _redact_param(m: re.Match[str]) -> str:
    if m.group("value") and is_secret_key(m.group("name")):
        return m.group("lead") + MASK
    return m.group(0)
