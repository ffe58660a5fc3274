"""A platform that answers in hostile or unusual but exact byte sequences.

Every test runs ``dmimport run`` as a user runs it (a subprocess) against ``RawServer``: a plain
socket server on a free loopback port that writes, for each request, exactly the bytes a test
scripts, segment by segment. Nothing in the HTTP layer is mocked.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import dmimport, read_results, write_csv

pytestmark = pytest.mark.slow  # the command in a subprocess against hostile servers

SECRET = "test-secret-0b7c"

HEADER = ["手机号", "姓名"]
CONFIG = """
job: {kind: user, primary_keys: [phone]}
columns:
  phone: 手机号
  username: 姓名
send:
  concurrency: 1
  batch_rows: 1
  rate_limit: null
  retry: {max_attempts: 2, initial_backoff_s: 0.001, max_backoff_s: 0.002}
"""
# one row per request: each scripted answer is one row's (a batch would carry them all)

#: what a script returns for one request: the segments to write (each one ``sendall``, with a
#: short pause before the next), and whether to close the connection afterwards
Answer = tuple[list[bytes], bool]
Script = Callable[[bytes], Answer]


def http(body: bytes, status: bytes = b"200 OK", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n%s\r\n" % (status, len(body), extra) + body


def contract(code: int, msg: str = "") -> bytes:
    return json.dumps({"errcode": code, "errmsg": msg}).encode()


class RawServer:
    """Reads each request (head + Content-Length body) and writes what ``script`` says."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[bytes] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                body, buf = buf[:length], buf[length:]
                self.requests.append(body)
                segments, close = self.script(body)
                for i, segment in enumerate(segments):
                    if i:
                        time.sleep(0.05)
                    conn.sendall(segment)
                if close:
                    return
        except OSError:
            return
        finally:
            conn.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError):  # wakes the blocked accept(); close() alone does not
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):  # the peer may be gone already
                conn.shutdown(socket.SHUT_RDWR)
        for t in [self._accepting, *self._threads]:
            t.join(10)


@pytest.fixture
def raw_server() -> Callable[[Script], RawServer]:
    started: list[RawServer] = []

    def make(script: Script) -> RawServer:
        server = RawServer(script)
        started.append(server)
        return server

    yield make  # type: ignore[misc]
    for server in started:
        server.stop()


def phones(n: int) -> list[list[str]]:
    return [[f"1380000{i:04d}", f"用户{i}"] for i in range(n)]


def run(tmp_path: Path, url: str, n: int, *, secret: str = SECRET,
        config: str = CONFIG) -> tuple[int, str, str, dict[str, dict[str, str]]]:  # fmt: skip
    """``dmimport run`` on ``n`` customers; the exit code, stdout, stderr and results by phone."""
    write_csv(tmp_path / "c.csv", HEADER, phones(n))
    (tmp_path / "job.yaml").write_text(config, encoding="utf-8")
    proc = dmimport(
        "run", "job.yaml", "c.csv", "--base-url", url, "--report-dir", "rep",
        cwd=tmp_path, secret=secret,
    )  # fmt: skip
    results: dict[str, dict[str, str]] = {}
    for path in (tmp_path / "rep").glob("*/results.csv"):
        results = {r["identity"].removeprefix("phone="): r for r in read_results(path)}
    return proc.returncode, proc.stdout, proc.stderr, results


def summary(tmp_path: Path) -> dict[str, object]:
    (path,) = (tmp_path / "rep").glob("*/summary.json")
    return json.loads(path.read_text(encoding="utf-8"))


def outcome(results: dict[str, dict[str, str]]) -> dict[str, tuple[str, str]]:
    return {phone: (r["status"], r["errcode"]) for phone, r in results.items()}


# -- issue 11 #9: an answer that is not the contract's JSON is a failed attempt, never a crash --

DEEP = b"[" * 100_000 + b"]" * 100_000
HOSTILE_BODIES = {
    "13800000000": b'{"errcode":1099511627776,"errmsg":"x"}',
    "13800000001": b'{"errcode":-99999999999,"errmsg":"x"}',
    "13800000002": DEEP,
    "13800000003": b'{"errcode":0,"errmsg":' + DEEP + b"}",
    "13800000004": b'{"errcode":20003,"errmsg":"bad \\ud800 value"}',
    "13800000005": b'{"errcode":20003,"errmsg":"' + b"x" * 900_000 + b'"}',
}


def test_hostile_answers_are_failed_attempts_not_a_crash(
    raw_server: Callable[[Script], RawServer], tmp_path: Path
) -> None:
    # Each used to end the run after sending: exit 5, "internal error", no report at all.
    def script(body: bytes) -> Answer:
        for phone, answer in HOSTILE_BODIES.items():
            if phone.encode() in body:
                return [http(answer)], False
        return [http(contract(0, "ok"))], False

    server = raw_server(script)
    code, out, err, results = run(tmp_path, server.url, 7)
    assert code == 1, (out, err)
    assert "internal error" not in out + err
    got = {
        phone: (r["status"], r["errcode"], r["errmsg"], r["attempts"])
        for phone, r in results.items()
    }
    assert got == {
        "13800000000": (
            "failed",
            "",
            "response errcode 1099511627776 is out of range (32-bit integer) (after 2 attempts)",
            "2",
        ),
        "13800000001": (
            "failed",
            "",
            "response errcode -99999999999 is out of range (32-bit integer) (after 2 attempts)",
            "2",
        ),
        "13800000002": (
            "failed",
            "",
            "response JSON is nested too deeply (200000 bytes) (after 2 attempts)",
            "2",
        ),
        "13800000003": (
            "failed",
            "",
            "response JSON is nested too deeply (200023 bytes) (after 2 attempts)",
            "2",
        ),
        # the errcode is the contract's; only the unwritable text is mended
        "13800000004": ("failed", "20003", "bad ? value", "1"),
        # a megabyte per failed row would fill the ledger and the reports
        "13800000005": ("failed", "20003", "x" * 1000 + "... (900000 characters)", "1"),
        "13800000006": ("ok", "", "", "1"),
    }
    assert len(server.requests) == 11  # every hostile answer was retried once, per policy
    s = summary(tmp_path)
    assert s["counts"]["ok"] == 1 and s["counts"]["failed"] == 6  # type: ignore[index]
    assert s["errcodes"] == {"20003": 2}


# -- issue 11 #18: a SECRET that cannot go in a header is refused before anything is sent -------


def test_a_secret_with_an_em_dash_is_refused_in_preflight(
    raw_server: Callable[[Script], RawServer], tmp_path: Path
) -> None:
    # It used to fail every row with UnicodeEncodeError, then stop as "the platform failed
    # 200 rows in a row", blaming the platform.
    server = raw_server(lambda body: ([http(contract(0, "ok"))], False))
    secret = "a1b2c3d4\u2014e5f6-secret"
    code, out, err, results = run(tmp_path, server.url, 3, secret=secret)
    assert code == 2, (out, err)
    assert (
        "  target.secret_env: environment variable DMART_SECRET contains a character that "
        "cannot be sent in an HTTP header (U+2014 at position 9) -- a SECRET is plain ASCII; "
        "a dash or quote pasted from a document or a chat is often a look-alike (an em dash "
        "for '-'): retype it\n"
    ) in err
    assert "a1b2c3d4" not in out + err and "e5f6-secret" not in out + err
    assert server.requests == []
    assert results == {}


# -- issue 11 #10: HTTP framing; an answer is never given to the wrong request -------------------

REFUSED = {"13800000001", "13800000003"}
EXPECTED = {
    f"1380000{i:04d}": ("failed", "20003") if f"1380000{i:04d}" in REFUSED else ("ok", "")
    for i in range(6)
}


def answer_for(body: bytes) -> bytes:
    if any(phone.encode() in body for phone in REFUSED):
        return contract(20003, "refused")
    return contract(0, "ok")


def test_interim_100_continue_is_skipped(
    raw_server: Callable[[Script], RawServer], tmp_path: Path
) -> None:
    # Used to fail every row: the 100 was taken for the answer, the 200 for its body.
    server = raw_server(lambda body: ([b"HTTP/1.1 100 Continue\r\n\r\n", http(answer_for(body))],
                                      False))  # fmt: skip
    code, out, err, results = run(tmp_path, server.url, 6)
    assert code == 1, (out, err)
    assert outcome(results) == EXPECTED
    assert {r["errmsg"] for r in results.values()} == {"", "refused"}
    assert len(server.requests) == 6


def test_close_delimited_body_in_two_segments(
    raw_server: Callable[[Script], RawServer], tmp_path: Path
) -> None:
    # No Content-Length, no chunked: the body ends at the close. Used to fail every row: only
    # the first segment was read.
    def script(body: bytes) -> Answer:
        payload = answer_for(body)
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
        return [head + payload[:9], payload[9:]], True

    server = raw_server(script)
    code, out, err, results = run(tmp_path, server.url, 6)
    assert code == 1, (out, err)
    assert outcome(results) == EXPECTED
    assert len(server.requests) == 6


def test_a_stray_extra_response_is_never_read_as_the_next_answer(
    raw_server: Callable[[Script], RawServer], tmp_path: Path
) -> None:
    # A refused row's answer comes with a second, unsolicited "ok" on the keep-alive
    # connection. It used to be read as the next row's answer, shifting every later answer by
    # one: row 3, refused, showed ok.
    def script(body: bytes) -> Answer:
        payload = answer_for(body)
        if payload != contract(0, "ok"):
            return [http(payload) + http(contract(0, "ok"))], False
        return [http(payload)], False

    server = raw_server(script)
    code, out, err, results = run(tmp_path, server.url, 6)
    assert code == 1, (out, err)
    assert outcome(results) == EXPECTED
    assert [r["attempts"] for r in results.values()] == ["1"] * 6
    assert len(server.requests) == 6


SCENARIOS: dict[str, Script] = {
    "100 Continue": lambda body: (
        [b"HTTP/1.1 100 Continue\r\n\r\n", http(answer_for(body))],
        False,
    ),
    "close-delimited in two segments": lambda body: (
        [b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + answer_for(body)[:9],
         answer_for(body)[9:]],
        True,
    ),
    "stray extra response": lambda body: (
        [http(answer_for(body)) + (http(contract(0, "ok")) if b"13800000001" in body else b"")],
        False,
    ),
}  # fmt: skip


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_the_sdk_client_gives_each_call_its_own_answer(
    raw_server: Callable[[Script], RawServer], scenario: str
) -> None:
    # the requests-based SDK is the project's other HTTP layer: the same byte sequences
    from importer.client import Client

    server = raw_server(SCENARIOS[scenario])
    with Client(SECRET, server.url, timeout=5.0) as client:
        got = {}
        for phone, _ in phones(6):
            out = client.user({"phone": phone})
            got[phone] = ("ok", "") if out.ok else ("failed", str(out.as_dict()["errcode"]))
    assert got == EXPECTED


# -- issue 11 #9, #10, #18 (second pass): more hostile answers ---------------------------------

SECOND_PASS_BODIES = {
    # a gateway that echoes the request's headers in its message
    "13800000000": contract(20003, f"rejected request: X-Secret: {SECRET}"),
    # which errcode is meant? a decoder keeps the last one: the row would show ok
    "13800000001": b'{"errcode":20003,"errmsg":"refused","errcode":0}',
    # clears the screen, retitles the terminal, overwrites the summary's line
    "13800000002": contract(20003, "bad\x1b[2J\x1b]0;pwned\x07\r   100  ok\nline 2"),
    # the SECRET across the cut at 1,000 characters: the start of it is masked too
    "13800000004": contract(20003, "h" * 990 + SECRET + "tail" * 100),
}


def test_more_hostile_answers_second_pass(
    raw_server: Callable[[Script], RawServer], tmp_path: Path
) -> None:
    def script(body: bytes) -> Answer:
        for phone, answer in SECOND_PASS_BODIES.items():
            if phone.encode() in body:
                return [http(answer)], False
        if b"13800000003" in body:  # a header section past the 64 KiB bound
            big = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 100_000 + b"\r\n"
            return [big + b"Content-Length: 27\r\n\r\n" + contract(0, "ok")[:27]], False
        return [http(contract(0, "ok"))], False

    server = raw_server(script)
    code, out, err, results = run(tmp_path, server.url, 6)
    assert code == 1, (out, err)
    got = {phone: (r["status"], r["errcode"], r["errmsg"]) for phone, r in results.items()}
    assert got == {
        # the SECRET never reaches a report, whoever sends it back
        "13800000000": ("failed", "20003", "rejected request: X-Secret: ****"),
        "13800000001": (
            "failed",
            "",
            "response JSON has errcode twice (after 2 attempts)",
        ),
        "13800000002": ("failed", "20003", "bad\x1b[2J\x1b]0;pwned\x07\r   100  ok\nline 2"),
        "13800000003": (
            "failed",
            "",
            "malformed HTTP response: header section larger than 65536 bytes (after 2 attempts)",
        ),
        "13800000004": ("failed", "20003", "h" * 990 + "****... (1406 characters)"),
        "13800000005": ("ok", "", ""),
    }
    # on screen, the platform's control characters are shown, not obeyed
    assert "bad\\x1b[2J\\x1b]0;pwned\\x07\\r   100  ok\\nline 2  (e.g. c.csv:4)\n" in out
    assert "\x1b" not in out and "\r" not in out
    everything = out + err + "".join(p.read_text("utf-8") for p in (tmp_path / "rep").rglob("*.*"))
    assert SECRET not in everything and SECRET[:10] not in everything


def test_a_secret_with_a_space_at_either_end_is_refused_in_preflight(
    raw_server: Callable[[Script], RawServer], tmp_path: Path
) -> None:
    # The header carried the SECRET without the space, the signature was made with it: every
    # request answered 20004 until the run stopped, "check the SECRET and this machine's clock".
    server = raw_server(lambda body: ([http(contract(0, "ok"))], False))
    for secret, where in ((f" {SECRET}", "start"), (f"{SECRET} ", "end")):
        code, out, err, _results = run(tmp_path, server.url, 3, secret=secret)
        assert code == 2, (out, err)
        assert (
            "  target.secret_env: environment variable DMART_SECRET contains a space at its "
            f"{where}, which an HTTP header drops -- "
        ) in err
        assert SECRET not in out + err
    assert server.requests == []
