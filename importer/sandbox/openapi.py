"""The sandbox's Open API: the two read-back endpoints of shared/api-contract.md.

- ``GET /open-api/v1/contact/contactFieldDetails``: the contact fields, each
  ``{"fieldName", "sn", "name", "searchType", "sortType"}`` (``fieldName`` and ``sn`` are the
  property's name; ``name`` its display name, schema ``display_names``; ``searchType`` 1 for a
  property of ``searchable``, by default the primary keys, else 0).
- ``GET /open-api/v1/contact/contactPageList`` (``?customerType=4&pageNo=1&pageSize=N``
  ``&searchField=SN&searchValue=V``): the customers whose property ``SN`` equals ``V``
  (exactly, as the store compares keys), oldest first, each a map from display name to value
  plus ``customerId``; the properties of
  ``masked_fields`` come back masked (``138****8000``).

Every call needs the headers ``access-key`` (a key of the schema's ``openapi_keys``) and
``access-sign`` (``importer.opensign``; valid 5 minutes); else HTTP 403
``{"code": 40003, "message": "Forbidden", ...}``. A bad query is HTTP 400 ``{"code": 40000}``.
Pure functions over the schema and the store: the connection routes and limits the calls.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any
from urllib.parse import parse_qs

from ..opensign import read_sign, sign_fresh
from .answers import json_bytes
from .schema import Schema
from .store import Store, key_text

__all__ = [
    "FIELDS_PATH",
    "OPENAPI_PATHS",
    "PAGE_PATH",
    "access_allowed",
    "answer_openapi",
    "field_details",
    "mask",
]

FIELDS_PATH = "/open-api/v1/contact/contactFieldDetails"
PAGE_PATH = "/open-api/v1/contact/contactPageList"
OPENAPI_PATHS = (FIELDS_PATH, PAGE_PATH)
#: the largest ``pageSize`` the sandbox serves
MAX_PAGE_SIZE = 1000
#: the ``customerType`` of contacts (the only one the sandbox keeps)
CONTACT_TYPE = "4"


def mask(value: Any) -> str:
    """A value as the account's masking shows it: the first 3 and last 4 characters kept,
    ``****`` between (``13800138000`` -> ``138****8000``); 7 characters or fewer: ``****``."""
    text = key_text(value)
    if len(text) <= 7:
        return "****"
    return f"{text[:3]}****{text[-4:]}"


def access_allowed(headers: dict[str, str], schema: Schema, now_ms: int | None = None) -> bool:
    """Whether ``access-key`` is known and ``access-sign`` is its secret's sign of a time at
    most 5 minutes from now."""
    key = headers.get("access-key", "")
    secret = schema.openapi_keys.get(key) if key else None
    if secret is None:
        return False
    ms = read_sign(secret, headers.get("access-sign", ""))
    if ms is None:
        return False
    return sign_fresh(ms, int(time.time() * 1000) if now_ms is None else now_ms)


def field_details(schema: Schema) -> list[dict[str, Any]]:
    """The ``data`` of ``contactFieldDetails``: the primary keys first, then the properties."""
    names = [*schema.primary_keys, *(p for p in schema.properties if p not in schema.primary_keys)]
    searchable = set(schema.search_fields)
    return [
        {
            "fieldName": p,
            "sn": p,
            "name": schema.display_name(p),
            "searchType": 1 if p in searchable else 0,
            "sortType": 0,
        }
        for p in names
    ]


def _body(code: int, message: str, data: Any) -> bytes:
    trace = uuid.uuid4().hex[:16]
    return json_bytes({"code": code, "message": message, "traceNumber": trace, "data": data})


def _bad(message: str) -> tuple[int, bytes]:
    return 400, _body(40000, f"Bad Request: {message}", None)


def _int_param(params: dict[str, list[str]], name: str, default: int, top: int) -> int | None:
    values = params.get(name)
    if not values:
        return default
    text = values[-1].strip()
    if not text.isdigit() or not 1 <= int(text) <= top:
        return None
    return int(text)


def page_list(schema: Schema, store: Store, query: str) -> tuple[int, bytes]:
    """``(status, body)`` of ``contactPageList``."""
    params = parse_qs(query, keep_blank_values=True)
    ctype = (params.get("customerType") or [CONTACT_TYPE])[-1]
    if ctype != CONTACT_TYPE:
        return _bad(f"customerType {ctype!r}: only {CONTACT_TYPE} (contacts) is kept")
    page_no = _int_param(params, "pageNo", 1, 10**9)
    page_size = _int_param(params, "pageSize", 10, MAX_PAGE_SIZE)
    if page_no is None or page_size is None:
        return _bad(f"pageNo must be >= 1 and pageSize 1..{MAX_PAGE_SIZE}")
    field = (params.get("searchField") or [""])[-1]
    value = (params.get("searchValue") or [""])[-1]
    if field and field not in schema.search_fields:
        return _bad(f"searchField {field!r} is not a searchable field (searchType 1)")
    total, rows = store.search(field or None, value, (page_no - 1) * page_size, page_size)
    masked = set(schema.masked_fields)
    out = []
    for cid, props in rows:
        shown: dict[str, Any] = {"customerId": cid}
        for prop, val in props.items():
            shown[schema.display_name(prop)] = mask(val) if prop in masked else val
        out.append(shown)
    data = {"pageNo": page_no, "pageSize": page_size, "total": total, "list": out}
    return 200, _body(0, "Successful.", data)


def answer_openapi(
    path: str, method: str, query: str, headers: dict[str, str], schema: Schema, store: Store
) -> tuple[int, bytes]:
    """``(status, JSON body)`` of an Open API call (its path is one of ``OPENAPI_PATHS``)."""
    if method != "GET":
        return 405, json.dumps({"error": "method not allowed", "allow": "GET"}).encode()
    if not access_allowed(headers, schema):
        return 403, _body(40003, "Forbidden", None)
    if path == FIELDS_PATH:
        return 200, _body(0, "Successful.", field_details(schema))
    return page_list(schema, store, query)
