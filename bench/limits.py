"""The figures of the platform's documented limits (issue 13): how many requests a file takes
in batches, what bisection of row errors costs, and the rate a run keeps under the platform's
20 requests per second.

- ``requests``: a clean file of ``Sizes.requests_rows`` customer rows sent with
  ``send.batch_rows: 500`` must take at most 1.01 x ceil(N / 500) requests (the sandbox counts
  them). The same file with 0.1% of its rows carrying a property the account does not declare
  (the ``remarks`` variant: column 备注 mapped to ``remark``, which the sandbox's schema lacks
  and, with ``unknown_properties: reject``, answers 20003 for) is sent again: the importer
  cannot see those rows are bad (it does not know the account's metadata), so every batch
  holding one comes back 20003 and is bisected. The requests over the clean run's, per bad
  row, must stay under 2 x log2(500). Under ``batch_errors: reject_all`` (the sandbox's
  default: a failing batch stores nothing) and, on ``Sizes.store_valid_rows`` rows, under
  ``store_valid`` (a failing batch stores its valid rows).
- ``limits``: the same clean file against a sandbox enforcing ``rate_limit_per_s: 20`` (429
  with ``Retry-After`` past it), the importer at its default ``send.rate_limit: 20``: at least
  0.9 x the lower of 20 x batch_rows rows/s and the local CPU ceiling (the rate of the same
  run with no limit on either side, measured in the same suite run: the clean run of
  ``requests`` when it ran, else here).

Every run is checked, not only timed: each row's final status (every good row ``ok``, every
bad row errcode 20003) and the customers the sandbox stored.
"""

from __future__ import annotations

import math
from typing import Any

from .data import BATCH_ROWS, REMARK_SHARE, config_text
from .figures import (
    Check,
    Context,
    DmRun,
    Figure,
    allowed_requests,
    batches,
    error_check,
    join_notes,
    labelled,
    mark_noisy,
    rate_text,
    verdict,
)

#: the documented limit, enforced by the sandbox and kept by the importer in ``limits``
PLATFORM_RATE = 20.0
#: the target of ``limits``: this share of the lower bound
LIMITS_SHARE = 0.9
#: the bisection target: extra requests per bad row below this (2 x log2(500) = 17.9)
BISECTION_BOUND = 2 * math.log2(BATCH_ROWS)
#: the errcode of a property the account does not declare (``unknown_properties: reject``)
UNKNOWN_PROPERTY = 20003


def _bad_rows(rows: int) -> int:
    return round(rows * REMARK_SHARE)


def _counts(run: DmRun) -> tuple[int, int]:
    """(rows ok, rows that ended with errcode 20003) from the run's summary."""
    s = run.summary or {}
    ok = int((s.get("counts") or {}).get("ok", 0))
    bad = int((s.get("errcodes") or {}).get(str(UNKNOWN_PROPERTY), 0))
    return ok, bad


def _sending(run: DmRun, key: str) -> Any:
    return ((run.summary or {}).get("sending") or {}).get(key)


def clean_run(ctx: Context, rows: int) -> DmRun:
    """The unpaced send of the clean ``rows`` file (cached: ``requests`` and ``limits`` share
    it when they run in the same suite run)."""
    key = f"clean_{rows}"
    run = ctx.cache.get(key)
    if run is None:
        run, stats = ctx.dm_send(rows)
        run.stats = stats
        ctx.cache[key] = run
    assert isinstance(run, DmRun)
    return run


def fig_requests(ctx: Context) -> Figure:
    fig = Figure("requests")
    n = ctx.sizes.requests_rows
    least, allowed = batches(n), allowed_requests(n)
    label = f"requests: clean {n:,} rows, batch_rows {BATCH_ROWS}"
    fig.raw |= {"rows": n, "batch_rows": BATCH_ROWS, "batches": least, "allowed": allowed}
    if ctx.dmimport_error:
        fig.checks.append(error_check(label, f"<= {allowed:,}", ctx.dmimport_error))
        return fig

    clean = clean_run(ctx, n)
    fig.raw["clean"] = clean.as_dict()
    if clean.error:
        fig.checks.append(error_check(label, f"<= {allowed:,}", clean.error))
        return fig
    ok, _ = _counts(clean)
    arrived = clean.arrived or 0
    fine = least <= arrived <= allowed and ok == n and clean.customers == n
    fig.checks.append(
        mark_noisy(
            Check(
                label,
                f"{arrived:,} requests",
                f"ceil(N / {BATCH_ROWS}) = {least:,}",
                arrived / least,
                f"<= {allowed:,} (1.01x)",
                verdict(fine),
                join_notes(
                    f"dmimport counted {(clean.summary or {}).get('requests')} requests",
                    f"{ok:,} rows ok, {clean.customers or 0:,} customers stored",
                    f"{clean.rate:,.0f} rows/s unpaced",
                    labelled("dmimport", clean.foreign_share),
                ),
            ),
            clean.foreign_share,
        )
    )
    fig.headline.append((f"run, {n:,} rows, no rate limit", clean))

    cases = [("reject_all", n)]
    if ctx.sizes.store_valid_rows:
        cases.append(("store_valid", ctx.sizes.store_valid_rows))
    for behaviour, rows in cases:
        _bisection(ctx, fig, behaviour, rows, clean if rows == n else None)
    return fig


def _bisection(ctx: Context, fig: Figure, behaviour: str, rows: int, clean: DmRun | None) -> None:
    """The ``remarks`` file of ``rows`` rows under ``batch_errors: behaviour``: extra
    requests per bad row, over the clean run of the same size."""
    bad = _bad_rows(rows)
    label = f"requests: bisection, {bad:,} bad of {rows:,} rows, {behaviour}"
    target = f"< {BISECTION_BOUND:.1f} per bad row"
    # bisection takes more requests than the default daily budget of 10,000 holds
    config = ctx.config_file("remarks.yaml", config_text(remarks=True, send={"daily_quota": 0}))
    path = ctx.data.file(rows, variant="remarks")
    account = {"unknown_properties": "reject", "batch_errors": behaviour}
    previous, ctx.config = ctx.config, config
    try:
        run, stats = ctx.dm_send(rows, account=account, path=path, clean=False)
    finally:
        ctx.config = previous
    fig.raw[behaviour] = run.as_dict() | {"bad_rows": bad}
    fig.raw[behaviour]["sandbox_by_errcode"] = stats.get("by_errcode")
    if run.error:
        fig.checks.append(error_check(label, target, run.error))
        return
    # the clean run of the same size sets the requests a batch without a bad row costs; at
    # another size, ceil(N / 500) (what the clean run took at the full size, within 1.01x)
    base = clean.arrived if clean is not None and clean.arrived else batches(rows)
    arrived = run.arrived or 0
    extra = arrived - base
    per_row = extra / bad if bad else 0.0
    ok, refused = _counts(run)
    exact = ok == rows - bad and refused == bad and run.customers == rows - bad
    fig.raw[behaviour] |= {"extra_requests": extra, "extra_per_bad_row": round(per_row, 2),
                           "base_requests": base, "verified": exact}  # fmt: skip
    ctx.log(
        f"    {behaviour}: {arrived:,} requests ({extra:,} over {base:,}: {per_row:.1f} per "
        f"bad row), {ok:,} ok, {refused:,} x {UNKNOWN_PROPERTY}, {run.customers:,} stored"
    )
    fig.checks.append(
        mark_noisy(
            Check(
                label,
                f"{extra:,} extra requests",
                f"{bad:,} bad rows",
                None,
                target,
                verdict(per_row < BISECTION_BOUND and exact),
                join_notes(
                    f"{per_row:.2f} extra requests per bad row; {arrived:,} requests in all "
                    f"against {base:,} for the clean file",
                    f"dmimport counted {_sending(run, 'bisect_requests')} bisection requests",
                    f"{ok:,} rows ok, {refused:,} with {UNKNOWN_PROPERTY}, "
                    f"{run.customers or 0:,} customers stored"
                    + (
                        ""
                        if exact
                        else f" (expected {rows - bad:,} ok and stored, {bad:,} refused)"
                    ),
                    f"{run.rate:,.0f} rows/s",
                    labelled("dmimport", run.foreign_share),
                ),
            ),
            run.foreign_share,
        )
    )


def fig_limits(ctx: Context) -> Figure:
    fig = Figure("limits")
    n = ctx.sizes.limits_rows
    platform = PLATFORM_RATE * BATCH_ROWS
    label = f"limits: {n:,} rows at {PLATFORM_RATE:g} requests/s"
    target = f">= {LIMITS_SHARE:g}x min({platform:,.0f}, CPU ceiling)"
    fig.raw |= {"rows": n, "rate_limit": PLATFORM_RATE, "batch_rows": BATCH_ROWS,
                "platform_bound": platform}  # fmt: skip
    if ctx.dmimport_error:
        fig.checks.append(error_check(label, target, ctx.dmimport_error))
        return fig
    config = ctx.config_file("limits.yaml", config_text(send={"rate_limit": PLATFORM_RATE}))
    previous, ctx.config = ctx.config, config
    try:
        run, stats = ctx.dm_send(n, account={"rate_limit_per_s": PLATFORM_RATE}, clean=False)
    finally:
        ctx.config = previous
    ceiling = clean_run(ctx, n)
    fig.raw["paced"] = run.as_dict()
    fig.raw["paced"]["sandbox_429"] = _status_count(stats, "429")
    fig.raw["unpaced"] = ceiling.as_dict()
    if run.error or ceiling.error:
        fig.checks.append(error_check(label, target, run.error or ceiling.error))
        return fig
    bound = min(platform, ceiling.rate)
    which = f"{PLATFORM_RATE:g} x {BATCH_ROWS}" if platform <= ceiling.rate else "CPU ceiling"
    ok, _ = _counts(run)
    arrived = run.arrived or 0
    too_many = _status_count(stats, "429")
    cpu_us = run.measured.cpu_s / n * 1e6 if n else 0.0
    fig.raw |= {"bound": bound, "bound_is": which, "cpu_us_per_row": round(cpu_us, 2)}
    fig.headline.append((f"run, {n:,} rows, rate limit {PLATFORM_RATE:g}/s", run))
    c = Check(
        label,
        rate_text(run.rate),
        f"{bound:,.0f} ({which})",
        run.rate / bound if bound else 0.0,
        target,
        verdict(run.rate >= LIMITS_SHARE * bound and ok == n and run.customers == n),
        join_notes(
            f"{cpu_us:,.1f} us CPU/row of the dmimport process "
            f"({run.measured.cpu_s:,.1f} s CPU over {run.measured.wall_s:,.1f} s)",
            f"{arrived:,} requests ({too_many:,} answered 429), "
            f"{arrived / run.measured.wall_s if run.measured.wall_s else 0:,.1f} requests/s "
            "over the whole process",
            f"CPU ceiling (no limit either side) {ceiling.rate:,.0f} rows/s",
            f"{ok:,} rows ok, {run.customers or 0:,} customers stored",
            labelled("dmimport", run.foreign_share),
            labelled("ceiling", ceiling.foreign_share),
        ),
    )
    fig.checks.append(mark_noisy(c, run.foreign_share, ceiling.foreign_share))
    return fig


def _status_count(stats: dict[str, Any], status: str) -> int:
    """Answers with HTTP ``status`` the sandbox gave (its ``by_http_status``, or a per-day
    ``too_many`` count when it keeps one)."""
    by_status = stats.get("by_http_status") or {}
    return int(by_status.get(status, 0))
