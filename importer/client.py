"""The SDK: the seed's three calls (``user``, ``userDelete``, ``event``) and the documented
batch calls (``user_batch``, ``event_batch``) over ``requests``, in either wire profile.

- ``protocol="import-api"`` (the default): the platform's documented endpoint, every call a
  ``POST {base_url}/api/v1/api/import?secret=SECRET`` with a body typed by ``type``;
- ``protocol="signed"``: version 1 of our contract (a path per call, HMAC headers, one record
  per request: it has no batch call, and ``user_batch``/``event_batch`` raise ``ValueError``
  before sending anything rather than turning one call into many).

Every call sends one request and returns an ``Outcome``, never raises for anything the network
or the server does. ``protocol.answer`` classifies the answer, as it does for the bulk sender:

- ``Response``: the server answered the contract's JSON (any errcode, 0 included), whatever
  the HTTP status: the platform's documented error answers come with HTTP 404, so a 404 whose
  body is ``{"errcode": 20001, ...}`` is ``Response(20001, ..., http_status=404)``;
- ``TransportFailure``: no such answer. ``kind`` says why: ``timeout``, ``connection`` (refused,
  reset or closed before any answer), ``http_status`` (413, 429, or any status but 200 without
  the contract's JSON, e.g. a 404 from a wrong URL or a proxy: fatal; 408, 429 and 5xx are
  retryable), ``protocol`` (an answer that broke off, or HTTP 200 whose body is not the
  contract's JSON; retryable) or ``tls`` (certificate verification failed, not retryable).

The client never retries: retrying is the sender's policy. The body is serialized once, and
those exact bytes are (under ``signed``) signed and sent.

The SECRET travels in the URL's query string under ``import-api`` (in a header under
``signed``). It appears in no repr, message, ``TransportFailure.message`` or log line:
``Client.url`` shows it as ``***``, failure texts go through ``importer.secrets.Redactor``, and
importing this module puts a redacting filter on the loggers of ``urllib3`` and ``requests``
(``urllib3`` logs each request line, URL included, at DEBUG).

Plain ``http://``: when the SECRET would travel unencrypted to a host that is not loopback
(the documented host is plain ``http://``), constructing the client warns once with a
``PlainHttpWarning`` naming the host. Nothing is sent to find that out (no DNS lookup either).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ReadTimeoutError

from .outcomes import Outcome, Response, TransportFailure, TransportKind
from .protocol import (
    DEFAULT_BASE_URL,
    DEFAULT_PROFILE,
    KINDS,
    PROTOCOLS,
    Profile,
    ProtocolName,
    answer,
    header_problem,
    plain_http_host,
)
from .secrets import Redactor

#: Environment variable that overrides the SDK's default base URL.
BASE_URL_ENV = "DMART_BASE_URL"

CONTENT_TYPE = "application/json; charset=utf-8"

#: how the SECRET is shown in ``Client.url`` and in messages naming the URL
SHOWN_SECRET = "***"

Callback = Callable[[dict[str, Any]], Any]


class PlainHttpWarning(UserWarning):
    """The SECRET would travel unencrypted (``http://``) to a host that is not loopback."""


def _safe_url(url: str) -> str:
    """The URL without any user:password part."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


class _RedactingFilter(logging.Filter):
    """Rewrites each record of the ``urllib3``/``requests`` loggers with every SECRET a client
    of this process holds, and every ``?secret=`` query value, masked."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._redact = Redactor()

    def watch(self, secret: str) -> None:
        with self._lock:
            if secret and secret not in self._secrets:
                self._secrets.add(secret)
                self._redact = Redactor(self._secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a record that cannot be formatted: keep it out rather than raw
            return False
        shown = self._redact(text)
        if shown != text:
            record.msg, record.args = shown, None
        return True


_LOG_FILTER = _RedactingFilter()


def _install_log_filter() -> None:
    """Put the filter on every logger of ``urllib3`` and ``requests`` (a logger's filters see
    only the records made by that logger, so each one gets it)."""
    names = [
        n
        for n in list(logging.Logger.manager.loggerDict)
        if n.split(".")[0] in ("urllib3", "requests")
    ]
    for name in {"urllib3", "urllib3.connectionpool", "urllib3.util.retry", *names}:
        logger = logging.getLogger(name)
        if _LOG_FILTER not in logger.filters:
            logger.addFilter(_LOG_FILTER)


_install_log_filter()


def _profile_for(
    protocol_name: str | None,
    profile: Profile | None,
    path: str | None,
    paths: Mapping[str, str] | None,
) -> Profile:
    if protocol_name is not None and protocol_name not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol_name!r}")
    if profile is None:
        profile = DEFAULT_PROFILE if protocol_name is None else Profile(protocol=protocol_name)
    elif protocol_name is not None and protocol_name != profile.protocol:
        raise ValueError(
            f"protocol={protocol_name!r} contradicts profile.protocol={profile.protocol!r}"
        )
    if path is not None:
        if profile.signed:
            raise ValueError("path= is the import-api endpoint; under signed use paths=")
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        profile = dataclasses.replace(profile, import_path=path)
    if paths:
        if not profile.signed:
            raise ValueError(
                "paths= (a path per call) is for protocol='signed'; import-api has one "
                "endpoint: use path="
            )
        unknown = sorted(set(paths) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown call(s) in paths: {', '.join(unknown)}")
        profile = dataclasses.replace(profile, paths={**profile.paths, **paths})
    return profile


def _records(items: Any, call: str) -> list[dict[str, Any]]:
    if isinstance(items, Mapping | str | bytes):
        raise TypeError(f"{call} takes a list of property dicts, one per record")
    records = [dict(item) for item in items]
    if not records:
        raise ValueError(f"{call} needs at least one record")
    return records


class Client:
    """One account's SDK client.

    ``Client(secret, base_url=None, *, protocol="import-api"|"signed", ...)``; ``base_url``
    defaults to ``$DMART_BASE_URL``, else ``protocol.DEFAULT_BASE_URL`` (the documented host).
    ``profile=`` gives a whole ``Profile`` instead (``protocol=`` must then agree with it);
    ``path=`` changes the import-api endpoint path, ``paths=`` the signed per-call paths.

    Calls may run from several threads at once: they share the session's connection pool
    (``pool_maxsize`` connections kept alive; the server sets no cookies, so nothing else in the
    session changes per call).
    """

    def __init__(
        self,
        secret: str,
        base_url: str | None = None,
        *,
        protocol: ProtocolName | None = None,
        debug: bool = False,
        timeout: float = 10.0,
        path: str | None = None,
        paths: Mapping[str, str] | None = None,
        profile: Profile | None = None,
        session: requests.Session | None = None,
        verify: bool | str = True,
        pool_maxsize: int = 32,
    ) -> None:
        if not isinstance(secret, str):
            raise TypeError("secret must be a str")
        problem = header_problem(secret)
        if problem is not None:
            # a look-alike character pasted from a document: refuse it, naming it, never the value
            raise ValueError(f"the secret contains {problem}")
        if base_url is None:
            base_url = os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        self._secret = secret
        self._redact = Redactor([secret])
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            shown = self._shown_url(base_url)
            raise ValueError(f"base_url must be an http:// or https:// URL, got {shown!r}")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.profile = _profile_for(protocol, profile, path, paths)
        self.base_url = base_url.rstrip("/")
        self.debug = debug
        self.timeout = timeout
        self.verify = verify
        _LOG_FILTER.watch(secret)
        _install_log_filter()  # and on any urllib3 logger made since the import
        self._own_session = session is None
        if session is None:
            session = requests.Session()
            # no retries (max_retries=0 is requests' default): retrying is the sender's job
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_maxsize)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self.session = session
        host = plain_http_host(self.base_url)
        if host is not None and secret:
            where = "in a header" if self.profile.signed else "in every request's URL"
            warnings.warn(
                f"the SECRET travels UNENCRYPTED to {host} (base_url is plain http://, the "
                f"SECRET is {where}): anyone on the network path can read it and the data. "
                "Use https:// where the platform offers it.",
                PlainHttpWarning,
                stacklevel=2,  # the caller's line
            )

    @property
    def protocol(self) -> ProtocolName:
        """The wire profile: ``import-api`` or ``signed``."""
        return self.profile.protocol

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={self._shown_url(self.base_url)!r}, "
            f"protocol={self.protocol!r}, debug={self.debug}, secret={SHOWN_SECRET})"
        )

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
        """The URL a call goes to, as it may be shown: the SECRET as ``***``."""
        if kind not in KINDS:
            raise ValueError(f"unknown call {kind!r}")
        return self._shown_url(self.base_url) + self.profile.shown_target(kind, self.debug)

    # -- the calls --------------------------------------------------------------------------

    def user(self, properties: Mapping[str, Any], callback: Callback | None = None) -> Outcome:
        """Upsert one customer."""
        return self.send("user", self.profile.record_body("user", dict(properties)), callback)

    def user_delete(
        self, properties: Mapping[str, Any], callback: Callback | None = None
    ) -> Outcome:
        """Delete the customer(s) the primary-key values match."""
        body = self.profile.record_body("user_delete", dict(properties))
        return self.send("user_delete", body, callback)

    def event(
        self, event_name: str, properties: Mapping[str, Any], callback: Callback | None = None
    ) -> Outcome:
        """Record one event (``properties`` must hold ``event_id`` and ``create_time``)."""
        body = self.profile.record_body("event", dict(properties), event_name)
        return self.send("event", body, callback)

    def user_batch(
        self, items: Sequence[Mapping[str, Any]], callback: Callback | None = None
    ) -> Outcome:
        """Upsert many customers in one request (``type: user_batch``; a list of one record goes
        as ``user``). One outcome for the whole request: on a row-error errcode, which record
        failed is unknown (the sender bisects; see docs/protocol.md). ``import-api`` only."""
        records = _records(items, "user_batch")
        self._batch_allowed("user_batch")
        return self.send("user", self.profile.batch_body("user", records), callback)

    def event_batch(
        self,
        event_name: str,
        items: Sequence[Mapping[str, Any]],
        callback: Callback | None = None,
    ) -> Outcome:
        """Record many events of one event name in one request (``type: event_batch``; a list
        of one goes as ``event``). ``import-api`` only."""
        records = _records(items, "event_batch")
        self._batch_allowed("event_batch")
        body = self.profile.batch_body("event", records, event_name)
        return self.send("event", body, callback)

    def _batch_allowed(self, call: str) -> None:
        if self.profile.signed:
            raise ValueError(
                f"{call}: the signed profile has no batch call (one record per request); "
                "send each record with its single call, or use protocol='import-api'"
            )

    def send(self, kind: str, body: bytes, callback: Callback | None = None) -> Outcome:
        """POST an already serialized body to call ``kind``: sign it (``signed``), send it,
        classify the answer. For senders that serialize once and retry the same bytes; each
        call signs afresh."""
        if kind not in KINDS:
            raise ValueError(f"unknown call {kind!r}")
        url = self.base_url + self.profile.target(kind, self.debug, self._secret)
        outcome = self._post(url, body, f"POST {self.url(kind)}")
        if callback is not None:
            callback(outcome.as_dict())
        return outcome

    # -- transport ---------------------------------------------------------------------------

    def _post(self, url: str, body: bytes, what: str) -> Outcome:
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
                allow_redirects=False,  # a redirect would carry the SECRET elsewhere
            )
            payload = resp.content
        except (requests.RequestException, Urllib3Error) as exc:
            return self._failure(exc, what, (time.perf_counter() - start) * 1000)
        latency = (time.perf_counter() - start) * 1000
        status = resp.status_code
        outcome = answer(status, payload, resp.headers.get("Retry-After"), latency)
        if isinstance(outcome, TransportFailure):
            # name the URL (SECRET shown as ***) and the status, as the sender's abort does
            reason = self._shown(f" {resp.reason}" if resp.reason else "")
            detail = self._shown(outcome.message.removeprefix(f"HTTP {status}").strip())
            text = f"HTTP {status}{reason} from {what}"
            if detail:
                text += f": {detail}" if status == 200 else f" ({detail})"
            return dataclasses.replace(outcome, message=text)
        shown = self._shown(outcome.errmsg)  # a gateway may echo the request in its message
        return outcome if shown == outcome.errmsg else dataclasses.replace(outcome, errmsg=shown)

    def _failure(self, exc: Exception, what: str, latency: float) -> TransportFailure:
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
        # requests and urllib3 quote the URL ("Max retries exceeded with url: ...?secret=...")
        detail = self._shown(str(exc))
        if len(detail) > 300:
            detail = self._shown(str(exc)[:297]) + "..."
        message = f"{type(exc).__name__} on {what}"
        if detail:
            message += f": {detail}"
        return TransportFailure(kind, message, latency_ms=latency)

    def _shown(self, text: str) -> str:
        """``text`` safe to show: no SECRET in any form (as is, percent-encoded, or as the value
        of a ``?secret=`` parameter)."""
        return self._redact(text)

    def _shown_url(self, url: str) -> str:
        """``url`` safe to show: no user:password part, no SECRET."""
        return self._redact(_safe_url(url))


class SDK(Client):
    """The seed's JS-SDK spelling: ``SDK(secret)``, ``setDebug``, ``userDelete``.

    ``base_url`` defaults to ``$DMART_BASE_URL``, else ``DEFAULT_BASE_URL`` (the documented
    host), as for ``Client``.
    """

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
    "PlainHttpWarning",
    "Profile",
    "Response",
    "TransportFailure",
    "TransportKind",
]
