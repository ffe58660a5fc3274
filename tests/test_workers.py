"""``--workers N``: several sender processes, against the real sandbox over loopback.

Per-customer order across processes (issue 11 #3), failure bounds counted per run (#20), and
signals: SIGINT and SIGTERM stop a run cleanly, children die with their parent (#17).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import dmimport, read_results, start_dmimport, write_csv

from importer.api import run
from importer.config import RetryOptions
from importer.outcomes import RowResult, Status
from importer.protocol import DEFAULT_PROFILE, IMPORT_PATH
from importer.report import RunSummary
from importer.sandbox import Faults, Sandbox
from importer.send import MultiProcessSender, Request, RequestSource, WorkerSpec
from importer.send.budget import RequestBudget

pytestmark = pytest.mark.slow  # sender processes, signals

COLUMNS = ["phone", "email", "name"]

# duplicates: keep_all: these tests put repeated customers through the sender and the ledger;
# the default (keep_last, tests/test_duplicates.py) would send each customer's last row only
USERS = """
job: {{name: users, kind: user, primary_keys: [phone, email], duplicates: keep_all}}
columns:
  phone: {{from: phone}}
  email: {{from: email}}
  username: {{from: name}}
send:
  concurrency: {concurrency}
  batch_rows: {batch_rows}
  rate_limit: null
  daily_quota: 0
  retry: {{max_attempts: 4, initial_backoff_s: 0.01, max_backoff_s: 0.02}}
report: {{dir: {reports}}}
state: {{path: {state}}}
"""


def make_config(tmp_path: Path, concurrency: int = 8, batch_rows: int = 1) -> Path:
    """One row per request unless told (the tests of signals and bounds count requests as
    rows); no rate limit, no daily quota: the sandbox answers as fast as it can."""
    path = tmp_path / "job.yaml"
    text = USERS.format(
        concurrency=concurrency,
        batch_rows=batch_rows,
        reports=tmp_path / "reports",
        state=tmp_path / "state.db",
    )
    path.write_text(text, encoding="utf-8")
    return path


def send(
    sb: Sandbox, cfg: Path, data: Path, monkeypatch: pytest.MonkeyPatch, **overrides: Any
) -> RunSummary:
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    return run(cfg, [data], overrides={"target.base_url": sb.url, **overrides})


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_customers_known_by_several_keys_keep_file_order_across_processes(
    fresh_sandbox: Callable[..., Sandbox],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: int,
) -> None:
    # 400 customers as the issue has them: row A names one by phone and e-mail (old values),
    # the next row B by e-mail alone (new values). Routed by the first key, A and B went to
    # different processes and B could land first. 100 more customers link two keys that
    # were seen apart: X by phone, Y by e-mail, Z by both (the platform merges them), then V
    # by phone and W by e-mail: the last row of each must win.
    sb = fresh_sandbox(faults=Faults(seed=workers, latency_ms="0-15"))
    rows: list[list[str]] = []
    expected: dict[str, tuple[str, str]] = {}
    for c in range(400):
        phone, email = f"0160{c:07d}", f"c{c}@x.cn"
        rows += [[phone, email, f"old-{c}"], ["", email, f"new-{c}"]]
        expected[phone] = (email, f"new-{c}")
    for c in range(100):
        phone, email = f"0161{c:07d}", f"m{c}@x.cn"
        rows += [[phone, "", f"x-{c}"], ["", email, f"y-{c}"], [phone, email, f"z-{c}"]]
        rows += [[phone, "", f"v-{c}"], ["", email, f"w-{c}"]]
        expected[phone] = (email, f"w-{c}")
    data = write_csv(tmp_path / "u.csv", COLUMNS, rows)
    cfg = make_config(tmp_path, batch_rows=25)  # a batch never carries one customer twice
    summary = send(sb, cfg, data, monkeypatch, **{"send.workers": workers})
    assert (summary.exit_code, summary.counts["ok"]) == (0, 1300)
    assert 1300 / 25 <= summary.requests == sb.stats()["by_path"][IMPORT_PATH] < 1300
    stored = {
        c["properties"]["phone"]: (c["properties"]["email"], c["properties"]["username"])
        for c in sb.customers()
    }
    assert len(sb.customers()) == 500  # each merged customer is one customer
    wrong = {p: (stored.get(p), want) for p, want in expected.items() if stored.get(p) != want}
    assert wrong == {}


# -- a platform that turns every request away (issue 11 #20) ----------------------------------


def failing_platform_run(
    fresh_sandbox: Callable[..., Sandbox],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    n: int,
    **overrides: Any,
) -> tuple[Sandbox, RunSummary]:
    # 429 on every request, with a Retry-After of 0 s (one past retry_after_cap_s would stop
    # the run at the first answer: the platform's limit is spent)
    sb = fresh_sandbox(faults=Faults(http_429=1.0, retry_after="0"))
    rows = [[f"0162{i:07d}", f"f{i}@x.cn", f"f{i}"] for i in range(n)]
    data = write_csv(tmp_path / "u.csv", COLUMNS, rows)
    ov = {
        "send.retry.max_attempts": 5,
        "send.retry.max_backoff_s": 0,
        **overrides,
    }
    summary = send(sb, make_config(tmp_path), data, monkeypatch, **ov)
    return sb, summary


def test_a_platform_answering_429_forever_stops_the_run_after_a_bounded_number_of_requests(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb, summary = failing_platform_run(
        fresh_sandbox, tmp_path, monkeypatch, 1000,
        **{"send.concurrency": 1, "send.abort_after_failed_requests": 30},
    )  # fmt: skip
    assert summary.exit_code == 3
    assert summary.aborted == (
        "the platform failed the last 30 requests in a row (last: HTTP 429); stopped so that "
        "the rest can be sent when it is back: run the same command again"
    )
    # one request at a time: exactly the bound, six rows of five attempts
    assert summary.requests == sb.stats()["by_path"][IMPORT_PATH] == 30
    results = read_results(summary)
    assert [r["attempts"] for r in results if r["status"] == "failed"] == ["5"] * 6
    assert (summary.counts["failed"], summary.counts["not_sent"]) == (6, 994)


@pytest.mark.parametrize("workers", [1, 2])
def test_the_request_bound_holds_for_the_run_whatever_the_concurrency_and_workers(
    fresh_sandbox: Callable[..., Sandbox],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: int,
) -> None:
    concurrency, limit = 4, 40
    sb, summary = failing_platform_run(
        fresh_sandbox, tmp_path, monkeypatch, 3000,
        **{"send.concurrency": concurrency, "send.workers": workers,
           "send.abort_after_failed_requests": limit},
    )  # fmt: skip
    assert summary.exit_code == 3
    assert summary.aborted is not None
    assert summary.aborted.startswith("the platform failed the last 40 requests in a row")
    # the requests in flight when the bound was reached end; none is started after it
    in_flight = workers * concurrency
    assert limit <= summary.requests == sb.stats()["by_path"][IMPORT_PATH] <= limit + in_flight
    assert summary.counts["failed"] + summary.counts["not_sent"] == 3000


def test_failed_rows_are_counted_for_the_run_not_per_sender_process(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # each process used to count its own rows: with 2 workers about twice the bound failed
    concurrency, limit = 4, 40
    sb, summary = failing_platform_run(
        fresh_sandbox, tmp_path, monkeypatch, 3000,
        **{"send.concurrency": concurrency, "send.workers": 2,
           "send.retry.max_attempts": 2, "send.abort_after_failed_rows": limit,
           "send.abort_after_failed_requests": 0},
    )  # fmt: skip
    assert summary.exit_code == 3
    assert summary.aborted == (
        f"the platform failed {limit} rows in a row after 2 attempts each (last: HTTP 429); "
        "stopped so that the rest can be sent when it is back: run the same command again"
    )
    assert limit <= summary.counts["failed"] <= limit + 2 * concurrency
    assert summary.counts["failed"] + summary.counts["not_sent"] == 3000
    assert summary.requests == sb.stats()["by_path"][IMPORT_PATH]


# -- signals (issue 11 #17) ---------------------------------------------------------------------


def start_run(sb: Sandbox, cfg: Path, data: Path, *extra: str) -> subprocess.Popen[str]:
    return start_dmimport(
        "run", cfg, data, "--base-url", sb.url, "--quiet", "--json", *extra, secret=sb.secret,
        start_new_session=True,  # a process group of its own, as a terminal gives it
    )  # fmt: skip


def finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Its stdout and stderr once it exits; killed if it hangs (then the test fails)."""
    try:
        return proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def sent(sb: Sandbox) -> int:
    return int(sb.stats()["by_path"].get(IMPORT_PATH, 0))


def wait_for_requests(sb: Sandbox, proc: subprocess.Popen[str], n: int) -> None:
    """Until the platform has seen ``n`` rows of the run (the run is mid-send)."""
    deadline = time.monotonic() + 60
    while sent(sb) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run did not start sending"
        time.sleep(0.01)


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize(
    ("sig", "workers"),
    [(signal.SIGINT, 1), (signal.SIGTERM, 1), (signal.SIGINT, 2), (signal.SIGTERM, 2)],
)
def test_sigint_and_sigterm_stop_the_run_cleanly_and_it_resumes(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, sig: int, workers: int
) -> None:
    sb = fresh_sandbox(faults=Faults(latency_ms=20))
    n = 3000
    rows = [[f"0163{i:07d}", f"s{i}@x.cn", f"s{i}"] for i in range(n)]
    data = write_csv(tmp_path / "u.csv", COLUMNS, rows)
    cfg = make_config(tmp_path, concurrency=4)
    proc = start_run(sb, cfg, data, "--workers", str(workers))
    wait_for_requests(sb, proc, 100)
    if sig == signal.SIGINT:  # Ctrl-C: the terminal signals the whole process group
        os.killpg(proc.pid, sig)
    else:  # kill, or systemd's KillMode=mixed: the main process only
        proc.send_signal(sig)
    out, err = finish(proc)
    name = signal.Signals(sig).name

    assert proc.returncode == 128 + sig, err
    assert err == ""  # no traceback, from any thread or process
    summary = json.loads(out)
    assert (summary["interrupted"], summary["exit_code"], summary["aborted"]) == (
        name,
        128 + sig,
        None,
    )
    counts = summary["counts"]
    assert counts["ok"] >= 100 and counts["not_sent"] > 0
    assert counts["ok"] + counts["not_sent"] == n
    assert summary["requests"] == sent(sb) == counts["ok"]
    results = read_results(summary)
    assert len(results) == n
    assert {r["errmsg"] for r in results if r["status"] == "not_sent"} == {
        "not sent: the run was interrupted"
    }
    assert list(tmp_path.rglob("*.tmp")) == []
    listed = dmimport("runs", cfg, "--json", timeout=60, check=True)
    last = json.loads(listed.stdout)[0]
    assert (last["run_id"], last["status"], last["exit_code"]) == (
        summary["run_id"], "interrupted", 128 + sig
    )  # fmt: skip

    sb.set_faults(Faults())
    again = dmimport("run", cfg, data, "--base-url", sb.url, "--quiet", "--json", secret=sb.secret)
    assert again.returncode == 0, again.stderr
    resumed = json.loads(again.stdout)
    assert resumed["resumed_from"] == summary["run_id"]
    assert resumed["counts"]["ok"] == counts["not_sent"]
    assert len(sb.customers()) == n


def test_sender_processes_stop_sending_when_their_parent_is_killed(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sb = fresh_sandbox(faults=Faults(latency_ms=10))
    concurrency = 8
    rows = [[f"0164{i:07d}", f"k{i}@x.cn", f"k{i}"] for i in range(20_000)]
    data = write_csv(tmp_path / "u.csv", COLUMNS, rows)
    cfg = make_config(tmp_path, concurrency=concurrency)
    proc = start_run(sb, cfg, data, "--workers", "2")
    wait_for_requests(sb, proc, 200)
    children = children_of(proc.pid)
    assert len(children) >= 2  # the sender processes
    proc.kill()
    proc.wait()  # not communicate(): the children hold its stdout and stderr open
    at_kill = sent(sb)
    deadline = time.monotonic() + 30
    while any(alive(c) for c in children):
        assert time.monotonic() < deadline, "the sender processes outlived their parent"
        time.sleep(0.01)
    after = sent(sb)
    # what was in flight when the parent died, at most; then nothing more, ever
    assert after - at_kill <= 2 * concurrency
    time.sleep(0.5)
    assert sent(sb) == after
    assert "Traceback" not in proc.communicate()[1]


def test_a_sender_process_that_dies_stops_the_run_with_a_report(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    # the OOM killer takes one sender process: the run stops (exit 3) and says so, every row
    # has its line, and no traceback reaches the user
    sb = fresh_sandbox(faults=Faults(latency_ms=10))
    n = 20_000
    rows = [[f"0166{i:07d}", f"o{i}@x.cn", f"o{i}"] for i in range(n)]
    data = write_csv(tmp_path / "u.csv", COLUMNS, rows)
    proc = start_run(sb, make_config(tmp_path, concurrency=8), data, "--workers", "2")
    wait_for_requests(sb, proc, 200)
    senders = [
        c for c in children_of(proc.pid)
        if b"resource_tracker" not in Path(f"/proc/{c}/cmdline").read_bytes()
    ]  # fmt: skip
    os.kill(senders[0], signal.SIGKILL)
    out, err = finish(proc)
    assert proc.returncode == 3, err
    assert "Traceback" not in err
    summary = json.loads(out)
    assert summary["aborted"] in {"sender process 0 died", "sender process 1 died"}
    assert summary["counts"]["ok"] + summary["counts"]["not_sent"] == n
    # rows the dead process sent but whose answer it never passed on are not_sent (the next
    # run sends them again): never ok without the platform's answer
    assert summary["counts"]["ok"] <= sent(sb)


def library_spec(sb: Sandbox, concurrency: int = 4) -> WorkerSpec:
    profile = DEFAULT_PROFILE
    return WorkerSpec(
        base_url=sb.url, timeout=5, verify=True, ca_file=None, secret=sb.secret, kind="user",
        target=profile.target("user", False, sb.secret),
        shown_url=sb.url + profile.shown_target("user", False), profile=profile,
        concurrency=concurrency, retry=RetryOptions(), rate_limit=None, ordered=True,
        abort_after_signature_failures=5,
    )  # fmt: skip


class ListSource(RequestSource):
    def __init__(self, requests: list[Request]) -> None:
        self.requests = requests

    async def next_request(self) -> Request | None:
        return self.requests.pop(0) if self.requests else None


def test_sender_processes_bisect_batches_number_requests_apart_and_add_up_their_counters() -> None:
    """``MultiProcessSender`` as a library: batches with bad rows go to two processes; each
    row ends as if sent alone, request ids are unique across processes, the counters add up,
    and the shared budget counts every request."""
    with Sandbox(batch_errors="store_valid") as sb:
        spec = library_spec(sb)
        bad = {3, 77, 78, 150, 399}
        requests = []
        for start in range(0, 400, 50):
            rows = tuple(range(start, start + 50))
            items = tuple(
                b'{"username":"u%d"}' % i if i in bad else b'{"phone":"139%08d"}' % i for i in rows
            )
            requests.append(Request(rows, items, tuple(f"139{i:08d}" for i in rows)))
        budget = RequestBudget(10_000)
        sender = MultiProcessSender(spec, 2, budget=budget)
        results: dict[int, RowResult] = {}

        asyncio.run(sender.run(ListSource(requests), results.__setitem__))

        assert sorted(results) == list(range(400))
        assert {i for i, r in results.items() if r.status is Status.FAILED} == bad
        assert {results[i].errcode for i in bad} == {20001}
        assert len(sb.customers()) == 400 - len(bad)
        stats = sb.stats()
        assert sender.requests == stats["requests"] == budget.used
        assert sender.batch_requests <= sender.requests
        assert 0 < sender.bisect_requests == sender.requests - 8
        assert (sender.too_big_splits, sender.batch_limit, sender.quota_exhausted) == (
            0,
            None,
            False,
        )
        # rows carried by one request share its id; two requests never share one, whichever
        # process made them (ids of a process: i + 1, i + 1 + 2, ...)
        carried: dict[int, set[int]] = {}
        for i, r in results.items():
            assert r.request_id is not None
            carried.setdefault(r.request_id, set()).add(i // 50)
        assert all(len(batches) == 1 for batches in carried.values())
        assert {rid % 2 for rid in carried} == {0, 1}


def test_the_budget_is_shared_by_the_sender_processes_and_its_end_stops_them_all() -> None:
    with Sandbox() as sb:
        requests = [
            Request((i,), (b'{"phone":"139%08d"}' % i,), (f"139{i:08d}",)) for i in range(300)
        ]
        budget = RequestBudget(40)
        sender = MultiProcessSender(library_spec(sb, concurrency=2), 2, budget=budget)
        results: dict[int, RowResult] = {}
        asyncio.run(sender.run(ListSource(requests), results.__setitem__))
        assert sorted(results) == list(range(300))
        statuses = [r.status for r in results.values()]
        assert statuses.count(Status.OK) == 40 == len(sb.customers()) == sb.stats()["requests"]
        assert statuses.count(Status.NOT_SENT) == 260
        assert budget.used == sender.requests == 40 and budget.exhausted
        assert sender.quota_exhausted and not sender.aborted, sender.abort_reason
        assert sender.stop_reason == "the run's request budget (send.daily_quota) is spent"
