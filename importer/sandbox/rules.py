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
from ..protocol import BODY_TYPES as PROTOCOL_BODY_TYPES
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


def _problem(code: ErrCode, detail: str) -> tuple[ErrCode, str]:
    return code, f"{code.description}: {detail}"


#: properties an event always has, declared in the schema or not
_EVENT_PROPERTIES = frozenset(("event_id", "create_time"))


def check_item(
    props: Any,
    schema: Schema,
    *,
    event: bool,
    wrong_type: ErrCode = ErrCode.INVALID_TYPE,
    reject_unknown: bool = False,
    event_name: str | None = None,
) -> tuple[ErrCode, str] | None:
    """The checks of one record's ``properties`` (steps 3 to 7); None when it passes.

    ``wrong_type``: the errcode of a value of the wrong declared type (10002 under ``signed``,
    20003 under ``import-api``). ``reject_unknown``: a property the schema does not declare
    is 20003 (``import-api`` with ``unknown_properties: reject``). ``event_name``: an event
    name to hold to ``max_value_length`` at step 7 (``signed``; ``import-api`` checks its
    ``event`` once per request).
    """
    # 3. properties
    if not isinstance(props, dict) or not props:
        what = (
            "missing" if props is None else "not an object" if not isinstance(props, dict) else "{}"
        )
        return _problem(ErrCode.PROPERTIES_EMPTY, f"properties is {what}")

    # 4. primary keys present
    pks = schema.primary_keys
    present = [k for k in pks if k in props]
    if not present:
        return _problem(ErrCode.PRIMARY_KEY_MISSING, f"no primary-key property ({', '.join(pks)})")
    if event and "event_id" not in props:
        return _problem(ErrCode.PRIMARY_KEY_MISSING, "event_id is missing")

    # 5. primary keys non-empty
    if all(is_empty(props[k]) for k in present):
        return _problem(
            ErrCode.PRIMARY_KEY_EMPTY, f"every primary-key value is empty ({', '.join(present)})"
        )
    if event and is_empty(props["event_id"]):
        return _problem(ErrCode.PRIMARY_KEY_EMPTY, "event_id is empty")

    # 6. declared types (and, when asked, declared at all)
    types = schema.properties
    for prop, value in props.items():
        declared = types.get(prop)
        if declared is None:
            if reject_unknown and not (event and prop in _EVENT_PROPERTIES):
                return _problem(
                    ErrCode.DATA_CHECK_FAILED,
                    f"property {prop!r} is not defined in the account's metadata",
                )
            continue
        if value is None or (event and prop == "create_time"):
            continue
        if not TYPE_CHECKS[declared](value):
            return _problem(wrong_type, f"property {prop!r} expects {declared}")

    # 7. data checks
    if event and not is_datetime(props.get("create_time")):
        detail = (
            "create_time is missing"
            if props.get("create_time") is None
            else "create_time is not YYYY-MM-DD HH:MM:SS"
        )
        return _problem(ErrCode.DATA_CHECK_FAILED, detail)
    limit = schema.max_value_length
    if event_name is not None and len(event_name) > limit:
        return _problem(ErrCode.DATA_CHECK_FAILED, f"eventName is longer than {limit} characters")
    for prop, value in props.items():
        if isinstance(value, str) and len(value) > limit:
            return _problem(
                ErrCode.DATA_CHECK_FAILED, f"property {prop!r} is longer than {limit} characters"
            )
    return None


def check(kind: str, body: bytes, schema: Schema) -> Result:
    """``(errcode, errmsg, parsed)`` for one ``signed`` request body of call ``kind``.

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

    # 3. to 7.
    failed = check_item(
        obj.get("properties"),
        schema,
        event=is_event,
        event_name=name if is_event else None,
    )
    if failed is not None:
        return failed[0], failed[1], obj
    return ErrCode.OK, OK_MESSAGE, obj


#: ``import-api``: body ``type`` -> (call, batch form?)
BODY_TYPES: dict[str, tuple[str, bool]] = {
    **{single: (kind, False) for kind, (single, _) in PROTOCOL_BODY_TYPES.items()},
    **{batch: (kind, True) for kind, (_, batch) in PROTOCOL_BODY_TYPES.items() if batch},
}
_TYPE_LIST = ", ".join(BODY_TYPES)


class ImportCheck:
    """What ``check_import`` found in one ``import-api`` request body.

    ``code``/``message``: the answer (0, or the first failing check; for a batch, its first
    bad item's). ``body_type``: the valid ``type`` (None when it is missing or invalid).
    ``kind``: the call (``user``, ``user_delete``, ``event``). ``event``: the event name.
    ``received``: the items the body carries (0 before its shape is known). ``valid``: the
    items to store (all of them on success; under ``store_valid`` the valid ones of a failing
    batch; else none). ``too_many``: more items than ``max_batch_rows`` (nothing was checked).
    """

    __slots__ = ("body_type", "code", "event", "kind", "message", "received", "too_many", "valid")

    def __init__(self, code: ErrCode, message: str, body_type: str | None = None) -> None:
        self.code = code
        self.message = message
        self.body_type = body_type
        self.kind: str | None = None
        self.event: str | None = None
        self.received = 0
        self.valid: list[dict[str, Any]] = []
        self.too_many = False

    def __repr__(self) -> str:
        return (
            f"ImportCheck(code={int(self.code)}, message={self.message!r}, "
            f"body_type={self.body_type!r}, received={self.received}, valid={len(self.valid)})"
        )


def check_import(body: bytes, schema: Schema) -> ImportCheck:
    """The body checks of one ``import-api`` request, in order (docs/sandbox.md):

    1. not UTF-8 JSON, not an object (the ``signed`` rules) -> 10001
    2. ``type`` missing or not one of the contract's -> 10002
    3. ``event`` / ``event_batch``: ``event`` missing, not a string, empty, or longer than
       ``max_value_length`` -> 20003
    4. ``properties`` missing or null -> 10004; a batch type without a list, or a single type
       without an object -> 10002; ``{}`` or ``[]`` -> 10004
    5. more items than ``max_batch_rows`` -> ``too_many`` (the server answers HTTP 413)
    6. each item as one ``signed`` record (steps 3 to 7 of ``check``), except that a value of
       the wrong declared type is 20003, and so is an undeclared property under
       ``unknown_properties: reject``. The first bad item decides the answer; under
       ``batch_errors: store_valid`` the valid items are still stored.
    """
    try:
        obj = parse_json(body)
    except ValueError:
        return ImportCheck(ErrCode.JSON_FORMAT, JSON_MESSAGE)
    if not isinstance(obj, dict):
        return ImportCheck(ErrCode.JSON_FORMAT, JSON_MESSAGE)

    body_type = obj.get("type")
    form = BODY_TYPES.get(body_type) if isinstance(body_type, str) else None
    if form is None:
        bad = ErrCode.INVALID_TYPE
        detail = "type is missing" if body_type is None else f"type {body_type!r} is not valid"
        return ImportCheck(bad, f"{bad.description}: {detail} (one of {_TYPE_LIST})")
    assert isinstance(body_type, str)
    kind, is_batch = form
    is_event = kind == "event"
    name = obj.get("event")
    if is_event:
        if not isinstance(name, str) or not name.strip():
            return _import_fail(body_type, ErrCode.DATA_CHECK_FAILED, "event is missing or empty")
        if len(name) > schema.max_value_length:
            detail = f"event is longer than {schema.max_value_length} characters"
            return _import_fail(body_type, ErrCode.DATA_CHECK_FAILED, detail)

    props = obj.get("properties")
    if props is None:
        return _import_fail(body_type, ErrCode.PROPERTIES_EMPTY, "properties is missing")
    if is_batch and not isinstance(props, list):
        detail = f"properties of {body_type} must be a list of objects"
        return _import_fail(body_type, ErrCode.INVALID_TYPE, detail)
    if not is_batch and not isinstance(props, dict):
        return _import_fail(
            body_type, ErrCode.INVALID_TYPE, f"properties of {body_type} must be an object"
        )
    if not props:
        return _import_fail(
            body_type, ErrCode.PROPERTIES_EMPTY, f"properties is {'[]' if is_batch else '{}'}"
        )
    items: list[Any] = props if is_batch else [props]
    result = ImportCheck(ErrCode.OK, OK_MESSAGE, body_type)
    result.kind = kind
    result.event = name if is_event else None
    result.received = len(items)
    if schema.max_batch_rows and len(items) > schema.max_batch_rows:
        result.too_many = True
        return result

    reject_unknown = schema.unknown_properties == "reject"
    store_valid = schema.batch_errors == "store_valid"
    valid = result.valid
    first: tuple[ErrCode, str] | None = None
    for item in items:
        failed = check_item(
            item,
            schema,
            event=is_event,
            wrong_type=ErrCode.DATA_CHECK_FAILED,
            reject_unknown=reject_unknown,
        )
        if failed is None:
            valid.append(item)
        elif first is None:
            first = failed
            if not store_valid:
                valid.clear()
                break
    if first is not None:
        result.code, result.message = first
    return result


def _import_fail(body_type: str, code: ErrCode, detail: str) -> ImportCheck:
    return ImportCheck(code, f"{code.description}: {detail}", body_type)


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
