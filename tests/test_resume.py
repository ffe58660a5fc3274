"""One rule for resuming (issue 14 #6): a run stopped by an outage (exit 3), a kill, an
interruption or the daily quota resumes on the same command, without sending again the rows it
delivered; the abort says which command, and a resumed run says what it resumed."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import dmimport, read_results, start_dmimport, write_csv

from importer.api import list_runs, run, validate
from importer.sandbox import Faults, Sandbox

JOB = """
job: {name: users, kind: user, primary_keys: [phone]}
columns:
  phone: phone
  username: name
send:
  concurrency: 1
  batch_rows: 10
  rate_limit: null
  abort_after_failed_rows: 20
  retry: {max_attempts: 1}
"""


def _job(tmp_path: Path, n: int) -> tuple[Path, Path]:
    cfg = tmp_path / "users.yaml"
    cfg.write_text(JOB, encoding="utf-8")
    data = write_csv(
        tmp_path / "users.csv", ["phone", "name"], [[f"0151{i:07d}", f"u{i}"] for i in range(n)]
    )
    return cfg, data


def _stopped(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, rows: int, down_after: int, *more: str
) -> tuple[Sandbox, tuple[str, ...], subprocess.CompletedProcess[str]]:
    """A job of ``rows`` users run by the CLI against a sandbox that goes down after
    ``down_after`` requests (exit 3), then back up: the sandbox, the command's arguments
    (``more`` added) and the stopped run."""
    sb = fresh_sandbox(faults=Faults(down_after=down_after))
    _job(tmp_path, rows)
    args = ("run", "users.yaml", "users.csv", "--base-url", sb.url, *more)
    first = dmimport(*args, secret=sb.secret, cwd=tmp_path)
    assert first.returncode == 3, first.stderr
    sb.set_faults(Faults())
    return sb, args, first


def test_an_outage_abort_resumes_on_the_same_command_sending_only_undelivered_rows(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    # the platform goes down after 30 requests (300 rows): two requests of 10 rows fail, and
    # the run stops (send.abort_after_failed_rows: 20) with 280 rows not sent
    sb, args, first = _stopped(fresh_sandbox, tmp_path, 600, 30)  # then the platform is back
    cfg = tmp_path / "users.yaml"
    aborted = list_runs(cfg, ledger=tmp_path / "state" / "state.db")[0]  # the default place
    assert (aborted.status, aborted.counts["ok"], aborted.counts["failed"]) == ("aborted", 300, 20)
    lines = first.stdout.splitlines()
    at = lines.index(
        "  ABORTED: the platform failed 20 rows in a row after 1 attempt each (last: HTTP "
        "503); stopped so that the rest can be sent when it is back: run the same command again"
    )
    assert lines[at + 1 : at + 4] == [
        "  next      run the same command again: with the same config and files it resumes, "
        "and rows already delivered are not sent again:",
        f"              dmimport run users.yaml users.csv --base-url {shlex.quote(sb.url)}",
        f"            `dmimport retry users.yaml {aborted.run_id} --base-url "
        f"{shlex.quote(sb.url)}` re-sends this run's failed and not_sent rows later",
    ]
    assert sb.stats()["requests"] == 32

    second = dmimport(*args, "--json", secret=sb.secret, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    said = re.fullmatch(
        rf"resuming run {aborted.run_id} \(aborted (\d\d:\d\d): the platform failed 20 rows in "
        r"a row after 1 attempt each \(last: HTTP 503\); stopped so that the rest can be sent "
        r"when it is back: run the same command again\): 300 rows it delivered are skipped\n",
        second.stderr,
    )
    assert said is not None, second.stderr
    summary = json.loads(second.stdout)
    assert summary["resumed_from"] == aborted.run_id
    assert (summary["counts"]["skipped"], summary["counts"]["ok"]) == (300, 300)
    assert summary["requests"] == 30  # only the 300 rows not delivered, 10 a request
    stats = sb.stats()
    assert stats["requests"] == 32 + 30
    results = read_results(summary, cwd=tmp_path)
    assert [r["status"] for r in results] == ["skipped"] * 300 + ["ok"] * 300
    phones = [c["properties"]["phone"] for c in sb.customers()]
    assert sorted(phones) == [f"0151{i:07d}" for i in range(600)]  # every row, once
    assert (
        json.loads(
            (tmp_path / "reports" / f"users-{summary['run_id']}" / "summary.json").read_text()
        )["resumed_from"]
        == aborted.run_id
    )


def test_a_stopped_run_not_resumed_because_its_file_changed_says_so(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sb, args, _first = _stopped(fresh_sandbox, tmp_path, 600, 30)
    cfg, data = tmp_path / "users.yaml", tmp_path / "users.csv"
    aborted = list_runs(cfg, ledger=tmp_path / "state" / "state.db")[0]
    with open(data, "a", encoding="utf-8") as fh:  # the night's export was written again
        fh.write("01519999999,late\n")

    second = dmimport(*args, secret=sb.secret, cwd=tmp_path)

    assert second.returncode == 0, second.stderr
    assert second.stderr == (
        f"not resuming run {aborted.run_id} (aborted): {data.resolve()} changed since; "
        "every row is sent again\n"
    )


def test_the_summary_of_a_resumed_run_says_it_resumed(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sb, args, first = _stopped(fresh_sandbox, tmp_path, 100, 5)
    first_id = re.search(r"run (\S+)\n", first.stdout)
    assert first_id is not None
    second = dmimport(*args, secret=sb.secret, cwd=tmp_path)
    assert second.returncode == 0
    lines = second.stdout.splitlines()
    assert lines[2] == f"  resumed   from run {first_id.group(1)}"
    assert "  skipped             50" in lines
    assert "next" not in second.stdout  # a run that finished names no command to run again


def test_the_rejects_of_a_stopped_run_are_not_to_import_besides_the_same_command(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    _sb, _args, first = _stopped(fresh_sandbox, tmp_path, 100, 5)
    assert (
        "  rejects   rejects.csv (the rejected rows to fix and import again; the failed and "
        "not_sent ones are for the same command, not to import); why: rejects.reasons.csv"
    ) in first.stdout.splitlines()


def test_the_not_sent_rows_of_a_within_quota_run_are_not_to_import_besides_the_same_command(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    # --within-quota: exit 1, no abort, the rest not_sent and resumed by the same command
    sb = fresh_sandbox(daily_quota=3)
    cfg, _data = _job(tmp_path, 100)
    cfg.write_text(JOB + "  daily_quota: 3\n", encoding="utf-8")
    args = ("run", "users.yaml", "users.csv", "--base-url", sb.url, "--within-quota")
    first = dmimport(*args, secret=sb.secret, cwd=tmp_path)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "  not_sent            70" in first.stdout.splitlines()
    assert (
        "  rejects   rejects.csv (the rejected rows to fix and import again; the failed and "
        "not_sent ones are for the same command, not to import); why: rejects.reasons.csv"
    ) in first.stdout.splitlines()


def test_a_wrong_secret_abort_says_the_platforms_message_once(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sb = fresh_sandbox()
    _job(tmp_path, 30)
    out = dmimport(
        "run", "users.yaml", "users.csv", "--base-url", sb.url, secret="wrong", cwd=tmp_path
    )
    assert out.returncode == 3
    assert "  ABORTED: 20000 Authentication failed: unknown secret" in out.stdout.splitlines()


# -- a killed run's temporary files (issue 14 #10) -----------------------------------------------


def test_the_run_after_a_kill_removes_the_temporary_files_the_killed_run_left(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sb = fresh_sandbox(faults=Faults(latency_ms=20))  # 60 requests of 20 ms
    _job(tmp_path, 600)
    args = ("run", "users.yaml", "users.csv", "--base-url", sb.url, "-q")
    proc = start_dmimport(*args, secret=sb.secret, cwd=tmp_path, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while sb.stats()["requests"] < 10 and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (killed_dir,) = (tmp_path / "reports").iterdir()
    left = sorted(p.name for p in killed_dir.iterdir())
    assert ".results.csv.tmp" in left and "summary.json" not in left
    killed_id = killed_dir.name.removeprefix("users-")

    sb.set_faults(Faults())
    again = dmimport(*args, "--json", secret=sb.secret, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    said = re.fullmatch(
        rf"resuming run {killed_id} \(killed\): (\d+) rows it delivered are skipped\n", again.stderr
    )
    assert said is not None, again.stderr
    # what the ledger had committed when the kill came (every 100 ms): skipped, not sent
    assert 0 < int(said.group(1)) < 600
    assert json.loads(again.stdout)["counts"]["skipped"] == int(said.group(1))
    assert not [p.name for p in killed_dir.iterdir() if p.name.endswith(".tmp")]
    assert len(sb.customers()) == 600


# -- report.keep_runs (issue 14 #10) --------------------------------------------------------------


def _folders(root: Path, job: str = "users") -> list[str]:
    return sorted(p.name.removeprefix(f"{job}-") for p in root.iterdir() if p.name.startswith(job))


def test_keep_runs_prunes_the_oldest_report_folders_of_the_job_only(tmp_path: Path) -> None:
    cfg, data = _job(tmp_path, 20)
    reports = tmp_path / "reports"
    ov = {"report.keep_runs": 2}
    # what pruning must leave alone: another job's folder, a folder of another name, and a
    # folder of this job the ledger does not know, still being written (no summary.json)
    for name in ("other-20200101T000000-aaaaaa", "users-notes", "users-20200101T000000-bbbbbb"):
        (reports / name).mkdir(parents=True)
    stale = reports / "users-20200101T000001-cccccc"  # the same, dead for two days
    stale.mkdir()
    (stale / ".results.csv.tmp").write_text("")
    two_days_ago = time.time() - 2 * 86400
    for path in (stale / ".results.csv.tmp", stale):
        os.utime(path, (two_days_ago, two_days_ago))
    ids = [validate(cfg, [data], overrides=ov, report_dir=reports).run_id for _ in range(4)]
    assert _folders(reports) == sorted(["20200101T000000-bbbbbb", *ids[-2:], "notes"])
    assert _folders(reports, "other") == ["20200101T000000-aaaaaa"]
    # 0 keeps everything
    keep_all = {"report.keep_runs": 0}
    more = [validate(cfg, [data], overrides=keep_all, report_dir=reports).run_id for _ in range(2)]
    assert len(_folders(reports)) == 2 + 2 + len(more)


def test_keep_runs_never_prunes_the_folder_of_the_run_to_resume(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox(faults=Faults(down_after=3))
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    cfg, data = _job(tmp_path, 100)
    reports = tmp_path / "reports"
    ov = {"target.base_url": sb.url, "report.keep_runs": 1, "report.dir": str(reports)}
    aborted = run(cfg, [data], overrides=ov, report_dir=reports)
    assert aborted.exit_code == 3
    checked = [validate(cfg, [data], overrides=ov, report_dir=reports).run_id for _ in range(2)]
    # the aborted run is the one the next run resumes: its folder stays
    assert _folders(reports) == sorted([aborted.run_id, checked[-1]])
    sb.set_faults(Faults())
    resumed = run(cfg, [data], overrides=ov, report_dir=reports)
    assert (resumed.resumed_from, resumed.exit_code) == (aborted.run_id, 0)
    assert _folders(reports) == [resumed.run_id]  # nothing to resume any more


def test_a_retry_of_a_resumed_run_sends_none_of_the_rows_the_resume_delivered(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    # the abort names two ways on: the same command (done here), and `dmimport retry` of the
    # aborted run "later": that must not send again what the resume delivered
    sb, args, first = _stopped(fresh_sandbox, tmp_path, 100, 5)
    found = re.search(r"run (\S+)\n", first.stdout)
    assert found is not None
    first_id = found.group(1)
    second = dmimport(*args, "--json", secret=sb.secret, cwd=tmp_path)
    assert second.returncode == 0
    second_id = json.loads(second.stdout)["run_id"]
    requests = sb.stats()["requests"]

    again = dmimport("retry", "users.yaml", first_id, "--base-url", sb.url, secret=sb.secret,
                     cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert sb.stats()["requests"] == requests  # nothing sent twice
    assert (
        f"run {first_id} was resumed by run {second_id} (the same command run again): retrying "
        "the rows that run left failed or not_sent, not the rows it delivered"
    ) in again.stderr
    assert (
        f"nothing to retry: {second_id} has no failed or not_sent rows"
        in again.stdout + again.stderr
    )


def test_the_resume_line_writes_its_count_as_the_summary_does(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    # 1,200 rows delivered, 10 a request
    sb, args, _first = _stopped(fresh_sandbox, tmp_path, 1500, 120, "-q")
    again = dmimport(*args, secret=sb.secret, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stderr.endswith(": 1,200 rows it delivered are skipped\n"), again.stderr
    assert "  skipped          1,200" in again.stdout.splitlines()


@pytest.mark.parametrize("by", ["run_id", "results"])
def test_a_retry_of_a_run_whose_file_changed_since_sends_nothing(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, by: str
) -> None:
    # the nightly export is written again under the same name: the failed rows' lines now
    # hold other customers (was: those sent in their place, reported ok, exit 0)
    sb = fresh_sandbox(faults=Faults(down_after=5))
    _cfg, data = _job(tmp_path, 100)
    first = dmimport("run", "users.yaml", "users.csv", "--base-url", sb.url, "--json",
                     secret=sb.secret, cwd=tmp_path)  # fmt: skip
    assert first.returncode == 3
    summary = json.loads(first.stdout)
    sb.set_faults(Faults())
    write_csv(data, ["phone", "name"], [[f"0152{i:07d}", f"v{i}"] for i in range(100)])
    before = sb.stats()["requests"]
    target = summary["run_id"] if by == "run_id" else summary["results"]
    again = dmimport("retry", "users.yaml", target, "--base-url", sb.url,
                     secret=sb.secret, cwd=tmp_path)  # fmt: skip
    assert again.returncode == 2, again.stdout + again.stderr
    assert again.stderr == (
        f"error: users.csv changed since run {target} read it (its size or contents differ): "
        "the rows that run left failed or not_sent are no longer on the lines it recorded, so "
        "nothing was sent. Send the file as it is now with `dmimport run`, or put back the "
        "file that run read and retry again\n"
    )
    assert sb.stats()["requests"] == before
    assert not any(c["properties"]["phone"].startswith("0152") for c in sb.customers())
