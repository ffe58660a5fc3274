"""End to end through the library: real files, the real sandbox over loopback, real reports."""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from helpers import read_results, write_csv

from importer.api import run, validate
from importer.errors import ConfigError
from importer.protocol import IMPORT_PATH
from importer.report import RunSummary
from importer.sandbox import Faults, Sandbox, load_schema
from importer.sandbox.schema import PACKAGED_SCHEMA

ROOT = Path(__file__).resolve().parent.parent

USER_CONFIG = """
job: {{kind: {kind}, primary_keys: [phone, email]}}
columns:
  phone: {{from: phone, transform: [strip]}}
  email: {{from: email, transform: [strip, lower]}}
  username: {{from: name}}
  age: {{from: age, type: integer}}
send:
  concurrency: {concurrency}
  retry: {{max_attempts: 6, initial_backoff_s: 0.01, max_backoff_s: 0.05}}
"""

EVENT_CONFIG = """
job: {kind: event, event_name: order_detail, primary_keys: [phone, email]}
columns:
  phone: phone
  email: email
  orderId: order_id
  amount: {from: amount, type: number}
  event_id: order_id
  create_time: {from: created}
send: {concurrency: 8}
"""


#: every row of a repeated customer sent, as the sender's ordering tests need (the default,
#: keep_last, sends a customer's last row only: tests/test_duplicates.py)
SEND_ALL = {"job.duplicates": "keep_all"}


def write_config(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def send(
    sb: Sandbox, config: Path, files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    **overrides: Any,
) -> RunSummary:  # fmt: skip
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    ov = {"target.base_url": sb.url, **overrides}
    return run(
        config, files, overrides=ov, report_dir=tmp_path / "reports", ledger=tmp_path / "state.db"
    )


def customers_rows(n: int, prefix: str) -> list[list[str]]:
    return [
        [f"{prefix}{i:06d}", f"U{i}@Example.cn", f"用户{i}", str(20 + i % 50)] for i in range(n)
    ]


def test_user_csv_end_to_end_stores_exactly_the_accepted_rows(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    rows = customers_rows(200, "0139")
    rows[10][3] = "12a"  # 20003 (a wrong type under import-api): local reject, line 12
    rows[20][0] = rows[20][1] = ""  # 20001: no primary key, line 22
    rows[30][0], rows[30][1] = "   ", ""  # 20002: whitespace-only phone is stripped -> 20001
    data = write_csv(tmp_path / "c.csv", ["phone", "email", "name", "age"], rows)
    cfg = write_config(tmp_path, USER_CONFIG.format(kind="user", concurrency=16))

    summary = send(sb, cfg, [data], tmp_path, monkeypatch)

    results = read_results(summary)
    assert len(results) == 200
    assert [int(r["line"]) for r in results] == list(range(2, 202))
    by_line = {int(r["line"]): r for r in results}
    assert (by_line[12]["status"], by_line[12]["errcode"], by_line[12]["column"]) == (
        "rejected",
        "20003",
        "age",
    )
    assert (by_line[22]["status"], by_line[22]["errcode"]) == ("rejected", "20001")
    assert (by_line[32]["status"], by_line[32]["errcode"]) == ("rejected", "20001")
    assert summary.counts["ok"] == 197 and summary.counts["rejected"] == 3
    assert summary.exit_code == 1
    # 197 rows of 197 customers: one batch, one request, which every sent row names
    assert summary.requests == 1 and summary.sending.batch_requests == 1
    assert {r["request_id"] for r in results if r["status"] == "ok"} == {"1"}
    assert {r["request_id"] for r in results if r["status"] == "rejected"} == {""}
    assert sb.stats()["by_type"] == {IMPORT_PATH: {"user_batch": 1}}

    stored = {c["properties"]["phone"]: c["properties"] for c in sb.customers()}
    expected = {
        r[0]: {"phone": r[0], "email": r[1].lower(), "username": r[2], "age": int(r[3])}
        for i, r in enumerate(rows)
        if i not in (10, 20, 30)
    }
    assert stored == expected


def test_rejects_file_holds_original_rows_in_input_format(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    rows = customers_rows(5, "0137")
    rows[1][3] = "old"
    rows[3][0] = "+8613800138000"
    rows[3][3] = "=1+1"
    data = write_csv(tmp_path / "c.csv", ["phone", "email", "name", "age"], rows)
    cfg = write_config(tmp_path, USER_CONFIG.format(kind="user", concurrency=4))
    summary = send(sb, cfg, [data], tmp_path, monkeypatch)
    assert len(summary.rejects_paths) == 1
    text = summary.rejects_paths[0].read_text(encoding="utf-8").splitlines()
    assert text[0] == "phone,email,name,age"
    assert text[1:] == [",".join(rows[1]), ",".join(rows[3])]
    summary_json = json.loads((summary.report_dir / "summary.json").read_text())  # type: ignore[operator]
    assert summary_json["counts"]["rejected"] == 2


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"], ids=["csv", "jsonl", "parquet"])
def test_events_each_format_end_to_end(
    fmt: str, fresh_sandbox: Callable[..., Sandbox], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    sb = fresh_sandbox()
    header = ["phone", "email", "order_id", "amount", "created"]
    rows = [
        [f"0138{i:07d}", f"e{i}@x.cn", f"2018080808080{i:04d}", f"{i}.5", "2018-08-08 08:08:08"]
        for i in range(50)
    ]
    rows[7][4] = "yesterday"  # 20003 create_time
    path = tmp_path / f"orders.{fmt}"
    if fmt == "csv":
        write_csv(path, header, rows)
    elif fmt == "jsonl":
        with open(path, "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(dict(zip(header, r, strict=True))) + "\n")
    else:
        pq.write_table(pa.table({h: [r[i] for r in rows] for i, h in enumerate(header)}), path)
    cfg = write_config(tmp_path, EVENT_CONFIG)

    summary = send(sb, cfg, [path], tmp_path, monkeypatch)

    results = read_results(summary)
    assert len(results) == 50
    bad = [r for r in results if r["status"] != "ok"]
    assert [(r["line"], r["errcode"]) for r in bad] == [("9" if fmt == "csv" else "8", "20003")]
    events = sb.events()
    assert len(events) == 49
    stored = {e["event_id"]: e["properties"] for e in events}
    assert stored["20180808080800001"] == {
        "phone": "01380000001",
        "email": "e1@x.cn",
        "orderId": "20180808080800001",
        "amount": 1.5,
        "event_id": "20180808080800001",
        "create_time": "2018-08-08 08:08:08",
    }

    # A re-run sends everything again, and the platform de-duplicates: still 49 events.
    again = send(sb, cfg, [path], tmp_path, monkeypatch)
    assert again.counts["ok"] == 49
    assert len(sb.events()) == 49


def test_retries_through_503_and_429_store_every_valid_row_once(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox(faults=Faults(seed=7, http_503=0.15, http_429=0.1, retry_after="0"))
    header = ["phone", "email", "order_id", "amount", "created"]
    rows = [[f"0136{i:07d}", "", f"E{i:06d}", "1", "2024-01-01 00:00:00"] for i in range(400)]
    data = write_csv(tmp_path / "o.csv", header, rows)
    # 10 events a request: 40 requests, enough to meet faults; rate_limit off (many requests)
    cfg = write_config(tmp_path, EVENT_CONFIG.replace("send: {concurrency: 8}", (
        "send: {concurrency: 16, batch_rows: 10, rate_limit: null, retry: {max_attempts: 8,"
        " initial_backoff_s: 0.01, max_backoff_s: 0.05}}"
    )))  # fmt: skip
    summary = send(sb, cfg, [data], tmp_path, monkeypatch)
    results = read_results(summary)
    assert summary.exit_code == 0, summary.to_dict()
    assert {r["status"] for r in results} == {"ok"}
    # every row names its request; a request's rows share its attempts
    by_request: dict[str, set[int]] = {}
    for r in results:
        by_request.setdefault(r["request_id"], set()).add(int(r["attempts"]))
    assert len(by_request) == 40 and all(len(a) == 1 for a in by_request.values())
    attempts = sum(a.pop() for a in by_request.values())
    assert attempts == summary.requests > 40  # retries happened and were counted
    assert sorted(e["event_id"] for e in sb.events()) == sorted(r[2] for r in rows)
    faults = sb.stats()["by_fault"]
    assert attempts == 40 + sum(faults.values())


def test_same_customer_updates_keep_file_order(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Random 0-15 ms latency per request would reorder concurrent updates; per-customer
    # ordering must make the file's last value win for every customer.
    sb = fresh_sandbox(faults=Faults(seed=3, latency_ms="0-15"))
    rows = []
    for version in range(6):
        for c in range(40):
            rows.append([f"0135{c:07d}", "", f"v{version}", str(version)])
    data = write_csv(tmp_path / "u.csv", ["phone", "email", "name", "age"], rows)
    cfg = write_config(tmp_path, USER_CONFIG.format(kind="user", concurrency=64))
    summary = send(sb, cfg, [data], tmp_path, monkeypatch, **SEND_ALL)
    assert summary.exit_code == 0 and summary.counts["ok"] == 240
    stored = {c["properties"]["phone"]: c["properties"]["username"] for c in sb.customers()}
    assert stored == {f"0135{c:07d}": "v5" for c in range(40)}


def test_user_then_delete_ends_deleted(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    rows = customers_rows(30, "0134")
    users = write_csv(tmp_path / "u.csv", ["phone", "email", "name", "age"], rows)
    deletes = write_csv(tmp_path / "d.csv", ["phone", "email", "name", "age"], rows[:10])
    cfg = write_config(tmp_path, USER_CONFIG.format(kind="user", concurrency=8), "u.yaml")
    dcfg = write_config(tmp_path, """
job: {kind: user_delete, primary_keys: [phone, email]}
columns: {phone: phone, email: {from: email, transform: [lower]}}
""", "d.yaml")  # fmt: skip
    assert send(sb, cfg, [users], tmp_path, monkeypatch).exit_code == 0
    gone = send(sb, dcfg, [deletes], tmp_path, monkeypatch)
    assert gone.exit_code == 0
    assert sorted(c["properties"]["phone"] for c in sb.customers()) == [r[0] for r in rows[10:]]
    # no batch form is documented for deletes: one a request
    assert (gone.requests, gone.sending.batch_requests, gone.sending.batch_rows) == (10, 0, 1)
    assert sb.stats()["by_type"][IMPORT_PATH] == {"user_batch": 1, "user_delete": 10}


def test_fatal_auth_error_aborts_and_marks_the_rest_not_sent(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    data = write_csv(
        tmp_path / "c.csv", ["phone", "email", "name", "age"], customers_rows(3000, "0133")
    )
    cfg = write_config(tmp_path, USER_CONFIG.format(kind="user", concurrency=8))
    monkeypatch.setenv("DMART_SECRET", "not-the-right-secret")
    summary = run(
        cfg,
        [data],
        # 10 rows a request: the rows of the requests that got out are few
        overrides={"target.base_url": sb.url, "send.batch_rows": 10},
        report_dir=tmp_path / "reports",
        ledger=tmp_path / "state.db",
    )
    assert summary.exit_code == 3
    assert summary.aborted is not None and summary.aborted.startswith("20000 Authentication failed")
    assert summary.aborted.count("Authentication failed") == 1  # not said twice
    assert summary.requests <= 8  # at most one request per worker got out
    results = read_results(summary)
    assert len(results) == 3000
    assert summary.counts["not_sent"] >= 3000 - 8 * 10
    assert summary.counts["not_sent"] + summary.counts["failed"] == 3000
    assert "not-the-right-secret" not in summary.results_path.read_text()  # type: ignore[union-attr]
    assert sb.customers() == []


def test_a_property_the_account_lacks_stops_the_run_before_bisection_spends_the_quota(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every row carries a property the account does not define: the platform refuses each
    # batch, and finding the refused rows of a batch costs about two requests a row. 5,000
    # rows would spend about 10,000 requests (the whole day); the run stops after 50 rows
    # refused in a row with the same answer instead, and says why.
    sb = fresh_sandbox()
    data = write_csv(
        tmp_path / "c.csv", ["phone", "nick"], [[f"0135{i:07d}", f"n{i}"] for i in range(5000)]
    )
    cfg = write_config(
        tmp_path,
        "job: {kind: user, primary_keys: [phone]}\n"
        "columns: {phone: phone, nickname: nick}\n"
        "send: {rate_limit: null}\n",
    )
    summary = send(sb, cfg, [data], tmp_path, monkeypatch)
    assert summary.exit_code == 3
    assert summary.aborted is not None
    assert summary.aborted.startswith(
        "the platform refused 50 rows in a row with the same answer (20003 Data checking "
        "failed: property 'nickname' is not defined in the account's metadata)"
    )
    assert summary.aborted.endswith(
        "fix the cause, then run the same command again: a fix on the platform (the property "
        "defined in the account) leaves the config as it is, and the run resumes without "
        "sending the delivered rows again; a fix in the config starts a new run that sends "
        "every row (send.abort_after_same_refusals)"
    )
    assert sb.stats()["requests"] < 400  # not ~10,000
    assert summary.counts["failed"] >= 50
    assert summary.counts["failed"] + summary.counts["not_sent"] == 5000
    assert sb.customers() == []


def test_debug_mode_checks_on_the_server_and_stores_nothing(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    data = write_csv(
        tmp_path / "c.csv", ["phone", "email", "name", "age"], customers_rows(20, "0132")
    )
    cfg = write_config(tmp_path, USER_CONFIG.format(kind="user", concurrency=4))
    summary = send(sb, cfg, [data], tmp_path, monkeypatch, **{"target.debug": True})
    assert summary.mode == "debug"
    assert summary.counts["ok"] == 20
    assert sb.customers() == []


def test_dry_run_sends_nothing_and_needs_no_secret(tmp_path: Path) -> None:
    rows = customers_rows(10, "0131")
    rows[4][3] = "x"
    data = write_csv(tmp_path / "c.csv", ["phone", "email", "name", "age"], rows)
    cfg = write_config(tmp_path, USER_CONFIG.format(kind="user", concurrency=4))
    summary = validate(cfg, [data], report_dir=tmp_path / "r")
    assert summary.mode == "dry-run"
    assert (summary.counts["valid"], summary.counts["rejected"]) == (9, 1)
    assert summary.requests == 0
    assert summary.exit_code == 1


def test_missing_column_refuses_the_run_before_sending(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    data = write_csv(tmp_path / "c.csv", ["phone", "Email", "name", "age"], customers_rows(3, "1"))
    cfg = write_config(tmp_path, USER_CONFIG.format(kind="user", concurrency=4))
    with pytest.raises(ConfigError) as info:
        send(sb, cfg, [data], tmp_path, monkeypatch)
    text = str(info.value)
    assert "columns.email.from: column 'email' is not in" in text
    assert "c.csv" in text and "did you mean 'Email'?" in text
    assert sb.stats()["requests"] == 0


def test_missing_secret_is_a_config_error(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "c.csv", ["phone", "email", "name", "age"], customers_rows(3, "1"))
    cfg = write_config(tmp_path, USER_CONFIG.format(kind="user", concurrency=4))
    with pytest.raises(ConfigError) as info:
        run(cfg, [data], report_dir=tmp_path / "r", ledger=tmp_path / "state.db")
    assert "target.secret_env: environment variable DMART_SECRET is not set" in str(info.value)


def test_sample_data_imports_as_documented(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    summary = send(
        sb,
        ROOT / "configs/customers.yaml",
        [ROOT / "sample_data/customers.csv", ROOT / "sample_data/customers_gb18030.csv"],
        tmp_path,
        monkeypatch,
    )
    results = read_results(summary)
    assert len(results) == 19  # 14 records in customers.csv (one ragged) + 5 GB18030 rows
    names = {c["properties"].get("username") for c in sb.customers()}
    assert {"张三", "蒋一", "杨四·𠀀", '周"八"', "吴九\n(备注: 两行)"} <= names
    ragged = [r for r in results if r["line"] == "6" and r["file"].endswith("customers.csv")]
    assert ragged[0]["status"] == "rejected" and "fields" in ragged[0]["errmsg"]


@pytest.mark.slow
def test_two_sender_processes_deliver_everything_in_customer_order(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox(faults=Faults(seed=4, latency_ms="0-10"))
    rows = [[f"0129{c:07d}", "", f"v{v}", str(v)] for v in range(4) for c in range(300)]
    rows[5][3] = "bad"
    data = write_csv(tmp_path / "u.csv", ["phone", "email", "name", "age"], rows)
    cfg = write_config(tmp_path, USER_CONFIG.format(kind="user", concurrency=16))
    summary = send(
        sb,
        cfg,
        [data],
        tmp_path,
        monkeypatch,
        **{"send.workers": 2, "send.batch_rows": 100, **SEND_ALL},
    )
    assert (summary.counts["ok"], summary.counts["rejected"]) == (1199, 1)
    # 100 rows a request, a customer once in each (they repeat every 300 rows)
    assert summary.requests == 12
    assert len(read_results(summary)) == 1200
    stored = {c["properties"]["phone"]: c["properties"]["username"] for c in sb.customers()}
    assert stored == {f"0129{c:07d}": "v3" for c in range(300)}


@pytest.mark.slow
def test_two_sender_processes_abort_together_on_a_fatal_answer(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    data = write_csv(
        tmp_path / "c.csv", ["phone", "email", "name", "age"], customers_rows(5000, "0128")
    )
    cfg = write_config(tmp_path, USER_CONFIG.format(kind="user", concurrency=4))
    monkeypatch.setenv("DMART_SECRET", "wrong")
    summary = run(
        cfg,
        [data],
        overrides={"target.base_url": sb.url, "send.workers": 2},
        report_dir=tmp_path / "r",
        ledger=tmp_path / "state.db",
    )
    assert summary.exit_code == 3
    assert summary.aborted is not None and summary.aborted.startswith("20000")
    assert summary.counts["not_sent"] + summary.counts["failed"] == 5000
    assert summary.requests <= 2 * 4 + 2 * 256  # bounded: at most the rows already shipped
    assert len(read_results(summary)) == 5000


def accepting(fresh_sandbox: Callable[..., Sandbox]) -> Sandbox:
    """A sandbox that stores properties its schema does not declare."""
    return fresh_sandbox(schema=load_schema(PACKAGED_SCHEMA, env={}).replace(
        unknown_properties="accept"
    ))  # fmt: skip


def _send_parquet(
    sb: Sandbox, table: pa.Table, columns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> list[dict[str, Any]]:
    """Send ``table`` with phone and ``columns`` mapped; the stored properties, in row order.
    ``sb`` accepts properties its schema does not declare (``unknown_properties: accept``)."""
    pq.write_table(table, tmp_path / "t.parquet")
    job = "job: {kind: user, primary_keys: [phone]}\ncolumns:\n  phone: phone\n" + columns
    summary = send(sb, write_config(tmp_path, job), [tmp_path / "t.parquet"], tmp_path, monkeypatch)
    assert summary.exit_code == 0 and summary.counts["ok"] == table.num_rows
    stored = {c["properties"]["phone"]: c["properties"] for c in sb.customers()}
    return [stored[p] for p in table.column("phone").to_pylist()]


def test_parquet_float16_is_sent_in_shortest_form(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It was sent as the float32 Arrow widens it to: 10.3 as 10.296875.
    half = np.array([10.3, 0.1, 65504, -1.5, 1e-7, 998], dtype=np.float16)
    table = pa.table({"phone": [f"1380000000{i}" for i in range(6)], "half": pa.array(half)})
    columns = "  score: {from: half, type: number}\n  half_text: half\n"
    got = _send_parquet(accepting(fresh_sandbox), table, columns, tmp_path, monkeypatch)
    # the shortest decimal that reads back as the same float16 (65500 is 65504 in float16)
    assert [p["half_text"] for p in got] == ["10.3", "0.1", "65500", "-1.5", "1e-7", "998"]
    assert [p["score"] for p in got] == [10.3, 0.1, 65500, -1.5, 1e-7, 998]
    assert all(np.float16(p["score"]) == h for p, h in zip(got, half, strict=True))


def test_parquet_fractional_seconds_have_no_trailing_zeros_whatever_the_unit(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # They kept the unit's width: .005000000 in ns, .005000 in us.
    instants = [
        datetime.datetime(2024, 3, 1, 9, 15, 0, 5000),
        datetime.datetime(2024, 3, 1, 9, 15, 0, 100000),
        datetime.datetime(2024, 3, 1, 9, 15, 0, 123456),
        datetime.datetime(2024, 3, 1, 9, 15),
        datetime.datetime(1969, 12, 31, 23, 59, 58, 500000),
        datetime.datetime(2024, 3, 1, 9, 15, 0, 120000),
    ]
    us = pa.array(instants, pa.timestamp("us"))
    ns = pc.add(us.cast(pa.timestamp("ns")), pa.array([0, 0, 789, 0, 0, 0], pa.duration("ns")))
    table = pa.table({
        "phone": [f"1380000000{i}" for i in range(6)],
        "ms": us.cast(pa.timestamp("ms"), safe=False),
        "us": us,
        "ns": ns,
        "zoned": ns.cast(pa.timestamp("ns", "Asia/Shanghai")),
        "time": pa.array([i.time() for i in instants], pa.time64("us")).cast(pa.time64("ns")),
    })  # fmt: skip
    columns = "  t_ms: ms\n  t_us: us\n  t_ns: ns\n  t_zoned: zoned\n  t_time: time\n"
    got = _send_parquet(accepting(fresh_sandbox), table, columns, tmp_path, monkeypatch)
    assert [p["t_ms"] for p in got] == [
        "2024-03-01 09:15:00.005", "2024-03-01 09:15:00.1", "2024-03-01 09:15:00.123",
        "2024-03-01 09:15:00", "1969-12-31 23:59:58.5", "2024-03-01 09:15:00.12",
    ]  # fmt: skip
    assert [p["t_us"] for p in got] == [
        "2024-03-01 09:15:00.005", "2024-03-01 09:15:00.1", "2024-03-01 09:15:00.123456",
        "2024-03-01 09:15:00", "1969-12-31 23:59:58.5", "2024-03-01 09:15:00.12",
    ]  # fmt: skip
    assert [p["t_ns"] for p in got] == [
        "2024-03-01 09:15:00.005", "2024-03-01 09:15:00.1", "2024-03-01 09:15:00.123456789",
        "2024-03-01 09:15:00", "1969-12-31 23:59:58.5", "2024-03-01 09:15:00.12",
    ]  # fmt: skip
    assert [p["t_zoned"] for p in got] == [
        "2024-03-01 17:15:00.005+0800", "2024-03-01 17:15:00.1+0800",
        "2024-03-01 17:15:00.123456789+0800", "2024-03-01 17:15:00+0800",
        "1970-01-01 07:59:58.5+0800", "2024-03-01 17:15:00.12+0800",
    ]  # fmt: skip
    assert [p["t_time"] for p in got] == [
        "09:15:00.005", "09:15:00.1", "09:15:00.123456", "09:15:00", "23:59:58.5", "09:15:00.12",
    ]  # fmt: skip


def _late_apply_run(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    settle_s: float, workers: int = 1,
) -> tuple[Sandbox, RunSummary, dict[str, str]]:  # fmt: skip
    """60 customers, each in three versions far apart in the file (v0 of all, v1, then v2);
    15% of the requests are held 1 s, past the 0.3 s timeout, then applied all the same.
    The sandbox, the summary, and each customer's last values (after every late one landed)."""
    sb = fresh_sandbox(faults=Faults(seed=22, late_apply=0.15, late_apply_s=1.0))
    tmp_path.mkdir()
    # every row names both primary keys: only such a row is sent again (its customer holds
    # exactly its keys, so the re-send changes nothing unless a request landed late)
    rows = [[f"0127{c:07d}", f"c{c}@x.cn", f"v{v}", str(v)] for v in range(3) for c in range(60)]
    data = write_csv(tmp_path / "u.csv", ["phone", "email", "name", "age"], rows)
    cfg = write_config(tmp_path, USER_CONFIG.format(kind="user", concurrency=8))
    summary = send(sb, cfg, [data], tmp_path, monkeypatch, **{
        "target.timeout_s": 0.3, "send.batch_rows": 10, "send.settle_s": settle_s,
        "send.rate_limit": None, "send.workers": workers, **SEND_ALL,
    })  # fmt: skip
    time.sleep(1.5)  # whatever was held has been applied now
    assert sb.stats()["by_fault"]["late_apply"] > 0
    stored = {c["properties"]["phone"]: c["properties"]["username"] for c in sb.customers()}
    return sb, summary, stored


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_a_request_applied_late_never_leaves_a_customer_with_older_values(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    workers: int,
) -> None:  # fmt: skip
    # without the re-send (settle_s: 0) the platform ends with older values for some
    # customers: a timed-out request of their earlier row landed after their last row
    _, control, stale = _late_apply_run(fresh_sandbox, tmp_path / "a", monkeypatch, 0)
    assert control.exit_code == 0 and control.sending.late_resends == 0
    assert sorted(set(stale.values())) != ["v2"] and len(stale) == 60

    # with it: once every row has its answer and settle_s passed, each such customer's last
    # row goes again, and every customer ends with its last row's values
    _, summary, stored = _late_apply_run(fresh_sandbox, tmp_path / "b", monkeypatch, 1.2, workers)
    assert summary.exit_code == 0 and summary.counts["ok"] == 180
    assert stored == {f"0127{c:07d}": "v2" for c in range(60)}
    overwritten = sum(1 for v in stale.values() if v != "v2")
    assert overwritten <= summary.sending.late_resends <= 60
    assert summary.sending.late_resend_failures == 0
    assert summary.to_dict()["sending"]["late_resends"] == summary.sending.late_resends
    # a re-send is a row sent again, not a line: the report has one line per row
    assert len(read_results(summary)) == 180


def test_a_row_naming_some_primary_keys_is_not_sent_again_after_a_timeout(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    # An earlier run gave each customer a phone and an e-mail. Tonight's file has two
    # phone-only rows of each, then the customer's new phone with the same e-mail: the
    # platform moves the customer to the new phone (the old one names nobody). Truncated
    # answers make some phone-only rows time out (ambiguous): sent again at the end, the
    # phone-only row would create a customer with its older values (the re-send must change
    # nothing when nothing was applied late); it is not sent again, and the run says so.
    sb = fresh_sandbox(faults=Faults(seed=5, truncated=0.3))
    cfg = write_config(tmp_path, USER_CONFIG.format(kind="user", concurrency=1))
    n = 40
    before = [[f"0125{c:07d}", f"c{c}@x.cn", "v0", "1"] for c in range(n)]
    first = write_csv(tmp_path / "a.csv", ["phone", "email", "name", "age"], before)
    send(sb, cfg, [first], tmp_path / "a", monkeypatch, **{"send.batch_rows": 1})
    rows = [[f"0125{c:07d}", "", f"v{v}", "2"] for v in (1, 2) for c in range(n)]
    rows += [[f"0124{c:07d}", f"c{c}@x.cn", "v3", "3"] for c in range(n)]
    data = write_csv(tmp_path / "b.csv", ["phone", "email", "name", "age"], rows)
    summary = send(sb, cfg, [data], tmp_path / "b", monkeypatch, **{
        "send.batch_rows": 1, "send.settle_s": 0.05, "send.rate_limit": None, **SEND_ALL,
    })  # fmt: skip
    assert summary.exit_code == 0 and summary.counts["ok"] == 3 * n
    assert sb.stats()["by_fault"]["truncated"] > 0
    stored = sorted(
        (c["properties"]["phone"], c["properties"].get("email"), c["properties"]["username"])
        for c in sb.customers()
    )
    assert stored == [(f"0124{c:07d}", f"c{c}@x.cn", "v3") for c in range(n)]
    assert summary.sending.late_resends == 0
    warned = [r.getMessage() for r in caplog.records if "only some of the primary" in r.message]
    assert len(warned) == 1 and "run the same command with --full" in warned[0], warned


def test_events_go_in_batches_per_event_name(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    names = ["pay", "view", "cart"] * 10 + ["refund"]  # interleaved; one refund alone
    rows = [[f"0126{i:07d}", f"E{i:04d}", "2024-01-01 00:00:00", n] for i, n in enumerate(names)]
    data = write_csv(tmp_path / "e.csv", ["phone", "order_id", "created", "name"], rows)
    cfg = write_config(tmp_path, """
job: {kind: event, event_name_from: name, primary_keys: [phone]}
columns: {phone: phone, event_id: order_id, create_time: created}
send: {batch_rows: 4}
""")  # fmt: skip
    summary = send(sb, cfg, [data], tmp_path, monkeypatch)
    assert summary.exit_code == 0 and summary.counts["ok"] == 31
    # 10 rows of each name in requests of 4, 4 and 2 rows of that name; the refund alone
    assert summary.requests == 10 and summary.sending.batch_requests == 9
    assert sb.stats()["by_type"][IMPORT_PATH] == {"event_batch": 9, "event": 1}
    stored = {e["event_id"]: e["eventName"] for e in sb.events()}
    assert stored == {r[1]: r[3] for r in rows}
    by_request: dict[str, set[str]] = {}
    for r in read_results(summary):
        by_request.setdefault(r["request_id"], set()).add(names[int(r["line"]) - 2])
    assert len(by_request) == 10 and all(len(n) == 1 for n in by_request.values())


def test_a_changed_only_run_fills_its_requests_across_the_files_batches(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a nightly export where 2% changed: read 1,000 rows at a time, about 20 changed rows
    # each; requests are what the daily quota counts, so they still carry 500 rows
    sb = fresh_sandbox()
    n = 25_000
    rows = [[f"0125{i:07d}", "", f"v1-{i}", "30"] for i in range(n)]
    data = write_csv(tmp_path / "u.csv", ["phone", "email", "name", "age"], rows)
    cfg = write_config(tmp_path, USER_CONFIG.format(kind="user", concurrency=8))
    ov = {"input.batch_rows": 1000, "send.rate_limit": None}
    first = send(sb, cfg, [data], tmp_path, monkeypatch, **ov)
    assert (first.counts["ok"], first.requests) == (n, n // 500)
    changed = sorted(np.random.default_rng(7).choice(n, size=n // 50, replace=False).tolist())
    for i in changed:
        rows[i][2] = f"v2-{i}"
    write_csv(data, ["phone", "email", "name", "age"], rows)
    tonight = send(sb, cfg, [data], tmp_path, monkeypatch, **ov, **{"state.mode": "incremental"})
    assert (tonight.counts["ok"], tonight.counts["unchanged"]) == (500, n - 500)
    assert tonight.requests == 1 and tonight.sending.batch_requests == 1
    stored = {c["properties"]["phone"]: c["properties"]["username"] for c in sb.customers()}
    assert all(stored[rows[i][0]] == f"v2-{i}" for i in changed)
