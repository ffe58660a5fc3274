"""``notify:``: the run's summary to WeCom, DingTalk, Feishu and a generic webhook.

Each service is a real HTTP server on loopback that checks the body its documentation gives
(and DingTalk's and Feishu's signatures, over the timestamp it received) and answers as the
service answers. The runs are real runs against the sandbox, through the Python API and the
command line."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlsplit

import pytest
from helpers import dmimport, write_csv

import importer
from importer.config import NotifyHook
from importer.notify import Message, send
from importer.notify.message import from_error
from importer.sandbox import Faults, Sandbox

OK_WECOM = {"errcode": 0, "errmsg": "ok"}
OK_FEISHU = {"StatusCode": 0, "StatusMessage": "success", "code": 0, "data": {}, "msg": "success"}

#: the token in each robot's URL, and the signing secrets: none may reach a message
TOKEN = "9f3c2e1a-77aa-4b0c-9d1e-5a6b7c8d9e0f"
SIGN_SECRET = "SECb1f4d7a0c3e6f9b2a5d8c1e4f7a0b3c6d9e2f5a8b1c4d7e0f3a6b9c2d5e8f1a4"
PHONES = ["13800138000", "13800138001", "13900139000"]


#: what each service answers a request it refuses (its documented errors)
DING_SIGN = {"errcode": 310000, "errmsg": "sign not match"}
LARK_SIGN = {
    "code": 19021,
    "data": {},
    "msg": "sign match fail or timestamp is not within one hour from current time",
}


def refusal(service: str | None, secret: str | None, path: str, raw: bytes) -> Any:
    """What ``service`` answers a request whose body or signature is not as it documents
    them (None: it takes it): WeCom's and DingTalk's ``errcode``, Feishu's ``code``."""
    body = json.loads(raw)
    if service == "wecom":
        kind = body.get("msgtype")
        content = body.get(kind, {}).get("content") if kind in ("text", "markdown") else None
        if not isinstance(content, str):
            return {"errcode": 40008, "errmsg": "invalid message type"}
        if len(content.encode()) > (2048 if kind == "text" else 4096):
            return {"errcode": 40058, "errmsg": f"{kind}.content exceed max length"}
    if service == "dingtalk":
        if secret is not None:
            query = parse_qs(urlsplit(path).query)
            ts = query.get("timestamp", ["0"])[0]
            digest = hmac.new(secret.encode(), f"{ts}\n{secret}".encode(), hashlib.sha256)
            if query.get("sign") != [base64.b64encode(digest.digest()).decode()]:
                return DING_SIGN
            if abs(int(ts) / 1000 - time.time()) > 3600:
                return {"errcode": 310000, "errmsg": "invalid timestamp"}
        md = body.get("markdown", {})
        if body.get("msgtype") != "markdown" or not (md.get("title") and md.get("text")):
            return {"errcode": 40035, "errmsg": "缺少参数 json"}
    if service == "feishu":
        if secret is not None:
            ts = str(body.get("timestamp", "0"))
            key = f"{ts}\n{secret}".encode()
            sign = base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
            if body.get("sign") != sign or abs(int(ts) - time.time()) > 3600:
                return LARK_SIGN
        if body.get("msg_type") != "text" or not body.get("content", {}).get("text"):
            return {"code": 9499, "data": {}, "msg": "Bad Request"}
    return None


class Hook:
    """A webhook on 127.0.0.1: records each POST (path with query, body) and answers the
    next of ``answers`` (the last one again and again), after ``delay_s``; as ``service``
    (wecom, dingtalk, feishu) it first checks the body, and the signature with ``secret``,
    answering the service's error when they are not as it documents them."""

    def __init__(
        self,
        answers: list[tuple[int, Any]],
        delay_s: float = 0.0,
        service: str | None = None,
        secret: str | None = None,
    ) -> None:
        self.answers = answers
        self.delay_s = delay_s
        self.received: list[tuple[str, bytes]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                hook.received.append((self.path, body))
                status, answer = hook.answers[min(len(hook.received), len(hook.answers)) - 1]
                refused = refusal(service, secret, self.path, body)
                if refused is not None:
                    status, answer = 200, refused  # as the services do: HTTP 200, an errcode
                time.sleep(hook.delay_s)
                raw = json.dumps(answer).encode() if not isinstance(answer, bytes) else answer
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except OSError:  # the client gave up (a timeout test)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.received]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def hook() -> Iterator[Callable[..., Hook]]:
    started: list[Hook] = []

    def make(answers: list[tuple[int, Any]], delay_s: float = 0.0, **service: Any) -> Hook:
        h = Hook(answers, delay_s, **service)
        started.append(h)
        return h

    yield make
    for h in started:
        h.stop()


@pytest.fixture
def sb(fresh_sandbox: Callable[..., Sandbox], monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """A started private sandbox whose secret is in ``DMART_SECRET``, as a job's config reads it."""
    sandbox = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sandbox.secret)
    return sandbox


def _job(tmp_path: Path, notify: str, *, bad_row: bool = True) -> tuple[Path, Path]:
    config = tmp_path / "nightly.yaml"
    config.write_text(
        "job: {name: nightly, kind: user, primary_keys: [phone]}\n"
        "columns:\n  phone: phone\n  username: name\n  age: {from: age, type: integer}\n"
        "send: {concurrency: 2}\n" + notify,
        encoding="utf-8",
    )
    ages = ["3", f"{PHONES[2]} years" if bad_row else "4", "5"]
    rows = [[p, f"name-{i}", a] for i, (p, a) in enumerate(zip(PHONES, ages, strict=True))]
    return config, write_csv(tmp_path / "people.csv", ["phone", "name", "age"], rows)


def _run(sb: Sandbox, config: Path, data: Path, tmp_path: Path, **kw: Any) -> importer.RunSummary:
    return importer.run(
        config,
        [data],
        overrides={"target.base_url": sb.url},
        report_dir=tmp_path / "reports",
        ledger=tmp_path / "state.db",
        **kw,
    )


def _no_secret_in(raw: bytes, sb: Sandbox) -> None:
    text = raw.decode("utf-8")
    for value in (sb.secret, TOKEN, SIGN_SECRET, *PHONES):
        assert value not in text
        assert value not in unquote_plus(text)


def test_wecom_gets_the_run_summary_as_markdown(
    sb: Sandbox,
    hook: Callable[..., Hook],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wecom = hook([(200, OK_WECOM)], service="wecom")
    monkeypatch.setenv("WECOM_URL", wecom.url(f"/cgi-bin/webhook/send?key={TOKEN}"))
    config, data = _job(tmp_path, "notify:\n  - {type: wecom, url_env: WECOM_URL}\n")
    summary = _run(sb, config, data, tmp_path)
    assert summary.exit_code == 1
    assert len(wecom.received) == 1
    path, raw = wecom.received[0]
    assert parse_qs(urlsplit(path).query) == {"key": [TOKEN]}  # the URL as the robot gave it
    body = json.loads(raw)
    assert set(body) == {"msgtype", "markdown"} and body["msgtype"] == "markdown"
    assert set(body["markdown"]) == {"content"}
    content = body["markdown"]["content"]
    assert summary.report_dir is not None
    assert content.splitlines() == [
        "**dmimport nightly: FAILED (exit 1: rows rejected, failed or not sent)**",
        f"> run {summary.run_id} on {content.split(' on ')[1].split(' ')[0]} (send): 3 rows in "
        f"{summary.duration_s:.1f} s",
        "> rows: ok 2, rejected 1",
        "> top reasons: 1 × column age: '…' is not an integer",
        "> requests 1; quota left 9,999 of 10,000 "
        f"({summary.quota['day'] if summary.quota else ''}, Asia/Shanghai)",
        f"> report {summary.report_dir.resolve()}",
    ]
    _no_secret_in(raw, sb)


def test_dingtalk_signed_url_and_markdown_with_mentions(
    sb: Sandbox,
    hook: Callable[..., Hook],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ding = hook([(200, OK_WECOM)], service="dingtalk", secret=SIGN_SECRET)
    monkeypatch.setenv("DING_URL", ding.url(f"/robot/send?access_token={TOKEN}"))
    monkeypatch.setenv("DING_SECRET", SIGN_SECRET)
    config, data = _job(
        tmp_path,
        "notify:\n  - type: dingtalk\n    url_env: DING_URL\n    secret_env: DING_SECRET\n"
        "    on: always\n    mention: {mobiles: ['18600000000'], all: false}\n",
        bad_row=False,
    )
    before = int(time.time() * 1000)
    summary = _run(sb, config, data, tmp_path)
    assert summary.exit_code == 0
    path, raw = ding.received[0]
    query = parse_qs(urlsplit(path).query)
    assert set(query) == {"access_token", "timestamp", "sign"}
    assert query["access_token"] == [TOKEN]
    ts = int(query["timestamp"][0])
    assert before <= ts <= int(time.time() * 1000)
    # DingTalk: Base64 of HMAC-SHA256 over "timestamp\nsecret", keyed with the secret
    expected = base64.b64encode(
        hmac.new(SIGN_SECRET.encode(), f"{ts}\n{SIGN_SECRET}".encode(), hashlib.sha256).digest()
    ).decode()
    assert query["sign"] == [expected]  # parse_qs undid the URL-encoding
    assert "sign=" + expected not in path  # it was URL-encoded ('+', '/', '=')
    body = json.loads(raw)
    assert set(body) == {"msgtype", "markdown", "at"} and body["msgtype"] == "markdown"
    assert body["markdown"]["title"] == "dmimport nightly: OK (exit 0: ok)"
    text = body["markdown"]["text"]
    assert text.startswith("#### dmimport nightly: OK (exit 0: ok)\n\n- run ")
    assert "- rows: ok 3\n" in text and text.endswith("\n\n@18600000000")
    assert body["at"] == {"isAtAll": False, "atMobiles": ["18600000000"], "atUserIds": []}
    _no_secret_in(raw, sb)


def test_feishu_signed_text(
    hook: Callable[..., Hook], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    lark = hook([(200, OK_FEISHU)], service="feishu", secret=SIGN_SECRET)
    monkeypatch.setenv("LARK_URL", lark.url(f"/open-apis/bot/v2/hook/{TOKEN}"))
    monkeypatch.setenv("LARK_SECRET", SIGN_SECRET)
    hooks = [
        NotifyHook(
            type="feishu",
            url_env="LARK_URL",
            secret_env="LARK_SECRET",
            on="held",
            mention={"user_ids": ["ou_7d8a6e6df7621556ce0d21922b676706"], "all": True},
        )
    ]
    message = Message("nightly", 8, "dmimport nightly: HELD", ["plan guard-plan.json"])
    before = int(time.time())
    (delivery,) = send(hooks, message)
    assert (delivery.delivered, delivery.attempts, delivery.problem) == (True, 1, None)
    body = lark.bodies()[0]
    assert set(body) == {"timestamp", "sign", "msg_type", "content"}
    assert body["msg_type"] == "text"
    ts = int(body["timestamp"])
    assert before <= ts <= time.time()
    # Feishu: Base64 of HMAC-SHA256 keyed with "timestamp\nsecret", over nothing
    key = f"{ts}\n{SIGN_SECRET}".encode()
    assert body["sign"] == base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    assert body["content"] == {
        "text": "dmimport nightly: HELD\nplan guard-plan.json\n"
        '<at user_id="ou_7d8a6e6df7621556ce0d21922b676706"></at> <at user_id="all">所有人</at>'
    }


def test_wecom_mentions_go_in_a_text_message(
    hook: Callable[..., Hook], monkeypatch: pytest.MonkeyPatch
) -> None:
    wecom = hook([(200, OK_WECOM)], service="wecom")
    monkeypatch.setenv("WECOM_URL", wecom.url(f"/cgi-bin/webhook/send?key={TOKEN}"))
    mention = {"mobiles": ["18600000000"], "user_ids": ["zhangsan"], "all": True}
    hooks = [NotifyHook(type="wecom", url_env="WECOM_URL", mention=mention)]
    message = Message("nightly", 3, "dmimport nightly: FAILED (exit 3: aborted)", ["a", "b"])
    assert [d.delivered for d in send(hooks, message)] == [True]
    # markdown cannot mention by phone: the documented text message with both lists
    assert wecom.bodies() == [
        {
            "msgtype": "text",
            "text": {
                "content": "dmimport nightly: FAILED (exit 3: aborted)\na\nb",
                "mentioned_list": ["zhangsan", "@all"],
                "mentioned_mobile_list": ["18600000000"],
            },
        }
    ]


def test_generic_webhook_gets_the_summary_as_json(
    sb: Sandbox,
    hook: Callable[..., Hook],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    generic = hook([(204, b"")])
    monkeypatch.setenv("HOOK_URL", generic.url(f"/hooks/dmimport?token={TOKEN}"))
    config, data = _job(tmp_path, "notify:\n  - {type: webhook, url_env: HOOK_URL}\n")
    summary = _run(sb, config, data, tmp_path)
    body = generic.bodies()[0]
    assert summary.report_dir is not None
    assert {k: body[k] for k in ("job", "run_id", "verdict", "exit_code", "rows", "requests")} == {
        "job": "nightly",
        "run_id": summary.run_id,
        "verdict": "FAILED",
        "exit_code": 1,
        "rows": 3,
        "requests": 1,
    }
    assert body["counts"] == {"ok": 2, "rejected": 1}
    assert body["top_reasons"] == [{"rows": 1, "reason": "column age: '…' is not an integer"}]
    assert (body["quota_left"], body["daily_quota"]) == (9999, 10000)
    assert body["report_dir"] == str(summary.report_dir.resolve())
    assert body["title"] == "dmimport nightly: FAILED (exit 1: rows rejected, failed or not sent)"
    assert body["text"].startswith(body["title"] + "\nrun " + summary.run_id)
    _no_secret_in(generic.received[0][1], sb)


def test_failure_only_is_quiet_on_success_and_held_only_on_a_gate(
    sb: Sandbox,
    hook: Callable[..., Hook],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failure, always, held = (hook([(200, OK_WECOM)]) for _ in range(3))
    for name, h in (("FAIL_URL", failure), ("ALWAYS_URL", always), ("HELD_URL", held)):
        monkeypatch.setenv(name, h.url("/cgi-bin/webhook/send?key=k"))
    notify = (
        "notify:\n  - {type: wecom, url_env: FAIL_URL}\n"
        "  - {type: wecom, url_env: ALWAYS_URL, on: always}\n"
        "  - {type: wecom, url_env: HELD_URL, on: held}\n"
    )
    config, data = _job(tmp_path, notify, bad_row=False)
    assert _run(sb, config, data, tmp_path).exit_code == 0
    assert (len(failure.received), len(always.received), len(held.received)) == (0, 1, 0)
    # a failed run: failure and always; held waits for a guard's hold or an incomplete input
    _, bad = _job(tmp_path, notify)
    assert _run(sb, config, bad, tmp_path).exit_code == 1
    assert (len(failure.received), len(always.received), len(held.received)) == (1, 2, 0)
    hooks = importer.load_config(config).notify
    for code in (7, 8):
        sent = send(hooks, Message("nightly", code, f"dmimport nightly: exit {code}", []))
        assert [d.index for d in sent] == [0, 1, 2]
    assert (len(failure.received), len(always.received), len(held.received)) == (3, 4, 2)
    # a dry run (validate) tells nobody, whatever its outcome
    assert importer.validate(config, [bad], report_dir=tmp_path / "v").exit_code == 1
    assert (len(failure.received), len(always.received), len(held.received)) == (3, 4, 2)


@pytest.mark.parametrize(
    ("answers", "delay_s", "said"),
    [
        ([(200, {"errcode": 93000, "errmsg": "invalid webhook url"})], 0.0,
         "after 1 attempt: errcode 93000: invalid webhook url"),
        ([(503, b"busy")], 0.0, "after 2 attempts: HTTP 503"),
        ([(200, OK_WECOM)], 1.5, "after 2 attempts: no answer within 0.5 s"),
        ([(200, b"<html>proxy login</html>")], 0.0, "after 1 attempt: the answer is not JSON"),
    ],
)  # fmt: skip
def test_a_failing_webhook_is_a_warning_and_keeps_the_exit_code(
    answers: list[tuple[int, Any]],
    delay_s: float,
    said: str,
    sb: Sandbox,
    hook: Callable[..., Hook],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wecom = hook(answers, delay_s)
    monkeypatch.setenv("WECOM_URL", wecom.url(f"/cgi-bin/webhook/send?key={TOKEN}"))
    config, data = _job(
        tmp_path, "notify:\n  - {type: wecom, url_env: WECOM_URL, on: always, timeout_s: 0.5}\n"
    )
    caplog.set_level(logging.WARNING, logger="importer")
    summary = _run(sb, config, data, tmp_path)
    assert summary.exit_code == 1
    warnings = [r.getMessage() for r in caplog.records if r.name == "importer.notify"]
    assert warnings == [
        f"notify[0] (wecom, $WECOM_URL): not delivered {said} (the run's exit code stays 1)"
    ]
    assert TOKEN not in caplog.text


def test_an_incomplete_input_tells_held_and_always_and_keeps_exit_7(
    sb: Sandbox,
    hook: Callable[..., Hook],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    held, quiet = hook([(200, OK_FEISHU)], service="feishu"), hook([(200, OK_WECOM)])
    monkeypatch.setenv("LARK_URL", held.url(f"/open-apis/bot/v2/hook/{TOKEN}"))
    monkeypatch.setenv("QUIET_URL", quiet.url("/cgi-bin/webhook/send?key=k"))
    config, _ = _job(
        tmp_path,
        "notify:\n  - {type: feishu, url_env: LARK_URL, on: held}\n"
        "  - {type: wecom, url_env: QUIET_URL, on: always}\n",
    )
    cut = tmp_path / "cut.csv"
    cut.write_bytes(f"phone,name,age\n{PHONES[0]},a,1\n{PHONES[1]},b".encode())
    with pytest.raises(importer.errors.InputIncomplete) as caught:
        _run(sb, config, cut, tmp_path)
    assert caught.value.exit_code == 7  # the run's own verdict, told or not
    (text,) = [body["content"]["text"] for body in held.bodies()]
    lines = text.splitlines()
    assert lines[0] == "dmimport nightly: INPUT INCOMPLETE (exit 7: input incomplete, nothing sent)"
    assert lines[2] == (
        f"{cut}: its last record has 2 of the header's 3 fields and the file does not end with "
        "a line break: the export looks cut off; nothing was sent"
    )
    assert lines[-1].startswith(f"report {(tmp_path / 'reports').resolve()}/nightly-")
    assert len(quiet.received) == 1  # on: always
    _no_secret_in(held.received[0][1], sb)


@pytest.mark.parametrize("kind", ["dingtalk", "feishu"])
def test_a_wrong_signing_secret_is_the_services_refusal_in_a_warning(
    kind: str,
    hook: Callable[..., Hook],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ok = OK_WECOM if kind == "dingtalk" else OK_FEISHU
    service = hook([(200, ok)], service=kind, secret=SIGN_SECRET)
    monkeypatch.setenv("ROBOT_URL", service.url(f"/robot/send?access_token={TOKEN}"))
    monkeypatch.setenv("ROBOT_SECRET", "SEC" + "0" * 64)  # not the robot's
    hooks = [NotifyHook(type=kind, url_env="ROBOT_URL", secret_env="ROBOT_SECRET")]
    caplog.set_level(logging.WARNING, logger="importer")
    (delivery,) = send(hooks, Message("nightly", 1, "dmimport nightly: FAILED", ["x"]))
    said = (
        "errcode 310000: sign not match"
        if kind == "dingtalk"
        else "code 19021: sign match fail or timestamp is not within one hour from current time"
    )
    # refused, not lost: trying again would be refused the same way
    assert (delivery.delivered, delivery.attempts, delivery.problem) == (False, 1, said)
    assert [r.getMessage() for r in caplog.records] == [
        f"notify[0] ({kind}, $ROBOT_URL): not delivered after 1 attempt: {said} (the run's "
        "exit code stays 1)"
    ]
    assert "0" * 64 not in caplog.text and TOKEN not in caplog.text


def test_a_run_whose_read_back_falls_short_is_told_with_the_verify_line(
    fresh_sandbox: Callable[..., Sandbox],
    hook: Callable[..., Hook],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sb = fresh_sandbox(faults=Faults(drop_after_ok=8))  # ok, but not stored, from the 9th row
    generic = hook([(200, {})])
    for name, value in (
        ("DMART_SECRET", sb.secret),
        ("DMIMPORT_OPENAPI_KEY", "demo-access-key"),
        ("DMIMPORT_OPENAPI_SECRET", "0123456789abcdef"),
        ("HOOK_URL", generic.url(f"/h?token={TOKEN}")),
    ):
        monkeypatch.setenv(name, value)
    config = tmp_path / "nightly.yaml"
    config.write_text(
        "job: {name: nightly, kind: user, primary_keys: [phone]}\n"
        "columns: {phone: phone, username: name}\n"
        f"openapi: {{base_url: '{sb.url}'}}\n"
        "verify: {sample: 10, min_match: 0.95}\n"
        "send: {rate_limit: null, batch_rows: 10}\n"
        "notify:\n  - {type: webhook, url_env: HOOK_URL}\n",
        encoding="utf-8",
    )
    rows = [[f"1390000{i:04d}", f"名字{i}"] for i in range(10)]
    data = write_csv(tmp_path / "people.csv", ["phone", "name"], rows)
    summary = _run(sb, config, data, tmp_path)
    assert summary.exit_code == 9
    (body,) = generic.bodies()
    assert body["title"] == (
        "dmimport nightly: FAILED (exit 9: too few sampled rows found as sent)"
    )
    assert (
        "verify: 10 looked up: matched 8, mismatched 0, not found 2, masked 0 (80.0%, min 95.0%)"
        in body["text"].splitlines()
    )
    # the 11 look-ups (10 rows and the field list) come out of the same daily quota
    assert "requests 1 (+11 read-back look-ups); quota left 9,988 of 10,000 (" in body["text"]
    assert (body["requests"], body["quota_left"]) == (1, 9988)
    assert body["verify"] == {
        "checked": 10, "matched": 8, "mismatched": 0, "not_found": 2, "masked": 0,
        "share": 0.8, "min_match": 0.95,
    }  # fmt: skip
    raw = generic.received[0][1].decode()
    assert "0123456789abcdef" not in raw and "1390000" not in raw
    _no_secret_in(generic.received[0][1], sb)


def test_one_retry_gets_a_busy_service_through(
    hook: Callable[..., Hook], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wecom = hook([(502, b"bad gateway"), (200, OK_WECOM)])
    monkeypatch.setenv("WECOM_URL", wecom.url("/cgi-bin/webhook/send?key=k"))
    hooks = [NotifyHook(type="wecom", url_env="WECOM_URL")]
    (delivery,) = send(hooks, Message("nightly", 3, "dmimport nightly: FAILED", ["aborted"]))
    assert (delivery.delivered, delivery.attempts) == (True, 2)
    assert len(wecom.received) == 2 and wecom.received[0][1] == wecom.received[1][1]
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_run_that_stops_with_an_error_is_told_without_secrets_or_values(
    hook: Callable[..., Hook],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    generic = hook([(200, {})])
    monkeypatch.setenv("HOOK_URL", generic.url(f"/h?token={TOKEN}"))
    monkeypatch.setenv("DMART_SECRET", "0b7c4f1e-2d3a-4e5f-8a9b-0c1d2e3f4a5b")
    config, _ = _job(tmp_path, "notify:\n  - {type: webhook, url_env: HOOK_URL}\n")
    wrong = write_csv(tmp_path / "wrong.csv", ["mobile", "name", "age"], [[PHONES[0], "a", "1"]])
    with pytest.raises(importer.ConfigError):
        importer.run(config, [wrong], report_dir=tmp_path / "r", ledger=tmp_path / "s.db")
    body = generic.bodies()[0]
    assert (body["verdict"], body["exit_code"]) == ("FAILED", 2)
    assert body["error"].startswith("invalid config ") and "column 'phone'" in body["error"]
    # one line per line of the error (a markdown quote, a text message)
    assert body["text"].splitlines()[1].startswith("on ")
    assert body["text"].splitlines()[2].startswith("invalid config ")
    assert body["text"].splitlines()[3].startswith("columns.phone.from: column 'phone' is not in")
    # an error that quotes a customer's phone and the SECRET: masked, redacted
    exc = ValueError(f"row of {PHONES[1]} refused with secret 0b7c4f1e-2d3a-4e5f-8a9b-0c1d2e3f4a5b")
    message = from_error("nightly", exc, 5)
    send([NotifyHook(type="webhook", url_env="HOOK_URL")], message)
    raw = generic.received[1][1].decode()
    assert "138****8001" in raw and PHONES[1] not in raw
    assert "0b7c4f1e" not in raw and TOKEN not in raw
    assert json.loads(raw)["title"] == "dmimport nightly: FAILED (exit 5: internal error)"


def test_a_run_the_guard_holds_is_told_to_on_held_with_its_plan_and_exits_8(
    sb: Sandbox,
    hook: Callable[..., Hook],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    held = hook([(200, OK_WECOM)], service="dingtalk", secret=SIGN_SECRET)
    monkeypatch.setenv("DING_URL", held.url(f"/robot/send?access_token={TOKEN}"))
    monkeypatch.setenv("DING_SECRET", SIGN_SECRET)
    config = tmp_path / "nightly.yaml"
    config.write_text(
        "job: {name: nightly, kind: user, primary_keys: [phone]}\n"
        "columns: {phone: phone, username: name, city: city}\n"
        "guard: {max_changed_share: 0.3}\n"
        "notify:\n  - {type: dingtalk, url_env: DING_URL, secret_env: DING_SECRET, on: held}\n",
        encoding="utf-8",
    )
    rows = [[f"1390000{i:04d}", f"name-{i}", f"city-{i % 7}"] for i in range(20)]
    first = write_csv(tmp_path / "day1.csv", ["phone", "name", "city"], rows)
    assert _run(sb, config, first, tmp_path).exit_code == 0
    assert held.received == []  # a good night: on: held says nothing
    # the next export's columns shifted by one: every customer would change
    shifted = [[p, c, n] for p, n, c in rows]
    day2 = write_csv(tmp_path / "day2.csv", ["phone", "name", "city"], shifted)
    before = sb.stats()["requests"]
    with pytest.raises(importer.HeldError) as caught:
        _run(sb, config, day2, tmp_path)
    assert caught.value.exit_code == 8  # told or not, the run's own code
    assert sb.stats()["requests"] == before
    (body,) = held.bodies()
    assert (
        body["markdown"]["title"]
        == "dmimport nightly: HELD (exit 8: held by a guard, nothing sent)"
    )
    text = body["markdown"]["text"]
    assert f"- plan {caught.value.plan.resolve()}" in text.split("\n\n")
    assert "--approve" in text and "max_changed_share" in text
    # the plan's path as the error names it (its folder holds the run id, a run of digits
    # such as 20261206T021500): copied from the message into --approve, it must work
    said = str(caught.value)
    approve = said.split("--approve ")[1].split()[0]
    assert Path(approve).resolve() == caught.value.plan.resolve()
    assert f"--approve {approve}" in text and "****" not in text
    _no_secret_in(held.received[0][1], sb)


def test_an_incomplete_input_names_its_run_folder_unmasked(
    sb: Sandbox,
    hook: Callable[..., Hook],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run id's digits (20261206T021500) and a dated export's name are not phones: the
    message names them as they are, and still masks a phone in the same text."""
    generic = hook([(200, {})])
    monkeypatch.setenv("OPS_URL", generic.url(f"/hook?token={TOKEN}"))
    config = tmp_path / "nightly.yaml"
    config.write_text(
        "job: {name: nightly, kind: user, primary_keys: [phone]}\n"
        "columns: {phone: phone, username: name}\n"
        "notify:\n  - {type: webhook, url_env: OPS_URL}\n",
        encoding="utf-8",
    )
    cut = tmp_path / "customers-20261206.csv"
    cut.write_bytes(f"phone,name\n{PHONES[0]},a\n{PHONES[1]}".encode())
    with pytest.raises(importer.InputIncomplete) as caught:
        _run(sb, config, cut, tmp_path)
    (body,) = generic.bodies()
    run_id = caught.value.summary.run_id
    assert "20261206" in run_id and body["run_id"] == run_id
    assert f"nightly-{run_id}/summary.json" in body["error"]
    assert f"{cut.name}" in body["error"] and "****" not in body["text"]
    _no_secret_in(generic.received[0][1], sb)


def test_a_held_run_is_told_to_on_held_with_its_plan_file(
    hook: Callable[..., Hook], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Held(importer.DmImportError):  # as the guard raises it: exit 8, its plan file
        exit_code = 8

        def __init__(self, plan: Path) -> None:
            self.plan = plan
            super().__init__("held: 100% of the rows would change (guard.max_changed_share 30%)")

    lark = hook([(200, OK_FEISHU)], service="feishu")
    monkeypatch.setenv("LARK_URL", lark.url(f"/open-apis/bot/v2/hook/{TOKEN}"))
    hooks = [NotifyHook(type="feishu", url_env="LARK_URL", on="held")]
    plan = tmp_path / "reports" / "nightly-1" / "plan.json"
    message = from_error("nightly", Held(plan), 8)
    assert [d.delivered for d in send(hooks, message)] == [True]
    assert lark.bodies()[0]["content"]["text"].splitlines()[::2] == [
        "dmimport nightly: HELD (exit 8: held by a guard, nothing sent)",
        "held: 100% of the rows would change (guard.max_changed_share 30%)",
    ]
    assert lark.bodies()[0]["content"]["text"].splitlines()[-1] == f"plan {plan.resolve()}"
    assert message.data["plan"] == str(plan.resolve())
    # the held run's folder (its summary.json) and run id, as an incomplete input's
    assert message.data["report_dir"] == str(plan.parent.resolve())
    assert message.data["run_id"] == "1"


def test_the_command_line_notifies_and_no_notify_tells_nobody(
    fresh_sandbox: Callable[..., Sandbox], hook: Callable[..., Hook], tmp_path: Path
) -> None:
    sb = fresh_sandbox()
    wecom = hook([(200, OK_WECOM)])
    config, data = _job(tmp_path, "notify:\n  - {type: wecom, url_env: WECOM_URL}\n")
    env = {"WECOM_URL": wecom.url(f"/cgi-bin/webhook/send?key={TOKEN}")}
    args = ("run", config, data, "--base-url", sb.url, "--quiet")
    quiet = dmimport(*args, "--no-notify", secret=sb.secret, env=env)
    assert quiet.returncode == 1, quiet.stderr
    assert wecom.received == []
    told = dmimport(*args, "--full", secret=sb.secret, env=env)
    assert told.returncode == 1, told.stderr
    assert len(wecom.received) == 1
    assert "FAILED (exit 1" in wecom.bodies()[0]["markdown"]["content"]
    _no_secret_in(wecom.received[0][1], sb)


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("{type: slack, url_env: X}",
         "notify.0.type (line 8): expected one of wecom, dingtalk, feishu, webhook, got 'slack'"),
        ("{type: wecom, url_env: X, on: failed}",
         "notify.0.on (line 8): expected one of failure, always, held, got 'failed' -- did you "
         "mean 'failure'?"),
        ("{type: wecom, url_env: 'https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=abc'}",
         "notify.0.url_env (line 8): url_env looks like the URL or secret itself; it must be the "
         "NAME of an environment variable -- put the value in an environment variable (e.g. "
         "WECOM_WEBHOOK_URL) and name it here"),
        ("{type: webhook, url_env: X, secret_env: S}",
         "notify.0 (line 8): secret_env is for dingtalk and feishu, which sign their messages; "
         "a generic webhook signs nothing -- remove secret_env (the URL's token is in url_env)"),
        ("{type: feishu, url_env: X, mention: {mobiles: ['186']}}",
         "notify.0 (line 8): a feishu bot mentions by user id (open_id), not by phone number "
         "-- list them in mention.user_ids"),
        ("{type: wecom, url_env: X, tiemout_s: 3}",
         "notify.0.tiemout_s (line 8): unknown key 'tiemout_s' -- did you mean 'timeout_s'?"),
        ("{type: dingtalk}", "notify.0.url_env (line 8): required key 'url_env' is missing"),
    ],
)  # fmt: skip
def test_a_bad_notify_entry_is_refused_naming_the_key(
    entry: str, problem: str, tmp_path: Path
) -> None:
    config, _ = _job(tmp_path, f"notify:\n  - {entry}\n")
    with pytest.raises(importer.ConfigError) as caught:
        importer.load_config(config)
    assert [str(p) for p in caught.value.problems] == [problem]


def test_a_redirect_is_not_followed_and_not_taken_for_delivered(
    hook: Callable[..., Hook], monkeypatch: pytest.MonkeyPatch
) -> None:
    # urllib follows a POST's 302 with a GET that drops the message; the page it lands on
    # answers 200 with errcode 0: the message was reported delivered though nobody got it
    landing = hook([(200, OK_WECOM)])
    moved = hook([(302, b"")])
    moved.answers = [(302, b"")]

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(302)
            self.send_header("Location", landing.url("/cgi-bin/webhook/send?key=k"))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            self.do_POST()

        def log_message(self, *args: Any) -> None:
            pass

    moved.server.RequestHandlerClass = Redirect
    monkeypatch.setenv("WECOM_URL", moved.url(f"/old?key={TOKEN}"))
    hooks = [NotifyHook(type="wecom", url_env="WECOM_URL")]
    (delivery,) = send(hooks, Message("nightly", 1, "dmimport nightly: FAILED", ["rows"]))
    assert (delivery.delivered, delivery.attempts) == (False, 1)
    assert delivery.problem == (
        "HTTP 302: a redirect, not followed (the message would not go with it); set the URL "
        "of the webhook itself"
    )
    assert landing.received == []


def test_a_service_that_drips_its_answer_is_given_timeout_s_in_all(
    hook: Callable[..., Hook], monkeypatch: pytest.MonkeyPatch
) -> None:
    # each byte comes within the socket's timeout: only a deadline on the whole exchange ends it
    class Drip(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                self.send_response(200)
                self.send_header("Content-Length", "40")
                self.end_headers()
                for _ in range(40):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass

        def log_message(self, *args: Any) -> None:
            pass

    dripping = hook([(200, b"")])
    dripping.server.RequestHandlerClass = Drip
    monkeypatch.setenv("HOOK_URL", dripping.url("/h"))
    hooks = [NotifyHook(type="webhook", url_env="HOOK_URL", timeout_s=0.5)]
    t0 = time.monotonic()
    (delivery,) = send(hooks, Message("nightly", 1, "dmimport nightly: FAILED", ["rows"]))
    took = time.monotonic() - t0
    assert (delivery.delivered, delivery.attempts) == (False, 2)
    assert delivery.problem == "no answer within 0.5 s"
    assert took < 2 * 0.5 + 1.0 + 1.0  # twice timeout_s and the pause, with room; was 16 s


def test_a_run_refused_for_missing_open_api_keys_is_told_as_a_missing_secret_is(
    sb: Sandbox,
    hook: Callable[..., Hook],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The nightly environment lost the Open API's keys: exit 2, nothing sent, and the team
    hears of it (as of a missing SECRET), not only cron's mail."""
    generic = hook([(200, {})])
    monkeypatch.setenv("HOOK_URL", generic.url(f"/h?token={TOKEN}"))
    monkeypatch.delenv("DMIMPORT_OPENAPI_KEY", raising=False)
    monkeypatch.delenv("DMIMPORT_OPENAPI_SECRET", raising=False)
    config = tmp_path / "nightly.yaml"
    config.write_text(
        "job: {name: nightly, kind: user, primary_keys: [phone]}\n"
        "columns: {phone: phone, username: name}\n"
        f"openapi: {{base_url: '{sb.url}'}}\n"
        "verify: {sample: 10}\n"
        "notify:\n  - {type: webhook, url_env: HOOK_URL}\n",
        encoding="utf-8",
    )
    data = write_csv(tmp_path / "people.csv", ["phone", "name"], [["13900000001", "a"]])
    with pytest.raises(importer.ConfigError):
        _run(sb, config, data, tmp_path)
    assert sb.stats()["requests"] == 0
    (body,) = generic.bodies()
    assert body["exit_code"] == 2
    assert "$DMIMPORT_OPENAPI_KEY is not set" in body["error"]
