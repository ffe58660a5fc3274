"""The wire protocol of the default profile (``shared/api-contract.md``), in one place.

The SDK client, the bulk sender and the sandbox server all build, sign and parse requests with
these functions, so the three cannot drift apart. Everything the contract leaves open (paths,
header names, signing on/off) is a field of ``Profile``, the one object the config chooses
(``Target.profile()``); the sender asks it for the auth headers of a request and for what an
answer's errcode means.

Defined here once, and imported by everything else: the kinds of call (``Kind``, ``KINDS``),
the header names (``Headers``), the default base URL, the wire datetime format.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

from .errcodes import Category, ErrCode

#: The calls of the contract, by their Python names (the JS SDK spells ``user_delete``
#: ``userDelete``).
Kind = Literal["user", "user_delete", "event"]
KINDS: tuple[Kind, ...] = get_args(Kind)

#: The sandbox's default address (``python -m importer.sandbox``): where a config, the SDK and
#: the ``init`` wizard point unless told otherwise.
DEFAULT_BASE_URL = "http://127.0.0.1:8080"

DEFAULT_PATHS: dict[str, str] = {
    "user": "/v1/user",
    "user_delete": "/v1/userDelete",
    "event": "/v1/event",
}


@dataclass(frozen=True)
class Headers:
    """The names of the auth headers (``target.headers`` in the config)."""

    secret: str = "X-Secret"
    timestamp: str = "X-Timestamp"
    signature: str = "X-Signature"


DEFAULT_HEADERS = Headers()


@dataclass(frozen=True)
class Profile:
    """What a deployment may change about the wire format: where each kind of call goes, how
    a request is authenticated, how a record is encoded, what an answer's errcode means."""

    paths: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PATHS))
    headers: Headers = DEFAULT_HEADERS
    sign: bool = True

    def path(self, kind: str, debug: bool) -> str:
        """Path with the contract's ``debug`` query string."""
        return f"{self.paths[kind]}?debug={'true' if debug else 'false'}"

    def auth_headers(
        self, secret: str, body: bytes, timestamp: str | None = None
    ) -> dict[str, str]:
        """The auth headers of one attempt (a fresh timestamp each call, unless given)."""
        ts = timestamp if timestamp is not None else now_ms()
        h = self.headers
        out = {h.secret: secret, h.timestamp: ts}
        if self.sign:
            out[h.signature] = signature(secret, ts, body)
        return out

    def body(self, kind: str, properties: dict[str, Any], event_name: str | None = None) -> bytes:
        """One record's request body (the mapper builds the same bytes, vectorised)."""
        if kind == "event":
            if event_name is None:
                raise ValueError("an event needs its event name")
            return event_body(event_name, properties)
        return user_body(properties)

    def category(self, code: ErrCode) -> Category:
        """What ``code`` means for a run under this profile: retry it, stop, or report it."""
        return code.category


DEFAULT_PROFILE = Profile()


def encode_body(obj: Any) -> bytes:
    """Serialize a body once: compact UTF-8 JSON, non-ASCII kept as is, NaN refused."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def user_body(properties: dict[str, Any]) -> bytes:
    return encode_body({"properties": properties})


def event_body(event_name: str, properties: dict[str, Any]) -> bytes:
    return encode_body({"eventName": event_name, "properties": properties})


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


def auth_headers(
    secret: str, body: bytes, *, profile: Profile = DEFAULT_PROFILE, timestamp: str | None = None
) -> dict[str, str]:
    """The auth headers for one attempt under ``profile`` (``Profile.auth_headers``)."""
    return profile.auth_headers(secret, body, timestamp)


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
