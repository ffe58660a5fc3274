"""The blast-radius gate (``guard:``): a run that would change too much is held before a
single request (exit code 8, a plan file), ``--approve PLAN`` sends that very run,
``--ignore-guard`` any run; a job's first run is never held. Against the real sandbox."""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import dmimport, write_csv

from importer import HeldError, run
from importer.errors import ConfigError
from importer.job import load_job
from importer.ledger import Ledger
from importer.sandbox import Sandbox

HEADER = ["phone", "name", "city", "source"]
GUARD = {"max_changed_share": 0.3, "max_property_null_share_increase": 0.5}


def _config(tmp_path: Path, url: str, guard: dict[str, Any], **job: Any) -> Path:
    kind = job.pop("kind", "user")
    columns: dict[str, Any] = {"phone": "phone"}
    if kind == "user":
        columns.update({"username": "name", "city": "city", "source": "source"})
    config = tmp_path / f"{kind}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "job": {"name": f"guard-{kind}", "kind": kind, "primary_keys": ["phone"], **job},
                "target": {"base_url": url},
                "columns": columns,
                "send": {"rate_limit": None},
                "report": {"dir": str(tmp_path / "reports")},
                "guard": guard,
            }
        ),
        encoding="utf-8",
    )
    return config


def _rows(n: int) -> list[list[str]]:
    return [[f"0171{i:07d}", f"name-{i}", f"city-{i % 7}", f"shop-{i % 3}"] for i in range(n)]


def _shifted(rows: list[list[str]]) -> list[list[str]]:
    """Every value after the key moved one column to the right (the last wraps around)."""
    return [[r[0], r[3], r[1], r[2]] for r in rows]


def _shifted_csv(tmp_path: Path) -> Path:
    """``_first_run``'s 40 rows, ``_shifted``: every customer's values would change."""
    return write_csv(tmp_path / "shifted.csv", HEADER, _shifted(_rows(40)))


def _stored(sb: Sandbox, prop: str) -> dict[str, str]:
    """Each stored customer's phone and ``prop``."""
    return {c["properties"]["phone"]: c["properties"][prop] for c in sb.customers()}


def _held_plan(stderr: str) -> Path:
    [line] = [s for s in stderr.splitlines() if s.startswith("  plan: ")]
    return Path(line.removeprefix("  plan: "))


def _first_run(tmp_path: Path, sb: Sandbox, guard: dict[str, Any], n: int = 40) -> Path:
    config = _config(tmp_path, sb.url, guard)
    data = write_csv(tmp_path / "customers.csv", HEADER, _rows(n))
    out = dmimport("run", config, data, secret=sb.secret)
    assert out.returncode == 0, out.stderr
    return config


def test_a_first_run_with_an_empty_ledger_is_not_held(
    tmp_path: Path, fresh_sandbox: Callable[..., Sandbox]
) -> None:
    sb = fresh_sandbox()
    # every row is new: far above max_new_share, but there is nothing to compare with
    config = _config(tmp_path, sb.url, {**GUARD, "max_new_share": 0.1})
    data = write_csv(tmp_path / "customers.csv", HEADER, _rows(20))
    out = dmimport("run", config, data, secret=sb.secret)
    assert out.returncode == 0, out.stderr
    assert len(sb.customers()) == 20
    # the second run of the same file: nothing new, nothing changed: not held either
    again = dmimport("run", config, data, secret=sb.secret)
    assert again.returncode == 0, again.stderr
    assert "held" not in again.stderr


def test_a_file_whose_columns_shifted_is_held_with_exit_8_and_sends_nothing(
    tmp_path: Path, fresh_sandbox: Callable[..., Sandbox]
) -> None:
    sb = fresh_sandbox()
    config = _first_run(tmp_path, sb, GUARD)
    before = sb.stats()["requests"]
    shifted = _shifted_csv(tmp_path)
    out = dmimport("run", config, shifted, secret=sb.secret)
    assert out.returncode == 8, out.stderr
    plan = _held_plan(out.stderr)
    assert out.stderr.splitlines() == [
        "error: held by the blast-radius gate (guard:): nothing was sent",
        "  40 of 40 rows (100.0%) would change values the ledger last delivered; "
        "guard.max_changed_share allows 30.0%",
        "  rows: 0 new, 40 changed, 0 unchanged",
        "  most changed: city 40, source 40, username 40",
        f"  plan: {plan}",
        f"  to send it anyway: dmimport run {config} {shifted} --approve {plan}",
        "  (or the same command with --ignore-guard)",
    ]
    assert sb.stats()["requests"] == before  # not a single request
    assert _stored(sb, "username") == {r[0]: r[1] for r in _rows(40)}
    assert plan.name == "plan.json" and plan.parent.parent == tmp_path / "reports"
    written = json.loads(plan.read_text(encoding="utf-8"))
    [trip] = written["tripped"]
    assert (trip["threshold"], trip["limit"], trip["measured"]) == (
        "guard.max_changed_share",
        0.3,
        1.0,
    )
    assert written["measured"]["changed_properties"] == {"city": 40, "source": 40, "username": 40}
    assert written["examples"]["changed"] == [f"shifted.csv line {n}" for n in range(2, 7)]
    assert "changed_properties are estimates" in written["estimates"]
    assert [f["path"] for f in written["files"]] == [str(shifted.resolve())]
    with Ledger(tmp_path / "state" / "state.db") as led:
        held = led.runs("guard-user")[0]
    assert (held.status, held.exit_code) == ("held", 8)
    summary = json.loads((plan.parent / "summary.json").read_text(encoding="utf-8"))
    assert (summary["exit_code"], summary["requests"], summary["rows"]) == (8, 0, 0)
    assert summary["refused"].splitlines()[0] == (
        "held by the blast-radius gate (guard:): nothing was sent"
    )
    # retry has nothing of a held run to re-send, and says why (not "no failed rows")
    retried = dmimport("retry", config, plan.parent.name.removeprefix("guard-user-"))
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.startswith(
        f"nothing to retry: run {plan.parent.name.removeprefix('guard-user-')} was held by the "
        "blast-radius gate (guard:) before sending anything; `dmimport run` with the same "
        "files sends it (with --approve PLAN, its plan.json)"
    )
    assert sb.stats()["requests"] == before


def test_approve_with_the_plan_sends_that_run(
    tmp_path: Path, fresh_sandbox: Callable[..., Sandbox]
) -> None:
    sb = fresh_sandbox()
    config = _first_run(tmp_path, sb, GUARD)
    shifted = _shifted_csv(tmp_path)
    held = dmimport("run", config, shifted, secret=sb.secret)
    assert held.returncode == 8, held.stderr
    before = sb.stats()["requests"]
    approved = dmimport(
        "run", config, shifted, "--approve", _held_plan(held.stderr), secret=sb.secret
    )
    assert approved.returncode == 0, approved.stderr
    assert sb.stats()["requests"] > before
    assert _stored(sb, "username") == {r[0]: r[3] for r in _rows(40)}


def test_a_run_that_resumes_an_approved_run_is_not_held_again(
    tmp_path: Path, fresh_sandbox: Callable[..., Sandbox]
) -> None:
    sb = fresh_sandbox()
    config = _first_run(tmp_path, sb, GUARD)
    shifted = _shifted_csv(tmp_path)
    held = dmimport("run", config, shifted, secret=sb.secret)
    plan = _held_plan(held.stderr)
    # approved, then aborted by the platform (a wrong SECRET: 20000): nothing delivered
    aborted = dmimport("run", config, shifted, "--approve", plan, secret="not-the-secret")
    assert aborted.returncode == 3, aborted.stderr
    # the same command the next night resumes the approved run: not held again
    again = dmimport("run", config, shifted, secret=sb.secret)
    assert again.returncode == 0, again.stderr
    assert _stored(sb, "username") == {r[0]: r[3] for r in _rows(40)}
    with Ledger(tmp_path / "state" / "state.db") as led:
        statuses = [r.status for r in led.runs("guard-user")]
    assert statuses == ["done", "aborted", "held", "done"]


def test_approve_with_a_plan_of_other_files_is_refused(
    tmp_path: Path, fresh_sandbox: Callable[..., Sandbox]
) -> None:
    sb = fresh_sandbox()
    config = _first_run(tmp_path, sb, GUARD)
    shifted = _shifted_csv(tmp_path)
    held = dmimport("run", config, shifted, secret=sb.secret)
    plan = _held_plan(held.stderr)
    other = write_csv(tmp_path / "other.csv", HEADER, _shifted(_rows(41)))
    before = sb.stats()["requests"]
    out = dmimport("run", config, other, "--approve", plan, secret=sb.secret)
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines() == [
        f"error: --approve {plan}: this plan is not this run's: its input files are not this "
        "run's (their names or contents differ); nothing was sent. Run without --approve to "
        "see this run's plan"
    ]
    assert sb.stats()["requests"] == before
    with Ledger(tmp_path / "state" / "state.db") as led:
        refused = led.runs("guard-user")[0]
    assert (refused.status, refused.exit_code) == ("refused", 2)
    broken = tmp_path / "broken.json"
    broken.write_text("{}", encoding="utf-8")
    out = dmimport("run", config, shifted, "--approve", broken, secret=sb.secret)
    assert out.returncode == 2
    assert out.stderr == (
        f"error: --approve {broken}: not a dmimport plan file (no key 'job'); nothing was sent\n"
    )


def test_max_new_share_holds_a_run_of_mostly_unknown_customers(
    tmp_path: Path, fresh_sandbox: Callable[..., Sandbox]
) -> None:
    sb = fresh_sandbox()
    config = _first_run(tmp_path, sb, {"max_new_share": 0.5}, n=20)
    more = write_csv(tmp_path / "more.csv", HEADER, _rows(50))  # the 20 known, 30 new
    before = sb.stats()["requests"]
    out = dmimport("run", config, more, secret=sb.secret)
    assert out.returncode == 8, out.stderr
    assert out.stderr.splitlines()[1:3] == [
        "  30 of 50 rows (60.0%) are new to the ledger; guard.max_new_share allows 50.0%",
        "  rows: 30 new, 0 changed, 20 unchanged",
    ]
    assert sb.stats()["requests"] == before
    written = json.loads(_held_plan(out.stderr).read_text(encoding="utf-8"))
    assert written["examples"]["new"] == [f"more.csv line {n}" for n in range(22, 27)]


@pytest.mark.parametrize("changed_only", [False, True], ids=["full", "changed-only"])
def test_ignore_guard_sends_anyway(
    tmp_path: Path, fresh_sandbox: Callable[..., Sandbox], changed_only: bool
) -> None:
    sb = fresh_sandbox()
    config = _first_run(tmp_path, sb, GUARD)
    shifted = _shifted_csv(tmp_path)
    mode = ["--changed-only"] if changed_only else []
    held = dmimport("run", config, shifted, *mode, secret=sb.secret)
    assert held.returncode == 8, held.stderr  # changed-only or not, every row changed
    before = sb.stats()["requests"]
    out = dmimport("run", config, shifted, *mode, "--ignore-guard", secret=sb.secret)
    assert out.returncode == 0, out.stderr
    assert sb.stats()["requests"] > before
    assert _stored(sb, "city") == {r[0]: r[1] for r in _rows(40)}


def test_max_deletes_holds_a_delete_job_that_would_delete_too_many(
    tmp_path: Path, fresh_sandbox: Callable[..., Sandbox]
) -> None:
    sb = fresh_sandbox()
    _first_run(tmp_path, sb, {})
    config = _config(tmp_path, sb.url, {"max_deletes": 5}, kind="user_delete")
    rows = [[r[0]] for r in _rows(40)]
    first = write_csv(tmp_path / "gone-1.csv", ["phone"], rows[:8])
    assert dmimport("run", config, first, secret=sb.secret).returncode == 0  # first: not held
    assert len(sb.customers()) == 32
    many = write_csv(tmp_path / "gone-2.csv", ["phone"], rows[8:20])
    before = sb.stats()["requests"]
    out = dmimport("run", config, many, secret=sb.secret)
    assert out.returncode == 8, out.stderr
    assert out.stderr.splitlines()[:3] == [
        "error: held by the blast-radius gate (guard:): nothing was sent",
        "  the run would delete 12 customers; guard.max_deletes allows 5",
        "  rows: 12 new, 0 changed, 0 unchanged, 12 deletes",
    ]
    assert sb.stats()["requests"] == before and len(sb.customers()) == 32
    few = write_csv(tmp_path / "gone-3.csv", ["phone"], rows[8:13])
    assert dmimport("run", config, few, secret=sb.secret).returncode == 0
    assert len(sb.customers()) == 27


def test_a_property_newly_empty_everywhere_trips_the_null_share_increase(
    tmp_path: Path, fresh_sandbox: Callable[..., Sandbox]
) -> None:
    sb = fresh_sandbox()
    config = _first_run(tmp_path, sb, {"max_property_null_share_increase": 0.5})
    emptied = write_csv(tmp_path / "no-city.csv", HEADER, [[*r[:2], "", r[3]] for r in _rows(40)])
    out = dmimport("run", config, emptied, secret=sb.secret)
    assert out.returncode == 8, out.stderr
    assert out.stderr.splitlines()[1:5] == [
        "  property 'city' has no value in 100.0% of rows (the previous run: 0.0%); "
        "guard.max_property_null_share_increase allows +50.0%",
        "  rows: 0 new, 40 changed, 0 unchanged",
        "  most changed: city 40",
        "  now empty in every row: city",
    ]
    written = json.loads(_held_plan(out.stderr).read_text(encoding="utf-8"))
    assert written["measured"]["emptied"] == ["city"]
    assert written["measured"]["null_share"]["city"] == {"before": 0.0, "now": 1.0}


def test_the_python_api_raises_held_error_and_approves_by_plan(
    tmp_path: Path, fresh_sandbox: Callable[..., Sandbox], monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    config = _first_run(tmp_path, sb, GUARD)
    shifted = _shifted_csv(tmp_path)
    with pytest.raises(HeldError) as info:
        run(config, shifted)
    assert info.value.exit_code == 8
    assert str(info.value).splitlines()[-2] == (
        f"  to send it anyway: dmimport run {config} {shifted.resolve()} --approve "
        f"{info.value.plan}"
    )
    summary = run(config, shifted, approve=info.value.plan)
    assert summary.exit_code == 0 and summary.counts["ok"] == 40


def test_the_baseline_takes_8_bytes_plus_2_per_property_per_customer(
    tmp_path: Path, fresh_sandbox: Callable[..., Sandbox]
) -> None:
    sb = fresh_sandbox()
    config = _config(tmp_path, sb.url, GUARD)
    data = write_csv(tmp_path / "customers.csv", HEADER, _rows(300))
    out = dmimport("run", config, data, secret=sb.secret)
    assert out.returncode == 0, out.stderr
    conn = sqlite3.connect(tmp_path / "state" / "state.db")
    try:
        stored = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'job_baseline'"
        ).fetchone()
        assert stored is not None, out.stderr  # a warning there says why it was not stored
        keys, fps, props = conn.execute(
            "SELECT length(keys), length(fingerprints), properties FROM job_baseline"
        ).fetchone()
    finally:
        conn.close()
    assert json.loads(props) == ["city", "phone", "source", "username"]  # config order
    assert (keys, fps) == (300 * 8, 300 * 2 * 4)


@pytest.mark.parametrize(
    ("guard", "key", "message"),
    [
        ({"max_changed_share": 1.5}, "guard.max_changed_share", "must be <= 1, got 1.5"),
        ({"max_deletes": -1}, "guard.max_deletes", "must be >= 0, got -1"),
        ({"max_deletes": "many"}, "guard.max_deletes", "expected an integer, got 'many'"),
    ],
)
def test_a_bad_guard_threshold_is_refused_naming_the_key(
    tmp_path: Path, guard: dict[str, Any], key: str, message: str
) -> None:
    config = _config(tmp_path, "http://127.0.0.1:9", guard)
    with pytest.raises(ConfigError) as info:
        load_job(config)
    [problem] = info.value.problems
    assert (problem.path, problem.message) == (key, message)


def test_a_run_let_through_that_then_aborts_leaves_the_baseline_before_it(
    tmp_path: Path, fresh_sandbox: Callable[..., Sandbox]
) -> None:
    # the baseline was stored before sending: after an outage the next night still counted
    # the undelivered rows changed (the ledger's hashes), but against values never sent:
    # "40 changed" and not a word of which properties
    sb = fresh_sandbox()
    config = _first_run(tmp_path, sb, GUARD)
    shifted = _shifted_csv(tmp_path)
    with socket.socket() as s:  # a port nobody listens on: the platform is down
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    down = dmimport("run", config, shifted, "--ignore-guard", "--base-url", dead, secret=sb.secret)
    assert down.returncode == 1, down.stderr  # every row failed: nothing delivered
    out = dmimport("run", config, shifted, secret=sb.secret)
    assert out.returncode == 8, out.stderr
    assert out.stderr.splitlines()[2:4] == [
        "  rows: 0 new, 40 changed, 0 unchanged",
        "  most changed: city 40, source 40, username 40",
    ]
    # a run that sends its rows does store its values: the same file again is not held
    assert dmimport("run", config, shifted, "--ignore-guard", secret=sb.secret).returncode == 0
    again = dmimport("run", config, shifted, secret=sb.secret)
    assert again.returncode == 0, again.stderr


def test_an_event_job_is_told_that_changed_events_are_not_changed_by_re_sending(
    tmp_path: Path, fresh_sandbox: Callable[..., Sandbox]
) -> None:
    # the platform de-duplicates events on (event name, event_id), keeping the first: the
    # gate said "would change values the ledger last delivered", which re-sending never does
    sb = fresh_sandbox()
    config = tmp_path / "events.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "job": {
                    "name": "guard-events", "kind": "event", "event_name": "order_detail",
                    "primary_keys": ["phone"],
                },
                "target": {"base_url": sb.url},
                "columns": {
                    "phone": "phone", "amount": {"from": "amount", "type": "number"},
                    "event_id": "oid", "create_time": "t",
                },
                "send": {"rate_limit": None},
                "report": {"dir": str(tmp_path / "reports")},
                "guard": {"max_changed_share": 0.3},
            }
        ),
        encoding="utf-8",
    )  # fmt: skip

    def orders(amount: int) -> list[list[str]]:
        return [
            [f"0171{i:07d}", str(amount + i), f"o{i}", "2026-12-05 10:00:00"] for i in range(10)
        ]

    header = ["phone", "amount", "oid", "t"]
    first = write_csv(tmp_path / "orders.csv", header, orders(1))
    assert dmimport("run", config, first, secret=sb.secret).returncode == 0
    again = write_csv(tmp_path / "orders2.csv", header, orders(2))
    out = dmimport("run", config, again, secret=sb.secret)
    assert out.returncode == 8, out.stderr
    assert out.stderr.splitlines()[1] == (
        "  10 of 10 events (100.0%) were delivered before with other values (the same "
        "event_id; the platform keeps the first: re-sending does not change them); "
        "guard.max_changed_share allows 30.0%"
    )
