"""A run stopped during the late-apply settle wait (``send.settle_s``) says what it left
undone: the customers whose last row was to go again are delivered in the ledger, so running
the same command again would skip them; ``--full`` puts them right."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from helpers import start_dmimport, write_csv

from importer.sandbox import Faults, Sandbox


def test_sigterm_during_the_settle_wait_says_the_re_sends_did_not_go(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sb = fresh_sandbox(faults=Faults(seed=21, late_apply=0.15, late_apply_s=1.0))
    rows = [[f"0128{c:07d}", f"v{v}"] for v in range(3) for c in range(60)]
    write_csv(tmp_path / "u.csv", ["phone", "name"], rows)
    (tmp_path / "job.yaml").write_text(
        f"target: {{base_url: '{sb.url}', timeout_s: 0.3}}\n"
        # keep_all: every row of a repeated customer is sent (not only its last)
        "job: {kind: user, primary_keys: [phone], duplicates: keep_all}\n"
        "columns: {phone: phone, username: name}\n"
        "send: {batch_rows: 10, settle_s: 60, rate_limit: null, concurrency: 8}\n",
        encoding="utf-8",
    )
    proc = start_dmimport("run", "-q", "job.yaml", "u.csv", cwd=tmp_path, secret=sb.secret)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "waiting 60 s (send.settle_s)" in line:
            break
    else:
        raise AssertionError("".join(seen))
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, out + err
    assert "INTERRUPTED by SIGTERM" in out
    assert "last rows were not sent again (the run stopped before the late re-sends)" in err
    assert "run it with --full to send every row again" in err
