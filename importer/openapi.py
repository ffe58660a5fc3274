"""A client of the Open API's read-back endpoints (shared/api-contract.md, "Read-back").

``OpenApiClient(base_url, access_key, secret)`` calls ``GET
{base_url}/open-api/v1/contact/contactFieldDetails`` (``fields()``) and ``contactPageList``
(``search(sn, value)``) with the headers ``access-key`` and ``access-sign``
(``importer.opensign``: a fresh sign per attempt). ``from_env(config)`` takes the keys from the
environment variables the config's ``openapi:`` section names, never from a file.

- Pacing: at most ``rate_limit`` calls a second (20, the platform's limit, shared with imports).
- Quota: ``on_request`` is called before every attempt (retries included), so that the caller
  counts each against the account's daily quota; it may raise to stop (``QuotaError``).
- Retries as the import sender's (``send.retry``: attempts, full-jitter backoff, a
  ``Retry-After`` honoured): on a connection failure, a timeout, HTTP 429 and 5xx. A
  ``Retry-After`` past ``retry_after_cap_s`` (the daily quota's, until midnight) is not
  waited for: ``OpenApiError`` at once. HTTP 403 (``{"code": 40003}``) is
  ``OpenApiForbidden`` at once (exit 3); anything else that is not ``{"code": 0}`` is
  ``OpenApiError``.
- The secret and the sign are in no repr, message or log line (``importer.secrets``).
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from .config import Config, RetryOptions
from .errors import ConfigError, ConfigProblem, OpenApiError, OpenApiForbidden
from .opensign import key_problem, make_sign
from .secrets import Redactor, watch_env
from .send.retry import backoff, parse_retry_after

__all__ = [
    "FIELDS_PATH",
    "PAGE_PATH",
    "FieldInfo",
    "OpenApiClient",
    "OpenApiError",
    "OpenApiForbidden",
]

log = logging.getLogger("importer.openapi")

FIELDS_PATH = "/open-api/v1/contact/contactFieldDetails"
PAGE_PATH = "/open-api/v1/contact/contactPageList"
#: ``customerType`` of contacts
CONTACT_TYPE = 4


@dataclass(frozen=True)
class FieldInfo:
    """One field of ``contactFieldDetails``."""

    field_name: str
    sn: str
    name: str
    searchable: bool


class OpenApiClient:
    """The Open API over one ``requests.Session``; see the module's docstring."""

    def __init__(
        self,
        base_url: str,
        access_key: str,
        secret: str,
        *,
        rate_limit: float = 20.0,
        retry: RetryOptions | None = None,
        timeout_s: float = 10.0,
        on_request: Callable[[], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        problem = key_problem(secret)
        if problem is not None:
            raise ValueError(f"the accessKeySecret {problem}")
        self.base_url = base_url.rstrip("/")
        self._key = access_key
        self._secret = secret
        self.interval = 1.0 / rate_limit
        self.retry = retry or RetryOptions()
        self.timeout_s = timeout_s
        self.on_request = on_request
        self.rng = rng or random.Random()
        #: attempts made (every one counts against the daily quota)
        self.requests = 0
        self._next = 0.0
        self._session = requests.Session()
        self._redact = Redactor((secret, access_key))

    @classmethod
    def from_env(cls, config: Config, **kwargs: Any) -> OpenApiClient:
        """The client of ``config.openapi``, its keys from the environment. ``ConfigError``
        (nothing sent) when a variable is unset or the secret is no AES key."""
        opts = config.openapi
        watch_env(opts.secret_env)
        watch_env(opts.access_key_env)
        key = os.environ.get(opts.access_key_env, "").strip()
        secret = os.environ.get(opts.secret_env, "").strip()
        problems = []
        if not key:
            problems.append(
                ConfigProblem(
                    "openapi.access_key_env",
                    f"${opts.access_key_env} is not set: the Open API's access-key is needed",
                    f"export {opts.access_key_env}=... (issued with the open platform)",
                )
            )
        if not secret:
            problems.append(
                ConfigProblem(
                    "openapi.secret_env",
                    f"${opts.secret_env} is not set: the Open API's accessKeySecret is needed",
                    f"export {opts.secret_env}=...",
                )
            )
        elif (problem := key_problem(secret)) is not None:
            problems.append(ConfigProblem("openapi.secret_env", f"${opts.secret_env} {problem}"))
        if problems:
            raise ConfigError(problems)
        return cls(
            opts.base_url,
            key,
            secret,
            rate_limit=opts.rate_limit,
            retry=config.send.retry,
            timeout_s=opts.timeout_s,
            **kwargs,
        )

    def __repr__(self) -> str:
        return f"OpenApiClient(base_url={self.base_url!r}, access_key=****, secret=****)"

    def __enter__(self) -> OpenApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    # -- the calls -----------------------------------------------------------------------------

    def fields(self) -> list[FieldInfo]:
        """``contactFieldDetails``: the contact fields."""
        data = self._get(FIELDS_PATH, {})
        if not isinstance(data, list):
            raise OpenApiError("contactFieldDetails: data is not a list of fields")
        return [
            FieldInfo(
                str(f.get("fieldName", "")),
                str(f.get("sn", "")),
                str(f.get("name", "")),
                bool(f.get("searchType")),
            )
            for f in data
            if isinstance(f, dict)
        ]

    def search(self, sn: str, value: str, page_size: int = 10) -> list[dict[str, Any]]:
        """``contactPageList``: the contacts whose field ``sn`` is ``value`` (first page),
        each a map from display name to value plus ``customerId``."""
        params = {
            "customerType": CONTACT_TYPE,
            "pageNo": 1,
            "pageSize": page_size,
            "searchField": sn,
            "searchValue": value,
        }
        data = self._get(PAGE_PATH, params)
        found = data.get("list") if isinstance(data, dict) else None
        if not isinstance(found, list):
            raise OpenApiError("contactPageList: data.list is not a list of contacts")
        return [c for c in found if isinstance(c, dict)]

    # -- transport -----------------------------------------------------------------------------

    def _pace(self) -> None:
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        """``data`` of a ``{"code": 0}`` answer, after the retries."""
        url = self.base_url + path
        attempts = self.retry.max_attempts
        for attempt in range(1, attempts + 1):
            if self.on_request is not None:
                self.on_request()
            self._pace()
            self.requests += 1
            headers = {
                "access-key": self._key,
                "access-sign": make_sign(self._secret, int(time.time() * 1000)),
            }
            wait: float | None = None
            try:
                # never followed: a redirect would carry the access-key and sign elsewhere
                resp = self._session.get(
                    url,
                    params=params,
                    headers=headers,
                    timeout=self.timeout_s,
                    allow_redirects=False,
                )
            except requests.RequestException as exc:
                problem = f"{type(exc).__name__}: {self._redact(str(exc))[:200]}"
            else:
                if resp.status_code == 403:
                    raise OpenApiForbidden(self._forbidden(path, resp))
                if resp.status_code == 200:
                    return self._data(path, resp)
                problem = f"HTTP {resp.status_code}"
                if resp.is_redirect:
                    raise OpenApiError(
                        f"{path}: {problem}, a redirect, not followed (it would carry the "
                        "access-key and sign to another address): check openapi.base_url"
                    )
                if resp.status_code != 429 and resp.status_code < 500:
                    raise OpenApiError(f"{path}: {problem} {self._redact(resp.text[:200])}")
                hinted = parse_retry_after(resp.headers.get("Retry-After"))
                cap = self.retry.retry_after_cap_s
                if hinted is not None and hinted > cap:
                    # the daily quota, most likely: waiting for it is not a retry
                    raise OpenApiError(
                        f"{path}: {problem} with Retry-After {hinted:.0f} s, more than "
                        f"send.retry.retry_after_cap_s ({cap:g} s): the platform's limit "
                        "(its daily quota?) is used up; verify again after it resets"
                    )
                if hinted is not None:
                    wait = hinted
            if attempt == attempts:
                raise OpenApiError(f"{path}: {problem} (after {attempts} attempts)")
            if wait is None:
                wait = backoff(self.retry, attempt, self.rng)
            log.info("%s: %s; retrying in %.1f s", path, problem, wait)
            time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _data(self, path: str, resp: requests.Response) -> Any:
        try:
            body = resp.json()
        except ValueError:
            raise OpenApiError(f"{path}: HTTP 200 whose body is not JSON") from None
        if not isinstance(body, dict) or body.get("code") != 0:
            code = body.get("code") if isinstance(body, dict) else None
            message = body.get("message") if isinstance(body, dict) else None
            raise OpenApiError(f"{path}: code {code}: {self._redact(str(message))[:200]}")
        return body.get("data")

    def _forbidden(self, path: str, resp: requests.Response) -> str:
        try:
            body = resp.json()
            code, message = body.get("code"), body.get("message")
        except (ValueError, AttributeError):
            code, message = None, resp.text[:100]
        message = self._redact(str(message))[:200]
        return (
            f"the Open API refused the access (HTTP 403, code {code}, {message}) on {path}: "
            "check the access-key and accessKeySecret in the environment, that the open "
            "platform is enabled for the account, that this machine's IP is on its allow-list, "
            "and that the clock is right (a sign is valid for 5 minutes)"
        )
