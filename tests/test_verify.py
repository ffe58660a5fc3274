"""Read-back (``dmimport verify``, docs/verify.md): the access-sign, the Open API client against
the sandbox's endpoints, and verify end to end -- all matched, rows the platform dropped,
masked fields, mismatches, the daily quota, and the refusals a user sees."""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from helpers import dmimport, write_csv

import importer
from importer import exitcodes
from importer.errors import ConfigError, QuotaError, UsageError
from importer.openapi import FIELDS_PATH, OpenApiClient, OpenApiError, OpenApiForbidden
from importer.opensign import make_sign, read_sign, sign_fresh
from importer.sandbox import Faults, Sandbox

KEY, SECRET = "demo-access-key", "0123456789abcdef"
ROWS = 40
ENV = {"DMIMPORT_OPENAPI_KEY": KEY, "DMIMPORT_OPENAPI_SECRET": SECRET}


# -- the access-sign ---------------------------------------------------------------------------
def test_access_sign_is_aes_ecb_pkcs5_base64_urlencoded() -> None:
    # the vector is openssl's:
    #   printf 1765000000000 | openssl enc -aes-128-ecb -K 30313233343536373839616263646566 | base64
    #   -> VRAVqcGg8HoznggSW/8dPg==   (then URL-encoded)
    assert make_sign(SECRET, 1765000000000) == "VRAVqcGg8HoznggSW%2F8dPg%3D%3D"
    assert read_sign(SECRET, "VRAVqcGg8HoznggSW%2F8dPg%3D%3D") == 1765000000000
    assert read_sign("fedcba9876543210", "VRAVqcGg8HoznggSW%2F8dPg%3D%3D") is None
    assert read_sign(SECRET, "not base64!") is None
    with pytest.raises(ValueError, match="must be 16, 24 or 32 bytes long"):
        make_sign("short", 1)


def test_a_sign_is_valid_for_five_minutes() -> None:
    made = 1765000000000
    assert sign_fresh(made, made + 300_000)
    assert not sign_fresh(made, made + 300_001)
    assert not sign_fresh(made, made - 300_001)


def _get(sb: Sandbox, path: str, headers: dict[str, str], **params: Any) -> requests.Response:
    return requests.get(sb.url + path, headers=headers, params=params, timeout=10)


def test_the_sandbox_refuses_a_stale_sign_a_bad_key_and_a_bad_sign_with_403(
    fresh_sandbox: Any,
) -> None:
    sb = fresh_sandbox()
    now = int(time.time() * 1000)
    fresh = {"access-key": sb.access_key, "access-sign": make_sign(sb.access_secret, now)}
    assert _get(sb, FIELDS_PATH, fresh).status_code == 200
    stale = {**fresh, "access-sign": make_sign(sb.access_secret, now - 301_000)}
    unknown = {**fresh, "access-key": "someone-else"}
    wrong = {**fresh, "access-sign": make_sign("fedcba9876543210", now)}
    for headers in (stale, unknown, wrong, {}):
        resp = _get(sb, FIELDS_PATH, headers)
        body = resp.json()
        assert resp.status_code == 403
        assert (body["code"], body["message"], body["data"]) == (40003, "Forbidden", None)
        assert body["traceNumber"]


def test_the_sandbox_serves_fields_and_contacts_with_display_names_and_masks(
    fresh_sandbox: Any,
) -> None:
    sb = fresh_sandbox(masked_fields=["phone"], searchable=["phone", "username"])
    with importer.Client(sb.secret, sb.url) as c:
        assert c.user({"phone": "13800138000", "username": "张三", "age": 30}).ok
    with OpenApiClient(sb.url, sb.access_key, sb.access_secret) as api:
        fields = {f.field_name: f for f in api.fields()}
        assert (fields["phone"].name, fields["phone"].searchable) == ("手机号", True)
        assert (fields["email"].searchable, fields["username"].searchable) == (False, True)
        found = api.search("phone", "13800138000")
        assert found == [{"customerId": 1, "手机号": "138****8000", "姓名": "张三", "年龄": 30}]
        assert api.search("username", "张三")[0]["customerId"] == 1
        assert api.search("phone", "13900000000") == []
    headers = {"access-key": sb.access_key, "access-sign": make_sign(sb.access_secret, _ms())}
    resp = _get(sb, "/open-api/v1/contact/contactPageList", headers, searchField="email",
                searchValue="a@b.cn")  # fmt: skip
    assert resp.status_code == 400
    assert resp.json()["message"] == (
        "Bad Request: searchField 'email' is not a searchable field (searchType 1)"
    )


def _ms() -> int:
    return int(time.time() * 1000)


def test_open_api_calls_share_the_import_apis_daily_quota(fresh_sandbox: Any) -> None:
    sb = fresh_sandbox(daily_quota=3)
    with importer.Client(sb.secret, sb.url) as c:
        assert c.user({"phone": "13800000001"}).ok
        assert c.user({"phone": "13800000002"}).ok
    with OpenApiClient(sb.url, sb.access_key, sb.access_secret) as api:
        assert api.fields()  # the third call of the day
        headers = {"access-key": sb.access_key, "access-sign": make_sign(sb.access_secret, _ms())}
        resp = _get(sb, FIELDS_PATH, headers)
    assert resp.status_code == 429
    assert resp.text.startswith("429 Too Many Requests: daily quota of 3 requests used")
    assert int(resp.headers["Retry-After"]) >= 1


def test_drop_after_ok_answers_ok_and_stores_nothing_more(fresh_sandbox: Any) -> None:
    sb = fresh_sandbox(faults=Faults(drop_after_ok=3))
    with importer.Client(sb.secret, sb.url) as c:
        answers = c.user_batch([{"phone": f"1380000000{i}"} for i in range(5)])
        assert answers.ok
        assert c.user({"phone": "13800000009"}).ok
    assert [p["properties"]["phone"] for p in sb.customers()] == [
        "13800000000", "13800000001", "13800000002",
    ]  # fmt: skip
    assert sb.stats()["by_fault"] == {"drop_after_ok": 3}
    sb.set_faults(Faults())  # setting the faults again brings storing back
    with importer.Client(sb.secret, sb.url) as c:
        assert c.user({"phone": "13800000009"}).ok
    assert len(sb.customers()) == 4


# -- verify end to end -------------------------------------------------------------------------
def _job(tmp_path: Path, sb: Sandbox, kind: str = "user", **extra: Any) -> tuple[Path, Path]:
    columns: dict[str, Any] = {
        "phone": "phone",
        "username": "name",
        "age": {"from": "age", "type": "integer"},
    }
    if kind == "event":
        columns.update(event_id="oid", create_time="at")
    config = tmp_path / "job.yaml"
    data = {
        "job": {"name": "vjob", "kind": kind, "primary_keys": ["phone"],
                **({"event_name": "buy"} if kind == "event" else {})},
        "target": {"base_url": sb.url},
        "openapi": {"base_url": sb.url},
        "columns": columns,
        "send": {"rate_limit": None, "batch_rows": 10},
        "report": {"dir": str(tmp_path / "reports")},
        **extra,
    }  # fmt: skip
    config.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    rows = [[f"1390000{i:04d}", f"名字{i}", str(20 + i)] for i in range(ROWS)]
    header = ["phone", "name", "age"]
    if kind == "event":
        header += ["oid", "at"]
        rows = [[*r, f"o{i}", "2026-12-01 10:00:00"] for i, r in enumerate(rows)]
    return config, write_csv(tmp_path / "people.csv", header, rows)


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DMIMPORT_OPENAPI_KEY", KEY)
    monkeypatch.setenv("DMIMPORT_OPENAPI_SECRET", SECRET)


def _run(config: Path, data: Path, sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("DMART_SECRET", sb.secret)
    summary = importer.run(str(config), str(data))
    assert summary.counts["ok"] == ROWS
    return summary


def _sent(tmp_path: Path, sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Any]:
    """The default job, run once against ``sb``: its config and its run's summary."""
    config, data = _job(tmp_path, sb)
    return config, _run(config, data, sb, monkeypatch)


def _verify_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.usefixtures("keys")
def test_verify_finds_every_row_of_a_good_run_as_sent(
    tmp_path: Path, fresh_sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    config, run = _sent(tmp_path, sb, monkeypatch)
    found = importer.verify(str(config), run.run_id, sample=10)
    assert (found.checked, found.matched, found.candidates) == (10, 10, ROWS)
    assert (found.mismatched, found.not_found, found.masked) == (0, 0, 0)
    assert (found.requests, found.exit_code, found.search_fields) == (11, 0, ["phone"])
    lines = _verify_csv(found.path)
    assert found.path == run.report_dir / "verify.csv"
    assert {r["status"] for r in lines} == {"matched"}
    # spread over the file: from its first rows to its last ones
    picked = [int(r["line"]) for r in lines]
    assert picked == sorted(picked) and picked[0] <= 4 and picked[-1] >= ROWS - 2


@pytest.mark.usefixtures("keys")
def test_rows_the_platform_merges_by_one_shared_key_are_compared_by_the_last_only(
    tmp_path: Path, fresh_sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Primary keys phone and email: ``phone=P;email=a`` then ``phone=P;email=b`` are two
    identities, but the platform merges them into one customer (any shared key value) holding
    the later row's values: the earlier row is not a candidate (it was a mismatch, exit 9)."""
    sb = fresh_sandbox()
    config, _ = _job(tmp_path, sb)
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    data["job"]["primary_keys"] = ["phone", "email"]
    data["columns"]["email"] = "email"
    config.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    rows = []
    for i in range(ROWS // 2):
        rows.append([f"1390000{i:04d}", f"a{i}@x.cn", f"first{i}", "20"])
        rows.append([f"1390000{i:04d}", f"b{i}@x.cn", f"second{i}", "30"])  # same phone
    people = write_csv(tmp_path / "merged.csv", ["phone", "email", "name", "age"], rows)
    run = _run(config, people, sb, monkeypatch)
    assert len(sb.customers()) == ROWS // 2  # one customer per phone, as the platform does
    found = importer.verify(str(config), run.run_id, sample=ROWS)
    assert (found.candidates, found.checked, found.mismatched) == (ROWS // 2, ROWS // 2, 0)
    assert (found.matched, found.exit_code) == (ROWS // 2, 0)
    assert {int(r["line"]) % 2 for r in _verify_csv(found.path)} == {1}  # the second rows


@pytest.mark.usefixtures("keys")
def test_verify_finds_the_rows_the_platform_dropped_and_exits_9(
    tmp_path: Path, fresh_sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox(faults=Faults(drop_after_ok=30))
    config, run = _sent(tmp_path, sb, monkeypatch)  # every row reported ok
    assert len(sb.customers()) == 30
    done = dmimport("verify", config, run.run_id, "--sample", str(ROWS), secret=sb.secret, env=ENV)
    assert done.returncode == exitcodes.VERIFY_BELOW == 9, done.stderr
    out = done.stdout.splitlines()
    assert out[1] == "  matched 30, mismatched 0, not found 10, masked 0"
    assert out[2] == "  found as sent: 75.0% (min 99.0%) -- BELOW the minimum"
    assert out[4] == (
        "  10 row(s) the run reported ok are not on the platform: the platform answered ok "
        "without storing them; send them again with `dmimport run CONFIG FILE --full`"
    )
    lines = _verify_csv(run.report_dir / "verify.csv")
    gone = [r for r in lines if r["status"] == "not_found"]
    assert [int(r["line"]) for r in gone] == list(range(32, 42))  # the last 10 rows


@pytest.mark.usefixtures("keys")
def test_masked_fields_count_as_masked_not_as_mismatches(
    tmp_path: Path, fresh_sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox(masked_fields=["phone", "username"])
    config, run = _sent(tmp_path, sb, monkeypatch)
    found = importer.verify(str(config), run.run_id, sample=5, min_match=1.0)
    assert (found.masked, found.matched, found.mismatched, found.exit_code) == (5, 0, 0, 0)
    detail = _verify_csv(found.path)[0]["detail"]
    assert detail == "phone: masked; username: masked"


@pytest.mark.usefixtures("keys")
def test_a_changed_value_is_a_mismatch_named_in_verify_csv(
    tmp_path: Path, fresh_sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    config, run = _sent(tmp_path, sb, monkeypatch)
    with importer.Client(sb.secret, sb.url) as c:  # someone changes a customer afterwards
        assert c.user({"phone": "13900000000", "age": 99}).ok
    found = importer.verify(str(config), run.run_id, sample=ROWS, min_match=0.5)
    assert (found.matched, found.mismatched, found.exit_code) == (ROWS - 1, 1, 0)
    bad = [r for r in _verify_csv(found.path) if r["status"] == "mismatched"]
    assert bad[0]["detail"] == "age: sent 20, stored 99"
    assert bad[0]["identity"] == "phone=13900000000"


@pytest.mark.usefixtures("keys")
def test_verify_counts_its_requests_against_the_daily_quota(
    tmp_path: Path, fresh_sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    config, run = _sent(tmp_path, sb, monkeypatch)  # 4 batches of 10
    before = importer.quota_today(str(config)).job_requests
    importer.verify(str(config), run.run_id, sample=7)
    assert importer.quota_today(str(config)).job_requests == before + 8
    # the sandbox counted them on the same account day as the imports
    assert sum(d["requests"] for d in sb.stats()["by_day"].values()) == before + 8
    # a sample that does not fit in what is left sends nothing
    tight = {"send.daily_quota": before + 8 + 5}
    requests_before = sb.stats()["requests"]
    with pytest.raises(QuotaError) as caught:
        importer.verify(str(config), run.run_id, sample=10, overrides=tight)
    assert str(caught.value) == (
        f"verify needs 11 requests (10 look-ups and the field list) but 5 of "
        f"send.daily_quota {before + 13} are left today (Asia/Shanghai); nothing was sent: "
        "verify a smaller --sample, or after the quota resets"
    )
    assert caught.value.exit_code == exitcodes.USAGE
    assert sb.stats()["requests"] == requests_before


def test_a_bad_access_key_stops_verify_with_exit_3_and_says_why(
    tmp_path: Path, fresh_sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    config, run = _sent(tmp_path, sb, monkeypatch)
    env = {"DMIMPORT_OPENAPI_KEY": KEY, "DMIMPORT_OPENAPI_SECRET": "fedcba9876543210"}
    done = dmimport("verify", config, run.run_id, "--sample", "3", secret=sb.secret, env=env)
    assert done.returncode == exitcodes.ABORTED == 3
    assert done.stderr == (
        "error: the Open API refused the access (HTTP 403, code 40003, Forbidden) on "
        f"{FIELDS_PATH}: check the access-key and accessKeySecret in the environment, that "
        "the open platform is enabled for the account, that this machine's IP is on its "
        "allow-list, and that the clock is right (a sign is valid for 5 minutes)\n"
    )
    assert "fedcba9876543210" not in done.stdout + done.stderr
    with pytest.raises(OpenApiForbidden), OpenApiClient(sb.url, "nobody", SECRET) as api:
        api.fields()


def test_verify_needs_the_open_api_keys_from_the_environment(
    tmp_path: Path, fresh_sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    config, run = _sent(tmp_path, sb, monkeypatch)
    requests_before = sb.stats()["requests"]
    with pytest.raises(ConfigError) as caught:
        importer.verify(str(config), run.run_id, sample=3)
    shown = str(caught.value)
    assert "openapi.access_key_env: $DMIMPORT_OPENAPI_KEY is not set" in shown
    assert "openapi.secret_env: $DMIMPORT_OPENAPI_SECRET is not set" in shown
    assert sb.stats()["requests"] == requests_before


@pytest.mark.usefixtures("keys")
def test_only_customer_jobs_can_be_verified(
    tmp_path: Path, fresh_sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    config = _job(tmp_path, sb, kind="event")[0]
    with pytest.raises(UsageError) as caught:
        importer.verify(str(config), "20261206T000000-abcdef", sample=3)
    assert str(caught.value) == (
        "verify looks customers up, and this job's rows are event rows: only a job of kind "
        "user can be verified (events and deletes cannot be read back through contactPageList)"
    )
    with pytest.raises(UsageError, match=r"no report folder for run nope of job vjob"):
        importer.verify(str(_job(tmp_path, sb)[0]), "nope", sample=3)


@pytest.mark.usefixtures("keys")
def test_verify_sample_in_the_config_verifies_at_the_end_of_run(
    tmp_path: Path, fresh_sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox(faults=Faults(drop_after_ok=ROWS - 4))
    config, data = _job(tmp_path, sb, verify={"sample": ROWS, "min_match": 0.95})
    done = dmimport("run", config, data, "--quiet", secret=sb.secret, env=ENV)
    assert done.returncode == 9, done.stderr
    verify_line = next(x for x in done.stdout.splitlines() if x.startswith("  verify"))
    assert verify_line.startswith(
        "  verify    40 looked up: matched 36, mismatched 0, not found 4, masked 0 (90.0%, min "
        "95.0%); "
    )
    run_dir = next((tmp_path / "reports").glob("vjob-*"))
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert (summary["exit_code"], summary["verify"]["not_found"]) == (9, 4)
    assert summary["verify"]["run_exit_code"] == 0
    assert (run_dir / "verify.csv").is_file()
    # the next night, nothing changed: nothing sent, nothing to look up (and no "None")
    again = dmimport("run", config, data, "--changed-only", secret=sb.secret, env=ENV)
    assert again.returncode == 0, again.stderr
    verify_line = next(x for x in again.stdout.splitlines() if x.startswith("  verify"))
    assert verify_line == (
        "  verify    nothing to look up: no row of this run was reported ok (0 requests)"
    )


def test_a_run_with_verify_sample_is_refused_before_sending_without_the_keys(
    tmp_path: Path, fresh_sandbox: Any
) -> None:
    sb = fresh_sandbox()
    config, data = _job(tmp_path, sb, verify={"sample": 5})
    done = dmimport("run", config, data, "--quiet", secret=sb.secret)
    assert done.returncode == exitcodes.USAGE
    assert "openapi.access_key_env: $DMIMPORT_OPENAPI_KEY is not set" in done.stderr
    assert sb.stats()["requests"] == 0


@pytest.mark.usefixtures("keys")
def test_verify_retries_a_429_and_logs_neither_the_secret_nor_the_sign(
    tmp_path: Path,
    fresh_sandbox: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sb = fresh_sandbox(rate_limit_per_s=2)  # the platform's limit, lower: 429s come back
    config, run = _sent(tmp_path, sb, monkeypatch)
    caplog.set_level(logging.DEBUG)
    found = importer.verify(str(config), run.run_id, sample=4)
    assert (found.matched, found.exit_code) == (4, 0)
    assert "HTTP 429; retrying in" in caplog.text  # paced at 20/s, refused at 2/s, retried
    assert found.requests > 5  # the retries count against the quota too
    text = caplog.text + found.path.read_text(encoding="utf-8-sig")
    text += repr(OpenApiClient(sb.url, KEY, SECRET)) + str(found.to_dict())
    assert SECRET not in text and KEY not in text
    assert "access-sign" not in text and "%3D%3D" not in text


@pytest.mark.usefixtures("keys")
@pytest.mark.parametrize(("fmt", "encoding"), [("jsonl", "utf-8-sig"), ("csv", "gb18030")])
def test_verify_reads_every_results_format_and_writes_in_the_report_encoding(
    tmp_path: Path, fresh_sandbox: Any, monkeypatch: pytest.MonkeyPatch, fmt: str, encoding: str
) -> None:
    sb = fresh_sandbox()
    config, data = _job(tmp_path, sb, report={"dir": str(tmp_path / "reports"), "format": fmt,
                                              "encoding": encoding})  # fmt: skip
    run = _run(config, data, sb, monkeypatch)
    found = importer.verify(str(config), run.run_id, sample=3)
    assert (found.matched, found.candidates) == (3, ROWS)
    raw = found.path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") == (encoding == "utf-8-sig")
    assert raw.decode(encoding).count("matched") == 3


@pytest.mark.usefixtures("keys")
def test_the_platforms_daily_quota_running_out_stops_verify_at_once(
    tmp_path: Path, fresh_sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox(daily_quota=6)
    config, run = _sent(tmp_path, sb, monkeypatch)  # 4 requests
    started = time.monotonic()
    done = dmimport("verify", config, run.run_id, "--sample", "5", secret=sb.secret, env=ENV)
    assert time.monotonic() - started < 30  # not a wait until midnight
    assert done.returncode == exitcodes.ABORTED
    assert done.stderr.startswith(
        "error: /open-api/v1/contact/contactPageList: HTTP 429 with Retry-After "
    )
    assert done.stderr.endswith(
        "s, more than send.retry.retry_after_cap_s (120 s): the platform's limit (its daily "
        "quota?) is used up; verify again after it resets\n"
    )
    assert sb.stats()["by_day"][next(iter(sb.stats()["by_day"]))]["429"] == 1


@pytest.mark.usefixtures("keys")
def test_verify_csv_masks_pii_under_report_mask_pii(
    tmp_path: Path, fresh_sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = fresh_sandbox()
    config = tmp_path / "job.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "job": {"name": "vjob", "kind": "user", "primary_keys": ["phone"]},
                "target": {"base_url": sb.url},
                "openapi": {"base_url": sb.url},
                "columns": {"phone": "phone", "username": "name"},
                "report": {"dir": str(tmp_path / "reports"), "mask_pii": True},
            }
        ),
        encoding="utf-8",
    )
    rows = [[f"+86138{i:08d}", f"=name{i}"] for i in range(ROWS)]
    data = write_csv(tmp_path / "people.csv", ["phone", "name"], rows)
    run = _run(config, data, sb, monkeypatch)
    with importer.Client(sb.secret, sb.url) as c:
        assert c.user({"phone": "+8613800000000", "username": "changed"}).ok
    found = importer.verify(str(config), run.run_id, sample=ROWS, min_match=0.9)
    assert (found.matched, found.mismatched) == (ROWS - 1, 1)
    text = found.path.read_text(encoding="utf-8-sig")
    bad = next(r for r in _verify_csv(found.path) if r["status"] == "mismatched")
    # the identity masked as results.csv masks it; the detail names the property, not values
    assert (bad["identity"], bad["detail"]) == ("phone=+86****0000", "username: differs")
    assert (bad["line"], bad["search_field"]) == ("2", "phone")
    assert "13800000000" not in text and "changed" not in text and "=name0" not in text


def test_the_printed_counts_group_thousands_as_the_docs_show() -> None:
    found = importer.VerifySummary(
        run_id="20261206T020000-3fa2c1",
        job="customers",
        sample=2000,
        checked=2000,
        counts={"matched": 1988, "masked": 12},
        min_match=0.99,
        requests=2001,
        search_fields=["phone"],
        candidates=58112,
    )
    assert found.lines()[:2] == [
        "verify 20261206T020000-3fa2c1 (customers): 2,000 of 58,112 delivered customers "
        "looked up by phone (2,001 requests)",
        "  matched 1,988, mismatched 0, not found 0, masked 12",
    ]


@pytest.mark.usefixtures("keys")
def test_a_run_that_stops_early_is_not_verified_and_keeps_exit_3(
    tmp_path: Path, fresh_sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outage aborts the run (exit 3 either way): no look-up is spent on it (the daily
    quota may be what stopped it); the run that resumes it verifies."""
    sb = fresh_sandbox(faults=Faults(down_after=1))
    config, data = _job(
        tmp_path,
        sb,
        verify={"sample": ROWS},
        send={"rate_limit": None, "batch_rows": 10, "abort_after_failed_rows": 5,
              "retry": {"max_attempts": 1}},
    )  # fmt: skip
    done = dmimport("run", config, data, "--quiet", secret=sb.secret, env=ENV)
    assert done.returncode == 3, done.stderr
    verify_line = next(x for x in done.stdout.splitlines() if x.startswith("  verify"))
    assert verify_line == (
        "  verify    not verified: the run stopped early; the run that resumes it verifies"
    )
    run_dir = next((tmp_path / "reports").glob("vjob-*"))
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["exit_code"] == 3 and "skipped" in summary["verify"]
    assert not (run_dir / "verify.csv").exists()


def test_a_redirect_is_not_followed_so_the_keys_never_reach_another_host() -> None:
    """A 3xx from the Open API is an error, not followed: following it would carry the
    access-key and a fresh access-sign to whatever host the redirect names."""
    import http.server
    import threading

    seen: list[dict[str, str]] = []

    class Elsewhere(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(dict(self.headers))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"code": 0, "data": []}')

        def log_message(self, *args: Any) -> None:
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Elsewhere)
    target = f"http://127.0.0.1:{other.server_address[1]}/steal"

    class Redirecting(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    api_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (other, api_server)]
    for t in threads:
        t.start()
    try:
        url = f"http://127.0.0.1:{api_server.server_address[1]}"
        with pytest.raises(OpenApiError) as caught, OpenApiClient(url, KEY, SECRET) as api:
            api.fields()
    finally:
        for s in (other, api_server):
            s.shutdown()
            s.server_close()
    assert str(caught.value) == (
        f"{FIELDS_PATH}: HTTP 302, a redirect, not followed (it would carry the access-key and "
        "sign to another address): check openapi.base_url"
    )
    assert seen == []
