"""A platform that closes the connection, without a word, on a batch too big for it, when the
batch is small enough to go out whole into the socket buffers first: the client cannot tell
that from a lost answer, so it retries; once every attempt of a batch ended so, the batch is
halved like one answered 413, and every row gets through."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from helpers import dmimport, write_csv

from importer.sandbox import Sandbox


def test_a_batch_closed_unanswered_on_every_attempt_is_halved_not_failed(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sb = fresh_sandbox(max_body_bytes=20000, too_big="close")
    rows = [[f"0129{i:07d}", "N" * 1000] for i in range(60)]  # one ~64 KB batch
    write_csv(tmp_path / "u.csv", ["phone", "name"], rows)
    (tmp_path / "job.yaml").write_text(
        f"target: {{base_url: '{sb.url}'}}\n"
        "job: {kind: user, primary_keys: [phone]}\n"
        "columns: {phone: phone, username: name}\n"
        "send: {rate_limit: null, retry: {initial_backoff_s: 0.01, max_backoff_s: 0.02}}\n",
        encoding="utf-8",
    )
    proc = dmimport("run", "-q", "--json", "job.yaml", "u.csv", cwd=tmp_path, secret=sb.secret)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["counts"]["ok"] == 60 and summary["counts"]["failed"] == 0
    assert summary["sending"]["too_big_splits"] >= 2
    assert summary["sending"]["batch_rows"] < 60
    assert len(sb.customers()) == 60
    assert sb.stats()["closed_too_big"] >= 5  # every attempt of the first batch was closed
