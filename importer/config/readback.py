"""The ``openapi:`` and ``verify:`` sections: read-back through the Open API (docs/verify.md).

The access-key and the accessKeySecret come from the environment only (``access_key_env``,
``secret_env``); the config names the variables, never the values.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator

from ..errors import rule_error
from .base import StrictModel

#: the Open API's documented base URL (shared/api-contract.md)
DEFAULT_OPENAPI_URL = "https://api.dmartech.cn/openapi"


class OpenApiOptions(StrictModel):
    """``openapi:``: where the Open API is and which environment variables hold its keys."""

    base_url: str = DEFAULT_OPENAPI_URL
    #: the environment variable holding the access-key
    access_key_env: str = "DMIMPORT_OPENAPI_KEY"
    #: the environment variable holding the accessKeySecret
    secret_env: str = "DMIMPORT_OPENAPI_SECRET"
    timeout_s: float = Field(default=10.0, gt=0)
    #: calls a second (the platform allows 20, shared with the import API)
    rate_limit: float = Field(default=20.0, gt=0, le=20)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise rule_error(
                f"expected an http:// or https:// URL, got '{v}'",
                "e.g. https://api.dmartech.cn/openapi",
            )
        if parts.query or parts.fragment:
            raise rule_error("the base URL must have no query string or fragment")
        return v.rstrip("/")

    @field_validator("access_key_env", "secret_env")
    @classmethod
    def _env_name(cls, v: str) -> str:
        if not v or not v.replace("_", "a").isalnum() or v[0].isdigit():
            raise rule_error(
                f"'{v}' is not an environment variable name", "e.g. DMIMPORT_OPENAPI_SECRET"
            )
        return v


class VerifyOptions(StrictModel):
    """``verify:``: read back a sample after every ``run`` (0: not after runs)."""

    #: rows to look up after a run (each costs one request of the daily quota); 0: off
    sample: int = Field(default=0, ge=0, le=10_000)
    #: the share of the sample that must match, else exit 9
    min_match: float = Field(default=0.99, ge=0, le=1)
