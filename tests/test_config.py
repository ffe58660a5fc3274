"""Config loading: every problem reported at once, each with key path, message, hint and line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pydantic
import pytest
from helpers import dmimport, write_file

from importer.config import ColumnSpec, Config, check_columns
from importer.errors import ConfigError, ConfigProblem
from importer.job import load_job, parse_job
from importer.protocol import Profile

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

USER = """\
job:
  kind: user
  primary_keys: [phone, email]
columns:
  phone: {from: 手机号, transform: [strip, digits]}
  email: {from: Email, transform: [strip, lower]}
  age: {from: 年龄, type: integer}
"""

EVENT = """\
job:
  kind: event
  event_name: order_detail
  primary_keys: [phone]
columns:
  phone: 手机号
  event_id: 订单号
  create_time: 下单时间
"""


def problems_of(tmp_path: Path, text: str, **kwargs: Any) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        load_job(write_file(tmp_path / "job.yaml", text, dedent=True), **kwargs)
    return info.value.problems


def only(problems: list[ConfigProblem]) -> ConfigProblem:
    assert len(problems) == 1, problems
    return problems[0]


def base(**job: Any) -> dict[str, Any]:
    """A valid user config as a dict, to break one piece at a time."""
    return {
        "job": {"kind": "user", "primary_keys": ["phone"], **job},
        "columns": {"phone": {"from": "手机号"}},
    }


def parse_problems(data: dict[str, Any]) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        parse_job(data)
    return info.value.problems


# -- the bundled configs -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["customers", "order_events", "delete_customers"], ids=lambda n: n)
def test_bundled_configs_validate(name: str) -> None:
    config = load_job(CONFIGS / f"{name}.yaml")
    assert config.job_name == name
    assert config.target.secret_env == "DMART_SECRET"
    assert config.target.base_url == "http://127.0.0.1:8080"


def test_bundled_event_config_defaults_create_time_to_datetime() -> None:
    config = load_job(CONFIGS / "order_events.yaml")
    assert config.job.kind == "event"
    assert config.columns["create_time"].type == "datetime"


# -- happy path and helpers ----------------------------------------------------------------------


def test_defaults_and_shorthand(tmp_path: Path) -> None:
    config = load_job(write_file(tmp_path / "customers.yaml", USER, dedent=True))
    assert config.job_name == "customers"  # default = file stem
    # the platform's documented import API, its host and its limits
    assert config.target.base_url == "http://data-api.dmartech.cn"
    assert (config.target.protocol, config.target.path) == ("import-api", "/api/v1/api/import")
    assert (config.target.debug_param, config.target.debug) == ("debug", False)
    assert (config.send.rate_limit, config.send.daily_quota) == (20, 10_000)
    assert (config.send.batch_rows, config.send.batch_bytes) == (500, 1024 * 1024)
    assert config.send.concurrency == 32
    assert config.send.retry.max_attempts == 5
    assert config.input.batch_rows == 10_000
    assert config.report.format == "csv"
    assert config.columns["phone"].source == "手机号"
    assert config.columns["age"].type == "integer"
    assert config.columns["email"].type == "string"


def test_bare_string_is_from(tmp_path: Path) -> None:
    config = load_job(write_file(tmp_path / "job.yaml", EVENT, dedent=True))
    assert config.columns["phone"].source == "手机号"
    assert config.columns["create_time"].type == "datetime"
    assert config.columns["event_id"].type == "string"


def test_source_columns_are_distinct_and_in_order() -> None:
    config = parse_job(
        {
            "job": {"kind": "event", "event_name_from": "事件", "primary_keys": ["phone"]},
            "columns": {
                "phone": "手机号",
                "orderId": "订单号",
                "event_id": "订单号",
                "create_time": "时间",
                "source": {"value": "crm"},
            },
        }
    )
    assert config.source_columns() == ["手机号", "订单号", "时间", "事件"]
    assert config.job_name == "job"  # parse_job without a file


def test_parse_config_name_from_source() -> None:
    assert parse_job(base(), source="configs/vip.yaml").job_name == "vip"
    assert parse_job(base(), source="configs/my job (2).yaml").job_name == "my_job_2"


def test_constant_values_from_yaml_scalars(tmp_path: Path) -> None:
    text = USER + "  level: {value: 3, type: integer}\n  vip: {value: true, type: boolean}\n"
    config = load_job(write_file(tmp_path / "job.yaml", text, dedent=True))
    assert config.columns["level"].value == "3"
    assert config.columns["vip"].value == "true"


def test_overrides_apply_before_validation(tmp_path: Path) -> None:
    config = load_job(
        write_file(tmp_path / "job.yaml", USER, dedent=True),
        overrides={
            "send.concurrency": "8",
            "target.base_url": "https://api.example.com/",
            "target.debug": True,
        },
    )
    assert config.send.concurrency == 8
    assert config.target.base_url == "https://api.example.com"
    assert config.target.debug is True


def test_bad_override_has_no_line(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, USER, overrides={"send.concurrency": 5000}))
    assert (problem.path, problem.message, problem.line) == (
        "send.concurrency",
        "must be <= 1024, got 5000",
        None,
    )


def test_profile_carries_paths_headers_and_signing() -> None:
    data = base()
    data["target"] = {
        "protocol": "signed",
        "paths": {"user": "/api/user"},
        "headers": {"secret": "X-Key"},
        "sign": False,
    }
    profile = parse_job(data).profile()
    assert isinstance(profile, Profile)
    assert profile.target("user", True, "s3cret") == "/api/user?debug=true"
    assert profile.paths["event"] == "/v1/event"
    assert profile.headers.secret == "X-Key"
    assert profile.sign is False
    headers = profile.auth_headers("s3cret", b"{}", timestamp="1700000000000")
    assert headers == {"X-Key": "s3cret", "X-Timestamp": "1700000000000"}  # unsigned


def test_profile_carries_the_import_path_and_the_debug_parameter() -> None:
    data = base()
    data["target"] = {"path": "/gateway/import", "debug_param": "dry"}
    profile = parse_job(data).profile()
    assert profile.protocol == "import-api"
    # the SECRET goes in the query string, percent-encoded; no auth header
    assert profile.target("user", True, "a+b/c") == "/gateway/import?secret=a%2Bb%2Fc&dry=true"
    assert profile.target("event", False, "a+b/c") == "/gateway/import?secret=a%2Bb%2Fc"
    assert profile.shown_target("user", True) == "/gateway/import?secret=***&dry=true"
    assert profile.auth_headers("a+b/c", b"{}") == {}


@pytest.mark.parametrize(
    ("path", "char"), [("/v1/用户", "U+7528 at position 5"), ("/v1/user x", "U+0020 at position 9")]
)
def test_a_path_that_cannot_go_in_a_request_line_is_refused(path: str, char: str) -> None:
    # It used to fail every row (UnicodeEncodeError), or split the request line at the space.
    data = base()
    data["target"] = {"paths": {"user": path}}
    problem = only(parse_problems(data))
    assert str(problem) == (
        "target.paths.user: the path contains a character that cannot be sent in a request "
        f"line ({char}) -- percent-encode it (a space is %20, 用 is %E7%94%A8)"
    )


def test_config_is_frozen() -> None:
    config = parse_job(base())
    with pytest.raises(pydantic.ValidationError):
        config.send = config.send  # type: ignore[misc]


# -- one problem each ----------------------------------------------------------------------------


def test_unknown_key_with_did_you_mean(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, USER + "send:\n  concurency: 8\n"))
    assert problem == ConfigProblem(
        "send.concurency", "unknown key 'concurency'", "did you mean 'concurrency'?", 9
    )


def test_unknown_key_without_close_match_lists_allowed(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, USER + "zzz: 1\n"))
    assert problem.path == "zzz"
    assert problem.message == "unknown key 'zzz'"
    assert problem.hint == (
        "allowed keys: target, job, columns, input, send, report, state, notify, openapi, "
        "verify, guard"
    )


def test_unknown_column_key(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, USER + "  vip: {form: VIP}\n"))
    assert problem.path == "columns.vip.form"
    assert problem.hint == "did you mean 'from'?"


@pytest.mark.parametrize(
    ("yaml_tail", "path", "message"),
    [
        ("send:\n  rate_limit: fast\n", "send.rate_limit", "expected a number, got 'fast'"),
        ("send:\n  concurrency: fast\n", "send.concurrency", "expected an integer, got 'fast'"),
        ("send:\n  concurrency: 0\n", "send.concurrency", "must be >= 1, got 0"),
        ("target:\n  timeout_s: 0\n", "target.timeout_s", "must be > 0, got 0"),
        ("target:\n  debug: maybe\n", "target.debug", "expected true or false, got 'maybe'"),
        ("report:\n  format: xml\n", "report.format", "expected one of csv, jsonl, got 'xml'"),
        ("send: 5\n", "send", "expected a mapping (key: value), got 5"),
    ],
    ids=["number", "integer", "range", "positive", "boolean", "choice", "mapping"],
)
def test_wrong_types(tmp_path: Path, yaml_tail: str, path: str, message: str) -> None:
    problem = only(problems_of(tmp_path, USER + yaml_tail))
    assert (problem.path, problem.message) == (path, message)
    assert problem.line is not None


def test_unknown_property_type(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, USER.replace("type: integer", "type: int")))
    assert problem == ConfigProblem(
        "columns.age.type",
        "expected one of string, integer, number, boolean, datetime, got 'int'",
        "did you mean 'integer'?",
        7,
    )


def test_unknown_transform(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, USER.replace("[strip, lower]", "[strip, lowr]")))
    assert problem.path == "columns.email.transform.1"
    assert problem.message.endswith("got 'lowr'")
    assert problem.hint == "did you mean 'lower'?"


def test_bad_regex_names_the_key(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, USER + "  code: {from: C, pattern: '[0-9'}\n"))
    assert problem.path == "columns.code.pattern"
    assert problem.message.startswith("invalid regular expression: ")
    assert problem.line == 8


def test_regex_outside_re2_is_refused(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, USER + "  code: {from: C, pattern: '(?!x)\\d+'}\n"))
    assert problem.path == "columns.code.pattern"
    assert problem.message.startswith("regular expression not supported: ")
    assert "RE2" in (problem.hint or "")


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        ("%Y-%m-%d %", "invalid datetime format: stray % in format '%Y-%m-%d %'"),
        ("%Y-%q", "invalid datetime format: 'q' is a bad directive in format '%Y-%q'"),
        ("yyyy-mm-dd", "invalid datetime format: format 'yyyy-mm-dd' has no %-directives"),
    ],
    ids=["trailing-percent", "unknown-directive", "no-directive"],
)
def test_bad_strptime_format(tmp_path: Path, fmt: str, message: str) -> None:
    text = USER + f"  t: {{from: T, type: datetime, format: '{fmt}'}}\n"
    problem = only(problems_of(tmp_path, text))
    assert (problem.path, problem.message) == ("columns.t.format", message)


def test_format_only_with_datetime(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, USER + "  t: {from: T, format: '%Y'}\n"))
    assert problem.path == "columns.t"
    assert problem.message == "'format' only applies to type datetime, this column is string"


def test_unknown_timezone(tmp_path: Path) -> None:
    text = USER + "  t: {from: T, type: datetime, timezone: Asia/Shangai}\n"
    problem = only(problems_of(tmp_path, text))
    assert problem == ConfigProblem(
        "columns.t.timezone", "unknown time zone 'Asia/Shangai'", "did you mean 'Asia/Shanghai'?", 8
    )


def test_from_xor_value(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, USER + "  a: {type: string}\n  b: {from: B, value: x}\n")
    assert [(p.path, p.message) for p in problems] == [
        ("columns.a", "set exactly one of 'from' (a source column) or 'value' (a constant)"),
        ("columns.b", "set exactly one of 'from' (a source column) or 'value' (a constant)"),
    ]


def test_bad_default_is_a_config_error(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, USER + "  n: {from: N, type: integer, default: abc}\n"))
    assert (problem.path, problem.message) == ("columns.n.default", "'abc' is not an integer")


def test_bad_constant_is_a_config_error(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, USER + "  n: {value: yes please, type: boolean}\n"))
    assert problem.path == "columns.n.value"
    assert problem.message.startswith("'yes please' is not a boolean")


def test_schema_and_constant_problems_come_in_one_error_in_line_order(tmp_path: Path) -> None:
    text = USER + "  n: {value: maybe, type: boolean}\nsend: {concurrency: 0}\n"
    problems = problems_of(tmp_path, text)
    assert [(p.path, p.line) for p in problems] == [("columns.n.value", 8), ("send.concurrency", 9)]


def test_the_config_package_imports_neither_the_mapper_nor_the_init_wizard() -> None:
    # constants are the mapper's question, asked one level up (importer.job): no cycle
    code = "import sys, importer.config; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    stages = ("importer.map", "importer.init", "importer.pipeline")
    assert [m for m in out.stdout.split() if m.startswith(stages)] == []


def test_secret_in_secret_env_is_refused(tmp_path: Path) -> None:
    text = USER + "target:\n  secret_env: daccb41a-5cfb-42d1-8bee-32aa0156xxxx\n"
    problem = only(problems_of(tmp_path, text))
    assert problem.path == "target.secret_env"
    assert "looks like the SECRET itself" in problem.message
    assert "daccb41a" not in str(ConfigError([problem]))  # the value is never echoed


@pytest.mark.slow
def test_lone_surrogate_is_refused_by_check_config_preview_and_run(tmp_path: Path) -> None:
    # YAML's "\uDFAA" is half of a UTF-16 pair: no file can hold such a column name, and a
    # JSONL file's "\udfaa" key once got past check-config to crash preview and run (exit 5).
    write_file(
        tmp_path / "job.yaml",
        'job: {kind: user, primary_keys: [phone]}\ncolumns:\n  phone: {from: "\\uDFAA"}\n',
    )
    (tmp_path / "c.jsonl").write_text('{"\\udfaa": "13800000000"}\n', encoding="utf-8")
    problem = (
        "columns.phone.from (line 3): not valid Unicode text: holds a lone surrogate (\\udfaa) "
        "-- a \\uD800-\\uDFFF escape is half of a pair; write the character itself"
    )
    refusal = (
        f"error: invalid config job.yaml:\n  {problem}\n"
        '    3 |   phone: {from: "\\uDFAA"}\n'
        "      |           ^ not valid Unicode text: holds a lone surrogate (\\udfaa)\n"
    )
    for command in (
        ["check-config", "job.yaml"],
        ["preview", "job.yaml", "c.jsonl"],
        ["run", "job.yaml", "c.jsonl", "--dry-run"],
        ["run", "job.yaml", "c.jsonl"],
    ):
        proc = dmimport(*command, cwd=tmp_path, timeout=60)
        assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", refusal), command
    assert str(only(problems_of(tmp_path, (tmp_path / "job.yaml").read_text()))) == problem


@pytest.mark.parametrize(
    ("line", "path", "extra"),
    [
        # a validator quoting the value in its message: pydantic could not render it
        (
            'job: {name: "q\\uDFAA", kind: user, primary_keys: [phone]}',
            "job.name",
            "job.name (line 1): job name 'q\\udfaa' is not usable as a directory name -- "
            "use letters, digits, '.', '_' or '-'",
        ),
        # a constant run through the mapper's converters, which Arrow could not take
        ("  name: {value: '\\uD83D'}", "columns.name.value", None),
        ("  name: {from: n, default: 'x\\uD83D'}", "columns.name.default", None),
    ],
    ids=["job.name", "value", "default"],
)
@pytest.mark.slow
def test_lone_surrogate_in_job_name_value_or_default_is_refused_not_a_crash(
    tmp_path: Path, line: str, path: str, extra: str | None
) -> None:
    # Found next to issue 11 #23: only `from:` was covered; these exited 5 with
    # "internal error: UnicodeEncodeError" from check-config, preview and run.
    text = "job: {kind: user, primary_keys: [phone]}\ncolumns:\n  phone: {from: phone}\n"
    if line.startswith("job:"):
        text = text.replace(text.splitlines()[0], line)
    else:
        text += line.replace("'", '"') + "\n"
    char = "\\udfaa" if "DFAA" in line else "\\ud83d"
    number = 1 if line.startswith("job:") else 4
    surrogate = (
        f"{path} (line {number}): not valid Unicode text: holds a lone surrogate ({char}) -- "
        "a \\uD800-\\uDFFF escape is half of a pair; write the character itself"
    )
    assert [str(p) for p in problems_of(tmp_path, text)] == [*filter(None, [extra]), surrogate]
    (tmp_path / "c.csv").write_text("phone,n\n13800000000,a\n", encoding="utf-8")
    for command in (["check-config", "job.yaml"], ["preview", "job.yaml", "c.csv"]):
        proc = dmimport(*command, cwd=tmp_path, timeout=60)
        assert proc.returncode == 2, (command, proc.stderr)
        assert proc.stderr.startswith(f"error: invalid config job.yaml:\n  {extra or surrogate}\n")
        assert "internal error" not in proc.stderr


def test_lone_surrogate_in_a_key_or_an_override_is_named(tmp_path: Path) -> None:
    text = 'job: {kind: user, primary_keys: [phone]}\ncolumns:\n  phone: a\n  "x\\ud800": b\n'
    assert [str(p) for p in problems_of(tmp_path, text)] == [
        "columns.x\\ud800 (line 4): not valid Unicode text: holds a lone surrogate (\\ud800) -- "
        "a \\uD800-\\uDFFF escape is half of a pair; write the character itself"
    ]
    # undecodable bytes on the command line arrive as surrogates (surrogateescape)
    problem = only(problems_of(tmp_path, USER, overrides={"columns.age.from": "年\udcff"}))
    assert (problem.path, problem.line) == ("columns.age.from", None)
    assert problem.message == "not valid Unicode text: holds a lone surrogate (\\udcff)"


def test_ca_file_with_tls_verify_off(tmp_path: Path) -> None:
    text = USER + "target:\n  tls_verify: false\n  ca_file: ca.pem\n"
    assert only(problems_of(tmp_path, text)).path == "target"


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, USER + "send:\n  concurrency: 4\n  concurrency: 8\n"))
    assert (problem.path, problem.message, problem.line) == (
        "send.concurrency",
        "duplicate key 'concurrency'",
        10,
    )


# -- cross-field rules ---------------------------------------------------------------------------


def test_primary_key_not_in_columns(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, USER.replace("[phone, email]", "[phone, emial]")))
    assert problem == ConfigProblem(
        "job.primary_keys.1",
        "primary key 'emial' is not a property in columns",
        "did you mean 'email'?",
        3,
    )


def test_primary_keys_required() -> None:
    problem = only(parse_problems(base(primary_keys=[])))
    assert (problem.path, problem.message) == (
        "job.primary_keys",
        "list at least one primary-key property",
    )


def test_primary_key_cannot_be_constant() -> None:
    data = base()
    data["columns"]["phone"] = {"value": "1"}
    assert only(parse_problems(data)).path == "columns.phone.value"


def test_event_needs_event_id(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, EVENT.replace("  event_id: 订单号\n", "")))
    assert problem == ConfigProblem(
        "columns",
        "events need the property 'event_id'",
        "add e.g. event_id: {from: <column>}",
        5,
    )


def test_event_needs_create_time(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, EVENT.replace("  create_time: 下单时间\n", "")))
    assert (problem.path, problem.message) == ("columns", "events need the property 'create_time'")


def test_event_create_time_must_be_datetime(tmp_path: Path) -> None:
    text = EVENT.replace("create_time: 下单时间", "create_time: {from: 下单时间, type: string}")
    problem = only(problems_of(tmp_path, text))
    assert (problem.path, problem.message) == (
        "columns.create_time.type",
        "create_time of an event must be datetime, got 'string'",
    )


def test_event_name_and_event_name_from_both_set(tmp_path: Path) -> None:
    text = EVENT.replace(
        "event_name: order_detail", "event_name: order_detail\n  event_name_from: 事件"
    )
    problem = only(problems_of(tmp_path, text))
    assert problem == ConfigProblem(
        "job.event_name_from",
        "set either event_name or event_name_from, not both",
        "event_name is a constant; event_name_from names a source column",
        4,
    )


def test_event_without_a_name(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, EVENT.replace("  event_name: order_detail\n", "")))
    assert (problem.path, problem.message) == (
        "job.event_name",
        "events need event_name (a constant) or event_name_from (a source column)",
    )


def test_user_job_must_not_name_an_event() -> None:
    problem = only(parse_problems(base(event_name="x")))
    assert (problem.path, problem.message) == (
        "job.event_name",
        "'event_name' only applies when kind is event, not user",
    )


def test_missing_required_keys() -> None:
    problems = parse_problems({"job": {"primary_keys": ["phone"]}})
    assert [(p.path, p.message) for p in problems] == [
        ("job.kind", "required key 'kind' is missing"),
        ("columns", "required key 'columns' is missing"),
    ]


# -- file-level failures and many problems at once ----------------------------------------------


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    problem = only(problems_of(tmp_path, "job:\n  kind: user\n  primary_keys: [phone\ncolumns:\n"))
    assert problem.path == ""
    assert problem.message.startswith("YAML syntax error: ")
    assert problem.line == 4


def test_a_character_yaml_refuses_is_named_with_its_line_and_column(tmp_path: Path) -> None:
    # was: 'YAML syntax error: unacceptable character #x0000: special characters are not
    # allowed\n  in "<unicode string>", position 24', with no line (issue 11 #11, odd YAML)
    problem = only(problems_of(tmp_path, "job:\n  kind: user\n  name: cu\x00st\n"))
    assert (problem.path, problem.line) == ("", 3)
    assert problem.message == (
        "character U+0000 at column 11 cannot be in YAML (special characters are not allowed)"
    )
    assert problem.hint == "remove it; a config is plain text"


def test_a_config_that_is_not_utf8_says_so_with_its_line(tmp_path: Path) -> None:
    # was: "cannot read config file: 'utf-8' codec can't decode byte 0xff in position 0:
    # invalid start byte" (issue 11 #11, odd YAML)
    path = tmp_path / "job.yaml"
    path.write_text(USER, encoding="utf-16")
    with pytest.raises(ConfigError) as info:
        load_job(path)
    problem = only(info.value.problems)
    assert (problem.line, problem.message, problem.hint) == (
        None,
        "the file is UTF-16 text (Windows Notepad's 'Unicode')",
        "save it as UTF-8",
    )
    path.write_bytes(b"job:\n  kind: user\n  name: caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_job(path)
    problem = only(info.value.problems)
    assert (problem.line, problem.message, problem.hint) == (
        3,
        "byte 0xe9 is not UTF-8",
        "a config is UTF-8 text: save it as UTF-8",
    )


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_job(tmp_path / "nope.yaml")
    assert only(info.value.problems).message == f"config file not found: {tmp_path / 'nope.yaml'}"


def test_config_must_be_a_mapping(tmp_path: Path) -> None:
    assert only(problems_of(tmp_path, "- a\n- b\n")).message.startswith("the config must be")


def test_several_problems_reported_at_once(tmp_path: Path) -> None:
    text = """\
    target:
      base_url: ftp://example.com
    job:
      kind: user
      primary_keys: [phone, mobile]
    columns:
      phone: {from: 手机号, type: int}
      code: {from: C, pattern: '('}
    send:
      concurency: 8
    """
    problems = problems_of(tmp_path, text)
    assert [(p.path, p.line) for p in problems] == [
        ("target.base_url", 2),
        ("job.primary_keys.1", 5),
        ("columns.phone.type", 7),
        ("columns.code.pattern", 8),
        ("send.concurency", 10),
    ]
    message = str(ConfigError(problems, source="job.yaml"))
    assert message.splitlines()[0] == "invalid config job.yaml:"
    assert "  send.concurency (line 10): unknown key 'concurency' -- did you mean" in message


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999", "http://u:pw@example.com:80x"])
def test_a_base_url_with_a_bad_port_is_a_config_error(tmp_path: Path, url: str) -> None:
    # it was an internal error (exit 5, "ValueError: Port out of range") when the run began
    text = f"target: {{base_url: '{url}'}}\njob: {{kind: user, primary_keys: [phone]}}\n"
    text += "columns: {phone: 手机号}\n"
    problem = only(problems_of(tmp_path, text))
    assert (problem.path, problem.message) == (
        "target.base_url",
        "the port in base_url is not a number from 0 to 65535",
    )


@pytest.mark.parametrize("name", ["people.csv", "people.jsonl", "people.csv.gz", "p.parquet"])
def test_an_input_file_given_as_the_config_says_the_config_comes_first(
    tmp_path: Path, name: str
) -> None:
    # `dmimport run people.csv job.yaml`: it was "the config must be a mapping of sections"
    path = tmp_path / name
    path.write_text("手机号,邮箱\n13800138000,a@b.cn\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_job(path)
    (problem,) = info.value.problems
    assert f"{name} is an input file (." in problem.message
    assert problem.message.endswith("), not a YAML config")
    assert problem.hint == "the config comes first: dmimport run CONFIG FILES"


# -- check_columns -------------------------------------------------------------------------------


def test_check_columns_names_each_missing_column(tmp_path: Path) -> None:
    config = load_job(write_file(tmp_path / "job.yaml", USER, dedent=True))
    with pytest.raises(ConfigError) as info:
        check_columns(config, "data/customers.csv", ["手机号", "email", "年龄 "])
    assert info.value.problems == [
        ConfigProblem(
            "columns.email.from",
            "column 'Email' is not in data/customers.csv",
            "did you mean 'email'?",
        ),
        ConfigProblem(
            "columns.age.from",
            "column '年龄' is not in data/customers.csv",
            "did you mean '年龄 '? (spaces differ)",
        ),
    ]


def test_check_columns_lists_header_when_nothing_is_close(tmp_path: Path) -> None:
    config = load_job(write_file(tmp_path / "job.yaml", USER, dedent=True))
    with pytest.raises(ConfigError) as info:
        check_columns(config, "x.csv", ["手机号", "Email", "a"])
    assert only(info.value.problems).hint == "the file's columns are: 手机号, Email, a"


def test_check_columns_passes(tmp_path: Path) -> None:
    config = load_job(write_file(tmp_path / "job.yaml", USER, dedent=True))
    check_columns(config, "x.csv", ["年龄", "Email", "手机号", "other"])


def test_every_key_is_documented() -> None:
    docs = (CONFIGS.parent / "docs" / "config.md").read_text(encoding="utf-8")

    def keys(model: type[pydantic.BaseModel]) -> list[str]:
        out = []
        for name, field in model.model_fields.items():
            out.append(field.alias or name)
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, pydantic.BaseModel):
                out += keys(ann)
        return out

    missing = [
        k for k in keys(Config) + keys(ColumnSpec) if f"`{k}" not in docs and f".{k}`" not in docs
    ]
    assert missing == []


# -- input: one InputOptions, the loader's ------------------------------------------------------


def test_input_section_is_the_loaders_options_with_their_rules() -> None:
    from importer.load import InputOptions

    config = parse_job({**base(), "input": {"delimiter": ";", "escape_char": "\\"}})
    assert type(config.input) is InputOptions  # no twin model, no conversion
    data = {
        **base(),
        "input": {
            "format": "xml",
            "delimiter": '"',
            "escape_char": "\n",
            "batch_rows": 0,
            "max_field_bytes": 100,
        },
    }
    got = {(p.path, p.message) for p in parse_problems(data)}
    assert got == {
        ("input.format", "expected one of auto, csv, tsv, jsonl, parquet, got 'xml'"),
        (
            "input.delimiter",
            "delimiter must be one ASCII character other than a quote or a newline, got '\"'",
        ),
        (
            "input.escape_char",
            "escape_char must be one ASCII character other than a quote, a newline or the "
            "delimiter, got '\\n'",
        ),
        ("input.batch_rows", "must be >= 1, got 0"),
        ("input.max_field_bytes", "must be >= 1024, got 100"),
    }
    same = {(p.path, p.message) for p in parse_problems({**base(), "input": {"delimiter": "é"}})}
    assert same == {
        (
            "input.delimiter",
            "delimiter must be one ASCII character other than a quote or a newline, got 'é'",
        )
    }
    with pytest.raises(ConfigError) as info:
        InputOptions(delimiter="|", escape_char="|")
    assert [p.path for p in info.value.problems] == ["input.escape_char"]


def test_one_input_options_model() -> None:
    import importer

    root = Path(importer.__file__).parent
    defined = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if "class InputOptions" in p.read_text(encoding="utf-8")
    ]
    assert defined == ["load/options.py"]
