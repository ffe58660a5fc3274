"""``importer.outcomes_of``: one Arrow batch mapped and checked, one outcome row per input row,
against what ``validate`` reports, what the sandbox stores and what the ledger records."""

from __future__ import annotations

import csv
import datetime as dt
import json
import pickle
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import NAMED_EVENTS

import importer
from importer.ledger import keys64
from importer.sandbox import Sandbox

ROOT = Path(__file__).resolve().parent.parent
CUSTOMERS = ROOT / "configs" / "customers.yaml"
EVENTS = ROOT / "configs" / "order_events.yaml"


def _csv_rows(path: Path) -> tuple[pa.Table, list[int]]:
    """The well-formed records of a CSV sample as text columns, and each record's line in
    results.csv (its first physical line; the header is line 1). Ragged records are the
    loader's business, not a batch's: left out."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        records, lines = [], []
        start = reader.line_num + 1
        for record in reader:
            if len(record) == len(header):
                records.append(record)
                lines.append(start)
            start = reader.line_num + 1
    table = pa.table(
        {h: pa.array([r[i] for r in records], pa.string()) for i, h in enumerate(header)}
    )
    return table, lines


def _jsonl_rows(path: Path) -> tuple[pa.Table, list[int]]:
    """The parseable lines of a JSONL sample as text columns (numbers as their JSON text, as
    the JSONL loader reads them), and their line numbers."""
    records, lines = [], []
    for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            continue
        records.append({k: v if isinstance(v, str) else json.dumps(v) for k, v in obj.items()})
        lines.append(n)
    names = list(dict.fromkeys(k for r in records for k in r))
    table = pa.table({k: pa.array([r.get(k) for r in records], pa.string()) for k in names})
    return table, lines


def _results(report_dir: Path) -> dict[int, dict[str, str]]:
    [results] = report_dir.glob("*/results.csv")
    with open(results, encoding="utf-8-sig", newline="") as fh:
        return {int(r["line"]): r for r in csv.DictReader(fh)}


SAMPLES = [
    pytest.param(CUSTOMERS, ROOT / "sample_data" / "customers.csv", _csv_rows, id="customers"),
    pytest.param(EVENTS, ROOT / "sample_data" / "order_events.jsonl", _jsonl_rows, id="events"),
]


@pytest.mark.parametrize(("config", "data", "read"), SAMPLES)
def test_outcomes_match_validate_report(
    config: Path,
    data: Path,
    read: Callable[[Path], tuple[pa.Table, list[int]]],
    tmp_path: Path,
) -> None:
    table, lines = read(data)
    out = importer.outcomes_of(config, table, source="mem", first_row=10).to_pylist()
    importer.validate(config, [data], report_dir=tmp_path / "r")
    report = _results(tmp_path / "r")
    assert len(out) == len(lines) == table.num_rows
    assert [o["row"] for o in out] == list(range(11, 11 + table.num_rows))
    assert {o["source"] for o in out} == {"mem"}
    for o, line in zip(out, lines, strict=True):
        r = report[line]
        errcode = int(r["errcode"]) if r["errcode"] else None
        got = (o["identity"], o["verdict"], o["errcode"], o["reason"] or "", o["column"] or "")
        assert got == (r["identity"], r["status"], errcode, r["errmsg"], r["column"]), line
        assert (o["body"] is None) == (o["verdict"] == "rejected")
        assert (o["body_hash"] is None) == (o["verdict"] == "rejected")
    verdicts = [o["verdict"] for o in out]
    assert "valid" in verdicts and "rejected" in verdicts


@pytest.mark.parametrize(("config", "data", "read"), SAMPLES)
def test_bodies_and_hashes_are_what_a_run_sends_and_records(
    config: Path,
    data: Path,
    read: Callable[[Path], tuple[pa.Table, list[int]]],
    fresh_sandbox: Callable[..., Sandbox],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table, _ = read(data)
    out = importer.outcomes_of(config, table).to_pylist()
    valid = [o for o in out if o["verdict"] == "valid"]
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    state = tmp_path / "state.db"
    summary = importer.run(
        config,
        [data],
        overrides={"target.base_url": sb.url},
        report_dir=tmp_path / "r",
        ledger=state,
    )
    assert summary.counts["ok"] == len(valid)
    # every stored record is, byte for byte, one valid row's body (no two rows share a key)
    kind = "events" if config == EVENTS else "customers"
    assert sorted(sb.stored_json(kind)) == sorted(o["body"].decode() for o in valid)
    if kind == "events":
        assert {o["event"] for o in valid} == {"order_detail"}
    else:
        assert {o["event"] for o in out} == {None}
    with sqlite3.connect(state) as db:
        rows = dict(db.execute("SELECT identity, last_hash FROM rows").fetchall())
    assert len(rows) == len(valid)
    prefix = "order_detail|" if kind == "events" else ""
    for o in valid:
        identity = prefix + o["identity"]
        assert rows[identity] == o["body_hash"]
        assert int(keys64([identity])[0]) == o["identity_hash"]


def _typed_table() -> pa.Table:
    shanghai = dt.timezone(dt.timedelta(hours=8))
    return pa.table(
        {
            "tel": pa.array([13800138000, 13800138001, None, 13800138003], pa.int64()),
            "member": pa.array([13800138000.0, float("nan"), 7.5, 1e21], pa.float64()),
            "age": pa.array([34, None, 45, 51], pa.int32()),
            "vip": pa.array([True, False, None, True]),
            "city": pa.array(["北京", "上海", "北京", None]).dictionary_encode(),
            "email": pa.array(["a@example.cn", None, "c@example.cn", "d@example.cn"]),
            "registered": pa.array(
                [
                    dt.datetime(2024, 3, 1, 9, 15),
                    None,
                    dt.datetime(2024, 3, 3, 11, 30, 0, 5000),
                    dt.datetime(2024, 3, 4),
                ],
                pa.timestamp("ms"),
            ),
            "seen": pa.array(
                [
                    dt.datetime(2024, 3, 1, 1, 15, tzinfo=dt.UTC),
                    None,
                    None,
                    dt.datetime(2024, 3, 4, tzinfo=shanghai),
                ],
                pa.timestamp("us", tz="Asia/Shanghai"),
            ),
        }
    )


TYPED_CONFIG = """\
target: {secret_env: DMART_SECRET}
job: {name: typed, kind: user, primary_keys: [phone, email]}
columns:
  phone: {from: tel}
  email: {from: email}
  member_id: {from: member}
  age: {from: age, type: integer}
  vip: {from: vip, type: boolean}
  city: {from: city}
  registerTime: {from: registered, type: datetime, timezone: Asia/Shanghai}
  username: {from: seen}
"""


def test_typed_columns_give_what_the_same_parquet_file_gives(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "typed.yaml"
    config.write_text(TYPED_CONFIG, encoding="utf-8")
    table = _typed_table()
    parquet = tmp_path / "typed.parquet"
    pq.write_table(table, parquet)
    out = importer.outcomes_of(config, table.to_batches()[0], source=str(parquet)).to_pylist()
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    importer.run(
        config,
        [parquet],
        overrides={"target.base_url": sb.url},
        report_dir=tmp_path / "r",
        ledger=tmp_path / "s.db",
    )
    report = _results(tmp_path / "r")
    assert [(o["identity"], o["verdict"]) for o in out] == [
        (report[i + 1]["identity"], report[i + 1]["status"].replace("ok", "valid"))
        for i in range(4)
    ]
    valid = [o for o in out if o["verdict"] == "valid"]
    assert sorted(sb.stored_json()) == sorted(o["body"].decode() for o in valid)
    first = json.loads(out[0]["body"])
    assert (first["phone"], first["member_id"], first["age"]) == ("13800138000", "13800138000", 34)
    assert first["username"] == "2024-03-01 09:15:00+0800"


def test_same_input_same_output_across_threads_and_pickle() -> None:
    table, _ = _csv_rows(ROOT / "sample_data" / "customers.csv")
    config = importer.load_config(CUSTOMERS)
    shipped = pickle.loads(pickle.dumps(config))
    assert shipped == config
    first = importer.outcomes_of(config, table)
    with ThreadPoolExecutor(4) as pool:
        again = list(pool.map(lambda c: importer.outcomes_of(c, table), [config, shipped] * 4))
    assert all(a.equals(first) for a in again)
    assert pickle.loads(pickle.dumps(first)).equals(first)
    assert first.schema == importer.OUTCOME_SCHEMA


def test_a_value_the_loader_refuses_is_rejected_with_its_reason() -> None:
    config = importer.load_config(CUSTOMERS, overrides={"input.max_field_bytes": 1024})
    table, _ = _csv_rows(ROOT / "sample_data" / "customers.csv")
    names = pa.array(["张三", "x" * 1025, "bad\x00name"])
    table = table.slice(0, 3).set_column(2, "姓名", names)
    out = importer.outcomes_of(config, table).to_pylist()
    assert [o["verdict"] for o in out] == ["valid", "rejected", "rejected"]
    assert out[1]["reason"] == (
        'value in column "姓名" is 1025 bytes, over the 1024-byte limit (input.max_field_bytes)'
    )
    assert out[2]["reason"] == 'NUL byte in column "姓名"'
    assert [o["column"] for o in out] == [None, "姓名", "姓名"]
    assert [o["errcode"] for o in out] == [None, None, None]
    assert [o["identity"] for o in out] == ["phone=13800138000;email=zhangsan@example.cn", "", ""]
    assert out[1]["identity_hash"] is None and out[1]["body"] is None


def test_config_as_a_dict_and_an_empty_batch() -> None:
    data = {
        "target": {"secret_env": "DMART_SECRET"},
        "job": {"name": "d", "kind": "user", "primary_keys": ["phone"]},
        "columns": {"phone": {"from": "p"}},
    }
    out = importer.outcomes_of(data, pa.table({"p": pa.array([], pa.string())}))
    assert out.num_rows == 0 and out.schema == importer.OUTCOME_SCHEMA
    one = importer.outcomes_of(data, pa.table({"p": [" 1 "], "unused": [1.5]}))
    assert one.column("body").to_pylist() == [b'{"phone":" 1 "}']  # a string keeps its spaces


def test_a_batch_without_a_column_the_job_reads_is_refused() -> None:
    table = pa.table({"手机号": ["13800138000"], "邮箱": ["a@example.cn"]})
    with pytest.raises(importer.ConfigError) as caught:
        importer.outcomes_of(CUSTOMERS, table.drop_columns(["邮箱"]), source="crm.customers")
    assert "columns.email.from: column '邮箱' is not in crm.customers" in str(caught.value)


def test_event_names_from_a_column_hash_as_the_ledger_keys_them(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "named.yaml"
    config.write_text(NAMED_EVENTS, encoding="utf-8")
    table = pa.table(
        {
            "tel": ["13800138000", "13800138001", "13800138002"],
            "id": ["E1", "E2", "E3"],
            "kind": ["order_detail", "  ", "refund"],
            "at": ["2024-03-01 09:15:00"] * 3,
        }
    )
    data = tmp_path / "named.parquet"
    pq.write_table(table, data)
    out = importer.outcomes_of(config, table).to_pylist()
    assert [o["event"] for o in out] == ["order_detail", None, "refund"]
    assert [o["verdict"] for o in out] == ["valid", "rejected", "valid"]
    sb = fresh_sandbox()
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    state = tmp_path / "state.db"
    importer.run(
        config,
        [data],
        overrides={"target.base_url": sb.url},
        report_dir=tmp_path / "r",
        ledger=state,
    )
    with sqlite3.connect(state) as db:
        rows = dict(db.execute("SELECT identity, last_hash FROM rows").fetchall())
    stored = {(e["eventName"], e["event_id"]) for e in sb.events()}
    assert stored == {("order_detail", "E1"), ("refund", "E3")}
    for o in (out[0], out[2]):
        identity = f"{o['event']}|{o['identity']}"
        assert rows[identity] == o["body_hash"]
        assert int(keys64([identity])[0]) == o["identity_hash"]
    assert sorted(sb.stored_json("events")) == sorted(o["body"].decode() for o in (out[0], out[2]))
