"""The SDK: the seed's three calls (``user``, ``userDelete``, ``event``) over ``requests``.

Every call sends one record and returns an ``Outcome``, never raises for anything the network
or the server does:

- ``Response``: the server answered the contract's JSON (any errcode, 0 included);
- ``TransportFailure``: no such answer. ``kind`` says why: ``timeout``, ``connection`` (refused,
  reset or closed before any answer), ``http_status`` (any status but 200: 408, 429 and 5xx
  are retryable, the others are not), ``protocol`` (an answer that broke off, or HTTP 200 whose
  body is not the contract's JSON; retryable) or ``tls`` (certificate verification failed, not
  retryable).

The client never retries: retrying is the sender's policy. The body is serialized once, and
those exact bytes are signed and sent. The SECRET never appears in a repr, a message or a log.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError

from . import protocol
from .errcodes import ErrCode
from .outcomes import Outcome, Response, TransportFailure, TransportKind
from .protocol import DEFAULT_BASE_URL, DEFAULT_PROFILE, KINDS, Profile

#: Environment variable that overrides the SDK's default base URL.
BASE_URL_ENV = "DMART_BASE_URL"

CONTENT_TYPE = "application/json; charset=utf-8"

Callback = Callable[[dict[str, Any]], Any]


def _safe_url(url: str) -> str:
    """The URL without any user:password part."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


class Client:
    """One account's SDK client.

    Calls may run from several threads at once: they share the session's connection pool
    (``pool_maxsize`` connections kept alive; the server sets no cookies, so nothing else in the
    session changes per call).
    """

    def __init__(
        self,
        secret: str,
        base_url: str,
        *,
        debug: bool = False,
        timeout: float = 10.0,
        paths: Mapping[str, str] | None = None,
        profile: Profile | None = None,
        session: requests.Session | None = None,
        verify: bool | str = True,
        pool_maxsize: int = 32,
    ) -> None:
        if not isinstance(secret, str):
            raise TypeError("secret must be a str")
        problem = protocol.header_problem(secret)
        if problem is not None:
            # http.client would refuse it later, quoting it in the error: refuse it here
            raise ValueError(f"the secret contains {problem}")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        profile = profile or DEFAULT_PROFILE
        if paths:
            unknown = sorted(set(paths) - set(KINDS))
            if unknown:
                raise ValueError(f"unknown call(s) in paths: {', '.join(unknown)}")
            profile = Profile(
                paths={**profile.paths, **paths}, headers=profile.headers, sign=profile.sign
            )
        self._secret = secret
        self.base_url = base_url.rstrip("/")
        self.debug = debug
        self.timeout = timeout
        self.profile = profile
        self.verify = verify
        self._own_session = session is None
        if session is None:
            session = requests.Session()
            # no retries (max_retries=0 is requests' default): retrying is the sender's job
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_maxsize)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self.session = session

    def __repr__(self) -> str:
        base_url = self._scrub(_safe_url(self.base_url))
        return f"{type(self).__name__}(base_url={base_url!r}, debug={self.debug}, secret=***)"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the session if this client created it."""
        if self._own_session:
            self.session.close()

    def set_debug(self, flag: bool) -> None:
        """Debug mode: the server checks the format and stores nothing."""
        self.debug = bool(flag)

    def url(self, kind: str) -> str:
        """The full URL of a call, with the ``debug`` query string."""
        return self.base_url + self.profile.path(kind, self.debug)

    # -- the three calls ------------------------------------------------------------------

    def user(self, properties: Mapping[str, Any], callback: Callback | None = None) -> Outcome:
        """Upsert one customer."""
        return self.send("user", self.profile.body("user", dict(properties)), callback)

    def user_delete(
        self, properties: Mapping[str, Any], callback: Callback | None = None
    ) -> Outcome:
        """Delete the customer(s) the primary-key values match."""
        return self.send(
            "user_delete", self.profile.body("user_delete", dict(properties)), callback
        )

    def event(
        self, event_name: str, properties: Mapping[str, Any], callback: Callback | None = None
    ) -> Outcome:
        """Record one event (``properties`` must hold ``event_id`` and ``create_time``)."""
        body = self.profile.body("event", dict(properties), event_name)
        return self.send("event", body, callback)

    def send(self, kind: str, body: bytes, callback: Callback | None = None) -> Outcome:
        """POST an already serialized body to call ``kind``: sign it, send it, classify.

        For senders that serialize once and retry the same bytes; each call signs afresh.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown call {kind!r}")
        outcome = self._post(self.url(kind), body)
        if callback is not None:
            callback(outcome.as_dict())
        return outcome

    # -- transport ---------------------------------------------------------------------------

    def _post(self, url: str, body: bytes) -> Outcome:
        headers = self.profile.auth_headers(self._secret, body)
        headers["Content-Type"] = CONTENT_TYPE
        start = time.perf_counter()
        try:
            resp = self.session.post(
                url,
                data=body,
                headers=headers,
                timeout=self.timeout,
                verify=self.verify,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            return self._failure(exc, url, (time.perf_counter() - start) * 1000)
        latency = (time.perf_counter() - start) * 1000
        status = resp.status_code
        if status == 200:
            try:
                code, message = protocol.parse_response(resp.content)
            except protocol.ProtocolError as exc:
                return TransportFailure(
                    TransportKind.PROTOCOL,
                    f"HTTP {status} from POST {_safe_url(url)}: {exc}",
                    http_status=status,
                    latency_ms=latency,
                )
            member = ErrCode.lookup(code)
            return Response(
                member if member is not None else code,
                message,
                http_status=status,
                latency_ms=latency,
            )
        return TransportFailure(
            TransportKind.HTTP_STATUS,
            self._scrub(f"HTTP {status} {resp.reason or ''} from POST {_safe_url(url)}").replace(
                "  ", " "
            ),
            http_status=status,
            retry_after=resp.headers.get("Retry-After"),
            latency_ms=latency,
        )

    def _failure(
        self, exc: requests.RequestException, url: str, latency: float
    ) -> TransportFailure:
        if isinstance(exc, requests.exceptions.SSLError):
            text = str(exc)
            kind = (
                TransportKind.TLS
                if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text
                else TransportKind.CONNECTION
            )
        elif isinstance(exc, requests.Timeout):
            kind = TransportKind.TIMEOUT
        elif isinstance(exc, requests.ConnectionError) and any(
            isinstance(a, ReadTimeoutError) for a in exc.args
        ):
            kind = TransportKind.TIMEOUT  # a read timeout while reading the body
        elif isinstance(
            exc, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError
        ):
            # the answer started and then broke off or cannot be decoded: a truncated response
            kind = TransportKind.PROTOCOL
        else:
            # refused, reset or closed before any answer, and the rest
            kind = TransportKind.CONNECTION
        detail = self._scrub(str(exc))
        if len(detail) > 300:
            detail = detail[:297] + "..."
        message = self._scrub(f"{type(exc).__name__} on POST {_safe_url(url)}")
        if detail:
            message += f": {detail}"
        return TransportFailure(kind, message, latency_ms=latency)

    def _scrub(self, text: str) -> str:
        """``text`` with the SECRET (should an exception quote a header, or the base URL hold
        it) blanked out."""
        if self._secret:
            text = text.replace(self._secret, "***")
        return text


class SDK(Client):
    """The seed's JS-SDK spelling: ``SDK(secret)``, ``setDebug``, ``userDelete``.

    ``base_url`` defaults to ``$DMART_BASE_URL``, else ``DEFAULT_BASE_URL`` (the sandbox).
    """

    def __init__(self, secret: str, base_url: str | None = None, **options: Any) -> None:
        if base_url is None:
            base_url = os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        super().__init__(secret, base_url, **options)

    def setDebug(self, flag: bool) -> None:
        self.set_debug(flag)

    def userDelete(
        self, properties: Mapping[str, Any], callback: Callback | None = None
    ) -> Outcome:
        return self.user_delete(properties, callback)


__all__ = [
    "BASE_URL_ENV",
    "CONTENT_TYPE",
    "DEFAULT_BASE_URL",
    "SDK",
    "Callback",
    "Client",
    "Outcome",
    "Response",
    "TransportFailure",
    "TransportKind",
]
