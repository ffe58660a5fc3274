"""The wire protocol (``shared/api-contract.md``, version 2), in one place.

Two profiles: ``import-api`` (the default), the platform's documented endpoint
``POST {base_url}/api/v1/api/import?secret=SECRET`` with bodies typed by ``type`` (``user``,
``user_batch``, ``event``, ``event_batch``, ``user_delete``); and ``signed``, version 1 of our
contract (per-call paths, HMAC headers, one record per request).

The SDK client, the bulk sender and the sandbox server all build, sign and parse requests with
these functions, so the three cannot drift apart. Everything the contract leaves open (the
protocol, paths, header names, signing on/off, the debug parameter) is a field of ``Profile``,
the one object the config chooses (``Target.profile()``); the sender asks it for a request's
target and auth headers, for the body of some records, and for what an answer's errcode means.
``answer`` turns any HTTP answer into an ``Outcome`` the same way for the SDK and the sender.

Defined here once, and imported by everything else: the kinds of call (``Kind``, ``KINDS``),
the header names (``Headers``), the default base URL, the wire datetime format.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args
from urllib.parse import quote, urlsplit

from .errcodes import Category, ErrCode
from .outcomes import FATAL_STATUSES, Outcome, Response, TransportFailure, TransportKind

#: The calls of the contract, by their Python names (the JS SDK spells ``user_delete``
#: ``userDelete``).
Kind = Literal["user", "user_delete", "event"]
KINDS: tuple[Kind, ...] = get_args(Kind)

#: The wire profiles (``target.protocol``): the platform's documented import API (the default)
#: and ``signed``, version 1 of our contract (per-call paths, HMAC headers, one record a request).
ProtocolName = Literal["import-api", "signed"]
PROTOCOLS: tuple[ProtocolName, ...] = get_args(ProtocolName)
DEFAULT_PROTOCOL: ProtocolName = "import-api"

#: The documented host of the import API: where a config and the SDK point unless told
#: otherwise. Plain ``http://`` as documented; prefer ``https://`` where the platform offers it.
DEFAULT_BASE_URL = "http://data-api.dmartech.cn"
#: The sandbox's default port and address (``dmimport sandbox``): what samples, the demo and
#: tests use.
SANDBOX_PORT = 8080
SANDBOX_URL = f"http://127.0.0.1:{SANDBOX_PORT}"
#: The time zone of the platform's day, whose midnight resets the daily quota (the client's
#: ``send.quota_timezone`` and the sandbox's ``quota_timezone`` default to it).
QUOTA_TIMEZONE = "Asia/Shanghai"


def plain_http_host(base_url: str) -> str | None:
    """The host the SECRET would reach unencrypted: ``base_url`` is plain ``http://`` and its
    host is not loopback (``localhost``, 127.0.0.0/8, ``::1``); None otherwise (``https://``,
    loopback). Looks nothing up. Under ``import-api`` the SECRET is in every request's URL, under
    ``signed`` in a header: on plain HTTP anyone on the network path reads it either way."""
    parts = urlsplit(base_url)
    if parts.scheme.lower() != "http":
        return None
    host = (parts.hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass  # a name, not an address
    return parts.hostname or ""


#: ``import-api``: the one endpoint of every call.
IMPORT_PATH = "/api/v1/api/import"
#: ``import-api``: the query parameter that carries the SECRET.
SECRET_PARAM = "secret"
#: the query parameter of debug mode (both profiles; the pages do not say, our decision)
DEBUG_PARAM = "debug"
#: ``signed``: one path per call.
SIGNED_PATHS: dict[str, str] = {
    "user": "/v1/user",
    "user_delete": "/v1/userDelete",
    "event": "/v1/event",
}

#: ``import-api``: the body ``type`` of each call, one record and many (None: no batch form).
BODY_TYPES: dict[str, tuple[str, str | None]] = {
    "user": ("user", "user_batch"),
    "event": ("event", "event_batch"),
    "user_delete": ("user_delete", None),
}


@dataclass(frozen=True)
class Headers:
    """The names of the auth headers of ``signed`` (``target.headers`` in the config)."""

    secret: str = "X-Secret"
    timestamp: str = "X-Timestamp"
    signature: str = "X-Signature"


DEFAULT_HEADERS = Headers()


@dataclass(frozen=True)
class Profile:
    """What a deployment may change about the wire format: which protocol, where each kind of
    call goes, how a request is authenticated, how records are encoded, what an answer's
    errcode means.

    Records travel as *items*: one record's properties as a compact JSON object (the mapper
    builds them, vectorised; ``encode_body(properties)`` gives the same bytes). ``body`` joins
    items into the request body of this profile.
    """

    protocol: ProtocolName = DEFAULT_PROTOCOL
    #: ``import-api``: the endpoint path
    import_path: str = IMPORT_PATH
    #: ``signed``: the path of each call
    paths: dict[str, str] = field(default_factory=lambda: dict(SIGNED_PATHS))
    headers: Headers = DEFAULT_HEADERS
    sign: bool = True
    debug_param: str = DEBUG_PARAM

    @property
    def signed(self) -> bool:
        return self.protocol == "signed"

    def target(self, kind: str, debug: bool, secret: str) -> str:
        """The request target (path and query) of a call. Under ``import-api`` it carries the
        SECRET: never log it; ``shown_target`` is the form for messages."""
        if self.signed:
            return f"{self.paths[kind]}?{self.debug_param}={'true' if debug else 'false'}"
        query = f"{SECRET_PARAM}={quote(secret, safe='')}"
        if debug:
            query += f"&{self.debug_param}=true"
        return f"{self.import_path}?{query}"

    def shown_target(self, kind: str, debug: bool) -> str:
        """``target`` with the SECRET replaced by ``***``: safe in a message or a log."""
        return self.target(kind, debug, "***").replace("%2A%2A%2A", "***")

    def auth_headers(
        self, secret: str, body: bytes, timestamp: str | None = None
    ) -> dict[str, str]:
        """The auth headers of one attempt (``signed``: a fresh timestamp each call, unless
        given; ``import-api`` has none, the SECRET is in the query)."""
        if not self.signed:
            return {}
        ts = timestamp if timestamp is not None else now_ms()
        h = self.headers
        out = {h.secret: secret, h.timestamp: ts}
        if self.sign:
            out[h.signature] = signature(secret, ts, body)
        return out

    def max_items(self, kind: str) -> int | None:
        """How many records one request of ``kind`` may carry: 1, or None (no fixed limit:
        ``send.batch_rows`` decides)."""
        one_only = self.signed or BODY_TYPES[kind][1] is None
        return 1 if one_only else None

    def body(self, kind: str, items: Sequence[bytes], event: bytes | None = None) -> bytes:
        """The request body carrying ``items`` (encoded records, at least one); ``event`` is
        the event name as a JSON string literal (events only). One item gives the single
        form (``user``), more the batch form (``user_batch``)."""
        if not items:
            raise ValueError("a request carries at least one record")
        if kind == "event" and event is None:
            raise ValueError("an event needs its event name")
        if self.signed:
            if len(items) != 1:
                raise ValueError("the signed profile sends one record per request")
            if kind == "event":
                return b'{"eventName":' + event + b',"properties":' + items[0] + b"}"  # type: ignore[operator]
            return b'{"properties":' + items[0] + b"}"
        single, batch = BODY_TYPES[kind]
        many = len(items) > 1
        if many and batch is None:
            raise ValueError(f"{kind} has no batch form: one record per request")
        head = b'{"type":"' + (batch if many else single).encode() + b'"'  # type: ignore[union-attr]
        if kind == "event":
            head += b',"event":' + event  # type: ignore[operator]
        if many:
            return head + b',"properties":[' + b",".join(items) + b"]}"
        return head + b',"properties":' + items[0] + b"}"

    def record_body(
        self, kind: str, properties: dict[str, Any], event_name: str | None = None
    ) -> bytes:
        """One record's request body from a dict (the SDK; the mapper builds items itself)."""
        event = encode_body(event_name) if event_name is not None else None
        return self.body(kind, [encode_body(properties)], event)

    def batch_body(
        self,
        kind: str,
        records: Sequence[dict[str, Any]],
        event_name: str | None = None,
    ) -> bytes:
        """The request body of several records from dicts (the SDK's ``user_batch``)."""
        event = encode_body(event_name) if event_name is not None else None
        return self.body(kind, [encode_body(r) for r in records], event)

    @property
    def wrong_type(self) -> ErrCode:
        """The errcode of a property value of the wrong declared type: 20003 (data checking
        failed) under ``import-api``, 10002 under ``signed``."""
        return ErrCode.INVALID_TYPE if self.signed else ErrCode.DATA_CHECK_FAILED

    def category(self, code: ErrCode) -> Category:
        """What ``code`` means for a run under this profile: retry it, stop, or report it.
        Under ``import-api`` 10002 says the body's ``type`` is not accepted: fatal."""
        if code is ErrCode.INVALID_TYPE and not self.signed:
            return Category.FATAL
        return code.category

    def advice(self, code: ErrCode, kind: str) -> str | None:
        """What to do about a fatal ``code``, for the abort message (None: nothing to add)."""
        if code is ErrCode.INVALID_TYPE and not self.signed:
            single, batch = BODY_TYPES[kind]
            types = f"'{single}'" + (f" or '{batch}'" if batch else "")
            return (
                f"the platform does not accept the body type {types} from this account or at "
                "this endpoint; if it refused batches, set send.batch_rows: 1 (one record per "
                "request); check target.path and target.protocol"
            )
        return None


DEFAULT_PROFILE = Profile()
SIGNED_PROFILE = Profile(protocol="signed")


def encode_body(obj: Any) -> bytes:
    """Serialize a body once: compact UTF-8 JSON, non-ASCII kept as is, NaN refused."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def now_ms() -> str:
    return str(time.time_ns() // 1_000_000)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """Lowercase hex HMAC-SHA256 over ``timestamp + "\\n" + body`` keyed by the SECRET."""
    return hmac.new(secret.encode(), timestamp.encode() + b"\n" + body, hashlib.sha256).hexdigest()


def header_problem(value: str) -> str | None:
    """Why ``value`` cannot be sent as an HTTP header value, or None.

    Only printable ASCII goes in a header as sent (``latin-1`` on the wire, HMAC over UTF-8 would
    disagree for anything else). The answer names the first offending character by code point
    and 1-based position, never the value: it is the SECRET.
    """
    for position, char in enumerate(value, 1):
        if not " " <= char <= "~":
            return (
                "a character that cannot be sent in an HTTP header "
                f"(U+{ord(char):04X} at position {position})"
            )
    if value != value.strip(" "):
        # a header value's leading and trailing spaces are not part of it (RFC 9110 5.5): the
        # platform would check the signature with another SECRET than the one that made it
        where = "start" if value.startswith(" ") else "end"
        return f"a space at its {where}, which an HTTP header drops"
    return None


class ProtocolError(ValueError):
    """A response body that is not the contract's ``{"errcode": N, "errmsg": "..."}``."""


#: errcodes are stored and reported as 32-bit integers; a number outside is not the contract's
ERRCODE_MIN, ERRCODE_MAX = -(2**31), 2**31 - 1
#: an errmsg is a short sentence; a longer one is cut, so a hostile server cannot make every
#: failed row carry a megabyte into the ledger and the reports
ERRMSG_MAX_CHARS = 1000


class _Ambiguous(Exception):
    """An object names errcode or errmsg twice (a decoder keeps either one)."""


def _contract_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        for key in ("errcode", "errmsg"):
            if sum(1 for k, _ in pairs if k == key) > 1:
                raise _Ambiguous(key)
    return obj


def parse_response(body: bytes) -> tuple[int, str]:
    """``(errcode, errmsg)`` from a response body, or ProtocolError.

    Whatever the server sends, the only exception is ProtocolError: a body nested too deeply
    for the decoder or an errcode outside 32 bits is not the contract's JSON. An unpaired
    surrogate in errmsg becomes ``?`` (a UTF-8 report cannot hold it); an errmsg longer than
    ``ERRMSG_MAX_CHARS`` is cut.
    """
    try:
        obj = json.loads(body, object_pairs_hook=_contract_object)
    except _Ambiguous as exc:
        raise ProtocolError(f"response JSON has {exc.args[0]} twice") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"response is not JSON ({len(body)} bytes)") from exc
    except RecursionError:
        raise ProtocolError(f"response JSON is nested too deeply ({len(body)} bytes)") from None
    if not isinstance(obj, dict):
        raise ProtocolError("response JSON is not an object")
    code = obj.get("errcode")
    if not isinstance(code, int) or isinstance(code, bool):
        raise ProtocolError("response has no integer errcode")
    if not ERRCODE_MIN <= code <= ERRCODE_MAX:
        shown = str(code)
        if len(shown) > 24:
            shown = shown[:20] + "..."
        raise ProtocolError(f"response errcode {shown} is out of range (32-bit integer)")
    msg = obj.get("errmsg")
    if msg is None:
        msg = ""
    elif not isinstance(msg, str):
        try:
            msg = str(msg)
        except RecursionError:
            raise ProtocolError("response errmsg is nested too deeply") from None
    try:
        msg.encode()
    except UnicodeEncodeError:
        # a lone surrogate (``"\\ud800"``) cannot be written to a UTF-8 report; the errcode
        # still says what happened, so only the text is mended
        msg = msg.encode("utf-8", "replace").decode()
    if len(msg) > ERRMSG_MAX_CHARS:
        msg = f"{msg[:ERRMSG_MAX_CHARS]}... ({len(msg)} characters)"
    return code, msg


#: HTTP statuses that never carry an answer for the records: too big, too many
TOO_LARGE, TOO_MANY = 413, 429


def answer(
    status: int,
    payload: bytes,
    retry_after: str | None = None,
    latency_ms: float = 0.0,
    parsed: tuple[ErrCode | int, str] | None = None,
) -> Outcome:
    """What one HTTP answer means, for the SDK and the sender alike.

    - 413 (the request is too big) and 429 (a rate or quota limit; ``Retry-After`` kept) are
      judged by their status, whatever the body;
    - otherwise a body that is the contract's JSON is classified by its errcode, whatever the
      status: the documented error answers come with HTTP 404;
    - otherwise HTTP 200 is a ``protocol`` failure (retryable), and any other status an
      ``http_status`` failure (``TransportFailure.fatal`` for 3xx and 401/403/404/405/407: a
      wrong URL, path or proxy; retryable for 408, 429 and 5xx).

    ``parsed`` is the ``(errcode, errmsg)`` of ``payload`` when the caller already has it.
    """
    if status not in (TOO_LARGE, TOO_MANY):
        if parsed is None:
            try:
                code, msg = parse_response(payload)
            except ProtocolError as exc:
                if status == 200:
                    return TransportFailure(
                        TransportKind.PROTOCOL, str(exc), status, None, latency_ms
                    )
            else:
                member = ErrCode.lookup(code)
                parsed = (member if member is not None else code, msg)
        if parsed is not None:
            return Response(parsed[0], parsed[1], status, latency_ms)
    what = f"HTTP {status}"
    if status in FATAL_STATUSES:
        what += " without the platform's errcode answer"
    return TransportFailure(TransportKind.HTTP_STATUS, what, status, retry_after, latency_ms)


def response_body(code: ErrCode | int, message: str | None = None) -> bytes:
    """A server's response body (used by the sandbox)."""
    from .errcodes import default_message

    if message is None:
        member = ErrCode.lookup(int(code))
        message = default_message(member) if member is not None else "unknown"
    return encode_body({"errcode": int(code), "errmsg": message})


#: The create_time / datetime wire format: ``YYYY-MM-DD HH:MM:SS``.
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
DATETIME_PATTERN = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$"

_DATETIME_RE = re.compile(DATETIME_PATTERN, re.ASCII)


def is_datetime(value: object) -> bool:
    """True for a string in the wire datetime format that names a real date and time."""
    if not isinstance(value, str) or _DATETIME_RE.fullmatch(value) is None:
        return False
    try:
        # the pattern already fixed the layout; fromisoformat checks the calendar, fast
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True
