"""The server's checks as pure functions: headers first (``check_auth``), then body (``check``).

The order is part of the contract (docs/sandbox.md lists it) and the importer's local checker
mirrors it, so the first failing check decides the errcode:

headers
  1. ``X-Secret`` missing or empty -> 10003
  2. secret unknown -> 20000
  3. signature missing or wrong, timestamp unparsable or outside the window -> 20004

body (``check``)
  1. not UTF-8 JSON, not an object, NaN/Infinity, duplicate keys -> 10001
  2. event: ``eventName`` missing, not a string, empty or whitespace -> 20003
  3. ``properties`` missing, not an object, or ``{}`` -> 10004
  4. no primary-key property present; event: ``event_id`` absent -> 20001
  5. every primary-key value empty (null, "", whitespace); event: ``event_id`` empty -> 20002
  6. a value not of its declared type (null is always accepted) -> 10002
     (on ``event``, ``create_time`` is left to step 7)
  7. event: ``create_time`` absent or not ``YYYY-MM-DD HH:MM:SS`` -> 20003;
     any call: a string value (or the eventName) longer than ``max_value_length`` -> 20003
"""

from __future__ import annotations

import hmac
import json
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..errcodes import ErrCode, default_message
from ..protocol import KINDS, Headers, is_datetime, signature
from .schema import Schema

OK_MESSAGE = default_message(ErrCode.OK)
JSON_MESSAGE = default_message(ErrCode.JSON_FORMAT)

Result = tuple[ErrCode, str, dict[str, Any] | None]

DEFAULT_HEADERS = Headers()


class _Invalid(ValueError):
    """Raised inside the JSON decoder for input the server refuses."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Invalid("duplicate key")
    return obj


def _constant(name: str) -> Any:
    raise _Invalid(f"{name} is not JSON")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 overflows to inf: as bad as Infinity
        raise _Invalid("number out of range")
    return value


_decoder = json.JSONDecoder(
    object_pairs_hook=_pairs, parse_constant=_constant, parse_float=_float, strict=True
)


def parse_json(body: bytes) -> Any:
    """Decode a request body strictly, or raise ValueError (any reason for 10001)."""
    try:
        text = body.decode("utf-8")
        obj = _decoder.decode(text)
        if "\\u" in text:
            # an escaped lone surrogate decodes to a str that is not Unicode text
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeError, RecursionError) as exc:
        raise ValueError(str(exc) or type(exc).__name__) from None
    return obj


def is_empty(value: Any) -> bool:
    """No value: null, "" or whitespace only."""
    return value is None or (isinstance(value, str) and not value.strip())


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": _is_int,
    "number": _is_number,
    "boolean": lambda v: isinstance(v, bool),
    "datetime": is_datetime,
}


def _fail(code: ErrCode, detail: str, obj: dict[str, Any] | None) -> Result:
    return code, f"{code.description}: {detail}", obj


def check(kind: str, body: bytes, schema: Schema) -> Result:
    """``(errcode, errmsg, parsed)`` for one request body of call ``kind``.

    ``parsed`` is the decoded body when it is a JSON object (whatever the code), else None.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown call {kind!r}; expected one of {', '.join(KINDS)}")
    # 1. JSON object
    try:
        obj = parse_json(body)
    except ValueError:
        return ErrCode.JSON_FORMAT, JSON_MESSAGE, None
    if not isinstance(obj, dict):
        return ErrCode.JSON_FORMAT, JSON_MESSAGE, None
    is_event = kind == "event"

    # 2. eventName
    name = obj.get("eventName")
    if is_event and (not isinstance(name, str) or not name.strip()):
        return _fail(ErrCode.DATA_CHECK_FAILED, "eventName is missing or empty", obj)

    # 3. properties
    props = obj.get("properties")
    if not isinstance(props, dict) or not props:
        what = (
            "missing" if props is None else "not an object" if not isinstance(props, dict) else "{}"
        )
        return _fail(ErrCode.PROPERTIES_EMPTY, f"properties is {what}", obj)

    # 4. primary keys present
    pks = schema.primary_keys
    present = [k for k in pks if k in props]
    if not present:
        return _fail(
            ErrCode.PRIMARY_KEY_MISSING, f"no primary-key property ({', '.join(pks)})", obj
        )
    if is_event and "event_id" not in props:
        return _fail(ErrCode.PRIMARY_KEY_MISSING, "event_id is missing", obj)

    # 5. primary keys non-empty
    if all(is_empty(props[k]) for k in present):
        return _fail(
            ErrCode.PRIMARY_KEY_EMPTY,
            f"every primary-key value is empty ({', '.join(present)})",
            obj,
        )
    if is_event and is_empty(props["event_id"]):
        return _fail(ErrCode.PRIMARY_KEY_EMPTY, "event_id is empty", obj)

    # 6. declared types
    types = schema.properties
    for prop, value in props.items():
        if value is None:
            continue
        declared = types.get(prop)
        if declared is None or (is_event and prop == "create_time"):
            continue
        if not TYPE_CHECKS[declared](value):
            return _fail(ErrCode.INVALID_TYPE, f"property {prop!r} expects {declared}", obj)

    # 7. data checks
    if is_event and not is_datetime(props.get("create_time")):
        detail = (
            "create_time is missing"
            if props.get("create_time") is None
            else "create_time is not YYYY-MM-DD HH:MM:SS"
        )
        return _fail(ErrCode.DATA_CHECK_FAILED, detail, obj)
    limit = schema.max_value_length
    if is_event and isinstance(name, str) and len(name) > limit:
        return _fail(ErrCode.DATA_CHECK_FAILED, f"eventName is longer than {limit} characters", obj)
    for prop, value in props.items():
        if isinstance(value, str) and len(value) > limit:
            return _fail(
                ErrCode.DATA_CHECK_FAILED,
                f"property {prop!r} is longer than {limit} characters",
                obj,
            )
    return ErrCode.OK, OK_MESSAGE, obj


def check_auth(
    headers: Mapping[str, str],
    body: bytes,
    schema: Schema,
    *,
    names: Headers = DEFAULT_HEADERS,
    now_ms: int | None = None,
) -> tuple[ErrCode, str] | None:
    """The header checks; None when they pass. ``headers`` keys are lower-case."""
    secret = headers.get(names.secret.lower(), "")
    if not secret.strip():
        return ErrCode.SECRET_REQUIRED, f"{ErrCode.SECRET_REQUIRED.description}: no {names.secret}"
    if secret not in schema.secrets:
        return ErrCode.AUTH_FAILED, f"{ErrCode.AUTH_FAILED.description}: unknown secret"
    if not schema.verify_signature:
        return None
    bad = ErrCode.SIGNATURE_FAILED
    timestamp = headers.get(names.timestamp.lower(), "")
    if not timestamp.isascii() or not timestamp.isdigit():
        return bad, f"{bad.description}: {names.timestamp} missing or not milliseconds"
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    window_ms = schema.timestamp_window_s * 1000
    if abs(int(timestamp) - now) > window_ms:
        return bad, (
            f"{bad.description}: {names.timestamp} is more than "
            f"{schema.timestamp_window_s:g} s away from the server clock"
        )
    given = headers.get(names.signature.lower(), "")
    if not given:
        return bad, f"{bad.description}: no {names.signature}"
    expected = signature(secret, timestamp, body)
    if not hmac.compare_digest(given.encode("latin-1", "replace"), expected.encode()):
        return bad, f"{bad.description}: signature does not match"
    return None
