"""The durable-runs figures: what the ledger costs a send, and what a changed-only re-run of an
unchanged file costs next to a dry run of it."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from .clients import BenchSandbox
from .figures import Check, Context, DmRun, Figure, best, error_check, join_notes, verdict


def _config_with(ctx: Context, extra: str, folder: Path) -> Path:
    path = folder / "job.yaml"
    path.write_text(ctx.config.read_text(encoding="utf-8") + extra, encoding="utf-8")
    return path


def _as(ctx: Context, config: Path) -> Path:
    previous, ctx.config = ctx.config, config
    return previous


def fig_ledger(ctx: Context) -> Figure:
    """Send the same rows with the ledger (default) and without it (`state.enabled: false`)."""
    fig = Figure("ledger")
    n = ctx.sizes.send_rows
    folder = Path(tempfile.mkdtemp(prefix="dmbench-ledger-"))
    without = _config_with(ctx, "state: {enabled: false}\n", folder)
    on: list[DmRun] = []
    off: list[DmRun] = []
    try:
        for _ in range(ctx.sizes.repeats):
            on.append(ctx.send(n))
            previous = _as(ctx, without)
            try:
                off.append(ctx.send(n))
            finally:
                ctx.config = previous
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    a, b = best(on), best(off)
    fig.raw |= {"rows": n, "with": [r.as_dict() for r in on], "without": [r.as_dict() for r in off]}
    if a is None or b is None or a.error or b.error:
        why = (a.error if a else None) or (b.error if b else None) or "no run completed"
        fig.checks.append(error_check("ledger: send with vs without", ">= 0.9x", why))
        return fig
    ratio = a.rate / b.rate if b.rate else 0.0
    fig.checks.append(
        Check(
            "ledger: send with vs without",
            f"{a.rate:,.0f} rows/s",
            f"{b.rate:,.0f} rows/s",
            ratio,
            ">= 0.9x",
            verdict(ratio >= 0.9 and not a.problem and not b.problem),
            join_notes(a.problem, b.problem),
        )
    )
    return fig


def _populate(config: Path, data: Path, state: Path) -> int:
    """A previous changed-only night that delivered every row: the ledger as the pipeline
    would leave it, recorded through the library (no 1,000,000 requests needed)."""
    from importer.job import load_job
    from importer.ledger import BatchClassifier, BatchOutcomes, Identities, Ledger
    from importer.load import iter_batches, open_source
    from importer.pipeline import Run

    cfg = load_job(config)
    run = Run(cfg, [data], changed_only=True)
    source = open_source(run.paths[0], run.input)
    ledger = Ledger(state)
    info = ledger.begin_run(cfg.job_name, "seed-run", "seed", [], resume=False)
    identities = Identities(cfg.job.kind, cfg.job.event_name)
    classifier = BatchClassifier(
        ledger, cfg.job_name, info, identities, kind=cfg.job.kind, changed_only=True
    )
    total = 0
    for batch in iter_batches(source, run.input, cfg.source_columns()):
        mapped = run.mapper.map(batch)
        sent = np.flatnonzero(classifier.classify(mapped, 0).send & (mapped.errcode == 0))
        outcomes = BatchOutcomes(mapped, 0, sent, identities)
        items = [outcomes.item(i, "ok") for i in sent.tolist()]
        for k in range(0, len(items), 5000):
            ledger.record(cfg.job_name, "seed-run", items[k : k + 5000])
        total += len(items)
    classifier.close()
    ledger.end_run("seed-run", status="done", counts={"ok": total}, exit_code=0)
    ledger.close()
    return total


def _drop_index(state: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(state)
    try:
        with conn:
            conn.execute("DELETE FROM job_index")
    finally:
        conn.close()


def fig_changed(ctx: Context) -> Figure:
    fig = Figure("changed")
    n = ctx.sizes.local_rows
    data = ctx.data.file(n)
    folder = Path(tempfile.mkdtemp(prefix="dmbench-changed-"))
    state = folder / "state.db"
    config = _config_with(ctx, f"state: {{path: '{state}'}}\n", folder)
    label = f"changed-only re-run of {n:,} unchanged rows vs dry run"
    try:
        seeded = _populate(config, data, state)
        ctx.log(f"    ledger seeded with {seeded:,} delivered rows")
        previous = _as(ctx, config)
        try:
            dry = best([ctx.dmimport("validate", [data], n) for _ in range(ctx.sizes.repeats)])
            with BenchSandbox() as sb:
                reruns = [
                    ctx.dmimport("run", [data], n, sb, ("--changed-only",))
                    for _ in range(ctx.sizes.repeats)
                ]
                # the first changed-only run of a job that only ever ran in full has no
                # packed index yet and builds it from the rows table: shown, not a target
                _drop_index(state)
                cold = ctx.dmimport("run", [data], n, sb, ("--changed-only",))
                arrived = int(sb.stats().get("requests", 0))
        finally:
            ctx.config = previous
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    rerun = best(reruns)
    if dry is None or rerun is None or dry.error or rerun.error or not dry.summary:
        why = (dry.error if dry else None) or (rerun.error if rerun else None) or "no run"
        fig.checks.append(error_check(f"changed: {label}", "<= 1.5x", why))
        return fig
    summary = rerun.summary or {}
    unchanged = summary.get("counts", {}).get("unchanged", 0)
    t_rerun, t_dry = float(summary["duration_s"]), float(dry.summary["duration_s"])
    ratio = t_rerun / t_dry if t_dry else 0.0
    sent_nothing = arrived == 0 and summary.get("requests") == 0 and unchanged == n
    fig.raw |= {"rows": n, "dry": dry.as_dict(), "rerun": rerun.as_dict(), "arrived": arrived,
                "cold_rerun": cold.as_dict()}  # fmt: skip
    fig.checks.append(
        Check(
            f"changed: {label}",
            f"{t_rerun:.2f} s",
            f"{t_dry:.2f} s",
            ratio,
            "<= 1.5x, 0 requests",
            verdict(ratio <= 1.5 and sent_nothing),
            join_notes(
                f"{arrived} requests reached the sandbox; {unchanged:,} rows unchanged",
                f"wall-clock {rerun.measured.wall_s:.2f} s vs {dry.measured.wall_s:.2f} s",
                f"without the ledger's packed index (a job's first changed-only run) "
                f"{float((cold.summary or {}).get('duration_s', 0.0)):.2f} s",
            ),
        )
    )
    return fig
