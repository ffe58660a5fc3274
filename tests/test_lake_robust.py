"""``importer.lake`` against states and change sets that were not left as a plan wrote them
(issue 15): a hand-made state out of order, a ``_CURRENT`` naming no version, a change set
edited by hand (a dm_ column missing or of another type), a commit of results whose change
set was planned again. Each is met with the right rows or a clear message, never a crash."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import send_changes

import importer
from importer import lake
from importer.lake import state as states
from importer.sandbox import Faults, Sandbox

ROOT = Path(__file__).resolve().parent.parent
CUSTOMERS = ROOT / "configs" / "customers.yaml"
REASON = (
    "planned with another config: the body differs from the plan's (plan again with this config)"
)


def _customer(i: int, **changes: str) -> dict[str, str]:
    row = {
        "手机号": f"136{i:08d}",
        "邮箱": f"robust{i}@example.cn",
        "姓名": f"客户{i}",
        "年龄": str(30 + i % 40),
        "性别": "男",
        "会员": "false",
        "城市": "成都",
        "注册时间": "2024-05-01 08:00:00",
    }
    row.update(changes)
    return row


def _table(rows: list[dict[str, str]]) -> pa.Table:
    return pa.table({h: pa.array([r[h] for r in rows], pa.string()) for h in rows[0]})


def _delivered_state(tmp: Path, rows: list[dict[str, str]]) -> pa.Table:
    """The state a commit of every row would leave, sorted by identity hash."""
    lake.plan_table(CUSTOMERS, _table(rows), out=tmp / "first")
    changes = pq.read_table(tmp / "first" / "changes")
    table = pa.table(
        {
            "identity_hash": changes.column("dm_identity_hash"),
            "body_hash": changes.column("dm_body_hash"),
        }
    )
    return table.sort_by("identity_hash")


def test_a_state_written_out_of_order_still_finds_every_identity(tmp_path: Path) -> None:
    rows = [_customer(i) for i in range(1, 121)]
    known = _delivered_state(tmp_path, rows)
    # two files whose ranges come in the wrong name order
    state = tmp_path / "two-files"
    version = states.new_version(state, "customers", "user")
    states.write_state(version, known.slice(60), name="part-00000")
    states.write_state(version, known.slice(0, 60), name="part-00001")
    states.publish(state, version)
    plan = lake.plan_table(CUSTOMERS, _table(rows), state=state, out=tmp_path / "o1")
    assert (plan.to_send, plan.unchanged) == (0, 120)
    # one file, rows shuffled
    shuffled = tmp_path / "shuffled"
    version = states.new_version(shuffled, "customers", "user")
    perm = np.random.default_rng(15).permutation(known.num_rows)
    states.write_state(version, known.take(pa.array(perm)))
    states.publish(shuffled, version)
    rows[7] = _customer(8, 城市="重庆")
    plan = lake.plan_table(CUSTOMERS, _table(rows), state=shuffled, out=tmp_path / "o2")
    assert (plan.to_send, plan.unchanged) == (1, 119)
    assert pq.read_table(tmp_path / "o2" / "changes").column("dm_row").to_pylist() == [8]


def test_current_naming_a_folder_outside_the_state_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "_CURRENT").write_text("..\n", encoding="utf-8")
    with pytest.raises(importer.ConfigError) as info:
        states.current(state)
    assert str(info.value).endswith(
        f"state table {state}: _CURRENT names .., which is not a folder of it "
        "(a version removed by hand?)"
    )


def _send(changes: Path, sb: Sandbox, tmp: Path, name: str) -> importer.RunSummary:
    return send_changes(CUSTOMERS, changes, sb.url, tmp / name, tmp / f"{name}.db")


def _edited(tmp: Path, name: str, edit: Callable[[pa.Table], pa.Table]) -> Path:
    lake.plan_table(CUSTOMERS, _table([_customer(i) for i in range(1, 6)]), out=tmp / "plan")
    planned = pq.read_table(tmp / "plan" / "changes")
    folder = tmp / name / "changes"
    folder.mkdir(parents=True)
    pq.write_table(
        edit(planned).replace_schema_metadata(planned.schema.metadata), folder / "p.parquet"
    )
    return folder


@pytest.mark.parametrize(
    "name, edit",
    [
        ("hash-as-text", lambda t: t.set_column(
            t.schema.get_field_index("dm_body_hash"), "dm_body_hash",
            t.column("dm_body_hash").cast(pa.string()),
        )),
        ("hash-dropped", lambda t: t.drop_columns(["dm_body_hash"])),
    ],
)  # fmt: skip
def test_a_change_set_whose_body_hash_is_gone_sends_nothing(
    fresh_sandbox: Callable[..., Sandbox],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    edit: Callable[[pa.Table], pa.Table],
) -> None:
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    changes = _edited(tmp_path, name, edit)
    run = _send(changes, sb, tmp_path, "r")
    assert (run.counts.get("rejected"), run.counts.get("ok"), run.requests) == (5, 0, 0)
    assert run.exit_code == 1
    assert sb.stored_json("customers") == []
    assert run.results_path is not None
    with open(run.results_path, encoding="utf-8-sig") as fh:
        assert fh.read().count(REASON) == 5


def test_commit_of_a_change_set_without_its_identity_hashes_is_refused(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    changes = _edited(tmp_path, "e", lambda t: t.drop_columns(["dm_identity_hash"]))
    run = _send(changes, sb, tmp_path, "r")
    assert run.counts.get("ok") == 5
    with pytest.raises(importer.UsageError) as info:
        lake.commit_table(run, tmp_path / "state")
    assert str(info.value) == (
        f"{changes / 'p.parquet'} is not a change set a plan wrote: column dm_identity_hash is "
        "missing or not of its type (edited by hand?); plan again, run the new change set, "
        "then commit that run's results"
    )
    assert states.current(tmp_path / "state") is None


def test_commit_of_results_whose_change_set_shrank_since_is_refused(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    out, state = tmp_path / "out", tmp_path / "state"
    lake.plan_table(CUSTOMERS, _table([_customer(i) for i in range(1, 9)]), out=out)
    run = _send(out / "changes", sb, tmp_path, "r")
    assert run.counts.get("ok") == 8 and run.results_path is not None
    lake.plan_table(CUSTOMERS, _table([_customer(i) for i in range(1, 3)]), out=out)
    os.utime(run.results_path)  # copied after the new plan: its time says nothing
    assert run.report_dir is not None
    (run.report_dir / "summary.json").unlink()  # ... without the summary: no fingerprints
    with pytest.raises(importer.UsageError) as info:
        lake.commit_table(run, state)
    assert str(info.value) == (
        f"{run.results_path} names line 8 of {out / 'changes' / 'part-00000.parquet'}, which "
        "has 2 rows: the change set was planned again since that run, so its rows are not "
        "the ones the run sent; run the new change set, then commit that run's results"
    )
    assert states.current(state) is None


def test_commit_of_results_touched_after_a_new_plan_at_least_as_long_is_refused(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # planned again with other rows, as many as before, then the results copied (newer than
    # the new plan): only the change set's content tells it is not the one the run sent
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    out, state = tmp_path / "out", tmp_path / "state"
    lake.plan_table(CUSTOMERS, _table([_customer(i) for i in range(1, 5)]), out=out)
    run = _send(out / "changes", sb, tmp_path, "r")
    assert run.counts.get("ok") == 4 and run.results_path is not None
    lake.plan_table(CUSTOMERS, _table([_customer(i) for i in range(11, 16)]), out=out)
    os.utime(run.results_path)
    with pytest.raises(importer.UsageError) as info:
        lake.commit_table(run, state)
    assert str(info.value) == (
        f"{out / 'changes' / 'part-00000.parquet'} changed since run {run.run_id} sent it "
        "(planned again?): commit before planning again, or run the new change set first"
    )
    assert states.current(state) is None


def test_commit_of_a_change_set_touched_but_not_changed_since_the_run_is_merged(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a backup restored the change set with a new time: the same bytes the run sent
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    rows = [_customer(i) for i in range(1, 4)]
    out, state = tmp_path / "out", tmp_path / "state"
    lake.plan_table(CUSTOMERS, _table(rows), out=out)
    run = _send(out / "changes", sb, tmp_path, "r")
    assert run.results_path is not None
    part = out / "changes" / "part-00000.parquet"
    later = run.results_path.stat().st_mtime + 60
    os.utime(part, (later, later))
    done = lake.commit_table(run, state)
    assert (done.delivered, done.state_rows) == (3, 3)
    assert states.read_state(state).equals(_delivered_state(tmp_path, rows))


def test_commit_of_a_resumed_run_counts_the_rows_the_stopped_run_delivered(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an outage stops the first run after 2 requests; the same command resumes it: the rows
    # the first run delivered are `skipped` in the resumed run's results, and are delivered
    sb = fresh_sandbox(faults=Faults(down_after=2))
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    out, state = tmp_path / "out", tmp_path / "state"
    rows = [_customer(i) for i in range(1, 11)]
    lake.plan_table(CUSTOMERS, _table(rows), out=out)
    overrides = {
        "target.base_url": sb.url,
        "send.batch_rows": 2,
        "send.concurrency": 1,
        "send.abort_after_failed_rows": 1,
        "send.retry.max_attempts": 1,
    }

    def send() -> importer.RunSummary:
        return importer.run(
            CUSTOMERS,
            [out / "changes"],
            overrides=overrides,
            report_dir=tmp_path / "r",
            ledger=tmp_path / "l.db",
        )

    first = send()
    assert first.exit_code == 3 and first.counts.get("ok") == 4
    sb.set_faults(Faults())
    second = send()
    assert (second.counts.get("skipped"), second.counts.get("ok")) == (4, 6)
    done = lake.commit_table(second, state)
    assert (done.delivered, done.state_rows) == (10, 10)
    assert states.read_state(state).equals(_delivered_state(tmp_path, rows))
    again = lake.plan_table(CUSTOMERS, _table(rows), state=state, out=tmp_path / "again")
    assert again.to_send == 0


def test_a_plans_output_folder_given_as_the_input_is_refused(tmp_path: Path) -> None:
    # `dmimport run CONFIG OUT/` instead of OUT/changes/: plan.json is not rows to import
    out = tmp_path / "out"
    lake.plan_table(CUSTOMERS, _table([_customer(i) for i in range(1, 4)]), out=out)
    with pytest.raises(importer.LoadError) as info:
        importer.validate(CUSTOMERS, out, report_dir=tmp_path / "r")
    assert str(info.value) == (
        f"{out}: this is the output folder of a lake-side plan (plan.json, changes/, "
        f"rejects/), not an input: send its change set: {out / 'changes'}"
    )
    assert importer.validate(CUSTOMERS, out / "changes", report_dir=tmp_path / "r").rows == 3


def test_commit_from_another_folder_finds_the_change_set_the_run_named_relatively(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `cd /data && dmimport run CONFIG out/changes/`, then a commit from a script elsewhere
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    rows = [_customer(i) for i in range(1, 5)]
    lake.plan_table(CUSTOMERS, _table(rows), out=tmp_path / "out")
    monkeypatch.chdir(tmp_path)
    run = _send(Path("out") / "changes", sb, tmp_path, "r")
    assert run.counts.get("ok") == 4 and run.results_path is not None
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    done = lake.commit_table(run.results_path, tmp_path / "state")
    assert (done.delivered, done.state_rows) == (4, 4)
    assert states.read_state(tmp_path / "state").equals(_delivered_state(tmp_path, rows))


def test_a_state_that_is_a_file_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("not a state")
    with pytest.raises(importer.ConfigError) as info:
        lake.plan_table(
            CUSTOMERS, _table([_customer(1)]), state=tmp_path / "state", out=tmp_path / "out"
        )
    assert str(info.value) == (
        f"invalid config:\n  config: state table {tmp_path / 'state'}: not a folder "
        "(a state table is a folder)"
    )


def test_a_change_set_runs_rejects_fixed_by_hand_import_as_a_plain_file(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the platform refuses every row; the rejects file is "ready to fix and re-import": fixed
    # rows must not be refused as "planned with another config"
    sb = fresh_sandbox(faults=Faults(blacklisted=1.0))
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    lake.plan_table(CUSTOMERS, _table([_customer(i) for i in range(1, 4)]), out=tmp_path / "out")
    run = _send(tmp_path / "out" / "changes", sb, tmp_path, "r")
    assert run.counts.get("failed") == 3 and run.report_dir is not None
    [rejects] = Path(run.report_dir).glob("rejects*.parquet")
    table = pq.read_table(rejects)
    assert table.num_rows == 3 and b"dmimport.change_set" not in (table.schema.metadata or {})
    fixed = table.set_column(2, "姓名", pa.array(["甲", "乙", "丙"]))
    pq.write_table(fixed, tmp_path / "fixed.parquet")
    checked = importer.validate(CUSTOMERS, tmp_path / "fixed.parquet", report_dir=tmp_path / "v")
    assert (checked.counts.get("valid"), checked.counts.get("rejected")) == (3, 0)


def test_an_out_that_is_a_file_is_refused_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("a file")
    with pytest.raises(importer.UsageError) as info:
        lake.plan_table(CUSTOMERS, _table([_customer(1)]), out=tmp_path / "out")
    assert str(info.value) == (
        f"{tmp_path / 'out'}: not a folder (a plan writes OUT/changes/, OUT/rejects/ there)"
    )


@pytest.mark.parametrize("job, kind", [("vip_customers", "user"), ("customers", "event")])
def test_a_change_set_planned_for_another_job_or_kind_is_refused_before_sending(
    fresh_sandbox: Callable[..., Sandbox],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    job: str,
    kind: str,
) -> None:
    # a nightly script sends another job's change set with this config: its commit would
    # record that job's rows in this job's state (or the reverse); refused, nothing sent
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    lake.plan_table(CUSTOMERS, _table([_customer(i) for i in range(1, 4)]), out=tmp_path / "p")
    planned = pq.read_table(tmp_path / "p" / "changes")
    folder = tmp_path / "other" / "changes"
    folder.mkdir(parents=True)
    part = folder / "part-00000.parquet"
    pq.write_table(planned.replace_schema_metadata(lake.change_set_metadata(job, kind)), part)
    expected = (
        f"invalid config {CUSTOMERS}:\n"
        f"  {part}: a change set planned for job {job!r} (kind {kind!r}), not for this "
        "config's job 'customers' (kind 'user') -- run it with the config it was planned "
        "with, or plan again with this config"
    )
    with pytest.raises(importer.ConfigError) as info:
        _send(folder, sb, tmp_path, "r")
    assert (str(info.value), info.value.exit_code) == (expected, 2)
    assert sb.stored_json("customers") == []
    assert not (tmp_path / "r").exists()
    with pytest.raises(importer.ConfigError) as info:
        importer.validate(CUSTOMERS, folder, report_dir=tmp_path / "v")
    assert str(info.value) == expected
    # the same change set under its own job's name is sent
    ours = tmp_path / "ours" / "changes"
    ours.mkdir(parents=True)
    pq.write_table(planned, ours / "part-00000.parquet")
    assert _send(ours, sb, tmp_path, "r2").counts.get("ok") == 3


def _committable(sb: Sandbox, tmp: Path) -> importer.RunSummary:
    lake.plan_table(CUSTOMERS, _table([_customer(i) for i in range(1, 4)]), out=tmp / "out")
    run = _send(tmp / "out" / "changes", sb, tmp, "r")
    assert run.counts.get("ok") == 3
    return run


def test_a_commit_while_another_process_commits_to_the_state_is_refused(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # two commits to one state at once: the second would merge into the same version and
    # the last to publish would drop the other's hashes (its rows sent again)
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    run, state = _committable(sb, tmp_path), tmp_path / "state"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from importer.lake import state\n"
            "with state.state_lock(sys.argv[1]):\n"
            "    print('held', flush=True)\n"
            "    sys.stdin.read()\n",
            str(state),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        lock = json.loads((state / states.LOCK).read_text(encoding="utf-8"))
        assert (lock["pid"], lock["host"]) == (holder.pid, socket.gethostname())
        with pytest.raises(importer.LockedError) as info:
            lake.commit_table(run, state)
        assert str(info.value) == (
            f"state table {state} is being committed by process {holder.pid} on "
            f"{socket.gethostname()} (since {lock['since']}): wait for that commit to end, "
            f"then commit again; remove {state / states.LOCK} only if no commit is running"
        )
        assert states.current(state) is None
    finally:
        holder.communicate("", timeout=30)
    assert holder.returncode == 0 and not (state / states.LOCK).exists()
    done = lake.commit_table(run, state)
    assert (done.delivered, done.state_rows) == (3, 3)
    assert sorted(p.name for p in state.iterdir()) == ["_CURRENT", done.version]


def test_a_lock_left_by_a_killed_commit_is_taken_over(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    run, state = _committable(sb, tmp_path), tmp_path / "state"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    state.mkdir()
    held = {"pid": gone.pid, "host": socket.gethostname(), "since": "2026-12-06T02:00:00+00:00"}
    (state / states.LOCK).write_text(json.dumps(held), encoding="utf-8")
    done = lake.commit_table(run, state)
    assert (done.delivered, done.state_rows) == (3, 3)
    assert sorted(p.name for p in state.iterdir()) == ["_CURRENT", done.version]


def test_a_lock_held_on_another_host_is_refused_by_name(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a state on a shared disk: whether that process still runs cannot be told from here
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    run, state = _committable(sb, tmp_path), tmp_path / "state"
    state.mkdir()
    held = {"pid": 4242, "host": "etl-2.example", "since": "2026-12-06T02:00:00+00:00"}
    (state / states.LOCK).write_text(json.dumps(held), encoding="utf-8")
    with pytest.raises(importer.LockedError) as info:
        lake.commit_table(run, state)
    assert str(info.value) == (
        f"state table {state} is being committed by process 4242 on etl-2.example (since "
        "2026-12-06T02:00:00+00:00): wait for that commit to end, then commit again; "
        f"remove {state / states.LOCK} only if no commit is running"
    )
    assert info.value.exit_code == 4
    assert sorted(p.name for p in state.iterdir()) == [states.LOCK]


def test_a_lock_naming_no_holder_is_refused(tmp_path: Path) -> None:
    # a commit between creating the lock and writing its holder, or an empty file by hand
    state = tmp_path / "state"
    state.mkdir()
    (state / states.LOCK).write_text("", encoding="utf-8")
    with pytest.raises(importer.LockedError) as info:
        lake.commit_table(tmp_path / "r" / "results.csv", state)
    assert str(info.value) == (
        f"state table {state} is locked by {state / states.LOCK}, which names no holder (a "
        f"commit starting?): wait and commit again; remove {state / states.LOCK} only if no "
        "commit is running"
    )
