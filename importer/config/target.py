"""The ``target:`` section: where to send (protocol, URL, paths, header names, TLS, the
SECRET's variable)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from ..errors import rule_error
from ..protocol import (
    DEBUG_PARAM,
    DEFAULT_BASE_URL,
    DEFAULT_HEADERS,
    DEFAULT_PROTOCOL,
    IMPORT_PATH,
    SIGNED_PATHS,
    Headers,
    Profile,
    ProtocolName,
    plain_http_host,
)
from ..secrets import looks_like_secret, watch_env
from .base import ENV_NAME, HEADER_NAME, StrictModel


def check_path(v: str) -> str:
    """A request path as it goes in the request line: absolute, printable ASCII."""
    if not v.startswith("/"):
        raise rule_error(f"a path must start with '/', got '{v}'", f"write '/{v}'")
    for position, char in enumerate(v, 1):
        # it goes in the request line as is: a space, a line break or a non-ASCII
        # character would fail (or split) every request
        if not "!" <= char <= "~":
            raise rule_error(
                f"the path contains a character that cannot be sent in a request line "
                f"(U+{ord(char):04X} at position {position})",
                "percent-encode it (a space is %20, 用 is %E7%94%A8)",
            )
    if "?" in v or "#" in v:
        raise rule_error("a path must not carry a query string or fragment")
    return v


class PathsConfig(StrictModel):
    """``target.paths``: the path of each call under the ``signed`` protocol."""

    user: str = SIGNED_PATHS["user"]
    user_delete: str = SIGNED_PATHS["user_delete"]
    event: str = SIGNED_PATHS["event"]

    @field_validator("user", "user_delete", "event")
    @classmethod
    def _absolute(cls, v: str) -> str:
        return check_path(v)


class HeaderNames(StrictModel):
    """``protocol.Headers`` as the config spells and checks it."""

    secret: str = DEFAULT_HEADERS.secret
    timestamp: str = DEFAULT_HEADERS.timestamp
    signature: str = DEFAULT_HEADERS.signature

    @field_validator("secret", "timestamp", "signature")
    @classmethod
    def _token(cls, v: str) -> str:
        if not HEADER_NAME.match(v):
            raise rule_error(f"'{v}' is not a valid HTTP header name")
        return v


class Target(StrictModel):
    #: ``import-api`` (the platform's documented endpoint) or ``signed`` (version 1)
    protocol: ProtocolName = DEFAULT_PROTOCOL
    base_url: str = DEFAULT_BASE_URL
    secret_env: str = "DMART_SECRET"
    debug: bool = False
    #: the query parameter that asks for debug mode (``debug=true``)
    debug_param: str = DEBUG_PARAM
    timeout_s: float = Field(default=10.0, gt=0)
    #: ``import-api``: the endpoint's path
    path: str = IMPORT_PATH
    #: ``signed``: the path of each call
    paths: PathsConfig = PathsConfig()
    #: ``signed``: the auth headers' names, and whether to sign
    headers: HeaderNames = HeaderNames()
    sign: bool = True
    tls_verify: bool = True
    ca_file: str | None = None

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise rule_error(
                f"expected an http:// or https:// URL, got '{v}'", "e.g. https://api.example.com"
            )
        if parts.query or parts.fragment:
            raise rule_error("base_url must not carry a query string or fragment")
        try:
            parts.port  # noqa: B018 -- urlsplit checks the port only when asked for it
        except ValueError:
            raise rule_error(
                "the port in base_url is not a number from 0 to 65535",
                "e.g. https://api.example.com:8443",
            ) from None
        return v.rstrip("/")

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return check_path(v)

    @field_validator("debug_param")
    @classmethod
    def _param(cls, v: str) -> str:
        if not v or not all(c.isascii() and (c.isalnum() or c in "_-.") for c in v):
            raise rule_error(f"'{v}' is not a query parameter name", "e.g. debug")
        return v

    @field_validator("secret_env")
    @classmethod
    def _env_name(cls, v: str) -> str:
        # neither message quotes the value: it may be the SECRET pasted in the wrong place
        if looks_like_secret(v):
            raise rule_error(
                "secret_env looks like the SECRET itself; it must be the NAME of an environment "
                "variable",
                "put the SECRET in an environment variable (e.g. DMART_SECRET) and name it here",
            )
        if not ENV_NAME.match(v):
            raise rule_error(
                "secret_env is not an environment variable name (letters, digits and '_', "
                "not starting with a digit)",
                "e.g. DMART_SECRET",
            )
        watch_env(v)  # every redaction in this process now covers its value
        return v

    @model_validator(mode="after")
    def _tls(self) -> Target:
        if self.ca_file is not None and not self.tls_verify:
            raise rule_error(
                "ca_file is set but tls_verify is false, so it would be ignored",
                "remove one of the two",
            )
        return self

    def plain_http_host(self) -> str | None:
        """The host the SECRET would travel to unencrypted (``protocol.plain_http_host``)."""
        return plain_http_host(self.base_url)

    def warnings(self) -> list[str]:
        """What a run says loudly, once, before sending (and ``check-config`` prints): the
        SECRET travelling unencrypted, TLS verification turned off. Never quotes the SECRET."""
        out = []
        host = self.plain_http_host()
        if host is not None:
            where = "in every request's URL" if self.protocol == "import-api" else "in a header"
            out.append(
                f"the SECRET travels UNENCRYPTED to {host} (target.base_url is plain http://, "
                f"the SECRET is {where}): anyone on the network path can read it and the data. "
                "Use https:// in target.base_url where the platform offers it."
            )
        if not self.tls_verify:
            out.append(
                "TLS certificate verification is OFF (target.tls_verify: false): anyone on the "
                "network path can read the SECRET and the data. Use target.ca_file instead."
            )
        return out

    def profile(self) -> Profile:
        """The wire-format profile (protocol, paths, header names, signing)."""
        return Profile(
            protocol=self.protocol,
            import_path=self.path,
            debug_param=self.debug_param,
            paths=self.paths.model_dump(),
            headers=Headers(**self.headers.model_dump()),
            sign=self.sign,
        )
