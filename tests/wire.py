"""A minimal caller of the sandbox for its own tests: builds bodies and targets with
``importer.protocol`` (either profile), posts them with ``requests``, and classifies the answer
with ``protocol.answer``, so that the sandbox's tests do not depend on the SDK client.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import requests

from importer import protocol
from importer.outcomes import Outcome, Response, TransportFailure, TransportKind
from importer.sandbox import Sandbox

CONTENT_TYPE = "application/json; charset=utf-8"


class Api:
    """One account's calls to a sandbox: ``user``, ``user_batch``, ``event``,
    ``event_batch``, ``user_delete`` (``import-api`` unless ``profile`` says ``signed``), and
    ``post`` for a body built by hand."""

    def __init__(
        self,
        sb: Sandbox | str,
        secret: str | None = None,
        *,
        profile: protocol.Profile = protocol.DEFAULT_PROFILE,
        debug: bool = False,
        timeout: float = 10.0,
    ) -> None:
        self.url = sb if isinstance(sb, str) else sb.url
        if secret is None:
            assert isinstance(sb, Sandbox), "a URL needs its secret"
            secret = sb.secret
        self.secret = secret
        self.profile = profile
        self.debug = debug
        self.timeout = timeout
        self.session = requests.Session()
        #: the last answer's HTTP status and raw body
        self.status = 0
        self.body = b""

    def post(self, body: bytes, kind: str = "user", *, target: str | None = None) -> Outcome:
        """POST ``body`` to ``kind``'s target (or ``target``, a path and query) and classify."""
        path = target or self.profile.target(kind, self.debug, self.secret)
        headers = {"Content-Type": CONTENT_TYPE}
        headers.update(self.profile.auth_headers(self.secret, body))
        start = time.perf_counter()
        try:
            resp = self.session.post(self.url + path, data=body, headers=headers,
                                     timeout=self.timeout)  # fmt: skip
        except requests.Timeout as exc:
            return TransportFailure(TransportKind.TIMEOUT, type(exc).__name__)
        except requests.exceptions.ChunkedEncodingError as exc:
            return TransportFailure(TransportKind.PROTOCOL, type(exc).__name__)
        except requests.ConnectionError as exc:
            return TransportFailure(TransportKind.CONNECTION, type(exc).__name__)
        self.status, self.body = resp.status_code, resp.content
        latency = (time.perf_counter() - start) * 1000
        return protocol.answer(
            resp.status_code, resp.content, resp.headers.get("Retry-After"), latency
        )

    def user(self, properties: dict[str, Any]) -> Outcome:
        return self.post(self.profile.record_body("user", properties), "user")

    def user_delete(self, properties: dict[str, Any]) -> Outcome:
        return self.post(self.profile.record_body("user_delete", properties), "user_delete")

    def event(self, name: str, properties: dict[str, Any]) -> Outcome:
        return self.post(self.profile.record_body("event", properties, name), "event")

    def user_batch(self, items: Sequence[dict[str, Any]]) -> Outcome:
        return self.post(self.profile.batch_body("user", items), "user")

    def event_batch(self, name: str, items: Sequence[dict[str, Any]]) -> Outcome:
        return self.post(self.profile.batch_body("event", items, name), "event")


def code_of(outcome: Outcome) -> int:
    """The errcode of an answer that must be the contract's JSON."""
    assert isinstance(outcome, Response), outcome
    return int(outcome.errcode)


def answer_of(outcome: Outcome) -> tuple[int, str]:
    """``(errcode, errmsg)`` of an answer that must be the contract's JSON."""
    assert isinstance(outcome, Response), outcome
    return int(outcome.errcode), outcome.errmsg
