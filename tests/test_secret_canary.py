"""The SECRET in the URL (issue 13): under ``import-api`` every request carries it in its query
string, so a canary SECRET is followed through every output of runs that go wrong in every way
we can make them go wrong without mocks.

The canary is accepted by real sandbox servers (``dmimport sandbox serve -v``, started here as a
user starts it, the canary given through ``DMART_SANDBOX_SECRETS``; their request log on stderr
is kept). Every ``dmimport`` runs as a user runs it, with ``--verbose``, ``--metrics-file`` and
a report folder, through:

- faults: 503s, 500s, connections reset after the request was processed, requests stalled past
  the client's timeout, latency; and rows only the platform refuses (20003: bisection); once
  more with ``--json``, and with ``--workers 2`` (the target crosses a process boundary);
- fatal aborts: a wrong path (HTTP 404 without the errcode body), a SECRET the platform does
  not know (20000), a host that does not resolve;
- crashes: the sandbox SIGKILLed under a run (the platform dies mid-run), and ``dmimport``
  itself SIGKILLed mid-send (power loss, the OOM killer: nothing gets to clean up), then the
  same command resumed.

Then stdout, stderr, every file under the report folders (results, rejects, summary.json), the
metrics files, the ledger's SQLite files (with their WAL) and the sandboxes' logs are searched
for the canary raw, percent-encoded (``quote``, ``quote_plus``) and for its distinctive pieces.

The last resort of a bug (exit 5, the traceback under ``--verbose``) cannot be reached without
planting a bug; ``tests/test_security.py`` plants one that quotes the SECRET in an exception, a
URL and a log line, and checks all three are redacted.

Also here: the warning, said once per run and by ``check-config``, when the SECRET would travel
over plain ``http://`` to a host that is not loopback.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from helpers import cli_command, cli_env, dmimport, read_results, start_dmimport, write_csv

from importer.config import parse_config
from importer.sandbox import Faults

pytestmark = pytest.mark.slow  # subprocesses, kills

#: ``+``, ``/``, ``=`` and a space change when percent-encoded; the two alphanumeric pieces
#: survive every encoding, so a leak in any form shows
CANARY = "c4n4ry+Tok/en= 7Zq9x4"
PIECES = ("c4n4ry", "7Zq9x4")
FORMS = sorted(
    {CANARY, quote(CANARY, safe=""), quote(CANARY), quote_plus(CANARY), *PIECES},
    key=len,
    reverse=True,
)

HEADER = ["手机号", "邮箱", "姓名"]
#: the sandbox's account takes strings up to 1,024 characters; the local check is told 100,000,
#: so such a row goes out and only the platform refuses it (20003, found by bisection)
CONFIG = """\
target: {{timeout_s: {timeout}}}
job: {{name: shop, kind: user, primary_keys: [phone, email], max_value_length: 100000}}
columns:
  phone: 手机号
  email: {{from: 邮箱, transform: [strip, lower]}}
  username: 姓名
send:
  concurrency: {concurrency}
  batch_rows: {batch_rows}
  rate_limit: null
  abort_after_failed_requests: {abort}
  retry: {{max_attempts: 4, initial_backoff_s: 0.001, max_backoff_s: 0.01}}
"""


def config(path: Path, *, timeout: float = 5, concurrency: int = 4, batch_rows: int = 25,
           abort: int = 3, extra: str = "") -> Path:  # fmt: skip
    """A job config; ``abort``: send.abort_after_failed_requests (0: never)."""
    text = CONFIG.format(
        timeout=timeout, concurrency=concurrency, batch_rows=batch_rows, abort=abort
    )
    path.write_text(text + extra, encoding="utf-8")
    return path


def rows(n: int, prefix: str, long_every: int = 0) -> list[list[str]]:
    out = []
    for i in range(n):
        name = "长" * 1500 if long_every and i % long_every == long_every - 1 else f"用户{i}"
        out.append([f"{prefix}{i:07d}", f"U{i}.{prefix}@Example.cn", name])
    return out


class Served:
    """``dmimport sandbox serve -v`` in a subprocess on a free loopback port; its request log
    (stderr) goes to ``log``. ``secrets``: ``DMART_SANDBOX_SECRETS``."""

    def __init__(self, folder: Path, name: str, *args: str, secrets: str | None = CANARY) -> None:
        self.log = folder / f"{name}.log"
        env = {"DMART_SANDBOX_SECRETS": secrets} if secrets else {}
        with open(self.log, "w", encoding="utf-8") as log:
            self.proc = subprocess.Popen(
                cli_command("sandbox", "serve", "--port", "0", "-v", "--db",
                            folder / f"{name}.db", *args),
                stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True,
                env=cli_env(env=env),
            )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.match(r"sandbox listening on (http://\S+)", line)
        assert match, (line, self.log.read_text(encoding="utf-8"))
        self.url = match.group(1)

    def requests(self) -> int:
        return sum(" /api/" in line for line in self.log.read_text(encoding="utf-8").splitlines())

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """A factory: ``served(name, *serve_options, secrets=...)`` -> a started ``Served``; all
    are stopped after the test."""
    started: list[Served] = []

    def make(name: str, *args: str, secrets: str | None = CANARY) -> Served:
        s = Served(tmp_path / "platform", name, *args, secrets=secrets)
        started.append(s)
        return s

    (tmp_path / "platform").mkdir()
    yield make
    for s in started:
        s.stop()


def leaks(text: str | bytes) -> list[str]:
    """The forms of the canary found in ``text``."""
    if isinstance(text, bytes):
        return [f for f in FORMS if f.encode() in text]
    return [f for f in FORMS if f in text]


def wait_for(predicate: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.timeout(400)
def test_the_canary_secret_appears_in_no_output_of_faulty_aborted_and_crashed_runs(
    served: Callable[..., Served], tmp_path: Path
) -> None:
    make = served
    work = tmp_path / "work"
    work.mkdir()
    outputs: dict[str, str] = {}

    def cli(name: str, *args: str | Path, expected: set[int]) -> subprocess.CompletedProcess[str]:
        """``dmimport --verbose ARGS``; a run also writes its report under rep/ and metrics."""
        if args[0] == "run":
            args += ("--report-dir", work / "rep", "--metrics-file", work / f"{name}.prom")
        proc = dmimport("--verbose", *args, cwd=work, secret=CANARY)
        outputs[name] = proc.stdout + proc.stderr
        assert proc.returncode in expected, (name, proc.returncode, proc.stderr[-3000:])
        return proc

    # (a) faults, half of all attempts: 5xx, resets after the request was processed, stalls
    # past the 1 s timeout, latency; and 1 row in 20 that only the platform refuses (20003,
    # found by bisection). Batches of 10: some 30 requests and as many retries, so each fault
    # kind is drawn many times over
    faults = Faults(seed=7, latency_ms="0-20", http_503=0.15, http_500=0.05, reset=0.15,
                    stall=0.15, stall_s=2.5)  # fmt: skip
    flaky = make("flaky", *faults.to_args())
    data = write_csv(work / "customers.csv", HEADER, rows(300, "0139", long_every=20))
    job = config(work / "job.yaml", timeout=1, batch_rows=10, abort=0)
    run = cli("faults", "run", job, data, "--base-url", flaky.url, expected={1})
    results = read_results(next((work / "rep").glob("shop-*/results.csv")))
    # the canary went out percent-encoded and the sandbox took it: rows were stored
    assert sum(r["status"] == "ok" for r in results) > 200
    refused = [r for r in results if r["errcode"] == "20003"]
    # a long row whose every attempt met a fault ends failed without an errcode: most do not
    assert len(refused) >= 5
    assert all(r["status"] == "failed" and int(r["line"]) % 20 == 1 for r in refused)
    log = flaky.log.read_text(encoding="utf-8")
    for fault in ("http_503", "reset", "stall"):
        assert f"fault={fault}" in log, fault
    assert "DEBUG" in run.stderr  # --verbose did log
    cli("faults-json", "run", job, data, "--base-url", flaky.url, "--json", "--full",
        expected={0, 1})  # fmt: skip
    # sender processes: the request target, SECRET included, crosses a process boundary
    proc = cli("faults-workers", "run", job, data, "--base-url", flaky.url, "--full",
               "--workers", "2", expected={0, 1})  # fmt: skip
    assert "requests" in proc.stdout

    # (b) fatal aborts: a wrong path (404, no errcode body), a SECRET the platform does not
    # know (20000), a host that does not resolve
    small = write_csv(work / "small.csv", HEADER, rows(30, "0140"))
    wrong = config(work / "wrong.yaml")
    wrong.write_text(
        wrong.read_text(encoding="utf-8").replace(
            "target: {", "target: {path: /api/v1/api/imprt, "
        ),
        encoding="utf-8",
    )
    proc = cli("404", "run", wrong, small, "--base-url", flaky.url, expected={3})
    assert (
        "ABORTED: HTTP 404 without the platform's errcode answer from "
        f"{flaky.url}/api/v1/api/imprt?secret=***: check target.base_url and target.path"
    ) in proc.stdout
    stranger = make("stranger", secrets=None)  # knows only its demo SECRET
    proc = cli("20000", "run", job, small, "--base-url", stranger.url, expected={3})
    assert "ABORTED: 20000 Authentication failed" in proc.stdout
    proc = cli("nxdomain", "run", job, small, "--base-url", "http://dmimport-test.invalid",
               expected={1, 3})  # fmt: skip
    assert proc.stderr.count("the SECRET travels UNENCRYPTED to dmimport-test.invalid") == 1

    # (c) crashes. The platform dies under a run: SIGKILL the sandbox after a few requests
    slow = make("dying", "--latency-ms", "150")
    big = write_csv(work / "big.csv", HEADER, rows(400, "0141"))
    crash_job = config(work / "crash.yaml", concurrency=2, batch_rows=10)
    p = start_dmimport("--verbose", "run", crash_job, big, "--base-url", slow.url,
                       "--report-dir", work / "rep", "--metrics-file", work / "dying.prom",
                       cwd=work, secret=CANARY)  # fmt: skip
    wait_for(lambda: slow.requests() >= 4)
    slow.kill()
    out, err = p.communicate(timeout=120)
    outputs["platform-killed"] = out + err
    assert p.returncode in (1, 3), err[-3000:]

    # dmimport dies mid-send (SIGKILL: no handler runs, nothing is flushed or redacted on the
    # way out), then the same command resumes
    slow = make("slow", "--latency-ms", "150")
    p = start_dmimport("--verbose", "run", crash_job, big, "--base-url", slow.url,
                       "--report-dir", work / "rep", cwd=work, secret=CANARY)  # fmt: skip
    wait_for(lambda: slow.requests() >= 6)
    p.send_signal(signal.SIGKILL)
    out, err = p.communicate(timeout=60)
    outputs["killed"] = out + err
    assert p.returncode == -signal.SIGKILL
    proc = cli("resumed", "run", crash_job, big, "--base-url", slow.url, "--json", expected={0})
    assert json.loads(proc.stdout)["resumed_from"]  # the killed run, found in the ledger
    cli("runs", "runs", crash_job, expected={0})
    cli("check-config", "check-config", job, expected={0})

    # every output, every file
    for name, text in outputs.items():
        assert not leaks(text), (name, leaks(text))
    # everything the runs wrote (all but the inputs: the configs and the three CSV files)
    inputs = {work / "customers.csv", work / "small.csv", work / "big.csv"}
    written = [
        p for p in work.rglob("*") if p.is_file() and p.suffix != ".yaml" and p not in inputs
    ]
    logs = sorted((tmp_path / "platform").glob("*.log"))  # the sandboxes' request logs
    names = {p.name for p in written}
    assert {"results.csv", "rejects.csv", "summary.json", "state.db"} <= names, names
    assert len([p for p in written if p.suffix == ".prom"]) == 8  # one metrics file per run
    # a report folder with its summary per run, but for the SIGKILLed one
    assert len({p.parent for p in written if p.name == "summary.json"}) == 8
    assert len(logs) == 4 and all(" /api/v1/api/" in p.read_text("utf-8") for p in logs)
    for path in [*written, *logs]:
        assert not leaks(path.read_bytes()), (path, leaks(path.read_bytes()))


# -- plain http to a host that is not loopback --------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "host"),
    [
        ("http://data-api.dmartech.cn", "data-api.dmartech.cn"),
        ("http://10.1.2.3:8080", "10.1.2.3"),
        ("http://[2001:db8::1]", "2001:db8::1"),
        ("https://data-api.dmartech.cn", None),
        ("http://127.0.0.1:8080", None),
        ("http://127.8.9.10", None),
        ("http://localhost:8080", None),
        ("http://[::1]:8080", None),
    ],
)
def test_plain_http_to_a_host_that_is_not_loopback_is_named(
    base_url: str, host: str | None
) -> None:
    cfg = parse_config(
        {
            "target": {"base_url": base_url},
            "job": {"kind": "user", "primary_keys": ["phone"]},
            "columns": {"phone": "p"},
        }
    )
    assert cfg.target.plain_http_host() == host
    said = [w for w in cfg.target.warnings() if "UNENCRYPTED" in w]
    assert len(said) == (host is not None)
    if host is not None:
        assert said[0].startswith(f"the SECRET travels UNENCRYPTED to {host} ")
        assert "Use https:// in target.base_url where the platform offers it." in said[0]


def test_check_config_warns_about_plain_http_and_still_says_ok(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(
        "job: {kind: user, primary_keys: [phone]}\ncolumns: {phone: p}\n", encoding="utf-8"
    )
    proc = dmimport("check-config", job)  # the default base_url: the documented host
    assert proc.returncode == 0
    assert proc.stdout.startswith(f"{job}: ok (")
    assert proc.stderr == (
        "warning: the SECRET travels UNENCRYPTED to data-api.dmartech.cn (target.base_url is "
        "plain http://, the SECRET is in every request's URL): anyone on the network path can "
        "read it and the data. Use https:// in target.base_url where the platform offers it.\n"
    )
    local = tmp_path / "local.yaml"
    local.write_text(
        "target: {base_url: 'http://localhost:8080'}\n" + job.read_text(encoding="utf-8"),
        encoding="utf-8",
    )
    proc = dmimport("check-config", local)
    assert (proc.returncode, proc.stderr) == (0, "")


def test_a_run_says_it_once_and_validate_does_not(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "c.csv", HEADER, rows(60, "0142"))
    job = config(tmp_path / "job.yaml", concurrency=8, batch_rows=1)
    proc = dmimport("run", job, data, "--base-url", "http://dmimport-test.invalid:8080",
                    secret="s3cret-value")  # fmt: skip
    assert proc.returncode in (1, 3), proc.stderr
    assert proc.stderr.count("UNENCRYPTED") == 1, proc.stderr
    assert "the SECRET travels UNENCRYPTED to dmimport-test.invalid (" in proc.stderr
    # validate sends nothing and needs no SECRET: nothing travels, nothing to say
    # (the config's base_url is the default, the documented host)
    proc = dmimport("validate", job, data, "--report-dir", tmp_path / "rep")
    assert proc.returncode == 0, proc.stderr
    assert "UNENCRYPTED" not in proc.stderr
