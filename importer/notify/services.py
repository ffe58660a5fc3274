"""Each service's request and answer, as its documentation gives them.

- WeCom (企业微信) group robot: ``POST <url>`` (``.../cgi-bin/webhook/send?key=...``) with
  ``{"msgtype": "markdown", "markdown": {"content": ...}}``, or ``msgtype: text`` with
  ``mentioned_list`` / ``mentioned_mobile_list`` when the entry mentions someone (markdown
  cannot mention by phone). Answers ``{"errcode": 0, "errmsg": "ok"}``.
- DingTalk (钉钉) robot: ``{"msgtype": "markdown", "markdown": {"title", "text"}, "at":
  {"atMobiles", "atUserIds", "isAtAll"}}``. Signed (``secret_env``): the URL gets
  ``&timestamp=<ms>&sign=<URL-encoded Base64 of HMAC-SHA256(secret, "<ms>\\n<secret>")>``.
  Answers ``{"errcode": 0, "errmsg": "ok"}``.
- Feishu / Lark (飞书) bot: ``{"msg_type": "text", "content": {"text": ...}}``; signed: the
  body also holds ``timestamp`` (seconds) and ``sign`` (Base64 of HMAC-SHA256 keyed with
  ``"<timestamp>\\n<secret>"`` over nothing). Answers ``{"code": 0, ...}`` (older:
  ``{"StatusCode": 0}``).
- a generic webhook: the message as JSON (``text``, ``title`` and the facts); any 2xx.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any
from urllib.parse import quote_plus

from ..config import NotifyHook
from .message import Message

#: the longest message text each service takes (bytes of UTF-8), with room for the mentions
MAX_BYTES = {"wecom": 2000, "dingtalk": 4000, "feishu": 4000, "webhook": 16000}


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's ``sign`` query value (URL-encoded already)."""
    digest = hmac.new(
        secret.encode("utf-8"), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256
    ).digest()
    return quote_plus(base64.b64encode(digest).decode("ascii"))


def feishu_sign(secret: str, timestamp_s: int) -> str:
    """Feishu's ``sign`` body value: the HMAC-SHA256 keyed with ``"<timestamp>\\n<secret>"``
    of an empty message, Base64."""
    key = f"{timestamp_s}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode("ascii")


def _cut(lines: list[str], limit: int) -> list[str]:
    """``lines`` fitted in ``limit`` bytes of UTF-8: each cut to a share of it, then the last
    ones dropped ("..." said)."""
    share = max(80, limit // 4)
    out = [line if len(line) <= share else line[:share] + " ..." for line in lines]

    def size(some: list[str]) -> int:
        return len("\n".join(some).encode("utf-8"))

    cut = False
    while len(out) > 1 and size([*out, "..."] if cut else out) > limit:
        out.pop()
        cut = True
    return [*out, "..."] if cut else out


def request(
    hook: NotifyHook, message: Message, url: str, secret: str | None, now: float
) -> tuple[str, bytes]:
    """The URL to post to and the JSON body, for ``hook``'s service, at time ``now``."""
    lines = _cut([message.title, *message.lines], MAX_BYTES[hook.type])
    title, rest = lines[0], lines[1:]
    mention = hook.mention
    body: dict[str, Any]
    if hook.type == "wecom":
        if mention is not None:
            text: dict[str, Any] = {"content": "\n".join(lines)}
            users = [*mention.user_ids, *(["@all"] if mention.all else [])]
            if users:
                text["mentioned_list"] = users
            if mention.mobiles:
                text["mentioned_mobile_list"] = list(mention.mobiles)
            body = {"msgtype": "text", "text": text}
        else:
            content = "\n".join([f"**{title}**", *(f"> {line}" for line in rest)])
            body = {"msgtype": "markdown", "markdown": {"content": content}}
    elif hook.type == "dingtalk":
        text_md = "\n\n".join([f"#### {title}", *(f"- {line}" for line in rest)])
        at: dict[str, Any] = {"isAtAll": bool(mention and mention.all)}
        if mention is not None and (mention.mobiles or mention.user_ids):
            at["atMobiles"] = list(mention.mobiles)
            at["atUserIds"] = list(mention.user_ids)
            # DingTalk mentions in markdown only whom the text names
            named = [f"@{m}" for m in (*mention.mobiles, *mention.user_ids)]
            text_md += "\n\n" + " ".join(named)
        body = {"msgtype": "markdown", "markdown": {"title": title, "text": text_md}, "at": at}
        if secret:
            ms = int(now * 1000)
            url += ("&" if "?" in url else "?") + f"timestamp={ms}&sign={dingtalk_sign(secret, ms)}"
    elif hook.type == "feishu":
        text_plain = "\n".join(lines)
        if mention is not None:
            ats = [f'<at user_id="{u}"></at>' for u in mention.user_ids]
            if mention.all:
                ats.append('<at user_id="all">所有人</at>')
            if ats:
                text_plain += "\n" + " ".join(ats)
        body = {"msg_type": "text", "content": {"text": text_plain}}
        if secret:
            s = int(now)
            body = {"timestamp": str(s), "sign": feishu_sign(secret, s), **body}
    else:
        body = {"title": title, "text": "\n".join(lines), **message.data}
    return url, json.dumps(body, ensure_ascii=False).encode("utf-8")


def answer_problem(kind: str, status: int, raw: bytes) -> str | None:
    """What is wrong with the service's answer (None: delivered). HTTP status first; then
    WeCom's and DingTalk's ``errcode``, Feishu's ``code`` (or ``StatusCode``)."""
    if not 200 <= status < 300:
        return f"HTTP {status}"
    if kind == "webhook":
        return None
    try:
        said = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "the answer is not JSON"
    if not isinstance(said, dict):
        return "the answer is not a JSON object"
    if kind in ("wecom", "dingtalk"):
        code, text = said.get("errcode"), said.get("errmsg", "")
        return None if code == 0 else f"errcode {code}: {text}"
    code = said.get("code", said.get("StatusCode"))
    text = said.get("msg", said.get("StatusMessage", ""))
    return None if code == 0 else f"code {code}: {text}"
