"""The lake-side plan figure (issue 15): plan throughput of Spark and Dask next to the
single-process ``dmimport validate`` of the same 1,000,000 Parquet rows, and the state table's
bytes per identity after a plan and a commit.

Each engine runs in a process of its own (``bench/lakeplan.py``): its start-up is timed apart
from the plan, and its JVM or worker processes end with it. The single-process plan
(``importer.lake.plan_table``, the engines' reference) is measured the same way.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from .figures import (
    Check,
    Context,
    Figure,
    best,
    error_check,
    join_notes,
    mark_noisy,
    noisy,
)
from .proc import machine_busy_s, run_measured

#: engine -> (what the table calls it, the modules it needs)
ENGINES = {
    "spark": ("spark local[2]", ("pyspark", "importer.spark")),
    "dask": ("dask LocalCluster(2)", ("distributed", "dask.dataframe", "importer.dask")),
    "table": ("plan_table (1 process)", ("importer.lake",)),
}
STATE_TARGET = 32.0  # bytes per identity on disk
ENGINE_TIMEOUT_S = 600.0


def _missing(modules: tuple[str, ...]) -> str | None:
    for name in modules:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except ImportError:  # its parent package is missing
            return name
    return None


def _run(ctx: Context, engine: str, config: Path, data: Path) -> tuple[dict[str, Any], Any]:
    """One ``bench.lakeplan`` process: its JSON (or ``{"error": ...}``) and its measurement."""
    work = Path(tempfile.mkdtemp(prefix=f"dmbench-plan-{engine}-"))
    busy0 = machine_busy_s()
    try:
        m = run_measured(
            [sys.executable, "-m", "bench.lakeplan", engine, str(config), str(data), str(work)],
            timeout=ENGINE_TIMEOUT_S,
            cwd=Path(__file__).resolve().parent.parent,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    busy1 = machine_busy_s()
    lines = m.stdout.strip().splitlines()
    try:  # the last line (an engine may print before it)
        got = json.loads(lines[-1]) if m.returncode == 0 and lines else None
    except ValueError:
        got = None
    if not isinstance(got, dict):
        return {"error": m.error_line()}, m
    if busy0 is not None and busy1 is not None and m.wall_s > 0:
        # the child counts its engine's processes (``cpu_s``); what the rest of the machine
        # used meanwhile says whether the figure is noisy
        ours = max(m.cpu_s, float(got.get("cpu_s", 0.0)))
        got["foreign_cpu_share"] = round(max(0.0, busy1 - busy0 - ours) / m.wall_s, 3)
    return got, m


def fig_plan(ctx: Context) -> Figure:
    fig = Figure("plan")
    n = ctx.sizes.local_rows
    data = ctx.data.file(n, "parquet")
    fig.raw |= {"rows": n, "data": data.name}
    base_label = f"plan: validate {n:,} parquet rows (1 process)"
    if ctx.dmimport_error:
        fig.checks.append(error_check(base_label, "", ctx.dmimport_error))
        return fig
    runs = [ctx.dmimport("validate", [data], n) for _ in range(ctx.sizes.repeats)]
    fig.raw["validate"] = [r.as_dict() for r in runs]
    validate = best(runs)
    if validate is None or validate.error:
        fig.checks.append(error_check(base_label, "", validate.error if validate else "no run"))
        return fig
    base = validate.rate
    fig.checks.append(Check(base_label, f"{base:,.0f} rows/s", note=noisy(validate.foreign_share)))
    for engine, (label, needs) in ENGINES.items():
        _engine(ctx, fig, engine, label, needs, data, n, base)
    return fig


def _engine(
    ctx: Context,
    fig: Figure,
    engine: str,
    label: str,
    needs: tuple[str, ...],
    data: Path,
    n: int,
    base: float,
) -> None:
    plan_label = f"plan: {label} vs validate"
    state_label = f"state: bytes per identity ({label})"
    missing = _missing(needs)
    if missing:
        why = f"{missing} is not installed (pip install 'dmimport[{engine}]')"
        ctx.log(f"    {label}: {why}")
        fig.raw[engine] = {"available": False, "missing": missing}
        fig.checks.append(Check(plan_label, "not available", "", None, "", "N/A", why))
        return
    got, m = _run(ctx, engine, ctx.config, data)
    fig.raw[engine] = got | {"wall_s": round(m.wall_s, 2), "driver_cpu_s": round(m.cpu_s, 2)}
    if "error" in got:
        ctx.log(f"    {label}: {got['error']}")
        fig.checks.append(error_check(plan_label, "", got["error"]))
        fig.checks.append(error_check(state_label, f"<= {STATE_TARGET:g}", got["error"]))
        return
    plan, replan = got["plan"], got["replan"]
    rate = plan["rows"] / got["plan_s"] if got["plan_s"] else 0.0
    rerate = replan["rows"] / got["replan_s"] if got["replan_s"] else 0.0
    ctx.log(
        f"    {label}: start {got['start_s']:.1f} s, plan {got['plan_s']:.1f} s "
        f"({rate:,.0f} rows/s, {plan['to_send']:,} to send), commit {got['commit_s']:.1f} s, "
        f"re-plan {got['replan_s']:.1f} s ({rerate:,.0f} rows/s, {replan['to_send']:,} to send)"
    )
    problems = []
    if plan["rows"] != n:
        problems.append(f"the plan counted {plan['rows']:,} rows, expected {n:,}")
    if replan["to_send"] != 0:
        problems.append(f"the re-plan after the commit has {replan['to_send']:,} rows to send")
    c = Check(
        plan_label,
        f"{rate:,.0f} rows/s",
        f"{base:,.0f} rows/s",
        rate / base if base else None,
        "",
        "MISS" if problems else "",
        join_notes(
            *problems,
            f"start-up {got['start_s']:.1f} s (not in the rate)",
            f"plan {got['plan_s']:.1f} s of {plan['rows']:,} rows, no state: "
            f"{plan['to_send']:,} to send",
            f"re-plan against the committed state {got['replan_s']:.1f} s = {rerate:,.0f} rows/s"
            f" ({rerate / base:.2f}x), {replan['unchanged']:,} unchanged",
            f"commit of {got['commit']['delivered']:,} identities {got['commit_s']:.1f} s",
            f"{float(got.get('cpu_s', 0.0)) / n * 1e6:,.0f} us CPU/row in all (start, plan, "
            "commit, re-plan; the engine's JVM or worker processes included)",
            noisy(got.get("foreign_cpu_share")),
        ),
    )
    fig.checks.append(mark_noisy(c, got.get("foreign_cpu_share")))
    identities = got["commit"]["state_rows"]
    per = got["state_bytes"] / identities if identities else 0.0
    ok = identities > 0 and per <= STATE_TARGET
    fig.checks.append(
        Check(
            state_label,
            f"{per:.1f} B",
            "",
            None,
            f"<= {STATE_TARGET:g} B",
            "PASS" if ok else "MISS",
            f"{got['state_bytes']:,} bytes for {identities:,} identities",
        )
    )
