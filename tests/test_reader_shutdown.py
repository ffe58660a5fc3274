"""No input takes the process down or hangs it at exit (issue 11 #8, the CSV part).

Arrow's streaming CSV reader reads ahead on a thread of its own, which calls back into Python
(the stream's ``read``) and holds Python objects (the stream, the blocks it read). If the
reader failed, or the caller stopped early (``preview`` does), and that thread was still at
work when the interpreter shut down, the process aborted ("Fatal Python error:
PyGILState_Release", "terminate called without an active exception") or hung for good: a few
runs in a hundred. So each case runs many times, two processes at a time (a busy machine makes
the race likelier), each with a timeout, and every run must end with its exact exit code and
message.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import start_dmimport

pytestmark = pytest.mark.slow  # 36 runs of the command

CONFIG = """
job: {kind: user, primary_keys: [phone]}
columns:
  phone: a
  username: b
"""


def _run(cwd: Path, *args: str) -> tuple[int | str, str, str]:
    proc = start_dmimport(*args, cwd=cwd)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return "hung", out, err
    return proc.returncode, out, err


@pytest.mark.timeout(300)  # 36 runs of the command, two at a time
def test_preview_never_aborts_or_hangs_when_the_reader_stops(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text(CONFIG, encoding="utf-8")
    (tmp_path / "small.yaml").write_text(
        CONFIG + "input: {max_field_bytes: 1024}\n", encoding="utf-8"
    )
    rows = "".join(f"{i},name{i}\n" for i in range(2, 600_000))  # 10 MB: over 2 large blocks
    # a quote that opens on line 2 and never closes: Arrow fails while its thread reads on
    (tmp_path / "quote.csv").write_text('a,b\n1,"open\n' + rows, encoding="utf-8")
    # a header and a bare CR: Arrow used to fail on it as soon as it started
    (tmp_path / "cr.csv").write_bytes(b"a,b\r")
    # a long good file that preview --quick stops reading after its first rows
    (tmp_path / "long.csv").write_text("a,b\n" + rows, encoding="utf-8")
    cases = {
        "quote": (
            ("preview", "small.yaml", "quote.csv"),
            2,
            "",
            "error: quote.csv: line 2: a record is too long to read (an unbalanced quote?); "
            "nothing from line 2 on was read\n",
        ),
        "cr": (("preview", "job.yaml", "cr.csv"), 0, "(no records)", ""),
        "quick": (("preview", "job.yaml", "long.csv", "--quick", "-n", "3"), 0, "line 4 ", ""),
    }
    jobs = [name for _ in range(12) for name in cases]  # 36 runs
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda name: (name, _run(tmp_path, *cases[name][0])), jobs))
    failures = []
    for name, (code, out, err) in results:
        _, want_code, want_out, want_err = cases[name]
        if code != want_code or want_out not in out or err != want_err:
            failures.append((name, code, err[-300:]))
    assert failures == []
