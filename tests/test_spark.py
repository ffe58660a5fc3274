"""``importer.spark``: the lake-side plan and commit on a real Spark ``local[2]`` session (one
for the whole file), against ``validate``/``outcomes_of``, ``select_changes``, the sandbox."""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import read_results, send_changes

import importer
import importer.spark as spark_mod
from importer.errors import ConfigError, UsageError
from importer.lake import (
    PLAN_COLUMNS,
    REJECT_COLUMNS,
    PlanSummary,
    change_rows,
    change_set_info,
    plan_table,
    reject_rows,
    select_changes,
    text_columns,
)
from importer.lake.state import current, new_version, publish, read_state, versions, write_state
from importer.sandbox import Sandbox

pytestmark = [pytest.mark.engine, pytest.mark.xdist_group("spark"), pytest.mark.timeout(300)]

CONFIG = """\
target: {secret_env: DMART_SECRET}
job: {name: lake_users, kind: user, primary_keys: [phone, email]}
columns:
  phone: {from: tel}
  email: {from: mail}
  age: {from: age, type: integer}
  vip: {from: vip, type: boolean}
  city: {from: city}
  username: {from: score}
  registerTime: {from: joined, type: datetime, timezone: Asia/Shanghai}
  member_id: {from: amount}
  gender: {from: seen}
"""


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    from pyspark.sql import SparkSession

    before = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = sys.executable  # the workers import this importer
    session = (
        SparkSession.builder.master("local[2,2]")  # 2 cores, a failed task is tried again
        .appName("dmimport-tests")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.adaptive.coalescePartitions.enabled", "false")  # several part files
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
    if before is None:
        os.environ.pop("PYSPARK_PYTHON", None)
    else:
        os.environ["PYSPARK_PYTHON"] = before


def _config(tmp_path: Path, text: str = CONFIG) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _file(rows: list[tuple[Any, ...]]) -> pa.Table:
    """Typed columns, as a warehouse export has them."""
    cols = list(zip(*rows, strict=True)) if rows else [[]] * 8
    return pa.table(
        {
            "tel": pa.array(cols[0], pa.string()),
            "mail": pa.array(cols[1], pa.string()),
            "age": pa.array(cols[2], pa.int64()),
            "vip": pa.array(cols[3], pa.bool_()),
            "city": pa.array(cols[4], pa.string()).dictionary_encode(),
            "score": pa.array(cols[5], pa.float64()),
            "joined": pa.array(cols[6], pa.timestamp("ms")),
            "amount": pa.array(cols[7], pa.decimal128(10, 2)),
            # zoned: Spark hands it over in its session's zone, the plan writes the file's
            "seen": pa.array(cols[6], pa.timestamp("ms")).cast(
                pa.timestamp("ms", tz="Asia/Shanghai")
            ),
            "unused": pa.array([1] * len(rows), pa.int32()),
        }
    )


T = dt.datetime(2024, 3, 1, 9, 15)
FILE_A = [
    ("13800000001", "a@example.cn", 34, True, "北京", 1.5, T, Decimal("12.50")),
    ("13800000002", None, None, False, "上海", float("nan"), None, None),
    (None, None, 20, None, "北京", 2.0, T, Decimal("1.00")),  # no key: rejected
    ("13800000003", "c@example.cn", 45, True, None, 1e21, T, Decimal("-0.10")),
    ("13800000001", "a@example.cn", 35, True, "北京", 3.25, T, Decimal("13.00")),
]
FILE_B = [
    ("13800000001", "a@example.cn", 36, False, "广州", 4.0, T, Decimal("14.00")),  # last of 1
    ("", "", 1, True, "x", 0.0, None, None),  # no key: rejected
    ("13800000004", "d@example.cn", 51, None, "深圳", -7.0, T, Decimal("99.99")),
]


def _lake(folder: Path, files: dict[str, list[tuple[Any, ...]]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        pq.write_table(_file(rows), folder / name)
    return folder


def _changes(out: Path) -> pa.Table:
    """The change set's files read in name order, concatenated."""
    parts = sorted((out / "changes").glob("*.parquet"))
    return pa.concat_tables(pq.read_table(p) for p in parts)


def _outcomes(config: Path, lake: Path) -> tuple[pa.Table, pa.Table]:
    """``outcomes_of`` of each file of ``lake`` in name order, and their columns as text."""
    cfg = importer.load_config(config)
    outs, texts = [], []
    for path in sorted(lake.glob("*.parquet")):
        table = pq.read_table(path)
        outs.append(pa.Table.from_batches([importer.outcomes_of(cfg, table, source=str(path))]))
        texts.append(text_columns(cfg, table))
    return pa.concat_tables(outs), pa.concat_tables(texts)


def _state(folder: Path, job: str, kind: str, hashes: dict[int, int]) -> Path:
    """A state table holding ``hashes`` (identity hash -> body hash)."""
    version = new_version(folder, job, kind)
    ids = sorted(hashes)
    write_state(version, pa.table({"identity_hash": ids, "body_hash": [hashes[i] for i in ids]}))
    publish(folder, version)
    return version


def _reference(config: Path, lake: Path, state: Path | None) -> tuple[pa.Table, pa.Table]:
    """What the change set and the rejects must hold: ``outcomes_of`` per file, the state
    compared by ``select_changes``."""
    cfg = importer.load_config(config)
    out, text = _outcomes(config, lake)
    valid = np.array([v == "valid" for v in out.column("verdict").to_pylist()])
    known = read_state(state) if state is not None else read_state(None)
    hashes = dict(
        zip(
            known.column("identity_hash").to_pylist(),
            known.column("body_hash").to_pylist(),
            strict=True,
        )
    )
    ids = out.column("identity_hash").to_numpy(zero_copy_only=False)
    bodies = out.column("body_hash").fill_null(0).to_numpy()
    in_state = np.array([hashes.get(int(i)) is not None for i in ids], dtype=bool)
    state_hash = np.array([hashes.get(int(i), 0) for i in ids], dtype=np.int64)
    mask = np.zeros(out.num_rows, dtype=bool)
    chosen = select_changes(
        ids[valid].astype(np.int64),
        np.flatnonzero(valid).astype(np.int64),
        bodies[valid],
        state_hash[valid],
        in_state[valid],
        cfg.job.kind == "user",
    )
    mask[np.flatnonzero(valid)[chosen]] = True
    return change_rows(out, text, cfg, mask), reject_rows(out)


def test_plan_gives_validate_s_verdicts_bodies_and_identities(spark: Any, tmp_path: Path) -> None:
    config = _config(tmp_path)
    lake = _lake(tmp_path / "lake dir", {"a.parquet": FILE_A, "b.parquet": FILE_B})
    out = tmp_path / "out"
    summary = spark_mod.plan(config, str(lake), out=out, spark=spark)
    expected, rejects = _reference(config, lake, None)
    got = _changes(out)
    assert got.column_names == [*importer.load_config(config).source_columns(), *PLAN_COLUMNS]
    assert got.select(PLAN_COLUMNS).equals(expected.select(PLAN_COLUMNS))
    assert got.cast(expected.schema).equals(expected)
    assert pq.read_table(out / "rejects").select(REJECT_COLUMNS).equals(rejects)
    # the same verdicts and identities as `dmimport validate` on the files themselves
    report = read_results(importer.validate(config, [lake], report_dir=tmp_path / "r"))
    by_row = {(r["dm_source"], r["dm_row"]): r for r in got.to_pylist()}
    refused = {(r["dm_source"], r["dm_row"]): r for r in rejects.to_pylist()}
    assert len(report) == len(by_row) + len(refused) == 8
    for r in report:
        key = (str(lake / Path(r["file"]).name), int(r["line"]))
        if r["status"] == "rejected":
            assert refused[key]["reason"] == r["errmsg"]
        else:  # valid, or skipped_duplicate: a run's job.duplicates decides, not the plan
            assert by_row[key]["dm_identity"] == r["identity"]
    # one customer's rows across the two files keep their order: a's rows 1 and 5, then b's 1
    first = [(Path(r["dm_source"]).name, r["dm_row"]) for r in by_row.values()]
    ones = [k for k, r in zip(first, by_row.values(), strict=True) if "13800000001" in r["tel"]]
    assert ones == [("a.parquet", 1), ("a.parquet", 5), ("b.parquet", 1)]
    # the lake path is a local path (the folder's name has a space: no %20)
    assert {r["dm_source"] for r in by_row.values()} == {
        str(lake / "a.parquet"),
        str(lake / "b.parquet"),
    }
    assert (summary.rows, summary.valid, summary.rejected) == (8, 6, 2)
    assert (summary.unchanged, summary.to_send, summary.identities_to_send) == (0, 6, 4)
    assert summary.state_version is None
    assert PlanSummary.from_json(out / "plan.json") == summary


def test_the_change_set_is_ordered_across_part_files_and_marked_in_every_footer(
    spark: Any, tmp_path: Path
) -> None:
    config = _config(tmp_path)
    rows = [(f"1390000{i:04d}", f"u{i}@example.cn", i, True, "c", 1.0, T, None) for i in range(400)]
    lake = _lake(tmp_path / "lake", {"p1.parquet": rows[200:], "p0.parquet": rows[:200]})
    out = tmp_path / "out"
    spark_mod.plan(config, lake, out=out, spark=spark)
    parts = sorted((out / "changes").glob("*.parquet"))
    assert len(parts) > 1
    for part in parts:
        info = change_set_info(pq.read_schema(part))
        assert info == {"version": 1, "job": "lake_users", "kind": "user"}
    got = _changes(out)
    keys = list(
        zip(got.column("dm_source").to_pylist(), got.column("dm_row").to_pylist(), strict=True)
    )
    assert keys == sorted(keys) and len(keys) == 400
    # Spark reads the rewritten footers back too (no stale checksum files)
    assert spark.read.parquet(str(out / "changes")).count() == 400


def test_a_plan_agrees_with_select_changes_against_a_state(
    spark: Any, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    """A state holding some identities' bodies: unchanged ones drop out, changed ones and new
    ones stay (a user judged by its last row, every row of it kept)."""
    config = _config(tmp_path)
    lake = _lake(tmp_path / "lake", {"a.parquet": FILE_A, "b.parquet": FILE_B})
    valid = [o for o in _outcomes(config, lake)[0].to_pylist() if o["verdict"] == "valid"]
    last = {o["identity_hash"]: o["body_hash"] for o in valid}
    # identity 1 with its last body (unchanged), 3 with another body (changed)
    one = valid[0]["identity_hash"]
    three = next(o["identity_hash"] for o in valid if o["identity"].startswith("phone=13800000003"))
    state = tmp_path / "state"
    version = _state(state, "lake_users", "user", {one: last[one], three: last[three] + 1})
    out = tmp_path / "out"
    summary = spark_mod.plan(config, lake, state=state, out=out, spark=spark)
    expected, _ = _reference(config, lake, state)
    assert _changes(out).select(PLAN_COLUMNS).equals(expected.select(PLAN_COLUMNS))
    assert one not in set(_changes(out).column("dm_identity_hash").to_pylist())
    assert (summary.unchanged, summary.to_send, summary.identities_to_send) == (3, 3, 3)
    assert summary.state_version == version.name
    # the single-process reference plan over the same rows (one table: a's rows, then b's)
    whole = pa.concat_tables(pq.read_table(lake / n) for n in ("a.parquet", "b.parquet"))
    alone = plan_table(config, whole, state=state, out=tmp_path / "alone")
    theirs = _changes(tmp_path / "alone")
    ours = _changes(out)
    same = [c for c in ours.column_names if c not in ("dm_source", "dm_row")]
    assert ours.select(same).equals(theirs.select(same))
    offset = {str(lake / "a.parquet"): 0, str(lake / "b.parquet"): len(FILE_A)}
    assert [offset[r["dm_source"]] + r["dm_row"] for r in ours.to_pylist()] == theirs.column(
        "dm_row"
    ).to_pylist()
    fields = ("rows", "valid", "rejected", "unchanged", "to_send", "identities_to_send")
    fields += ("requests_needed", "groups", "fits", "state_version")
    assert [getattr(summary, f) for f in fields] == [getattr(alone, f) for f in fields]


EVENTS = """\
target: {secret_env: DMART_SECRET}
job: {name: lake_events, kind: event, event_name: visit, primary_keys: [phone]}
columns:
  phone: {from: tel}
  event_id: {from: mail}
  create_time: {from: joined, timezone: Asia/Shanghai}
  username: {from: city}
"""


def test_events_keep_every_row_from_the_first_that_differs(spark: Any, tmp_path: Path) -> None:
    config = _config(tmp_path, EVENTS)
    rows = [
        ("13800000001", f"e{i}", 1, True, "x" if i != 2 else "y", 1.0, T, None) for i in range(4)
    ]
    lake = _lake(tmp_path / "lake", {"a.parquet": rows[:2], "b.parquet": rows[2:]})
    first = _outcomes(config, lake)[0].to_pylist()[0]
    # the state holds the body of row 1 (a.parquet, 1): rows from the first differing on stay
    state = tmp_path / "state"
    _state(state, "lake_events", "event", {first["identity_hash"]: first["body_hash"]})
    out = tmp_path / "o2"
    summary = spark_mod.plan(config, lake, state=state, out=out, spark=spark)
    expected, _ = _reference(config, lake, state)
    assert _changes(out).select(PLAN_COLUMNS).equals(expected.select(PLAN_COLUMNS))
    assert (summary.unchanged, summary.to_send, summary.groups) == (1, 3, {"visit": 3})


def test_plan_run_commit_then_nothing_to_send(
    spark: Any,
    tmp_path: Path,
    fresh_sandbox: Callable[..., Sandbox],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = _config(tmp_path)
    lake = _lake(tmp_path / "lake", {"a.parquet": FILE_A, "b.parquet": FILE_B})
    out, state = tmp_path / "out", tmp_path / "state"
    planned = spark_mod.plan(config, lake, state=state, out=out, spark=spark)
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    run = send_changes(config, out / "changes", sb.url, tmp_path / "r", tmp_path / "ledger.db")
    assert planned.to_send == 6
    # job.duplicates (keep_last) sends customer 1's last row only
    assert (run.counts["ok"], run.counts["skipped_duplicate"]) == (4, 2)
    # the sandbox stores exactly the file's rows: each customer with its LAST row's values
    rows = [r for r in _changes(out).to_pylist()]
    last = {r["dm_identity"]: r["dm_body"] for r in rows}
    assert sorted(sb.stored_json()) == sorted(b.decode() for b in last.values())
    stored = {c["properties"]["phone"]: c["properties"] for c in sb.customers()}
    assert stored["13800000001"]["age"] == 36  # b.parquet's row, after a.parquet's two
    done = spark_mod.commit(run, state, spark=spark)
    assert (done.delivered, done.state_rows, done.previous) == (4, 4, None)
    assert current(state) is not None and current(state).name == done.version
    kept = read_state(state)
    assert kept.column("identity_hash").to_pylist() == sorted(
        last_ids := kept.column("identity_hash").to_pylist()
    )
    assert len(set(last_ids)) == 4
    again = spark_mod.plan(config, lake, state=state, out=out, spark=spark)
    assert (again.to_send, again.unchanged, again.state_version) == (0, 6, done.version)
    assert _changes(out).num_rows == 0
    [empty] = (out / "changes").glob("*.parquet")
    assert change_set_info(pq.read_schema(empty)) == {
        "version": 1,
        "job": "lake_users",
        "kind": "user",
    }
    # one changed customer: only it is planned; a second commit keeps two versions
    changed = [(*FILE_B[0][:2], 37, *FILE_B[0][3:]), *FILE_B[1:]]
    _lake(lake, {"b.parquet": changed})
    third = spark_mod.plan(config, lake, state=state, out=out, spark=spark)
    assert (third.to_send, third.identities_to_send) == (3, 1)
    run2 = send_changes(config, out / "changes", sb.url, tmp_path / "r2", tmp_path / "ledger.db")
    second = spark_mod.commit(run2, state, spark=spark)
    assert (second.delivered, second.state_rows, second.previous) == (1, 4, done.version)
    assert {v.name for v in versions(state)} == {done.version, second.version}


def test_a_task_that_fails_once_writes_the_same_change_set(spark: Any, tmp_path: Path) -> None:
    from pyspark.sql import functions as F
    from pyspark.sql.types import BooleanType

    config = _config(tmp_path)
    rows = [(f"1370000{i:04d}", f"f{i}@example.cn", i, True, "c", 1.0, T, None) for i in range(300)]
    lake = _lake(tmp_path / "lake", {"a.parquet": rows[:150], "b.parquet": rows[150:]})
    marker = tmp_path / "failed-once"

    def fail_once(tel: str) -> bool:
        if tel == "13700000200" and not marker.exists():
            marker.write_text("x")
            raise RuntimeError("injected task failure")
        return True

    check = F.udf(fail_once, BooleanType())
    df = spark.read.parquet(str(lake))
    df = df.filter(check(F.col("tel")))
    summary = spark_mod.plan(config, df, out=tmp_path / "stormy", spark=spark)
    assert marker.exists()  # the task did fail once
    assert summary.to_send == 300
    # byte for byte the rows of a plan without failure (a retried task's output never counts)
    expected, _ = _reference(config, lake, None)
    assert _changes(tmp_path / "stormy").cast(expected.schema).equals(expected)


def test_refusals_come_before_any_work(spark: Any, tmp_path: Path) -> None:
    lake = _lake(tmp_path / "lake", {"a.parquet": FILE_A})
    missing = CONFIG.replace("{from: city}", "{from: town}")
    with pytest.raises(ConfigError) as err:
        spark_mod.plan(_config(tmp_path, missing), lake, out=tmp_path / "o", spark=spark)
    assert "column 'town' is not in the DataFrame" in str(err.value)
    assert not (tmp_path / "o").exists()
    prefixed = CONFIG.replace("{from: city}", "{from: dm_city}")
    with pytest.raises(ConfigError, match="source column 'dm_city' starts with 'dm_'"):
        spark_mod.plan(_config(tmp_path, prefixed), lake, out=tmp_path / "o", spark=spark)
    memory = spark.createDataFrame(pq.read_table(lake / "a.parquet").drop(["city"]).to_pandas())
    memory = memory.withColumn("city", memory["tel"])
    with pytest.raises(UsageError) as no_files:
        spark_mod.plan(_config(tmp_path), memory, out=tmp_path / "o", spark=spark)
    assert str(no_files.value).startswith(
        "this DataFrame has no file metadata (_metadata.file_path, _metadata.row_index)"
    )
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("other", [{b"spark": b"4"}, None], ids=["other-metadata", "none"])
def test_footer_metadata_is_added_without_touching_the_data(
    tmp_path: Path, other: dict[bytes, bytes] | None
) -> None:
    """Spark's writer drops schema metadata: the plan adds the change set's to the footer of
    files written, like Spark's, without an Arrow schema (with other key-values or none)."""
    table = pa.table({"a": ["x", None, "z" * 300], "b": pa.array([1, 2, 3], pa.int64())})
    path = tmp_path / "f.parquet"
    pq.write_table(table, path, store_schema=False, row_group_size=2)
    for key, value in (other or {}).items():  # a footer with key-values already
        spark_mod.add_footer_metadata(path, key, value)
    before = path.read_bytes()
    start = len(before) - 8 - int.from_bytes(before[-8:-4], "little")
    spark_mod.add_footer_metadata(path, b"dmimport.change_set", b'{"version": 1}')
    after = path.read_bytes()
    assert after[:start] == before[:start]  # the data pages are untouched
    read = pq.read_table(path)
    assert read.schema.metadata == {**(other or {}), b"dmimport.change_set": b'{"version": 1}'}
    assert read.replace_schema_metadata(None).equals(table.replace_schema_metadata(None))
    assert pq.read_metadata(path).num_row_groups == 2


def test_footer_metadata_refuses_a_file_with_an_arrow_schema(tmp_path: Path) -> None:
    """pyarrow reads a file's schema metadata from its ARROW:schema: a key added to the footer
    of such a file would not be seen, so the file is refused, untouched."""
    path = tmp_path / "arrow.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), path)  # pyarrow's default: ARROW:schema embedded
    before = path.read_bytes()
    with pytest.raises(ValueError) as info:
        spark_mod.add_footer_metadata(path, b"dmimport.change_set", b'{"version": 1}')
    assert str(info.value) == (
        f"{path}: the file embeds an Arrow schema (ARROW:schema: written by pyarrow): readers "
        "take its schema metadata from there, so a key added to the footer would not be "
        "seen; write it without one (pyarrow: store_schema=False)"
    )
    assert path.read_bytes() == before


def test_footer_metadata_replaces_a_key_and_holds_many(tmp_path: Path) -> None:
    table = pa.table({"a": list(range(50))})
    path = tmp_path / "f.parquet"
    pq.write_table(table, path, store_schema=False, row_group_size=3)
    for i in range(20):  # past 14 entries the list header takes another form
        spark_mod.add_footer_metadata(path, f"k{i:02d}".encode(), f"v{i}".encode())
    spark_mod.add_footer_metadata(path, b"k03", b"again")
    expected = {f"k{i:02d}".encode(): f"v{i}".encode() for i in range(20)} | {b"k03": b"again"}
    assert pq.read_schema(path).metadata == expected
    assert len(pq.read_metadata(path).metadata) == 20
    assert pq.read_table(path).replace_schema_metadata(None).equals(table)


def test_a_commit_while_another_commit_holds_the_state_is_refused(tmp_path: Path) -> None:
    # the lock is taken before anything is read or any session started
    import json
    import socket

    from importer.lake.state import LOCK, state_lock

    state = tmp_path / "state"
    with state_lock(state):
        since = json.loads((state / LOCK).read_text(encoding="utf-8"))["since"]
        with pytest.raises(importer.LockedError) as info:
            spark_mod.commit(tmp_path / "results.csv", state)
        assert str(info.value) == (
            f"state table {state} is being committed by process {os.getpid()} on "
            f"{socket.gethostname()} (since {since}): wait for that commit to end, then "
            f"commit again; remove {state / LOCK} only if no commit is running"
        )
    assert list(state.iterdir()) == []
