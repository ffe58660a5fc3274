"""The platform's return codes: the one place in the project that knows the numbers.

The table is the seed's (code, English description). Each code is also classified by what a
caller does next, as the API contract's last column says:

- ``SUCCESS``   record the row as delivered;
- ``RETRYABLE`` a server-side fault: retry the same request with backoff;
- ``ROW_ERROR`` the row itself is wrong: fail it, never retry;
- ``FATAL``     configuration or credentials are wrong: stop the whole run.

``SIGNATURE`` (20004) is fatal only when it repeats (a wrong clock or key); a single one is
retried with a freshly signed request. ``Category`` says so explicitly instead of callers
special-casing the number.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Category(StrEnum):
    SUCCESS = "success"
    RETRYABLE = "retryable"
    ROW_ERROR = "row_error"
    FATAL = "fatal"
    #: fatal when repeated: retried a bounded number of times, then the run stops
    FATAL_IF_REPEATED = "fatal_if_repeated"


class ErrCode(IntEnum):
    """Return codes of the ``user``, ``userDelete`` and ``event`` calls."""

    description: str
    category: Category

    def __new__(cls, code: int, description: str, category: Category) -> ErrCode:
        obj = int.__new__(cls, code)
        obj._value_ = code
        obj.description = description
        obj.category = category
        return obj

    OK = (0, "successful", Category.SUCCESS)
    SYSTEM_ERROR = (10000, "system error", Category.RETRYABLE)
    JSON_FORMAT = (10001, "Json data formatting failed", Category.ROW_ERROR)
    INVALID_TYPE = (10002, "invalid type value", Category.ROW_ERROR)
    SECRET_REQUIRED = (10003, "Secret parameters required", Category.FATAL)
    PROPERTIES_EMPTY = (10004, "Properties are empty", Category.ROW_ERROR)
    AUTH_FAILED = (20000, "Authentication failed", Category.FATAL)
    PRIMARY_KEY_MISSING = (20001, "Lack of property which is primary key", Category.ROW_ERROR)
    PRIMARY_KEY_EMPTY = (
        20002,
        "At least one valid value is needed in property which is primary key",
        Category.ROW_ERROR,
    )
    DATA_CHECK_FAILED = (20003, "Data checking failed", Category.ROW_ERROR)
    SIGNATURE_FAILED = (20004, "Signature checking failed", Category.FATAL_IF_REPEATED)

    @property
    def ok(self) -> bool:
        return self.category is Category.SUCCESS

    @property
    def retryable(self) -> bool:
        return self.category in (Category.RETRYABLE, Category.FATAL_IF_REPEATED)

    @property
    def fatal(self) -> bool:
        return self.category is Category.FATAL

    @classmethod
    def lookup(cls, code: int) -> ErrCode | None:
        """The member for ``code``, or None for a number the seed does not define."""
        member = cls._value2member_map_.get(code)
        return member if isinstance(member, ErrCode) else None


#: The seed's own messages for the two codes whose text it shows.
SEED_MESSAGES: dict[ErrCode, str] = {
    ErrCode.OK: "请求成功",
    ErrCode.JSON_FORMAT: "json数据格式化失败",
}


def default_message(code: ErrCode) -> str:
    """The errmsg a server of the default profile sends for ``code``."""
    return SEED_MESSAGES.get(code, code.description)
