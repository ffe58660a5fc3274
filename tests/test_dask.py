"""``importer.dask``: the lake-side plan and commit on a real Dask ``LocalCluster(2)``
(worker processes), against ``importer.validate``/``outcomes_of``, the single-process
reference ``importer.lake.plan_table`` and the real sandbox."""

from __future__ import annotations

import csv
import json
import logging
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import dask.dataframe as dd
import distributed
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import NAMED_EVENTS, send_changes

import importer
import importer.dask as idask
from importer.lake import change_schema, plan_table
from importer.lake import state as lake_state
from importer.sandbox import Sandbox

pytestmark = [pytest.mark.engine, pytest.mark.xdist_group("dask")]

ROOT = Path(__file__).resolve().parent.parent
CUSTOMERS = ROOT / "configs" / "customers.yaml"


@pytest.fixture(scope="session")
def dask_client() -> Iterator[object]:
    """One LocalCluster(2) of worker processes for the whole session (started in ~2.5 s;
    processes, not threads: the tasks map rows in Python, and a config and the tasks must
    survive pickling as on a real cluster)."""
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=40,
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def _customers(n: int, *, start: int = 0, city: str = "北京", bad_every: int = 9) -> pa.Table:
    """``n`` customers as text columns (the export's names); every ``bad_every``-th has an
    age that is not a number (rejected)."""
    rows = range(start, start + n)
    return pa.table(
        {
            "手机号": [f"1380013{i:04d}" for i in rows],
            "邮箱": [f"user{i}@example.cn" for i in rows],
            "姓名": [f"客户{i}" for i in rows],
            "年龄": ["abc" if bad_every and i % bad_every == 4 else str(20 + i % 50) for i in rows],
            "性别": ["男" if i % 2 else "女" for i in rows],
            "会员": ["是" if i % 3 else "否" for i in rows],
            "城市": [city] * n,
            "注册时间": ["2024-03-01 09:15:00"] * n,
        }
    )


def _write(table: pa.Table, path: Path, row_group: int = 7) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group)
    return path


def _read_dir(folder: Path) -> pa.Table:
    """A plan output folder's files, read in name order."""
    files = sorted(folder.glob("*.parquet"))
    return pa.concat_tables(pq.read_table(f) for f in files)


def _state_from(
    table: pa.Table, state: Path, keep: slice, change: slice, config: object = CUSTOMERS
) -> None:
    """A state holding the hashes ``outcomes_of`` gives the valid rows of ``table``: rows
    ``keep`` as they are (unchanged), rows ``change`` with another body hash."""
    cfg = importer.load_config(config) if isinstance(config, Path) else config
    out = importer.outcomes_of(cfg, table).to_pylist()
    valid = [o for o in out if o["verdict"] == "valid"]
    hashes = {o["identity_hash"]: o["body_hash"] for o in valid[keep]}
    hashes.update({o["identity_hash"]: o["body_hash"] + 1 for o in valid[change]})
    frame = pa.table(
        {"identity_hash": sorted(hashes), "body_hash": [hashes[k] for k in sorted(hashes)]},
        schema=lake_state.STATE_SCHEMA,
    )
    version = lake_state.new_version(state, cfg.job_name, cfg.job.kind)
    lake_state.write_state(version, frame)
    lake_state.publish(state, version)


def test_plan_gives_what_validate_and_outcomes_of_give(dask_client: object, tmp_path: Path) -> None:
    a = _write(_customers(40), tmp_path / "lake" / "a.parquet")
    b = _write(_customers(25, start=40), tmp_path / "lake" / "sub" / "b.parquet")
    (tmp_path / "lake" / "_SUCCESS").write_text("")
    summary = idask.plan(
        CUSTOMERS, tmp_path / "lake", out=tmp_path / "out", client=dask_client, partition_rows=10
    )
    importer.validate(CUSTOMERS, [a, b], report_dir=tmp_path / "r")
    [results] = (tmp_path / "r").glob("*/results.csv")
    with open(results, encoding="utf-8-sig", newline="") as fh:
        report = {(r["file"], int(r["line"])): r for r in csv.DictReader(fh)}
    changes = _read_dir(tmp_path / "out" / "changes").to_pylist()
    rejects = _read_dir(tmp_path / "out" / "rejects").to_pylist()
    assert len(changes) + len(rejects) == 65 == summary.rows
    assert (summary.valid, summary.rejected, summary.to_send) == (58, 7, 58)
    keys = [(str(a), i) for i in range(1, 41)] + [(str(b), i) for i in range(1, 26)]
    got = {(c["dm_source"], c["dm_row"]): c for c in changes + rejects}
    assert sorted(got) == keys
    by_file = {str(a): _customers(40), str(b): _customers(25, start=40)}
    for (source, line), row in got.items():
        r = report[(source, line)]
        status = "valid" if "dm_body" in row else "rejected"
        assert (row["dm_identity"], status) == (r["identity"], r["status"]), (source, line)
        if status == "rejected":
            assert (row["reason"], row["column"] or "") == (r["errmsg"], r["column"])
    for source, table in by_file.items():
        out = importer.outcomes_of(CUSTOMERS, table, source=source).to_pylist()
        valid = [o for o in out if o["verdict"] == "valid"]
        mine = [c for c in changes if c["dm_source"] == source]
        assert [(c["dm_row"], c["dm_body"], c["dm_identity_hash"]) for c in mine] == [
            (o["row"], o["body"], o["identity_hash"]) for o in valid
        ]
    # globally ordered by (dm_source, dm_row), reading the files in name order
    assert [(c["dm_source"], c["dm_row"]) for c in changes] == sorted(
        (c["dm_source"], c["dm_row"]) for c in changes
    )
    schema = pq.read_schema(sorted((tmp_path / "out" / "changes").glob("*.parquet"))[0])
    assert schema.metadata == change_schema(importer.load_config(CUSTOMERS)).metadata
    assert summary == importer.lake.PlanSummary.from_json(
        (tmp_path / "out" / "plan.json").read_text(encoding="utf-8")
    )
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] == []
    # a file: URI is the same lake, named by local paths
    idask.plan(CUSTOMERS, f"file://{tmp_path / 'lake'}", out=tmp_path / "uri", client=dask_client)
    for folder in ("changes", "rejects"):
        assert _read_dir(tmp_path / "uri" / folder).equals(_read_dir(tmp_path / "out" / folder))


def _dup_table() -> pa.Table:
    """Customers, then some of them again with other values (later rows of an identity)."""
    first = _customers(30)
    again = _customers(12, start=5, city="上海")
    return pa.concat_tables([first, again, _customers(3, start=5)])


def test_change_set_equals_the_reference_plan_with_a_state(
    dask_client: object, tmp_path: Path
) -> None:
    table = _dup_table()
    data = _write(table, tmp_path / "lake" / "t.parquet", row_group=4)
    state = tmp_path / "state"
    _state_from(table, state, keep=slice(0, 10), change=slice(10, 20))
    ref = plan_table(CUSTOMERS, table, state=state, out=tmp_path / "ref", source=str(data))
    mine = idask.plan(
        CUSTOMERS, data, state=state, out=tmp_path / "out", client=dask_client, partition_rows=8
    )
    for folder in ("changes", "rejects"):
        want = _read_dir(tmp_path / "ref" / folder)
        got = _read_dir(tmp_path / "out" / folder)
        assert got.equals(want), folder
        assert got.schema.metadata == want.schema.metadata
    assert len(list((tmp_path / "out" / "changes").glob("*.parquet"))) > 1
    assert mine.to_send == ref.to_send and 0 < mine.to_send < mine.valid
    fields = ("rows", "valid", "rejected", "unchanged", "identities_to_send", "requests_needed")
    assert [getattr(mine, f) for f in fields] == [getattr(ref, f) for f in fields]
    assert mine.state_version == ref.state_version == lake_state.current(state).name
    # the same state as two files whose hash ranges overlap (not as a commit writes them)
    rows = lake_state.read_state(state)
    split = tmp_path / "split"
    version = lake_state.new_version(split, "customers", "user")
    lake_state.write_state(version, rows.take(list(range(0, rows.num_rows, 2))), "part-00000")
    lake_state.write_state(version, rows.take(list(range(1, rows.num_rows, 2))), "part-00001")
    lake_state.publish(split, version)
    again = idask.plan(
        CUSTOMERS, data, state=split, out=tmp_path / "again", client=dask_client, partition_rows=8
    )
    for folder in ("changes", "rejects"):
        assert _read_dir(tmp_path / "again" / folder).equals(_read_dir(tmp_path / "ref" / folder))
    assert (again.to_send, again.unchanged) == (ref.to_send, ref.unchanged)


def test_plan_run_commit_then_the_next_plan_is_empty(
    dask_client: object,
    fresh_sandbox: Callable[..., Sandbox],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = _customers(50, bad_every=0)
    data = _write(table, tmp_path / "lake" / "c.parquet", row_group=6)
    state, out = tmp_path / "state", tmp_path / "out"
    first = idask.plan(CUSTOMERS, data, state=state, out=out, client=dask_client, partition_rows=12)
    assert (first.to_send, first.state_version) == (50, None)
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    run = send_changes(CUSTOMERS, out / "changes", sb.url, tmp_path / "r", tmp_path / "l.db")
    assert run.counts["ok"] == 50
    bodies = importer.outcomes_of(CUSTOMERS, table).column("body").to_pylist()
    assert sorted(sb.stored_json("customers")) == sorted(b.decode() for b in bodies)
    done = idask.commit(run, state, client=dask_client, file_rows=16)
    assert (done.delivered, done.state_rows, done.previous) == (50, 50, None)
    saved = lake_state.read_state(state)
    assert saved.column("identity_hash").to_pylist() == sorted(
        saved.column("identity_hash").to_pylist()
    )
    files = sorted((state / done.version).glob("*.parquet"))
    assert len(files) == 4  # 50 identities in ranges of about 16
    assert all(pq.read_schema(f).names == ["identity_hash", "body_hash"] for f in files)
    again = idask.plan(CUSTOMERS, data, state=state, out=out, client=dask_client)
    assert (again.to_send, again.unchanged, again.state_version) == (0, 50, done.version)
    assert _read_dir(out / "changes").num_rows == 0
    # one customer changes: only that one is planned, and a commit keeps the others
    changed = table.set_column(6, "城市", pa.array(["上海"] + ["北京"] * 49))
    _write(changed, data, row_group=6)
    third = idask.plan(CUSTOMERS, data, state=state, out=out, client=dask_client)
    assert third.to_send == 1
    assert _read_dir(out / "changes").column("dm_row").to_pylist() == [1]
    run = send_changes(CUSTOMERS, out / "changes", sb.url, tmp_path / "r2", tmp_path / "l.db")
    second = idask.commit(run, state, client=dask_client)
    assert (second.delivered, second.state_rows, second.previous) == (1, 50, done.version)
    assert sorted(p.name for p in state.iterdir()) == sorted(
        ["_CURRENT", done.version, second.version]
    )
    assert idask.plan(CUSTOMERS, data, state=state, out=out, client=dask_client).to_send == 0


def test_a_commit_while_another_commit_holds_the_state_is_refused(tmp_path: Path) -> None:
    # the lock is taken before anything is read: no cluster is needed to be refused
    state = tmp_path / "state"
    with lake_state.state_lock(state):
        since = json.loads((state / lake_state.LOCK).read_text(encoding="utf-8"))["since"]
        with pytest.raises(importer.LockedError) as info:
            idask.commit(tmp_path / "results.csv", state)
        assert str(info.value) == (
            f"state table {state} is being committed by process {os.getpid()} on "
            f"{socket.gethostname()} (since {since}): wait for that commit to end, then "
            f"commit again; remove {state / lake_state.LOCK} only if no commit is running"
        )
    assert list(state.iterdir()) == []


def test_events_named_by_a_column_plan_as_the_reference_does(
    dask_client: object, tmp_path: Path
) -> None:
    config = tmp_path / "events.yaml"
    config.write_text(NAMED_EVENTS, encoding="utf-8")
    n = 40
    ids = [f"E{i % 30}" for i in range(n)]  # E0..E9 come twice
    table = pa.table(
        {
            "tel": [f"1390000{i:04d}" for i in range(n)],
            "id": ids,
            "kind": ["  " if i == 7 else ("order" if i % 3 else "refund") for i in range(n)],
            "at": [f"2024-03-01 09:{i % 60:02d}:00" for i in range(n)],
        }
    )
    data = _write(table, tmp_path / "lake" / "e.parquet", row_group=5)
    state = tmp_path / "state"
    cfg = importer.load_config(config)
    _state_from(table, state, keep=slice(0, 12), change=slice(12, 16), config=cfg)
    ref = plan_table(cfg, table, state=state, out=tmp_path / "ref", source=str(data))
    mine = idask.plan(
        cfg, data, state=state, out=tmp_path / "out", client=dask_client, partition_rows=10
    )
    for folder in ("changes", "rejects"):
        assert _read_dir(tmp_path / "out" / folder).equals(_read_dir(tmp_path / "ref" / folder))
    assert mine.groups == ref.groups and set(mine.groups) == {"order", "refund"}
    assert (mine.to_send, mine.unchanged, mine.rejected) == (ref.to_send, ref.unchanged, 1)
    assert mine.unchanged > 0 and mine.requests_needed == ref.requests_needed


def _fail_once(path: str, marker: str) -> pd.DataFrame:
    """A reader that fails the first time it reads ``path`` (``marker`` is created)."""
    if path.endswith("b.parquet") and not os.path.exists(marker):
        open(marker, "w").close()
        raise OSError(f"lost {path} (once)")
    table = pq.read_table(path)
    frame = table.to_pandas()
    frame["dm_source"] = path
    frame["dm_row"] = range(1, table.num_rows + 1)
    return frame


def test_a_task_that_fails_once_gives_the_same_change_set(
    dask_client: object, tmp_path: Path
) -> None:
    a = _write(_customers(20), tmp_path / "lake" / "a.parquet")
    b = _write(_customers(20, start=15), tmp_path / "lake" / "b.parquet")
    idask.plan(CUSTOMERS, [a, b], out=tmp_path / "ref", client=dask_client)
    files = [str(a), str(b)]

    def frame(marker: Path) -> object:
        meta = _fail_once(str(a), str(marker)).iloc[:0]
        return dd.from_map(_fail_once, files, args=(str(marker),), meta=meta)

    out = tmp_path / "out"
    with pytest.raises(OSError, match=r"lost .*b\.parquet \(once\)"):
        idask.plan(CUSTOMERS, frame(tmp_path / "m1"), out=out, client=dask_client, retries=0)
    assert sorted(p.name for p in out.iterdir()) == []  # nothing half-written counts
    summary = idask.plan(CUSTOMERS, frame(tmp_path / "m2"), out=out, client=dask_client, retries=1)
    assert (tmp_path / "m2").exists()
    for folder in ("changes", "rejects"):
        assert _read_dir(out / folder).equals(_read_dir(tmp_path / "ref" / folder))
    assert summary.to_send == 36 and summary.rows == 40


def test_a_long_lived_client_sees_a_file_changed_in_place(
    dask_client: object, tmp_path: Path
) -> None:
    data = _write(_customers(10), tmp_path / "c.parquet")
    out = tmp_path / "out"
    with distributed.get_task_stream(dask_client) as first_tasks:
        first = idask.plan(CUSTOMERS, data, out=out, client=dask_client)
    _write(_customers(10, city="广州", bad_every=0), data)  # same path, same size class
    (out / ".dask-killed" / "stage").mkdir(parents=True)  # what a killed plan left
    with distributed.get_task_stream(dask_client) as second_tasks:
        second = idask.plan(CUSTOMERS, data, out=out, client=dask_client)
    assert (first.rejected, second.rejected) == (1, 0)
    assert sorted(p.name for p in out.iterdir()) == ["changes", "plan.json", "rejects"]
    bodies = _read_dir(out / "changes").column("dm_body").to_pylist()
    assert len(bodies) == 10 and all('"city":"广州"' in b.decode() for b in bodies)
    # every task of a plan has a key of its own: none of the first plan's is reused
    keys = [{str(t["key"]) for t in ts.data} for ts in (first_tasks, second_tasks)]
    assert any("dmimport-map-" in k for k in keys[0]) and not keys[0] & keys[1]


def test_a_frame_out_of_order_and_a_dm_column_are_refused(
    dask_client: object, tmp_path: Path
) -> None:
    frame = _customers(6).to_pandas()
    frame["dm_source"] = "x.parquet"
    frame["dm_row"] = [1, 2, 3, 6, 5, 4]
    with pytest.raises(importer.UsageError) as caught:
        idask.plan(
            CUSTOMERS, dd.from_pandas(frame, npartitions=2), out=tmp_path, client=dask_client
        )
    assert str(caught.value) == (
        "the DataFrame's rows are not in (dm_source, dm_row) order across its partitions: "
        "sort it first (df.sort_values(['dm_source', 'dm_row'])), or give the plan the "
        "Parquet paths"
    )
    config = {
        "target": {"secret_env": "DMART_SECRET"},
        "job": {"name": "d", "kind": "user", "primary_keys": ["phone"]},
        "columns": {"phone": {"from": "dm_phone"}},
    }
    with pytest.raises(TypeError) as wrong:
        idask.plan(CUSTOMERS, pa.table(frame), out=tmp_path / "o", client=dask_client)
    assert str(wrong.value) == (
        "importer.dask.plan reads a Parquet path, a list of paths, or a Dask DataFrame "
        "with dm_source and dm_row columns, not Table"
    )
    # a lake file without a column the job reads: a ConfigError before any work, OUT untouched
    lake = _write(_customers(5).drop_columns(["邮箱"]), tmp_path / "lake" / "x.parquet")
    with pytest.raises(importer.ConfigError) as missing:
        idask.plan(CUSTOMERS, lake, out=tmp_path / "o", client=dask_client)
    assert f"columns.email.from: column '邮箱' is not in {lake}" in str(missing.value)
    assert list((tmp_path / "o").iterdir()) == []
    with pytest.raises(importer.ConfigError, match="'dm_phone' starts with 'dm_'"):
        idask.plan(config, tmp_path, out=tmp_path / "o", client=dask_client)


def test_int96_timestamps_are_utc_instants_as_spark_reads_them(
    dask_client: object, tmp_path: Path
) -> None:
    # Spark and Hive write a TIMESTAMP as INT96 holding the UTC instant: 08:00 UTC is 16:00 in
    # Beijing, for the Dask plan and for `dmimport validate`/`run` of the same file alike
    table = _customers(3).drop_columns(["注册时间"])
    at = pa.array([pd.Timestamp("2024-01-10 08:00:00")] * 3, pa.timestamp("ns"))
    table = table.append_column("注册时间", at)
    lake = tmp_path / "lake"
    lake.mkdir()
    pq.write_table(table, lake / "spark.parquet", use_deprecated_int96_timestamps=True)
    assert pq.ParquetFile(lake / "spark.parquet").schema.column(7).physical_type == "INT96"
    idask.plan(CUSTOMERS, lake, out=tmp_path / "out", client=dask_client)
    bodies = _read_dir(tmp_path / "out" / "changes").column("dm_body").to_pylist()
    assert [json.loads(b)["registerTime"] for b in bodies] == ["2024-01-10 16:00:00"] * 3
    shown = importer.preview(CUSTOMERS, lake / "spark.parquet", n=1)
    assert json.loads(shown.rows[0].body)["properties"]["registerTime"] == "2024-01-10 16:00:00"


def test_a_plan_on_a_cluster_in_this_process_logs_no_routine_shuffle_lines(
    dask_client: object, tmp_path: Path
) -> None:
    """A LocalCluster's scheduler logs each P2P shuffle's start and end as a WARNING: a plan
    (which shuffles on purpose) holds those two lines back while it computes, nothing else."""
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    plugin_log = logging.getLogger("distributed.shuffle._scheduler_plugin")
    handler, level = Keep(), plugin_log.level
    plugin_log.addHandler(handler)
    plugin_log.setLevel(logging.WARNING)
    try:
        data = _write(_customers(40), tmp_path / "c.parquet")
        summary = idask.plan(CUSTOMERS, data, out=tmp_path / "out", client=dask_client)
        assert summary.to_send == 40 - 4
        assert seen == []
        plugin_log.warning("Shuffle abc initialized by task x executed on worker y")
        assert seen == ["Shuffle abc initialized by task x executed on worker y"]  # after it
    finally:
        plugin_log.removeHandler(handler)
        plugin_log.setLevel(level)


def test_a_hive_partitioned_lake_gives_its_partition_keys_as_columns(
    dask_client: object, tmp_path: Path
) -> None:
    """``lake/城市=北京/part-0.parquet``: the folder's key is the column 城市 (a string, the value
    URL-unquoted, __HIVE_DEFAULT_PARTITION__ null), as Spark's ``spark.read.parquet(lake)``
    gives it; a file that has the column itself keeps its own values."""
    lake = tmp_path / "lake"
    folders = {
        "城市=北京/dt=2024-01-01": "北京",
        "城市=%E4%B8%8A%E6%B5%B7%2F%E6%B5%A6%E4%B8%9C": "上海/浦东",
        "城市=__HIVE_DEFAULT_PARTITION__": None,
    }
    tables = {}
    for i, (folder, city) in enumerate(folders.items()):
        table = _customers(12, start=12 * i).drop_columns(["城市"])
        path = _write(table, lake / folder / "part-0.parquet", row_group=5)
        tables[str(path)] = table.append_column(
            pa.field("城市", pa.string()), pa.array([city] * 12, pa.string())
        )
    own = _customers(12, start=40, city="广州")  # the file's own column wins over its folder's
    tables[str(_write(own, lake / "城市=深圳" / "part-0.parquet", row_group=5))] = own
    summary = idask.plan(
        CUSTOMERS, lake, out=tmp_path / "out", client=dask_client, partition_rows=5
    )
    want: dict[str, list[pa.Table]] = {"changes": [], "rejects": []}
    for n, source in enumerate(sorted(tables)):
        plan_table(CUSTOMERS, tables[source], out=tmp_path / f"ref{n}", source=source)
        for folder in want:
            want[folder].append(_read_dir(tmp_path / f"ref{n}" / folder))
    for folder, parts in want.items():
        assert _read_dir(tmp_path / "out" / folder).equals(pa.concat_tables(parts)), folder
    changes = _read_dir(tmp_path / "out" / "changes")
    assert set(changes.column("城市").to_pylist()) == {"北京", "上海/浦东", None, "广州"}
    assert summary.rows == 48 and summary.to_send == changes.num_rows > 0
    # a lake file given itself has no partition keys (as in Spark): the column is missing,
    # refused on the client before any work, naming the file
    one = sorted(tables)[0]
    with pytest.raises(importer.ConfigError) as caught:
        idask.plan(CUSTOMERS, one, out=tmp_path / "one", client=dask_client)
    assert f"columns.city.from: column '城市' is not in {one}" in str(caught.value)
    assert not (tmp_path / "one" / "changes").exists()


def test_a_config_error_in_a_worker_reaches_the_user_once_without_worker_tracebacks(
    dask_client: distributed.Client, tmp_path: Path
) -> None:
    frame = _customers(6).drop_columns(["邮箱"]).to_pandas()
    frame["dm_source"] = "x.parquet"
    frame["dm_row"] = list(range(1, 7))
    before = dask_client.get_worker_logs()
    with pytest.raises(importer.ConfigError) as caught:
        idask.plan(
            CUSTOMERS, dd.from_pandas(frame, npartitions=2), out=tmp_path / "o", client=dask_client
        )
    assert str(caught.value).startswith("invalid config:\n  columns.email.from: column '邮箱' is ")
    assert str(caught.value).count("column '邮箱'") == 1
    assert caught.value.problems[0].path == "columns.email.from"
    after = dask_client.get_worker_logs()
    new = [m for w in after for lv, m in after[w] if (lv, m) not in before.get(w, [])]
    assert [m for m in new if "Compute Failed" in m or "Traceback" in m] == []
    assert not (tmp_path / "o" / "changes").exists()
