"""The benchmark figures. Each measures dmimport and its baseline in the same run, on the
generated data, and turns the pair into checks against the targets of the issue.

A figure never asserts: a miss is a ``MISS`` row in the table, a dmimport that cannot run yet
is an ``ERROR`` row saying why, and the baselines are measured either way.

Timed measurements are repeated (``Sizes.repeats``, interleaved: dmimport, then each ceiling,
then again) and the best of each is kept: on a shared machine other programs only ever slow a
run down. Every measurement also records how much CPU the rest of the machine used meanwhile
(``foreign_cpu_share``), so a figure taken on a busy box says so.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .clients import CEILINGS, BenchSandbox, Bodies, SendRate, send_http_client, send_naive
from .data import BATCH_ROWS, COLUMN_MAP, Dataset, batch_bodies, bodies_for, items_for
from .proc import Measured, dmimport_cmd, machine_busy_s, run_measured

CONCURRENCY = 64
LATENCY_MS = 20.0
DMIMPORT_TIMEOUT_S = 300.0
#: a measurement during which other programs used more than this share of a core is flagged
NOISY_SHARE = 0.15
#: a clean file of N rows must take at most this many times ceil(N / batch_rows) requests
REQUESTS_SLACK = 1.01


def batches(rows: int, batch_rows: int = BATCH_ROWS) -> int:
    """Requests a clean file of ``rows`` customer rows needs: ceil(rows / batch_rows)."""
    return -(-rows // batch_rows)


def allowed_requests(rows: int, batch_rows: int = BATCH_ROWS) -> int:
    """The most requests a clean send of ``rows`` may take (1.01 x the batches, rounded up)."""
    return math.ceil(batches(rows, batch_rows) * REQUESTS_SLACK)


@dataclass(frozen=True)
class Sizes:
    # send and ledger: 400 batches of 500 rows; latency and workers: 200 (with one row a
    # request the suite used 50,000 and 20,000 rows: 500 times more requests than rows / 500)
    send_rows: int = 200_000
    naive_rows: int = 10_000
    latency_rows: int = 100_000
    local_rows: int = 1_000_000
    baseline_rows: int = 100_000
    mem_validate: tuple[int, int] = (5_000_000, 500_000)
    mem_send: tuple[int, int] = (200_000, 20_000)
    capacity_requests: int = 40_000
    workers_rows: int = 100_000
    #: figures ``requests`` and ``limits`` (issue 13): the clean file, the one with 0.1% rows
    #: only the server refuses, and the paced run
    requests_rows: int = 1_000_000
    #: the bisection under ``batch_errors: store_valid`` (0: not run)
    store_valid_rows: int = 200_000
    limits_rows: int = 1_000_000
    repeats: int = 2


QUICK = Sizes(
    send_rows=20_000,
    naive_rows=2_000,
    latency_rows=20_000,
    local_rows=200_000,
    baseline_rows=20_000,
    mem_validate=(500_000, 50_000),
    mem_send=(20_000, 2_000),
    capacity_requests=8_000,
    workers_rows=20_000,
    requests_rows=100_000,
    store_valid_rows=100_000,
    limits_rows=100_000,
    repeats=1,
)


@dataclass
class Check:
    """One row of the final table."""

    figure: str
    value: str
    base: str = ""
    ratio: float | None = None
    target: str = ""
    verdict: str = ""  # PASS, MISS, ERROR, N/A, or "" for an informational row
    note: str = ""


@dataclass
class Figure:
    name: str
    checks: list[Check] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    #: the dmimport runs behind the verdicts, for the "what it means for a user" table
    headline: list[tuple[str, DmRun]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 1),
            "checks": [asdict(c) for c in self.checks],
            "raw": self.raw,
        }


def rate_text(rate: float, unit: str = "rows/s") -> str:
    return f"{rate:,.0f} {unit}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def ratio_check(
    figure: str, value: float, base: float, base_text: str, minimum: float, unit: str = "rows/s"
) -> Check:
    ratio = value / base if base > 0 else 0.0
    return Check(
        figure,
        rate_text(value, unit),
        base_text,
        ratio,
        f">= {minimum:g}x",
        verdict(ratio >= minimum),
    )


def error_check(figure: str, target: str, why: str | None) -> Check:
    return Check(figure, "-", "", None, target, "ERROR", why or "")


def noisy(share: float | None) -> str:
    """A note for a measurement other programs competed with, else ""."""
    if share is not None and share > NOISY_SHARE:
        return f"other programs used {share:.0%} of a core meanwhile"
    return ""


def labelled(what: str, share: float | None) -> str:
    note = noisy(share)
    return f"{what}: {note}" if note else ""


def mark_noisy(check: Check, *shares: float | None) -> Check:
    """``PASS*`` / ``MISS*``: a measurement behind the verdict competed with other programs."""
    if check.verdict in ("PASS", "MISS") and any(s is not None and s > NOISY_SHARE for s in shares):
        check.verdict += "*"
    return check


def join_notes(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


# -- running dmimport ------------------------------------------------------------------------


@dataclass
class DmRun:
    """One ``dmimport run|validate --json`` subprocess and what its summary says."""

    measured: Measured
    summary: dict[str, Any] | None
    expected_rows: int
    server_cpu_s: float | None = None
    foreign_cpu_s: float | None = None
    #: filled by ``Context.dm_send`` from the sandbox's stats: API requests that reached it
    arrived: int | None = None
    customers: int | None = None
    #: the most requests a clean send of these rows may take (None: not checked)
    allowed: int | None = None
    #: the sandbox's stats after the run, when a figure keeps them
    stats: dict[str, Any] | None = None

    @property
    def error(self) -> str | None:
        """Why this run gives no figure at all."""
        if self.summary is None:
            return self.measured.error_line()
        if self.summary.get("rows") != self.expected_rows:
            return f"summary says {self.summary.get('rows')} rows, expected {self.expected_rows}"
        return None

    @property
    def problem(self) -> str:
        """Why a send's figure does not count although it ran (rows not delivered)."""
        if self.error or self.arrived is None:
            return ""
        ok = (self.summary or {}).get("counts", {}).get("ok")
        out = []
        least = batches(self.expected_rows)
        if self.arrived < least or (self.allowed is not None and self.arrived > self.allowed):
            out.append(
                f"the sandbox saw {self.arrived:,} requests for {self.expected_rows:,} rows "
                f"({least:,} batches of {BATCH_ROWS} expected)"
            )
        if ok != self.expected_rows:
            out.append(f"{ok} of {self.expected_rows:,} rows ok")
        return "; ".join(out)

    @property
    def rows(self) -> int:
        return int(self.summary["rows"]) if self.summary else 0

    @property
    def rate(self) -> float:
        """Rows per second from the summary (the run itself, without interpreter start-up)."""
        if not self.summary or not self.summary.get("duration_s"):
            return 0.0
        return self.rows / float(self.summary["duration_s"])

    @property
    def wall_rate(self) -> float:
        """Rows per second over the whole subprocess, start-up and imports included."""
        return self.rows / self.measured.wall_s if self.measured.wall_s > 0 else 0.0

    def share(self, cpu_s: float | None) -> float | None:
        wall = self.measured.wall_s
        return round(cpu_s / wall, 3) if cpu_s is not None and wall > 0 else None

    @property
    def foreign_share(self) -> float | None:
        return self.share(self.foreign_cpu_s)

    def as_dict(self) -> dict[str, Any]:
        m = self.measured
        out: dict[str, Any] = {
            "cmd": " ".join(m.cmd[1:]),
            "returncode": m.returncode,
            "wall_s": round(m.wall_s, 3),
            "cpu_s": round(m.cpu_s, 3),
            "maxrss_mb": round(m.maxrss_mb, 1),
            "error": self.error,
            "server_cpu_share": self.share(self.server_cpu_s),
            "foreign_cpu_share": self.foreign_share,
        }
        if self.arrived is not None:
            out |= {
                "sandbox_requests": self.arrived,
                "batches_expected": batches(self.expected_rows),
                "sandbox_customers": self.customers,
                "verified": not self.error and not self.problem,
            }
        if self.summary:
            s = self.summary
            out |= {
                "rows": s.get("rows"),
                "duration_s": s.get("duration_s"),
                "counts": {k: v for k, v in (s.get("counts") or {}).items() if v},
                "requests": s.get("requests"),
                "sending": s.get("sending"),
                "quota": s.get("quota"),
                "exit_code": s.get("exit_code"),
                "rate_per_s": round(self.rate, 1),
                "wall_rate_per_s": round(self.wall_rate, 1),
                "rows_per_hour": round(self.rate * 3600),
            }
            if self.rows and m.cpu_s > 0:
                out["cpu_us_per_row"] = round(m.cpu_s / self.rows * 1e6, 1)
                # what one core does in an hour at this run's CPU cost per row
                out["rows_per_core_hour"] = round(self.rows / m.cpu_s * 3600)
        if m.rss_samples:
            out["rss_mb_over_time"] = _downsample(m.rss_samples, 40)
        return out


def _downsample(samples: list[tuple[float, float]], most: int) -> list[tuple[float, float]]:
    step = max(1, -(-len(samples) // most))
    return samples[::step]


def best(runs: list[DmRun]) -> DmRun | None:
    """The fastest run that delivered everything, else the first one (to report its error)."""
    good = [r for r in runs if not r.error and not r.problem]
    if good:
        return max(good, key=lambda r: r.rate)
    return runs[0] if runs else None


class Context:
    """What every figure shares: sizes, data, the config, where reports go, dmimport's state."""

    def __init__(self, sizes: Sizes, dataset: Dataset, log: Callable[[str], None]) -> None:
        self.sizes = sizes
        self.data = dataset
        self.config = dataset.config()
        self.log = log
        #: scratch files of the run (configs of some figures); removed by ``close``
        self.tmp = Path(tempfile.mkdtemp(prefix="dmbench-ctx-"))
        #: measurements figures share within one suite run (e.g. the unpaced 1M-row send)
        self.cache: dict[str, Any] = {}
        self.dmimport_error: str | None = None
        self.help_text = ""

    def dmimport(
        self,
        mode: str,
        files: list[Path],
        expected_rows: int,
        sandbox: BenchSandbox | None = None,
        extra: tuple[str, ...] = (),
        sample_rss: bool = False,
    ) -> DmRun:
        # the run's folder is its working directory too: a job's default ledger
        # (``reports/state.db`` of the working directory) is fresh for every run, never one
        # that earlier figures or suite runs grew
        reports = tempfile.mkdtemp(prefix="dmbench-reports-")
        paths = [Path(self.config).resolve(), *(Path(f).resolve() for f in files)]
        cmd = [*dmimport_cmd(), mode, *map(str, paths)]
        cmd += ["--quiet", "--json", "--report-dir", reports]
        env = dict(os.environ)
        if sandbox is not None:
            cmd += ["--base-url", sandbox.url, "--concurrency", str(CONCURRENCY), *extra]
            env["DMART_SECRET"] = sandbox.secret
        srv0 = sandbox.cpu_s() if sandbox else None
        busy0 = machine_busy_s()
        try:
            measured = run_measured(
                cmd,
                env=env,
                timeout=DMIMPORT_TIMEOUT_S,
                cwd=reports,
                sample_s=0.25 if sample_rss else None,
            )
        finally:
            shutil.rmtree(reports, ignore_errors=True)
        busy1 = machine_busy_s()
        srv1 = sandbox.cpu_s() if sandbox else None
        run = DmRun(measured, measured.json(), expected_rows)
        if srv0 is not None and srv1 is not None:
            run.server_cpu_s = srv1 - srv0
        if busy0 is not None and busy1 is not None:
            ours = measured.cpu_s + (run.server_cpu_s or 0.0)
            run.foreign_cpu_s = max(0.0, busy1 - busy0 - ours)
        if run.error:
            self.log(f"    dmimport {mode}: {run.error}")
        else:
            extra_note = noisy(run.foreign_share)
            self.log(
                f"    dmimport {mode} {expected_rows:,} rows: {run.rate:,.0f} rows/s "
                f"(wall {run.wall_rate:,.0f}), {measured.maxrss_mb:,.0f} MB peak RSS, "
                f"{measured.cpu_s / expected_rows * 1e6:,.0f} us CPU/row"
                + (f" [{extra_note}]" if extra_note else "")
            )
        return run

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def config_file(self, name: str, text: str) -> Path:
        """A config of some figure, written under the run's scratch folder."""
        path = self.tmp / name
        path.write_text(text, encoding="utf-8")
        return path

    def preflight(self) -> None:
        """Can dmimport run at all? One tiny validate; its error is reported on every figure."""
        run = self.dmimport("validate", [self.data.file(1_000)], 1_000)
        self.dmimport_error = run.error
        help_run = subprocess.run(
            [*dmimport_cmd(), "run", "--help"], capture_output=True, text=True, timeout=60
        )
        self.help_text = help_run.stdout

    def dm_send(
        self,
        rows: int,
        latency_ms: float = 0.0,
        extra: tuple[str, ...] = (),
        sample_rss: bool = False,
        account: dict[str, Any] | None = None,
        path: Path | None = None,
        clean: bool = True,
    ) -> tuple[DmRun, dict[str, Any]]:
        """``dmimport run`` of the ``rows`` file (or ``path``) against a fresh process sandbox
        (``account``: schema keys changed), checked against the sandbox's own count of
        requests: a ``clean`` file takes ceil(rows / batch_rows) requests, 1.01 x at most.
        Returns the run and the sandbox's stats after it."""
        with BenchSandbox(latency_ms, account) as sb:
            run = self.dmimport("run", [path or self.data.file(rows)], rows, sb, extra, sample_rss)
            stats = sb.stats()
        run.arrived = int(stats.get("requests", 0))
        run.customers = stats.get("customers")
        run.allowed = allowed_requests(rows) if clean else None
        if clean and run.problem:
            self.log(f"    dmimport run: NOT VERIFIED: {run.problem}")
        return run, stats

    def send(
        self, rows: int, latency_ms: float = 0.0, extra: tuple[str, ...] = (),
        sample_rss: bool = False,
    ) -> DmRun:  # fmt: skip
        """``dm_send`` of a clean file, the run only."""
        return self.dm_send(rows, latency_ms, extra, sample_rss)[0]


def _dm_unavailable(ctx: Context, fig: Figure, label: str, target: str) -> bool:
    if ctx.dmimport_error:
        fig.checks.append(error_check(label, target, ctx.dmimport_error))
        return True
    return False


def _ceiling_once(
    ctx: Context, name: str, bodies: Bodies, latency_ms: float, fig: Figure
) -> SendRate | None:
    with BenchSandbox(latency_ms) as sb:
        try:
            r = CEILINGS[name](sb, bodies, CONCURRENCY)
        except Exception as exc:  # one broken client must not sink the others
            ctx.log(f"    ceiling {name}: failed: {exc}")
            fig.raw.setdefault("ceiling_errors", {})[name] = str(exc)
            return None
        arrived = sb.api_requests()
    raw = r.as_dict() | {"sandbox_requests": arrived}
    fig.raw.setdefault("ceilings", {}).setdefault(name, []).append(raw)
    rows = sum(count for _, count in bodies)
    complete = r.ok == r.requests == len(bodies) == arrived and r.rows == rows
    note = noisy(raw.get("foreign_cpu_share"))
    ctx.log(
        f"    ceiling {name}: {r.rate:,.0f} rows/s ({r.ok:,}/{r.requests:,} requests ok, "
        f"{r.request_rate:,.0f} req/s, {raw.get('client_cpu_us_per_row', 0):,.1f} us client "
        f"CPU/row, server busy {raw.get('server_cpu_share') or 0:.0%})"
        + (f" [{note}]" if note else "")
    )
    return r if complete else None


def _send_rounds(
    ctx: Context, fig: Figure, rows: int, latency_ms: float, with_dmimport: bool
) -> tuple[list[DmRun], dict[str, SendRate]]:
    """``repeats`` rounds of: dmimport, then each ceiling. Returns every dmimport run and the
    best complete measurement of each ceiling."""
    bodies = bodies_for(ctx.data.file(rows))
    runs: list[DmRun] = []
    tops: dict[str, SendRate] = {}
    for _ in range(ctx.sizes.repeats):
        if with_dmimport:
            runs.append(ctx.send(rows, latency_ms))
        for name in CEILINGS:
            r = _ceiling_once(ctx, name, bodies, latency_ms, fig)
            if r is not None and (name not in tops or r.rate > tops[name].rate):
                tops[name] = r
    prefix = fig.name + ":"
    for name in CEILINGS:
        label = f"{prefix} ceiling {name}"
        if name in tops:
            fig.checks.append(Check(label, rate_text(tops[name].rate)))
        else:
            fig.checks.append(Check(label, "failed", verdict="ERROR"))
    if runs:
        fig.raw["dmimport"] = [r.as_dict() for r in runs]
    return runs, tops


# -- 1. send throughput, zero latency --------------------------------------------------------


def fig_send(ctx: Context) -> Figure:
    fig = Figure("send")
    n = ctx.sizes.send_rows
    fig.raw |= {"rows": n, "concurrency": CONCURRENCY, "repeats": ctx.sizes.repeats,
                "batch_rows": BATCH_ROWS}  # fmt: skip
    available = not ctx.dmimport_error
    runs, tops = _send_rounds(ctx, fig, n, 0.0, available)

    # the hand-written baselines: one `user` call per row (the SDK page's call; on the smaller
    # file, it is slow), and user_batch bodies of the same file as dmimport
    naive = _naive(ctx, fig, ctx.data.file(ctx.sizes.naive_rows), None)
    naive_batch = _naive(ctx, fig, ctx.data.file(n), BATCH_ROWS)

    targets = (("vs ceiling", ">= 0.8x"), ("vs naive", ">= 3x"))
    run = best(runs)
    if run is None or run.error or not tops:
        why = ctx.dmimport_error or (run.error if run else None) or "no ceiling completed"
        fig.checks += [error_check(f"send: dmimport {what}", t, why) for what, t in targets]
        return fig
    # The local part of the run (read, map, report) of the same file, for the notes: with
    # one batch, sending starts only once the whole file is mapped.
    local = ctx.dmimport("validate", [ctx.data.file(n)], n)
    local_s = (local.summary or {}).get("duration_s")
    fig.raw["dmimport_validate_same_file"] = local.as_dict()

    ceiling = max(tops.values(), key=lambda r: r.rate)
    fig.raw["ceiling_best"] = ceiling.name
    fig.headline.append((f"run, {n:,} rows, no latency", run))
    c = ratio_check(
        "send: dmimport vs ceiling",
        run.rate,
        ceiling.rate,
        f"{ceiling.rate:,.0f} ({ceiling.name})",
        0.8,
    )
    cpu_note = (
        f"{run.measured.cpu_s / n * 1e6:,.1f} us CPU/row vs "
        f"{(ceiling.client_cpu_s or 0) / n * 1e6:,.1f} for the ceiling"
    )
    local_note = ""
    if local_s and run.summary:
        local_note = (
            f"validate of the same file takes {local_s:.2f} s of the run's "
            f"{run.summary['duration_s']:.2f} s"
        )
        count_s = (run.summary.get("quota") or {}).get("count_s")
        if count_s is not None:
            local_note += f", the daily quota's counting pass {count_s:.2f} s"
    c.note = join_notes(
        f"wall-clock {run.wall_rate:,.0f} rows/s = {run.wall_rate / ceiling.rate:.2f}x",
        cpu_note,
        local_note,
        run.problem,
        labelled("dmimport", run.foreign_share),
        labelled("ceiling", ceiling.foreign_share),
    )
    if run.problem:
        c.verdict = "MISS"
    fig.checks.append(mark_noisy(c, run.foreign_share, ceiling.foreign_share))
    c = ratio_check("send: dmimport vs naive", run.rate, naive.rate, rate_text(naive.rate), 3.0)
    c.note = join_notes(
        f"wall-clock {run.wall_rate / naive.rate:.1f}x",
        run.problem,
        labelled("dmimport", run.foreign_share),
        labelled("naive", naive.foreign_share),
    )
    if run.problem:
        c.verdict = "MISS"
    fig.checks.append(mark_noisy(c, run.foreign_share, naive.foreign_share))
    if naive_batch.rate > 0:
        ratio = run.rate / naive_batch.rate
        c = Check("send: dmimport vs naive user_batch", rate_text(run.rate),
                  rate_text(naive_batch.rate), ratio, "", "",
                  join_notes("no target: the sandbox bounds both",
                             labelled("naive", naive_batch.foreign_share)))  # fmt: skip
        fig.checks.append(c)
    return fig


def _naive(ctx: Context, fig: Figure, path: Path, batch_rows: int | None) -> SendRate:
    with BenchSandbox() as sb:
        naive = send_naive(sb, path, CONCURRENCY, batch_rows)
        raw = naive.as_dict() | {"sandbox_requests": sb.api_requests()}
    fig.raw["naive_batch" if batch_rows else "naive"] = raw
    ctx.log(
        f"    {naive.name}: {naive.rate:,.0f} rows/s ({naive.rows:,} rows ok, "
        f"{naive.ok:,}/{naive.requests:,} requests)"
    )
    label = "send: naive pandas+requests" + (" user_batch" if batch_rows else ", one row a call")
    fig.checks.append(Check(label, rate_text(naive.rate)))
    return naive


# -- 2. latency-bound send -------------------------------------------------------------------


def fig_latency(ctx: Context) -> Figure:
    fig = Figure("latency")
    n = ctx.sizes.latency_rows
    # every request in flight carries a full batch
    theory = CONCURRENCY * BATCH_ROWS / (LATENCY_MS / 1000.0)
    fig.raw |= {"rows": n, "latency_ms": LATENCY_MS, "concurrency": CONCURRENCY,
                "theoretical_rate": theory, "repeats": ctx.sizes.repeats}  # fmt: skip
    label = f"latency {LATENCY_MS:g} ms: dmimport"
    runs, tops = _send_rounds(ctx, fig, n, LATENCY_MS, not ctx.dmimport_error)
    run = best(runs)
    if run is None or run.error or not tops:
        why = ctx.dmimport_error or (run.error if run else None) or "no ceiling completed"
        fig.checks.append(error_check(label, ">= 0.85x", why))
        return fig
    ceiling = max(tops.values(), key=lambda r: r.rate)
    bound = min(theory, ceiling.rate)
    fig.raw |= {"ceiling_best": ceiling.name, "bound": bound}
    fig.headline.append((f"run, {n:,} rows, {LATENCY_MS:g} ms latency", run))
    base = f"{bound:,.0f} (min of {theory:,.0f}, {ceiling.name})"
    c = ratio_check(label, run.rate, bound, base, 0.85)
    ceiling_noise = ceiling.foreign_share if ceiling.rate < theory else None
    c.note = join_notes(
        f"wall-clock {run.wall_rate / bound:.2f}x",
        run.problem,
        labelled("dmimport", run.foreign_share),
        labelled("ceiling", ceiling_noise),
    )
    if run.problem:
        c.verdict = "MISS"
    fig.checks.append(mark_noisy(c, run.foreign_share, ceiling_noise))
    return fig


# -- 3. local pipeline -------------------------------------------------------------------------


_NOT_DIGITS = re.compile(r"[^0-9]")


def pandas_iterrows(path: Path, nrows: int) -> tuple[int, float]:
    """The hand-written local baseline: read_csv + iterrows building the same property dicts
    as the benchmark config (strip/digits phone, strip/lower e-mail, strip name, int age)."""
    import pandas as pd

    t0 = time.perf_counter()
    df = pd.read_csv(path, dtype=str, nrows=nrows)
    out = []
    for _, row in df.iterrows():
        props: dict[str, Any] = {}
        phone, email, name, age = (row[c] for c in COLUMN_MAP)
        if isinstance(phone, str):
            phone = phone.strip()
            phone = ("+" if phone.startswith("+") else "") + _NOT_DIGITS.sub("", phone)
            if phone:
                props["phone"] = phone
        if isinstance(email, str) and (email := email.strip().lower()):
            props["email"] = email
        if isinstance(name, str) and (name := name.strip()):
            props["username"] = name
        if isinstance(age, str) and age.strip():
            props["age"] = int(age)
        out.append(props)
    return len(out), time.perf_counter() - t0


def fig_local(ctx: Context) -> Figure:
    fig = Figure("local")
    n = ctx.sizes.local_rows
    nb = ctx.sizes.baseline_rows
    busy0 = machine_busy_s()
    rows, took = pandas_iterrows(ctx.data.file(n), nb)
    busy1 = machine_busy_s()
    base_rate = rows / took
    foreign = (busy1 - busy0 - took) / took if busy0 is not None and busy1 is not None else None
    fig.raw["baseline"] = {"rows": rows, "seconds": round(took, 3), "rate_per_s": base_rate,
                           "foreign_cpu_share": foreign}  # fmt: skip
    fig.raw |= {"rows": n, "repeats": ctx.sizes.repeats}
    ctx.log(f"    pandas read_csv + iterrows: {base_rate:,.0f} rows/s on {rows:,} rows")
    fig.checks.append(
        Check("local: pandas iterrows (baseline)", rate_text(base_rate), note=noisy(foreign))
    )
    for fmt in ("csv", "jsonl", "parquet"):
        label = f"local: validate {fmt} vs iterrows"
        if _dm_unavailable(ctx, fig, label, ">= 10x"):
            continue
        path = ctx.data.file(n, fmt)
        runs = [ctx.dmimport("validate", [path], n) for _ in range(ctx.sizes.repeats)]
        fig.raw[fmt] = [r.as_dict() for r in runs]
        run = best(runs)
        assert run is not None
        if run.error:
            fig.checks.append(error_check(label, ">= 10x", run.error))
            continue
        fig.headline.append((f"validate, {n:,} rows {fmt}", run))
        c = ratio_check(label, run.rate, base_rate, rate_text(base_rate), 10.0)
        c.note = join_notes(f"wall-clock {run.wall_rate:,.0f} rows/s", noisy(run.foreign_share))
        fig.checks.append(mark_noisy(c, run.foreign_share, foreign))
        if fmt == "csv":
            c = Check(
                "local: validate csv rate",
                rate_text(run.rate),
                "",
                None,
                ">= 300,000 rows/s",
                verdict(run.rate >= 300_000),
            )
            fig.checks.append(mark_noisy(c, run.foreign_share))
    return fig


# -- 4. memory -----------------------------------------------------------------------------------


def _memory_pair(
    fig: Figure, what: str, big: DmRun, small: DmRun, big_n: int, small_n: int
) -> None:
    label = f"memory: {what} {big_n:,} rows"
    err = big.error or small.error
    if err:
        fig.checks.append(error_check(label, "<= 400 MB", err))
        return
    big_mb, small_mb = big.measured.maxrss_mb, small.measured.maxrss_mb
    c = Check(label, f"{big_mb:,.0f} MB", "", None, "<= 400 MB", verdict(big_mb <= 400))
    curve = big.measured.rss_samples
    if len(curve) >= 4:
        # where the peak was reached says "plateau" (bounded) or "still growing" (per row)
        q = [curve[int(len(curve) * f)][1] for f in (0.25, 0.5, 0.75)] + [curve[-1][1]]
        c.note = "RSS at 25/50/75/100% of the run: " + "/".join(f"{v:,.0f}" for v in q) + " MB"
    c.note = join_notes(c.note, big.problem)
    if big.problem:
        c.verdict = "MISS"
    fig.checks.append(c)
    ratio = big_mb / small_mb
    fig.checks.append(
        Check(
            f"memory: {what} {big_n:,} vs {small_n:,}",
            f"{big_mb:,.0f} MB",
            f"{small_mb:,.0f} MB",
            ratio,
            "<= 1.3x",
            verdict(ratio <= 1.3),
        )
    )


def fig_memory(ctx: Context) -> Figure:
    fig = Figure("memory")
    if _dm_unavailable(ctx, fig, "memory: validate / send peak RSS", "<= 400 MB, <= 1.3x"):
        return fig
    big_n, small_n = ctx.sizes.mem_validate
    big = ctx.dmimport("validate", [ctx.data.file(big_n)], big_n, sample_rss=True)
    small = ctx.dmimport("validate", [ctx.data.file(small_n)], small_n)
    fig.raw["validate"] = {str(big_n): big.as_dict(), str(small_n): small.as_dict()}
    _memory_pair(fig, "validate", big, small, big_n, small_n)

    big_n, small_n = ctx.sizes.mem_send
    big = ctx.send(big_n, sample_rss=True)
    small = ctx.send(small_n)
    fig.raw["send"] = {str(big_n): big.as_dict(), str(small_n): small.as_dict()}
    _memory_pair(fig, "send", big, small, big_n, small_n)
    return fig


# -- 5. sandbox capacity -----------------------------------------------------------------------


def fig_sandbox(ctx: Context) -> Figure:
    fig = Figure("sandbox")
    n = ctx.sizes.capacity_requests
    # a file of its own size would cost another write: take the first n rows of a bigger one;
    # one record a request (``user`` bodies): this figure is about requests
    bodies = batch_bodies(items_for(ctx.data.file(_capacity_file_rows(ctx.sizes)))[:n], 1)
    with BenchSandbox() as sb:
        r = send_http_client(sb, bodies, 16, name="16 http.client threads")
        arrived = sb.api_requests()
        customers = sb.stats().get("customers") or 0
    fig.raw = r.as_dict() | {"sandbox_requests": arrived, "sandbox_customers": customers}
    ctx.log(
        f"    sandbox: {r.request_rate:,.0f} req/s from 16 http.client threads "
        f"(server busy {fig.raw.get('server_cpu_share') or 0:.0%}, "
        f"{customers:,} customers stored)"
    )
    complete = r.ok == n and arrived >= n
    c = Check("sandbox: 16 http.client clients", rate_text(r.request_rate, "req/s"), "", None,
              ">= 2,500 req/s", verdict(r.request_rate >= 2500 and complete))  # fmt: skip
    c.note = join_notes(
        "" if complete else f"only {r.ok:,} of {n:,} answered 0",
        noisy(r.foreign_share),
    )
    fig.checks.append(mark_noisy(c, r.foreign_share))
    return fig


def _capacity_file_rows(sizes: Sizes) -> int:
    return max(sizes.capacity_requests, sizes.mem_send[0])


# -- 6. workers scaling (placeholder) -------------------------------------------------------------


def fig_workers(ctx: Context) -> Figure:
    fig = Figure("workers")
    label = f"workers: 2 vs 1 at {LATENCY_MS:g} ms"
    if "--workers" not in ctx.help_text:
        fig.raw["available"] = False
        ctx.log("    dmimport run has no --workers option: not available")
        fig.checks.append(Check(label, "not available", "", None, ">= 1.5x", "N/A",
                                "dmimport run has no --workers option yet"))  # fmt: skip
        return fig
    fig.raw["available"] = True
    if _dm_unavailable(ctx, fig, label, ">= 1.5x"):
        return fig
    n = ctx.sizes.workers_rows
    runs: dict[int, list[DmRun]] = {1: [], 2: []}
    for _ in range(ctx.sizes.repeats):
        for w in runs:
            runs[w].append(ctx.send(n, LATENCY_MS, extra=("--workers", str(w))))
    fig.raw |= {"rows": n, "latency_ms": LATENCY_MS, "concurrency_per_worker": CONCURRENCY}
    fig.raw |= {f"workers_{w}": [r.as_dict() for r in rs] for w, rs in runs.items()}
    one, two = best(runs[1]), best(runs[2])
    assert one is not None and two is not None
    err = one.error or two.error
    if err:
        fig.checks.append(error_check(label, ">= 1.5x", err))
        return fig
    fig.headline.append((f"run --workers 2, {n:,} rows, {LATENCY_MS:g} ms latency", two))
    c = ratio_check(label, two.rate, one.rate, rate_text(one.rate), 1.5)
    c.note = join_notes(one.problem, two.problem)
    if c.note:
        c.verdict = "MISS"
    c.note = join_notes(
        c.note,
        labelled("--workers 1", one.foreign_share),
        labelled("--workers 2", two.foreign_share),
    )
    fig.checks.append(mark_noisy(c, one.foreign_share, two.foreign_share))
    return fig


FIGURES: dict[str, Callable[[Context], Figure]] = {
    "send": fig_send,
    "latency": fig_latency,
    "local": fig_local,
    "memory": fig_memory,
    "sandbox": fig_sandbox,
    "workers": fig_workers,
}


def files_needed(names: list[str], s: Sizes) -> list[tuple[int, str, str]]:
    """Every data file ``(rows, format, variant)`` the chosen figures read, biggest first (one
    table generation)."""
    need: set[tuple[int, str, str]] = {(1_000, "csv", "")}
    for name in names:
        if name == "send":
            need |= {(s.send_rows, "csv", ""), (s.naive_rows, "csv", "")}
        elif name == "latency":
            need.add((s.latency_rows, "csv", ""))
        elif name == "local":
            need |= {(s.local_rows, f, "") for f in ("csv", "jsonl", "parquet")}
        elif name == "memory":
            need |= {(n, "csv", "") for n in (*s.mem_validate, *s.mem_send)}
        elif name == "sandbox":
            need.add((_capacity_file_rows(s), "csv", ""))
        elif name == "workers":
            need.add((s.workers_rows, "csv", ""))
        elif name == "ledger":
            need.add((s.send_rows, "csv", ""))
        elif name == "changed":
            need.add((s.local_rows, "csv", ""))
        elif name == "requests":
            need.add((s.requests_rows, "csv", ""))
            need |= {(n, "csv", "remarks") for n in (s.requests_rows, s.store_valid_rows) if n}
        elif name == "limits":
            need.add((s.limits_rows, "csv", ""))
        elif name == "plan":
            need.add((s.local_rows, "parquet", ""))
    return sorted(need, reverse=True)
