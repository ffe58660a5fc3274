"""The ``notify:`` section: the webhooks told about a run (``importer.notify`` sends).

Each entry names its service (``type``), the environment variable holding its URL
(``url_env``: a robot's URL carries its token) and, for DingTalk's signed URL or Feishu's
signature, the variable holding the signing secret (``secret_env``). Neither is ever written
in the YAML: a value there would be in every copy of the config."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ..errors import rule_error
from ..secrets import looks_like_secret, watch_env
from .base import ENV_NAME, StrictModel

#: the services a ``notify:`` entry can name
NOTIFY_TYPES = ("wecom", "dingtalk", "feishu", "webhook")
#: the services that sign their messages with ``secret_env``
SIGNED_TYPES = ("dingtalk", "feishu")


def env_name(key: str, value: str, example: str) -> str:
    """``value`` checked as the NAME of an environment variable; ``key`` is how the config
    spells it. Neither message quotes the value: it may be the URL or secret itself."""
    if "://" in value or looks_like_secret(value):
        raise rule_error(
            f"{key} looks like the URL or secret itself; it must be the NAME of an environment "
            "variable",
            f"put the value in an environment variable (e.g. {example}) and name it here",
        )
    if not ENV_NAME.match(value):
        raise rule_error(
            f"{key} is not an environment variable name (letters, digits and '_', not "
            "starting with a digit)",
            f"e.g. {example}",
        )
    watch_env(value)  # every redaction in this process now covers its value
    return value


class Mention(StrictModel):
    """``notify[].mention``: who the message @-mentions (WeCom, DingTalk, Feishu)."""

    #: phone numbers (WeCom ``mentioned_mobile_list``, DingTalk ``atMobiles``)
    mobiles: list[str] = Field(default_factory=list)
    #: user ids (WeCom ``mentioned_list``, DingTalk ``atUserIds``, Feishu ``open_id``s)
    user_ids: list[str] = Field(default_factory=list)
    #: everyone in the group
    all: bool = False


class NotifyHook(StrictModel):
    """One ``notify:`` entry."""

    type: Literal["wecom", "dingtalk", "feishu", "webhook"]
    #: the environment variable holding the webhook's URL
    url_env: str
    #: the environment variable holding the signing secret (dingtalk, feishu)
    secret_env: str | None = None
    #: failure: the run exited non-zero; always: every run; held: a guard held the run (exit
    #: 8) or its input was incomplete (exit 7)
    on: Literal["failure", "always", "held"] = "failure"
    mention: Mention | None = None
    #: seconds to wait for the service's answer (then once more, then a warning)
    timeout_s: float = Field(default=10.0, gt=0, le=60)

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        # YAML 1.1 reads the key `on` as the boolean true
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data

    @field_validator("url_env")
    @classmethod
    def _url_env(cls, v: str) -> str:
        return env_name("url_env", v, "WECOM_WEBHOOK_URL")

    @field_validator("secret_env")
    @classmethod
    def _secret_env(cls, v: str | None) -> str | None:
        return None if v is None else env_name("secret_env", v, "DINGTALK_SECRET")

    @model_validator(mode="after")
    def _signed(self) -> NotifyHook:
        if self.secret_env is not None and self.type not in SIGNED_TYPES:
            name = "a wecom robot" if self.type == "wecom" else "a generic webhook"
            raise rule_error(
                f"secret_env is for dingtalk and feishu, which sign their messages; {name} "
                "signs nothing",
                "remove secret_env (the URL's token is in url_env)",
            )
        if self.mention is not None and self.type == "webhook":
            raise rule_error(
                "mention is for wecom, dingtalk and feishu; a generic webhook has no mentions",
                "remove mention",
            )
        if self.mention is not None and self.mention.mobiles and self.type == "feishu":
            raise rule_error(
                "a feishu bot mentions by user id (open_id), not by phone number",
                "list them in mention.user_ids",
            )
        return self
