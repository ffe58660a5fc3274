"""The run's request source (``importer.feed.RowFeed``) between a real producer and a real
sender: a partial batch does not wait for rows that are slow to come."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from helpers import write_csv

from importer.feed import LINGER_S, RowFeed
from importer.interrupts import Stopper
from importer.job import parse_job
from importer.load import open_source
from importer.map import Mapper
from importer.outcomes import Status
from importer.outputs import RunOutputs, RunStart
from importer.producer import BatchState, Producer
from importer.protocol import IMPORT_PATH
from importer.sandbox import Sandbox
from importer.send import StreamTransport, WorkerSpec


def test_a_partial_batch_is_sent_when_the_producer_stalls_and_the_sender_is_idle(
    fresh_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    # 30 rows come, then nothing for a while (a slow disk, a huge changed-only file): they go
    # as one partial batch once the sender has been idle LINGER_S, not at the end of input
    sb = fresh_sandbox()
    cfg = parse_job({
        "job": {"kind": "user", "primary_keys": ["phone"]},
        "columns": {"phone": "phone", "username": "name"},
        "target": {"base_url": sb.url},
        "send": {"rate_limit": None},
    })  # fmt: skip
    data = write_csv(
        tmp_path / "u.csv", ["phone", "name"], [[f"0124{i:07d}", "n"] for i in range(30)]
    )
    source = open_source(data, cfg.input)
    mapper = Mapper(cfg)
    stopper = Stopper()
    start = RunStart("r", "job", "send", tmp_path / "run", datetime.now(UTC), 0.0, [{}], "")
    (tmp_path / "run").mkdir()
    out = RunOutputs(cfg, start, [source], stopper, mask=None, recorder=None, dry_run=False)
    producer = Producer(cfg, mapper, [source], valid_status=Status.NOT_SENT, only=None,
                        stop=stopper.stop)  # fmt: skip
    [state] = list(producer.batches(build_bodies=True))
    spec = WorkerSpec(
        base_url=sb.url, timeout=5.0, verify=True, ca_file=None, secret=sb.secret, kind="user",
        target=cfg.profile().target("user", False, sb.secret), shown_url=sb.url,
        profile=cfg.profile(), concurrency=4, retry=cfg.send.retry, rate_limit=None,
        ordered=True, abort_after_signature_failures=5,
    )  # fmt: skip

    async def main() -> tuple[float, int]:
        transport = StreamTransport(sb.url, timeout=5.0)
        sender = spec.build_sender(transport, link_keys=False)
        queue: asyncio.Queue[BatchState | None] = asyncio.Queue(maxsize=1)
        feed = RowFeed(queue, sender, out, cfg, mapper)
        await queue.put(state)
        t0 = time.monotonic()
        task = asyncio.create_task(sender.run(feed, feed.on_result))
        while sb.stats()["items"]["received"] < 30:  # the input has not ended
            assert time.monotonic() - t0 < LINGER_S + 5, "the partial batch was never sent"
            await asyncio.sleep(0.05)
        waited = time.monotonic() - t0
        requests = sb.stats()["by_path"][IMPORT_PATH]
        await queue.put(None)  # the end of the input
        await task
        await feed.drain()
        await transport.aclose()
        return waited, requests

    waited, requests = asyncio.run(main())
    assert LINGER_S <= waited < LINGER_S + 2
    assert requests == 1  # the 30 rows in one request
    assert len(sb.customers()) == 30
    assert out.tally.counts["ok"] == 30  # the batch's rows were reported
