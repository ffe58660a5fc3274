"""What the sandbox's server and its connections share: routes, ready-made answers, and the
reading of a request's query string."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from ..errcodes import ErrCode
from ..protocol import DEBUG_PARAM, SECRET_PARAM, response_body
from .http import http_response
from .schema import Schema

STATS_PATH = "/_sandbox/stats"
HEALTH_PATH = "/_sandbox/health"
FAULTS_PATH = "/_sandbox/faults"
ADMIN_PATHS = (STATS_PATH, HEALTH_PATH, FAULTS_PATH)

#: the route of the ``import-api`` endpoint (the ``signed`` routes are the calls' names)
IMPORT = "import"

OK_BODY = response_body(ErrCode.OK)
OK_KEEP = http_response(200, OK_BODY)
#: the plain (non-JSON) body of an HTTP 413
TOO_BIG_BODY = b"413 Request Entity Too Large"
NON_JSON_BODY = b"<html><head><title>502 Bad Gateway</title></head><body>bad gateway</body></html>"


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def named_customer(body: bytes, schema: Schema) -> str:
    """The request's primary-key values as a platform's message names a customer:
    ``13812345678 / "alice.wang@corp.cn"`` (the first bare, the others in double quotes; a
    batch: its first item's)."""
    try:
        properties = json.loads(body).get("properties")
        if isinstance(properties, list) and properties:
            properties = properties[0]
        values = [str(properties[k]) for k in schema.primary_keys if properties.get(k)]
    except (ValueError, AttributeError, TypeError):
        values = []
    if not values:
        return "(unknown)"
    return " / ".join([values[0], *(f'"{v}"' for v in values[1:])])


def query_value(query: str, name: str) -> str | None:
    """The percent-decoded value of query parameter ``name`` (the last one), or None."""
    value = None
    prefix = name + "="
    for item in query.split("&"):
        if item.startswith(prefix):
            value = item[len(prefix) :]
        elif item == name:
            value = ""
    return None if value is None else unquote(value, errors="replace")


def shown_query(query: str) -> str:
    """``query`` with the value of ``secret`` replaced by ``***`` (for the request log)."""
    if SECRET_PARAM not in query:
        return query
    prefix = SECRET_PARAM + "="
    return "&".join(
        prefix + "***" if item.startswith(prefix) else item for item in query.split("&")
    )


def debug_flag(query: str) -> bool | None:
    """``debug`` from the query string: absent -> False; anything but true/false -> None."""
    if not query:
        return False
    value = "false"
    for item in query.split("&"):
        name, _, v = item.partition("=")
        if name == DEBUG_PARAM:
            value = v
    if value == "true":
        return True
    if value == "false":
        return False
    return None
