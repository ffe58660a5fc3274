"""``job.duplicates``: rows of one run that share an identity (an event's name and
``event_id``, a customer's primary-key values), found across every file and batch before
sending, against the real sandbox: which row is sent, what the others say, and that
changed-only, resume and retry keep the same choices."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import read_results, write_csv

from importer.api import preview, retry, run, validate
from importer.cli import render_summary
from importer.config import Config
from importer.duplicates import find_duplicates
from importer.job import parse_job
from importer.ledger import duplicates
from importer.load import open_source
from importer.quota import count_rows
from importer.report import RunSummary
from importer.sandbox import Faults, Sandbox

EVENTS = {
    "job": {"name": "orders", "kind": "event", "event_name": "order_detail",
            "primary_keys": ["phone"]},
    "columns": {"phone": "phone", "source": "status", "event_id": "order_id",
                "create_time": "created"},
    "send": {"rate_limit": None},
}  # fmt: skip
USERS = {
    "job": {"name": "people", "kind": "user", "primary_keys": ["phone"]},
    "columns": {"phone": "phone", "username": "name", "city": "city", "age": {
        "from": "age", "type": "integer"}},
    "send": {"rate_limit": None},
}  # fmt: skip
ORDER_HEADER = ["phone", "status", "order_id", "created"]
PEOPLE_HEADER = ["phone", "name", "city", "age"]
WHEN = "2026-12-01 10:00:00"
REJECTED_E1 = (
    "duplicate event_id 'E1' of line 2: the platform keeps the first; set job.duplicates: "
    "keep_last to send the last instead"
)


def config(base: dict[str, Any], sb: Sandbox | None, **sections: Any) -> Config:
    """``base`` with ``job`` keys (``duplicates=...``) or whole sections (``input={...}``)
    set, against ``sb``."""
    out = {key: dict(value) for key, value in base.items()}
    for key, value in sections.items():
        if isinstance(value, dict):
            out[key] = value
        else:
            out["job"][key] = value
    if sb is not None:
        out["target"] = {"base_url": sb.url}
    return parse_job(out)


def send(
    sb: Sandbox, cfg: dict[str, Any], files: list[Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, **options: Any,
) -> RunSummary:  # fmt: skip
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    return run(cfg, files, report_dir=tmp_path / "reports", ledger=tmp_path / "state.db", **options)


def lines(summary: RunSummary) -> dict[tuple[str, str], tuple[str, str]]:
    """(file name, line) -> (status, errmsg) of every report line."""
    return {
        (Path(r["file"]).name, r["line"]): (r["status"], r["errmsg"]) for r in read_results(summary)
    }


def orders(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    """An orders file of (phone, status, order_id) rows."""
    return write_csv(path, ORDER_HEADER, [[p, s, o, WHEN] for p, s, o in rows])


def test_a_repeated_event_id_is_rejected_by_default_and_the_platform_keeps_the_first(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    data = orders(tmp_path / "o.csv", [("13800000001", "PAID", "E1"), ("13800000002", "PAID", "E2"),
                                       ("13800000001", "SHIPPED", "E1")])  # fmt: skip
    summary = send(sb, config(EVENTS, sb), [data], tmp_path, monkeypatch)
    assert lines(summary) == {
        ("o.csv", "2"): ("ok", ""),
        ("o.csv", "3"): ("ok", ""),
        ("o.csv", "4"): ("rejected", REJECTED_E1),
    }
    [row] = [r for r in read_results(summary) if r["status"] == "rejected"]
    assert row["errcode"] == ""  # a local decision, not a platform's errcode
    assert {e["event_id"]: e["properties"]["source"] for e in sb.events()} == {
        "E1": "PAID",
        "E2": "PAID",
    }
    assert summary.counts["rejected"] == 1 and summary.counts["skipped_duplicate"] == 0
    # a rejected row makes the run exit 1 unless --max-reject-rate tolerates it
    assert summary.exit_code == 1
    assert summary.top_reasons == [
        {
            "reason": "duplicate event_id '…' of line …: the platform keeps the first; set "
            "job.duplicates: keep_last to send the last instead",
            "rows": 1,
            "example": "o.csv:4",
        }
    ]
    # the rejected row goes to the rejects file as it was read, ready to send again
    rejects = (summary.report_dir / "rejects.csv").read_text(encoding="utf-8")
    assert "SHIPPED" in rejects and "PAID" not in rejects
    # the quota's plan counted only the rows to send: 2 of them, in one request
    assert summary.quota is not None and summary.quota["rows"] == 2


def test_keep_last_sends_the_last_event_and_skips_the_earlier_naming_its_line(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    data = orders(tmp_path / "o.csv", [("13800000001", "PAID", "E1"), ("13800000002", "PAID", "E2"),
                                       ("13800000001", "SHIPPED", "E1")])  # fmt: skip
    cfg = config(EVENTS, sb, duplicates="keep_last")
    summary = send(sb, cfg, [data], tmp_path, monkeypatch)
    assert lines(summary) == {
        ("o.csv", "2"): (
            "skipped_duplicate", "duplicate of line 4 (job.duplicates: keep_last keeps the last)"
        ),
        ("o.csv", "3"): ("ok", ""),
        ("o.csv", "4"): ("ok", ""),
    }  # fmt: skip
    assert {e["event_id"]: e["properties"]["source"] for e in sb.events()} == {
        "E1": "SHIPPED",
        "E2": "PAID",
    }
    assert summary.exit_code == 0 and summary.counts["skipped_duplicate"] == 1
    assert summary.top_reasons == []  # not a problem
    assert not (summary.report_dir / "rejects.csv").exists()
    # the printed summary's counts end in one column, the long label's too
    counts = [
        ln for ln in render_summary(summary).splitlines() if ln.startswith(("  ok ", "  skip"))
    ]
    assert counts == ["  ok                   2", "  skipped_duplicate    1"]


@pytest.mark.parametrize(
    ("counts", "ends_at"),
    [
        ({"ok": 2, "skipped_duplicate": 1}, 24),
        ({"ok": 987_655, "rejected": 0, "skipped_duplicate": 12_345}, 26),  # was 24 and 26
        ({"ok": 0, "skipped_duplicate": 0}, 24),  # nothing counted: no line, no error
    ],
)
def test_the_printed_counts_end_in_one_column_whatever_their_size(
    counts: dict[str, int], ends_at: int
) -> None:
    summary = RunSummary(
        run_id="r1", job="j", kind="user", mode="send", report_dir=None, started="",
        finished="", duration_s=10.0, rows=sum(counts.values()), counts=counts, errcodes={},
        top_reasons=[], requests=1_976, aborted=None, exit_code=0,
    )  # fmt: skip
    lines = render_summary(summary).splitlines()
    numbers = [ln.split("   in ")[0] for ln in lines if ln.startswith(("  rows", "  requests"))]
    numbers += [ln for ln in lines if ln.split()[0] in counts]
    assert len(numbers) == 2 + sum(1 for n in counts.values() if n)
    assert {len(ln) for ln in numbers} == {ends_at}, numbers
    assert {ln[-1].isdigit() for ln in numbers} == {True}


def test_keep_first_sends_the_first_and_skips_the_later(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    data = orders(tmp_path / "o.csv", [("13800000001", "PAID", "E1"),
                                       ("13800000001", "SHIPPED", "E1")])  # fmt: skip
    summary = send(sb, config(EVENTS, sb, duplicates="keep_first"), [data], tmp_path, monkeypatch)
    assert lines(summary) == {
        ("o.csv", "2"): ("ok", ""),
        ("o.csv", "3"): (
            "skipped_duplicate", "duplicate of line 2 (job.duplicates: keep_first keeps the first)"
        ),
    }  # fmt: skip
    assert summary.exit_code == 0 and sb.stats()["requests"] == 1


def test_customers_keep_last_skips_only_rows_whose_values_the_last_row_also_sets(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    data = write_csv(
        tmp_path / "p.csv",
        PEOPLE_HEADER,
        [
            ["13900000001", "Old", "", "30"],  # line 2: every value set again on line 5
            ["13900000001", "", "Hangzhou", ""],  # line 3: the city only it knows: sent
            ["13900000002", "Solo", "", ""],
            ["13900000001", "New", "", "31"],  # line 5: the last row, sent
        ],
    )
    summary = send(sb, config(USERS, sb), [data], tmp_path, monkeypatch)  # keep_last: default
    assert lines(summary) == {
        ("p.csv", "2"): (
            "skipped_duplicate", "duplicate of line 5 (job.duplicates: keep_last keeps the last)"
        ),
        ("p.csv", "3"): ("ok", ""),
        ("p.csv", "4"): ("ok", ""),
        ("p.csv", "5"): ("ok", ""),
    }  # fmt: skip
    stored = {c["properties"]["phone"]: c["properties"] for c in sb.customers()}
    assert stored["13900000001"] == {
        "phone": "13900000001", "username": "New", "city": "Hangzhou", "age": 31,
    }  # fmt: skip
    assert summary.exit_code == 0


def test_customers_reject_names_the_kept_line_without_the_customers_values(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    data = write_csv(tmp_path / "p.csv", PEOPLE_HEADER, [["13900000001", "A", "", ""],
                                                         ["13900000001", "B", "", ""]])  # fmt: skip
    summary = send(sb, config(USERS, sb, duplicates="reject"), [data], tmp_path, monkeypatch)
    assert lines(summary)[("p.csv", "3")] == (
        "rejected",
        "duplicate customer of line 2 (the same primary-key values): job.duplicates: reject "
        "sends the first only; set job.duplicates: keep_last to send the last instead",
    )
    assert [c["properties"]["username"] for c in sb.customers()] == ["A"]
    # tolerated by --max-reject-rate like any local reject
    again = send(sb, config(USERS, sb, duplicates="reject"), [data], tmp_path, monkeypatch,
                 max_reject_rate=0.5)  # fmt: skip
    assert again.exit_code == 0 and again.counts["rejected"] == 1


def test_duplicates_are_found_across_files_and_read_batches(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    first = orders(tmp_path / "a.csv", [("1", "PAID", "E1"), ("2", "PAID", "E2"),
                                        ("3", "PAID", "E3"), ("4", "PAID", "E4")])  # fmt: skip
    second = orders(tmp_path / "b.csv", [("5", "PAID", "E5"), ("1", "SHIPPED", "E1"),
                                         ("4", "SHIPPED", "E4")])  # fmt: skip
    cfg = config(EVENTS, sb, duplicates="keep_last", input={"batch_rows": 2})
    summary = send(sb, cfg, [first, second], tmp_path, monkeypatch)
    got = lines(summary)
    keep = "(job.duplicates: keep_last keeps the last)"
    assert got[("a.csv", "2")] == ("skipped_duplicate", f"duplicate of b.csv line 3 {keep}")
    assert got[("a.csv", "5")] == ("skipped_duplicate", f"duplicate of b.csv line 4 {keep}")
    assert {k: v[0] for k, v in got.items() if v[0] != "skipped_duplicate"} == {
        ("a.csv", "3"): "ok", ("a.csv", "4"): "ok", ("b.csv", "2"): "ok",
        ("b.csv", "3"): "ok", ("b.csv", "4"): "ok",
    }  # fmt: skip
    stored = {e["event_id"]: e["properties"]["source"] for e in sb.events()}
    assert stored == {"E1": "SHIPPED", "E2": "PAID", "E3": "PAID", "E4": "SHIPPED", "E5": "PAID"}
    # the default (reject) across batches of one file names the kept line
    sb2 = fresh_sandbox()
    cfg = config(EVENTS, sb2, input={"batch_rows": 2})
    data = orders(tmp_path / "c.csv", [("1", "PAID", "E1"), ("2", "PAID", "E2"),
                                       ("3", "PAID", "E3"), ("1", "SHIPPED", "E1")])  # fmt: skip
    summary = send(sb2, cfg, [data], tmp_path / "two", monkeypatch)
    assert lines(summary)[("c.csv", "5")] == ("rejected", REJECTED_E1)


@pytest.mark.parametrize("kind", ["event", "user"])
def test_changed_only_sends_nothing_the_second_night(
    kind: str, fresh_sandbox: Callable[..., Sandbox], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    sb = fresh_sandbox()
    if kind == "event":
        cfg = config(EVENTS, sb)
        data = orders(tmp_path / "o.csv", [("1", "PAID", "E1"), ("1", "SHIPPED", "E1"),
                                           ("2", "PAID", "E2")])  # fmt: skip
        sets = [config(EVENTS, sb), config(EVENTS, sb, duplicates="keep_last")]
    else:
        data = write_csv(tmp_path / "p.csv", PEOPLE_HEADER, [
            ["13900000001", "Old", "", "30"], ["13900000001", "", "Hangzhou", ""],
            ["13900000001", "New", "", "31"], ["13900000002", "Solo", "", ""]])  # fmt: skip
        sets = [config(USERS, sb)]
    for n, cfg in enumerate(sets):
        where = tmp_path / f"set{n}"
        first = send(sb, cfg, [data], where, monkeypatch, changed_only=True)
        before = sb.stats()["requests"]
        second = send(sb, cfg, [data], where, monkeypatch, changed_only=True)
        assert sb.stats()["requests"] == before, lines(second)
        assert second.requests == 0
        # the same rows are held back, with the same words
        held = {k: v for k, v in lines(first).items() if v[0] in ("rejected", "skipped_duplicate")}
        assert held and held == {
            k: v for k, v in lines(second).items() if v[0] in ("rejected", "skipped_duplicate")
        }


def test_retry_and_resume_keep_the_choices(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a quota of 2 requests of 1 row: the run sends what fits and leaves the rest not_sent
    sb = fresh_sandbox()
    quota = {"rate_limit": None, "batch_rows": 1, "daily_quota": 2}
    unlimited = {"rate_limit": None, "batch_rows": 1, "daily_quota": 0}
    cfg = config(EVENTS, sb, duplicates="keep_last", send=quota)
    data = orders(tmp_path / "o.csv", [("1", "PAID", "E1"), ("2", "PAID", "E2"),
                                       ("3", "PAID", "E3"), ("1", "SHIPPED", "E1"),
                                       ("4", "PAID", "E4")])  # fmt: skip
    first = send(sb, cfg, [data], tmp_path, monkeypatch, within_quota=True)
    statuses = {k[1]: v[0] for k, v in lines(first).items()}
    assert statuses["2"] == "skipped_duplicate"
    assert sorted(statuses.values()).count("not_sent") == 2
    # retry RUN_ID on a new quota day: only the not_sent rows; line 2 is never sent
    cfg = config(EVENTS, sb, duplicates="keep_last", send=unlimited)
    again = retry(cfg, first.run_id, report_dir=tmp_path / "reports",
                  ledger=tmp_path / "state.db")  # fmt: skip
    assert again.counts["ok"] == 2 and again.counts["skipped_duplicate"] == 0
    assert sb.stats()["requests"] == 4
    stored = {e["event_id"]: e["properties"]["source"] for e in sb.events()}
    assert stored == {"E1": "SHIPPED", "E2": "PAID", "E3": "PAID", "E4": "PAID"}
    # a run that resumes (the quota stop is resumable) makes the same choice again
    sb2 = fresh_sandbox()
    cfg = config(EVENTS, sb2, duplicates="keep_last", send=quota)
    where = tmp_path / "resume"
    first = send(sb2, cfg, [data], where, monkeypatch, within_quota=True)
    cfg = config(EVENTS, sb2, duplicates="keep_last", send=unlimited)
    second = send(sb2, cfg, [data], where, monkeypatch)
    assert second.resumed_from == first.run_id
    assert lines(second)[("o.csv", "2")] == (
        "skipped_duplicate", "duplicate of line 5 (job.duplicates: keep_last keeps the last)"
    )  # fmt: skip
    assert (second.counts["skipped"], second.counts["ok"]) == (2, 2)
    assert sb2.stats()["requests"] == 4
    assert {e["event_id"]: e["properties"]["source"] for e in sb2.events()}["E1"] == "SHIPPED"


def test_validate_and_preview_show_the_duplicates_before_a_run(tmp_path: Path) -> None:
    data = orders(tmp_path / "o.csv", [("1", "PAID", "E1"), ("1", "SHIPPED", "E1")])
    summary = validate(config(EVENTS, None), [data], report_dir=tmp_path / "reports")
    assert lines(summary) == {
        ("o.csv", "2"): ("valid", ""),
        ("o.csv", "3"): ("rejected", REJECTED_E1),
    }
    shown = preview(config(EVENTS, None, duplicates="keep_last"), data)
    assert [(r.line, r.verdict, r.reason) for r in shown.rows] == [
        (2, "skipped_duplicate", "duplicate of line 3 (job.duplicates: keep_last keeps the last)"),
        (3, "ok", None),
    ]
    assert (shown.plan.valid, shown.plan.duplicates) == (1, 1)
    rejected = preview(config(EVENTS, None), data)
    assert [(r.line, r.verdict, r.reason) for r in rejected.rows][1] == (3, "rejected", REJECTED_E1)
    assert (rejected.plan.valid, rejected.plan.duplicates) == (1, 1)


def test_preview_with_keep_all_still_counts_the_whole_file(tmp_path: Path) -> None:
    data = orders(
        tmp_path / "o.csv", [("1", "PAID", "E1"), ("1", "SHIPPED", "E1"), ("2", "X", "E2")]
    )
    shown = preview(config(EVENTS, None, duplicates="keep_all"), data, n=1)
    assert (shown.plan.rows, shown.plan.valid, shown.plan.duplicates) == (3, 3, 0)


def peak_of(job: Callable[[], Any]) -> tuple[Any, int]:
    """What ``job`` returns, and the most Python memory it held at once (bytes; traced)."""
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    result = job()
    return result, tracemalloc.get_traced_memory()[1] - before


def test_the_pre_pass_holds_no_set_of_identities(tmp_path: Path) -> None:
    # 200,000 customers, every 1,000th repeated: the identities go to temporary files, not
    # into Python objects: the pass holds what reading the files holds (a batch),
    # not what a set of 200,000 identity strings takes (about 20 MB)
    n = 200_000
    path = tmp_path / "p.csv"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("phone,name,city,age\n")
        for i in range(n):
            fh.write(f"1{(i // 2 if i % 1000 == 1 else i):010d},n{i},,\n")
    cfg = config(USERS, None)
    source = open_source(path, cfg.input)
    count_rows(cfg, [source])  # warm: what a first pass imports and caches is not measured
    tracemalloc.start()
    try:
        identities = {f"phone=1{i:010d}" for i in range(n)}
        as_a_set = tracemalloc.get_traced_memory()[0]
        del identities
        _, reading = peak_of(lambda: count_rows(cfg, [source]))  # the pass without a spill
        (found, count), spilling = peak_of(lambda: find_duplicates(cfg, [source]))
    finally:
        tracemalloc.stop()
    assert found.found == n // 1000 and count.rows == n - n // 1000
    assert as_a_set > 15_000_000
    # the spill adds nothing that grows with the rows: at most 1 MB over reading alone
    assert spilling < reading + 1_000_000, (spilling, reading)


def test_a_spill_file_too_large_to_read_whole_is_split_again_with_the_same_verdicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 3_000
    rows = [[f"1{(i % 1_100):010d}", f"n{i}", "c" if i % 7 == 0 else "", ""] for i in range(n)]
    source = open_source(
        write_csv(tmp_path / "p.csv", PEOPLE_HEADER, rows), config(USERS, None).input
    )
    lines = np.arange(2, n + 2)
    verdicts = {}
    for size in (duplicates.BUCKET_ROWS, 8):  # 3,000 rows in 64 files: ~47 a file > 8
        monkeypatch.setattr(duplicates, "BUCKET_ROWS", size)
        found, count = find_duplicates(config(USERS, None), [source])
        codes, refs = found.verdicts(0, lines)
        verdicts[size] = (codes.tolist(), refs.tolist(), count.rows)
    assert verdicts[8] == verdicts[duplicates.BUCKET_ROWS]
    codes, refs, sent = verdicts[8]
    # keep_last: each of 1,100 phones keeps its last row; an earlier row with a city the last
    # one lacks is sent too
    assert sent == n - codes.count(1)
    last = {f"1{(i % 1_100):010d}": i + 2 for i in range(n)}
    for i, (code, ref) in enumerate(zip(codes, refs, strict=True)):
        phone, has_city = rows[i][0], bool(rows[i][2])
        kept = last[phone]
        if i + 2 == kept or (has_city and not rows[kept - 2][2]):
            assert code == 0, i
        else:
            assert (code, ref) == (1, kept), i


def test_events_named_by_a_column_are_duplicates_only_under_the_same_name(tmp_path: Path) -> None:
    # the platform de-duplicates on (event name, event_id): E1 under "pay" and under "ship"
    # are two events; the plan counts the rows to send per name
    data = write_csv(
        tmp_path / "e.csv",
        ["phone", "status", "order_id", "created", "name"],
        [
            ["1", "a", "E1", WHEN, "pay"],
            ["1", "b", "E1", WHEN, "ship"],
            ["1", "c", "E1", WHEN, "pay"],
            ["2", "d", "E2", WHEN, "ship"],
        ],
    )
    job = {"name": "orders", "kind": "event", "event_name_from": "name", "primary_keys": ["phone"]}
    cfg = parse_job({**EVENTS, "job": job})
    summary = validate(cfg, [data], report_dir=tmp_path / "reports")
    assert {k[1]: v for k, v in lines(summary).items()} == {
        "2": ("valid", ""),
        "3": ("valid", ""),
        "4": (
            "rejected",
            "duplicate event_id 'E1' of line 2: the platform keeps the first; set "
            "job.duplicates: keep_last to send the last instead",
        ),
        "5": ("valid", ""),
    }
    found, count = find_duplicates(cfg, [open_source(data, cfg.input)])
    assert (found.found, count.groups) == (1, {"pay": 1, "ship": 2})


def test_keep_last_sends_only_the_last_row_setting_a_value_the_last_row_lacks(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one customer's rows are sent one request each, in file order: an earlier row whose
    # values a later sent row sets again would only cost a request (100k such rows burnt
    # the whole daily quota)
    sb = fresh_sandbox()
    rows = [["13900000001", f"N{i}", f"City{i}" if i % 2 == 0 else "", ""] for i in range(40)]
    rows.append(["13900000001", "Last", "", "31"])  # line 42: no city
    data = write_csv(tmp_path / "p.csv", PEOPLE_HEADER, rows)
    summary = send(sb, config(USERS, sb), [data], tmp_path, monkeypatch)
    got = lines(summary)
    sent = sorted(int(line) for (_, line), (status, _) in got.items() if status == "ok")
    assert sent == [40, 42]  # line 40: City38, the last city; line 42: the last row
    assert got[("p.csv", "38")] == (
        "skipped_duplicate", "duplicate of line 42 (job.duplicates: keep_last keeps the last)"
    )  # fmt: skip
    stored = {c["properties"]["phone"]: c["properties"] for c in sb.customers()}
    assert stored["13900000001"] == {
        "phone": "13900000001", "username": "Last", "city": "City38", "age": 31,
    }  # fmt: skip
    assert summary.requests <= 3
    assert summary.exit_code == 0


def test_retry_delivers_a_value_only_an_earlier_row_of_the_customer_held(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # keep_last sends a customer's earlier row (its age) before the last (its name): when
    # the earlier one failed and the last got through, the retry left the earlier out as
    # "overridden" and the age never arrived (exit 0)
    sb = fresh_sandbox(faults=Faults(seed=3, http_503=0.3))
    rows = [[f"139000{i:05d}", "", "", str(20 + i)] for i in range(40)]
    rows += [[f"139000{i:05d}", f"N{i}", "", ""] for i in range(40)]
    data = write_csv(tmp_path / "p.csv", PEOPLE_HEADER, rows)
    send_section = {"rate_limit": None, "batch_rows": 1, "retry": {"max_attempts": 1},
                    "abort_after_failed_rows": 1000}  # fmt: skip
    cfg = config(USERS, sb, send=send_section)
    first = send(sb, cfg, [data], tmp_path, monkeypatch)
    got = lines(first)
    lost = [i for i in range(40) if got[("p.csv", str(2 + i))][0] == "failed"
            and got[("p.csv", str(42 + i))][0] == "ok"]  # fmt: skip
    assert lost  # the seed makes some
    sb.set_faults(Faults())
    again = retry(cfg, first.run_id, report_dir=tmp_path / "reports", ledger=tmp_path / "state.db")
    assert again.exit_code == 0
    stored = {c["properties"]["phone"]: c["properties"] for c in sb.customers()}
    assert {p: (s.get("username"), s.get("age")) for p, s in stored.items()} == {
        f"139000{i:05d}": (f"N{i}", 20 + i) for i in range(40)
    }
