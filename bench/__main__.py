"""``python -m bench [--quick] [--only NAME[,NAME]]``: run the suite, print the table, write
bench/results.json."""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .data import Dataset
from .durable import fig_changed, fig_ledger
from .figures import (
    FIGURES,
    NOISY_SHARE,
    QUICK,
    Check,
    Context,
    Figure,
    Sizes,
    files_needed,
)
from .lake import fig_plan
from .limits import fig_limits, fig_requests
from .proc import machine_busy_s

# the durable-runs figures (issue 5), the platform's limits (issue 13) and the lake-side plan
# (issue 15) live in their own modules
FIGURES.update(
    {"ledger": fig_ledger, "changed": fig_changed, "requests": fig_requests, "limits": fig_limits,
     "plan": fig_plan}
)  # fmt: skip

RESULTS = Path(__file__).resolve().parent / "results.json"


def log(message: str) -> None:
    print(message, flush=True)


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem_gb = round(pages / 2**30, 1)
    except (OSError, ValueError):
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "git_commit": commit or None,
    }


def foreign_load(seconds: float = 1.0) -> float | None:
    """Cores' worth of CPU other programs use, sampled over ``seconds`` while we sleep."""
    busy0 = machine_busy_s()
    time.sleep(seconds)
    busy1 = machine_busy_s()
    if busy0 is None or busy1 is None:
        return None
    return round(max(0.0, busy1 - busy0) / seconds, 3)


def wait_quiet(limit: float) -> float:
    """Sleep until other programs use under ``NOISY_SHARE`` of a core, at most ``limit`` s."""
    t0 = time.perf_counter()
    while True:
        load = foreign_load(2.0)
        waited = time.perf_counter() - t0
        if load is None or load <= NOISY_SHARE:
            break
        if waited >= limit:
            log(f"    machine still busy ({load:.0%} of a core) after {waited:.0f} s: going on")
            break
    if waited > 2.5:
        log(f"    waited {waited:.0f} s for a quiet machine")
    return waited


def table(figures: list[Figure]) -> str:
    head = ("figure", "value", "baseline / ceiling", "ratio", "target", "result")
    rows = [head]
    notes = []
    for fig in figures:
        for c in fig.checks:
            ratio = f"{c.ratio:.2f}x" if c.ratio is not None else ""
            rows.append((c.figure, c.value, c.base, ratio, c.target, c.verdict))
            if c.note:
                notes.append(f"- {c.figure}: {c.note}")
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]

    def line(r: tuple[str, ...]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) + " |"

    out = [line(rows[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows[1:]]
    if any(c.verdict.endswith("*") for f in figures for c in f.checks):
        notes.insert(
            0,
            "* measured while other programs used over 15% of a core: not a reliable verdict, "
            "rerun on a quiet machine (--wait-quiet)",
        )
    if notes:
        out += ["", *notes]
    return "\n".join(out)


def user_table(figures: list[Figure]) -> str:
    """The headline dmimport runs as a user plans with them: rows per hour, per core."""
    head = ("dmimport", "rows/s", "rows/hour", "CPU us/row", "rows/hour per core")
    rows = [head]
    for fig in figures:
        for label, run in fig.headline:
            cpu = run.measured.cpu_s
            per_core = run.rows / cpu * 3600 if cpu > 0 else 0.0
            rows.append(
                (
                    label,
                    f"{run.rate:,.0f}",
                    f"{run.rate * 3600 / 1e6:,.1f} M",
                    f"{cpu / run.rows * 1e6:,.1f}" if run.rows else "",
                    f"{per_core / 1e6:,.1f} M",
                )
            )
    if len(rows) == 1:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]

    def line(r: tuple[str, ...]) -> str:
        cells = [r[0].ljust(widths[0])] + [
            v.rjust(w) for v, w in zip(r[1:], widths[1:], strict=True)
        ]
        return "| " + " | ".join(cells) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(rows[0]), sep, *(line(r) for r in rows[1:])])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the dmimport benchmark suite (docs/benchmarks.md).",
    )
    p.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    p.add_argument(
        "--only",
        metavar="NAME[,NAME]",
        help=f"run only these figures: {', '.join(FIGURES)}",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each figure, wait up to this long for other programs to leave the CPU "
        "(for shared machines; default: do not wait)",
    )
    p.add_argument("--output", type=Path, default=RESULTS, help="where results go (JSON)")
    args = p.parse_args(argv)
    names = list(FIGURES)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in FIGURES]
        if unknown:
            p.error(f"unknown figure(s) {', '.join(unknown)}: choose from {', '.join(FIGURES)}")
    args.names = names
    return args


def run_figures(args: argparse.Namespace, ctx: Context, figures: list[Figure]) -> float:
    """Each chosen figure in turn, appended to ``figures``; the seconds spent waiting."""
    waited = 0.0
    for name in args.names:
        log(f"[{name}]")
        if args.wait_quiet > 0:
            waited += wait_quiet(args.wait_quiet)
        t0 = time.perf_counter()
        try:
            fig = FIGURES[name](ctx)
        except Exception as exc:  # a broken figure is reported, the others still run
            fig = Figure(name)
            fig.raw["error"] = f"{type(exc).__name__}: {exc}"
            log(f"    failed: {fig.raw['error']}")
            fig.checks.append(Check(name, "-", "", None, "", "ERROR", fig.raw["error"]))
        fig.seconds = time.perf_counter() - t0
        log(f"    ({fig.seconds:.1f} s)")
        figures.append(fig)
    return waited


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    sizes: Sizes = QUICK if args.quick else Sizes()
    info = machine()
    log(
        f"dmimport benchmarks ({'quick' if args.quick else 'full'}): {', '.join(args.names)}\n"
        f"machine: {info['cores']} cores, {info['cpu']}, Python {info['python']}, "
        f"{info['platform']}"
    )

    t0 = time.perf_counter()
    dataset = Dataset()
    for rows, fmt, variant in files_needed(args.names, sizes):
        dataset.file(rows, fmt, variant)
    dataset.release()
    gc.collect()
    data_s = time.perf_counter() - t0
    log(f"data: ready in {data_s:.1f} s ({dataset.generated_s:.1f} s generating) in {dataset.root}")

    load = foreign_load()
    if load is not None and load > NOISY_SHARE:
        log(
            f"warning: other programs are using {load:.0%} of a core right now; figures taken "
            "while the machine is shared are flagged in the notes"
        )

    ctx = Context(sizes, dataset, log)
    ctx.preflight()
    if ctx.dmimport_error:
        log(f"dmimport does not run yet ({ctx.dmimport_error}): baselines only")

    figures: list[Figure] = []
    waited = 0.0
    try:
        waited = run_figures(args, ctx, figures)
    finally:
        ctx.close()

    total = time.perf_counter() - t_start
    print()
    print(table(figures))
    users = user_table(figures)
    if users:
        print()
        print(users)
    print(f"\ntotal runtime {total:.0f} s ({total / 60:.1f} min)", end="")
    print(f", of which {waited:.0f} s waiting for a quiet machine" if waited else "")

    results = {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "machine": info,
        "sizes": {k: v for k, v in vars(sizes).items()},
        "data_s": round(data_s, 1),
        "foreign_load_at_start": load,
        "dmimport_error": ctx.dmimport_error,
        "total_s": round(total, 1),
        "waited_for_quiet_s": round(waited, 1),
        "figures": {f.name: f.as_dict() for f in figures},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"results: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
