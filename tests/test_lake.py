"""``importer.lake``: the engine-neutral lake-side plan (issue 15): the selection rule against
an obvious oracle, the state table's versions, ``plan_table`` against ``dmimport validate``,
and plan -> ``dmimport run`` of the change set -> commit against the real sandbox."""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import importer
from importer import lake
from importer.lake import state as states
from importer.sandbox import Sandbox

ROOT = Path(__file__).resolve().parent.parent
CUSTOMERS = ROOT / "configs" / "customers.yaml"
HEADER = ["手机号", "邮箱", "姓名", "年龄", "性别", "会员", "城市", "注册时间"]
REASON = (
    "planned with another config: the body differs from the plan's (plan again with this config)"
)


# -- the selection rule -----------------------------------------------------------------------


def _oracle(rows: list[tuple[int, int, int]], state: dict[int, int], by_last: bool) -> set[int]:
    """The rule in words, one identity at a time: rows are (identity, order, body hash)."""
    chosen: set[int] = set()
    for ident in {r[0] for r in rows}:
        mine = sorted((r[1], i) for i, r in enumerate(rows) if r[0] == ident)
        hashes = [rows[i][2] for _, i in mine]
        if by_last:
            if ident not in state or hashes[-1] != state[ident]:
                chosen |= {i for _, i in mine}
            continue
        changed = False
        for (_, i), h in zip(mine, hashes, strict=True):
            changed = changed or ident not in state or h != state[ident]
            if changed:
                chosen.add(i)
    return chosen


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3)), max_size=40),
    state=st.dictionaries(st.integers(0, 6), st.integers(0, 3), max_size=7),
    by_last=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_select_changes_agrees_with_the_rule_in_words(
    data: list[tuple[int, int]], state: dict[int, int], by_last: bool, seed: int
) -> None:
    order = np.random.default_rng(seed).permutation(len(data)).astype(np.int64)
    rows = [(d[0], int(o), d[1]) for d, o in zip(data, order, strict=True)]
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    bodies = np.array([r[2] for r in rows], dtype=np.int64)
    in_state = np.array([r[0] in state for r in rows], dtype=bool)
    state_hash = np.array([state.get(r[0], 99) for r in rows], dtype=np.int64)
    got = lake.select_changes(ids, order, bodies, state_hash, in_state, by_last)
    assert got.dtype == bool
    assert set(np.flatnonzero(got).tolist()) == _oracle(rows, state, by_last)


def test_select_changes_user_rule_keeps_every_row_of_a_changed_customer() -> None:
    ids = np.array([7, 7, 7, 8, 8], dtype=np.int64)
    order = np.array([0, 1, 2, 3, 4], dtype=np.int64)
    bodies = np.array([1, 2, 3, 4, 5], dtype=np.int64)
    state_hash = np.array([3, 3, 3, 4, 4], dtype=np.int64)
    in_state = np.ones(5, dtype=bool)
    by_last = lake.select_changes(ids, order, bodies, state_hash, in_state, True)
    assert by_last.tolist() == [False, False, False, True, True]
    first = lake.select_changes(ids, order, bodies, state_hash, in_state, False)
    assert first.tolist() == [True, True, True, False, True]


# -- the state table --------------------------------------------------------------------------


def test_state_versions_current_and_prune(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert states.current(state) is None
    assert states.read_state(state).num_rows == 0
    made = []
    for n in range(4):
        version = states.new_version(state, "people", "user")
        table = pa.table({"identity_hash": [1, 2, 3 + n], "body_hash": [10, 20, 30 + n]})
        states.write_state(version, table)
        states.publish(state, version)
        made.append(version)
        assert states.current(state) == version
        assert (state / "_CURRENT").read_text(encoding="utf-8").strip() == version.name
        assert states.read_state(state).column("identity_hash").to_pylist() == [1, 2, 3 + n]
        info = json.loads((version / "_state.json").read_text(encoding="utf-8"))
        assert (info["job"], info["kind"]) == ("people", "user")
        states.prune(state)
        left = sorted(p.name for p in state.iterdir() if p.is_dir())
        assert left == sorted(v.name for v in made[-2:])
    # a version being written (not published yet) is not pruned
    writing = states.new_version(state)
    states.prune(state)
    assert writing.is_dir() and made[-2].is_dir()


def test_state_holds_at_most_32_bytes_per_identity(tmp_path: Path) -> None:
    rng = np.random.default_rng(15)
    n = 200_000
    ids = np.unique(rng.integers(-(2**63), 2**63 - 1, size=n + 100, dtype=np.int64))[:n]
    bodies = rng.integers(-(2**63), 2**63 - 1, size=n, dtype=np.int64)
    state = tmp_path / "state"
    version = states.new_version(state, "people", "user")
    states.write_state(version, pa.table({"identity_hash": ids, "body_hash": bodies}))
    states.publish(state, version)
    size = sum(p.stat().st_size for p in state.rglob("*") if p.is_file())
    per_identity = size / n
    print(f"state table: {per_identity:.2f} bytes per identity ({size:,} bytes, {n:,})")
    assert per_identity <= 32
    back = states.read_state(state)
    assert back.schema == states.STATE_SCHEMA
    assert back.column("identity_hash").to_numpy().tolist() == ids.tolist()


def test_a_state_of_another_job_is_refused_by_name(tmp_path: Path) -> None:
    state = tmp_path / "state"
    version = states.new_version(state, "orders", "event")
    states.write_state(version, pa.table({"identity_hash": [1], "body_hash": [2]}))
    states.publish(state, version)
    with pytest.raises(importer.ConfigError) as info:
        lake.plan_table(CUSTOMERS, _table([_row(1)]), state=state, out=tmp_path / "out")
    assert str(info.value) == (
        f"invalid config:\n  config: state table {state} belongs to job 'orders' (kind "
        "'event'), not to job 'customers' (kind 'user'): give each job its own state folder"
    )
    assert not (tmp_path / "out").exists()


def test_a_source_column_named_dm_is_refused(tmp_path: Path) -> None:
    config = {
        "job": {"name": "p", "kind": "user", "primary_keys": ["phone"]},
        "columns": {"phone": {"from": "dm_phone"}},
    }
    with pytest.raises(importer.ConfigError, match="source column 'dm_phone' starts with 'dm_'"):
        lake.plan_table(config, pa.table({"dm_phone": ["13800138000"]}), out=tmp_path / "o")
    assert not (tmp_path / "o").exists()


# -- plan_table against validate --------------------------------------------------------------


def _row(i: int, **changes: str) -> dict[str, str]:
    row = {
        "手机号": f"138{i:08d}",
        "邮箱": f"user{i}@example.cn",
        "姓名": f"用户{i}",
        "年龄": str(20 + i % 50),
        "性别": "女" if i % 2 else "男",
        "会员": "true" if i % 3 else "false",
        "城市": "上海",
        "注册时间": "2024-03-01 09:15:00",
    }
    row.update(changes)
    return row


def _table(rows: list[dict[str, str]]) -> pa.Table:
    return pa.table({h: pa.array([r[h] for r in rows], pa.string()) for h in HEADER})


def _write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, HEADER)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _results(report_dir: Path) -> list[dict[str, str]]:
    [results] = report_dir.glob("*/results.csv")
    with open(results, encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def _mixed_rows() -> list[dict[str, str]]:
    rows = [_row(i) for i in range(1, 31)]
    rows[3] = _row(4, 年龄="abc")  # a bad integer
    rows[7] = _row(8, 手机号="", 邮箱="")  # no identity
    rows[12] = _row(13, 注册时间="yesterday")
    return rows


def test_plan_table_gives_what_validate_gives_on_the_same_csv(tmp_path: Path) -> None:
    rows = _mixed_rows()
    data = _write_csv(tmp_path / "people.csv", rows)
    importer.validate(CUSTOMERS, [data], report_dir=tmp_path / "r")
    report = _results(tmp_path / "r")
    summary = lake.plan_table(CUSTOMERS, _table(rows), out=tmp_path / "out", source="lake")
    changes = pq.read_table(tmp_path / "out" / "changes")
    rejects = pq.read_table(tmp_path / "out" / "rejects")
    assert changes.column_names == HEADER + list(lake.PLAN_COLUMNS)
    assert rejects.column_names == list(lake.REJECT_COLUMNS)
    assert lake.change_set_info(changes.schema) == {
        "version": 1,
        "job": "customers",
        "kind": "user",
    }
    by_row = {r["dm_row"]: r for r in changes.to_pylist()}
    rejected = {r["dm_row"]: r for r in rejects.to_pylist()}
    assert len(report) == len(rows) == len(by_row) + len(rejected)
    for r in report:
        row = int(r["line"]) - 1  # the CSV's header is line 1
        if r["status"] == "valid":
            got = by_row[row]
            assert (got["dm_source"], got["dm_identity"]) == ("lake", r["identity"])
            assert [got[h] for h in HEADER] == [rows[row - 1][h] for h in HEADER]
        else:
            assert r["status"] == "rejected"
            got = rejected[row]
            errcode = int(r["errcode"]) if r["errcode"] else None
            assert (got["dm_identity"], got["errcode"], got["reason"], got["column"] or "") == (
                r["identity"],
                errcode,
                r["errmsg"],
                r["column"],
            )
    assert sorted(rejected) == [4, 8, 13]
    assert (summary.rows, summary.valid, summary.rejected) == (30, 27, 3)
    assert (summary.unchanged, summary.to_send, summary.identities_to_send) == (0, 27, 27)
    assert lake.PlanSummary.from_json(tmp_path / "out") == summary
    assert lake.PlanSummary.from_json(summary.to_json()) == summary
    assert str(summary).splitlines()[0] == (
        "plan of job customers (user): 30 rows, 27 valid, 3 rejected"
    )


def test_plan_json_quota_arithmetic(tmp_path: Path) -> None:
    rows = [_row(i) for i in range(1, 12)]
    config = importer.load_config(
        CUSTOMERS, overrides={"send.batch_rows": 4, "state.path": str(tmp_path / "none.db")}
    )
    summary = lake.plan_table(config, _table(rows), out=tmp_path / "out")
    written = json.loads((tmp_path / "out" / "plan.json").read_text(encoding="utf-8"))
    assert written["to_send"] == 11 and written["batch_rows"] == 4
    assert written["requests_needed"] == 3  # ceil(11 / 4), what the run's quota plan says
    assert written["margin"] == 1 + 4  # 2% rounded up, + bisecting one 4-row request
    assert written["quota_daily"] == written["quota_left_today"] == 10_000  # no ledger yet
    assert written["fits"] is True
    assert not (tmp_path / "none.db").exists()  # the plan never creates the ledger
    tight = importer.load_config(config, overrides={"send.daily_quota": 7})
    assert lake.plan_table(tight, _table(rows), out=tmp_path / "o2").fits is False
    deletes = {
        "job": {"name": "gone", "kind": "user_delete", "primary_keys": ["phone"]},
        "columns": {"phone": {"from": "手机号"}},
        "send": {"batch_rows": 4},
    }
    gone = lake.plan_table(deletes, _table(rows), out=tmp_path / "o3")
    assert (gone.to_send, gone.per_request, gone.requests_needed) == (11, 1, 11)
    assert summary.requests_needed == 3


# -- plan -> run -> commit against the sandbox ------------------------------------------------


def _send(
    config: Path | importer.Config,
    changes: Path,
    sb: Sandbox,
    tmp: Path,
    name: str,
    report_format: str = "csv",
) -> importer.RunSummary:
    return importer.run(
        config,
        [changes],
        overrides={"target.base_url": sb.url, "report.format": report_format},
        report_dir=tmp / name,
        ledger=tmp / "run.db",
    )


def test_plan_run_commit_stores_the_rows_and_a_second_plan_is_empty(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    rows = _mixed_rows()
    state, out = tmp_path / "state", tmp_path / "out"
    plan = lake.plan_table(CUSTOMERS, _table(rows), state=state, out=out)
    changes = pq.read_table(out / "changes")
    # Spark's and Dask's bookkeeping next to the change set is not read
    for junk in ("_SUCCESS", "_committed_123", "_started_123", "_metadata", "_common_metadata"):
        (out / "changes" / junk).write_bytes(b"x")
    (out / "changes" / ".part-00000.parquet.crc").write_bytes(b"x")
    run = _send(CUSTOMERS, out / "changes", sb, tmp_path, "r1")
    assert run.counts.get("ok") == plan.to_send == 27
    assert run.requests == plan.requests_needed == 1
    stored = sorted(sb.stored_json("customers"))
    assert stored == sorted(b.decode() for b in changes.column("dm_body").to_pylist())
    report = _results(tmp_path / "r1")
    assert {r["file"] for r in report} == {str(out / "changes" / "part-00000.parquet")}
    commit = lake.commit_table(run, state)
    assert (commit.delivered, commit.state_rows, commit.previous) == (27, 27, None)
    assert states.current(state) == state / commit.version
    # the state holds exactly what was delivered
    assert run.results_path is not None
    assert (
        lake.delivered(run.results_path.parent).to_pydict() == states.read_state(state).to_pydict()
    )
    again = lake.plan_table(CUSTOMERS, _table(rows), state=state, out=out)
    assert (again.to_send, again.unchanged, again.requests_needed) == (0, 27, 0)
    assert again.state_version == commit.version
    assert pq.read_table(out / "changes").num_rows == 0
    # one customer changed: only that one is sent
    rows[0] = _row(1, 城市="北京")
    third = lake.plan_table(CUSTOMERS, _table(rows), state=state, out=out)
    assert (third.to_send, third.unchanged) == (1, 26)
    assert pq.read_table(out / "changes").column("dm_row").to_pylist() == [1]
    # the ledger of the sending runs counts their requests: the plan reads what is left
    overrides = {"state.path": str(tmp_path / "run.db"), "target.base_url": sb.url}
    counted = lake.plan_table(
        importer.load_config(CUSTOMERS, overrides=overrides), _table(rows), state=state,
        out=tmp_path / "o4",
    )  # fmt: skip
    assert counted.quota_left_today == 10_000 - run.requests


def test_a_customers_rows_keep_file_order_and_an_earlier_value_is_sent(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    rows = [
        _row(1, 城市="杭州"),
        _row(2),
        _row(1, 城市="", 姓名="新名字"),  # the last row leaves the city empty
        _row(3),
    ]
    state, out = tmp_path / "state", tmp_path / "out"
    plan = lake.plan_table(CUSTOMERS, _table(rows), state=state, out=out)
    changes = pq.read_table(out / "changes")
    assert changes.column("dm_row").to_pylist() == [1, 2, 3, 4]
    assert (plan.to_send, plan.identities_to_send) == (4, 3)
    run = _send(CUSTOMERS, out / "changes", sb, tmp_path, "r1", report_format="jsonl")
    assert run.results_path is not None and run.results_path.name == "results.jsonl"
    assert run.counts.get("ok") == 4
    [stored] = [json.loads(s) for s in sb.stored_json("customers") if "13800000001" in s]
    assert (stored["city"], stored["username"]) == ("杭州", "新名字")
    lake.commit_table(run, state)
    assert lake.plan_table(CUSTOMERS, _table(rows), state=state, out=out).to_send == 0
    # the last row changes: every row of that customer goes again, in order
    rows[2] = _row(1, 城市="", 姓名="又改了")
    again = lake.plan_table(CUSTOMERS, _table(rows), state=state, out=out)
    assert pq.read_table(out / "changes").column("dm_row").to_pylist() == [1, 3]
    assert again.unchanged == 2
    # the change set was planned again since that run: its rows are not the ones it sent
    part = out / "changes" / "part-00000.parquet"
    assert run.results_path is not None
    with pytest.raises(importer.UsageError) as info:
        lake.commit_table(run, state)
    assert str(info.value) == (
        f"{part} changed since run {run.run_id} sent it (planned again?): commit before "
        "planning again, or run the new change set first"
    )
    # results copied without the run's summary.json: the file times are all there is
    assert run.report_dir is not None
    (run.report_dir / "summary.json").unlink()
    with pytest.raises(importer.UsageError) as info:
        lake.commit_table(run, state)
    assert str(info.value) == (
        f"{part} was written after {run.results_path}: the change set was planned again since "
        "that run, so its rows are not the ones the run sent; run the new change set, then "
        "commit that run's results"
    )


def test_a_change_set_planned_with_another_config_is_rejected_row_by_row(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    out = tmp_path / "out"
    lake.plan_table(CUSTOMERS, _table([_row(i) for i in range(1, 6)]), out=out)
    other = importer.load_config(CUSTOMERS, overrides={"columns.source.value": "erp"})
    run = _send(other, out / "changes", sb, tmp_path, "r1")
    assert run.requests == 0
    assert run.counts.get("rejected") == 5 and not run.counts.get("ok")
    report = _results(tmp_path / "r1")
    assert [(r["line"], r["status"], r["errcode"], r["errmsg"]) for r in report] == [
        (str(i), "rejected", "", REASON) for i in range(1, 6)
    ]
    assert sb.stored_json("customers") == []
    # validate says so too, before anything is sent
    importer.validate(other, [out / "changes"], report_dir=tmp_path / "v")
    assert {(r["status"], r["errmsg"]) for r in _results(tmp_path / "v")} == {("rejected", REASON)}
    with pytest.raises(importer.UsageError, match="names no change set file"):
        lake.delivered(_send_csv(tmp_path, sb))


def _send_csv(tmp: Path, sb: Sandbox) -> importer.RunSummary:
    data = _write_csv(tmp / "plain.csv", [_row(40)])
    return importer.run(
        CUSTOMERS,
        [data],
        overrides={"target.base_url": sb.url},
        report_dir=tmp / "plain",
        ledger=tmp / "plain.db",
    )


EVENTS = ROOT / "configs" / "order_events.yaml"


def _order(i: int, amount: str = "10.5") -> dict[str, str]:
    return {
        "手机号": f"139{i % 4:08d}",
        "邮箱": f"buyer{i % 4}@example.cn",
        "订单号": f"2024{i:08d}",
        "下单时间": "2024-03-01 09:15:00",
        "金额": amount,
    }


def test_events_plan_run_commit_and_a_new_order_alone_is_sent(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    orders = [_order(i) for i in range(1, 9)] + [_order(9, amount="lots")]
    data = pa.Table.from_pylist(orders)
    state, out = tmp_path / "state", tmp_path / "out"
    # any batching of the same table plans the same change set
    plan = lake.plan_table(EVENTS, data.to_batches(max_chunksize=4), state=state, out=out)
    whole = lake.plan_table(EVENTS, data, state=state, out=tmp_path / "whole")
    assert pq.read_table(out / "changes").equals(pq.read_table(tmp_path / "whole" / "changes"))
    assert (plan.rows, plan.valid, plan.to_send, plan.groups) == (9, 8, 8, {"order_detail": 8})
    assert plan == dataclasses.replace(whole, out=plan.out)
    run = _send(EVENTS, out / "changes", sb, tmp_path, "r1")
    assert run.counts.get("ok") == 8 and run.requests == plan.requests_needed == 1
    changes = pq.read_table(out / "changes")
    assert set(changes.column("dm_event").to_pylist()) == {"order_detail"}
    assert sorted(sb.stored_json("events")) == sorted(
        b.decode() for b in changes.column("dm_body").to_pylist()
    )
    assert lake.commit_table(run, state).state_rows == 8
    orders.insert(3, _order(20))
    again = lake.plan_table(EVENTS, pa.Table.from_pylist(orders), state=state, out=out)
    assert (again.to_send, again.unchanged, again.identities_to_send) == (1, 8, 1)
    assert pq.read_table(out / "changes").column("dm_row").to_pylist() == [4]
