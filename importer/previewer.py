"""Show what a run would send, without sending (``dmimport preview CONFIG FILE``).

``preview`` reads the first ``n`` records of a file through the same loader and mapper a run
uses and returns, for each, the local verdict and the exact JSON body a run would send (the
mapper's bytes, decoded). It then scans the whole file with the mapper's fast path (no bodies)
for the plan: how many rows would be sent, and how many would be rejected locally, by errcode.

Nothing here touches the network or reads the SECRET, so it runs before any credentials exist.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config, check_columns
from .duplicates import duplicate_reason
from .errcodes import ErrCode
from .job import load_job
from .ledger import SKIP_DUPLICATE, Duplicates, DuplicateSpill, place
from .load import BadRecord, Batch, Source, frame_source, iter_batches, open_source
from .map import Mapper
from .quota import QuotaPlan, RowCount, plan_for, valid_groups
from .ready import InputIncomplete, check_inputs, previous_input

__all__ = ["Plan", "Preview", "PreviewRow", "preview", "render_preview"]


@dataclass
class PreviewRow:
    """One record of the file: its local verdict and the body a run would send."""

    line: int
    #: 'ok' (passes the local checks, would be sent), 'rejected', or 'skipped_duplicate'
    #: (``job.duplicates`` sends another row of its identity instead)
    verdict: str
    errcode: int | None  # the errcode the platform would answer; None for a malformed record
    reason: str | None
    body: str | None  # the exact JSON body, for 'ok' rows


@dataclass
class Plan:
    """What a run over the file would do, by local checks alone."""

    rows: int
    valid: int
    rejected_by_errcode: dict[str, int]
    malformed: int  # records the loader could not read (wrong field count, bad JSON, ...)
    #: False when only the previewed rows were looked at (``scan_all=False``)
    scanned_all: bool = True
    #: valid rows ``job.duplicates`` holds back (not in ``valid``): skipped, or rejected
    #: under ``reject`` (``duplicate_policy``, set when there are some); only with
    #: ``scanned_all``
    duplicates: int = 0
    duplicate_policy: str = ""

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_errcode.values())


@dataclass
class Preview:
    rows: list[PreviewRow]
    plan: Plan
    source: str
    job: str = ""
    kind: str = ""
    #: the daily quota's plan for a run over the file (``importer.quota``); None with
    #: ``send.daily_quota: 0`` or ``scan_all=False``
    quota: QuotaPlan | None = None
    #: why a run would refuse the file as incomplete (exit 7, ``importer.ready``; judged
    #: without waiting for ``stable_for_s``); None when it would not
    incomplete: str | None = None


def preview(
    config: Config | str | Path, file: str | Path | Any, *, n: int = 20, scan_all: bool = True
) -> Preview:
    """The first ``n`` records of ``file`` as exact bodies and verdicts, and the plan.

    Raises ``ConfigError`` for a bad config or a file lacking a column the config reads, and
    ``LoadError`` for a file that cannot be read. Sends nothing; needs no SECRET.
    """
    cfg = config if isinstance(config, Config) else load_job(config)
    options = cfg.input
    if isinstance(file, str | os.PathLike):
        path = Path(file)
        source = open_source(path, options)
    else:  # in memory (``importer.source``)
        source = frame_source(file)
        path = source.path
    if source.has_header_columns:
        check_columns(cfg, str(path), source.columns)
    incomplete = None
    try:
        check_inputs(cfg, [source], previous=previous_input(cfg), wait=False)
    except InputIncomplete as exc:
        incomplete = "; ".join(exc.problems)
    mapper = Mapper(cfg)
    shown: list[PreviewRow] = []
    event_ids: dict[int, str | None] = {}  # of the shown rows, for a duplicate's reason
    valid = malformed = 0
    rejected: Counter[str] = Counter()
    groups: Counter[str] = Counter()  # valid rows per event name, for the quota's plan
    batches = iter_batches(source, options, cfg.source_columns())
    job = cfg.job
    spill = None
    if scan_all and job.duplicate_policy != "keep_all":
        spill = DuplicateSpill(job.kind, job.duplicate_policy, job.event_name)
    try:
        for batch in batches:
            if len(shown) < n:
                shown += _first_rows(mapper, batch, n - len(shown), event_ids)
            if not scan_all:
                if len(shown) >= n:
                    break
                continue
            mapped = mapper.map(batch, build_bodies=False)
            if spill is not None:
                spill.add(mapped, 0)
            valid += int(mapped.ok.sum())
            groups.update(valid_groups(cfg, mapped))
            codes, counts = np.unique(mapped.errcode[mapped.errcode != 0], return_counts=True)
            rejected.update(dict(zip(map(str, codes.tolist()), counts.tolist(), strict=True)))
            malformed += len(batch.bad)
    except BaseException:
        if spill is not None:
            spill.close()
        raise
    finally:
        # the reader stops (and its threads with it) here, also when this stopped early
        close = getattr(batches, "close", None)
        if close is not None:
            close()
    duplicates = spill.resolve() if spill is not None else None
    got = _finish(cfg, path, source, mapper, shown, event_ids, duplicates, scan_all,
                  (valid, rejected, malformed, groups))  # fmt: skip
    got.incomplete = incomplete
    return got


def _finish(
    cfg: Config,
    path: Path,
    source: Source,
    mapper: Mapper,
    shown: list[PreviewRow],
    event_ids: dict[int, str | None],
    duplicates: Duplicates | None,
    scan_all: bool,
    scanned: tuple[int, Counter[str], int, Counter[str]],
) -> Preview:
    """The preview once the file was read: the duplicates' verdicts on the shown rows, the
    plan and the quota's plan."""
    valid, rejected, malformed, groups = scanned
    held = 0
    if duplicates is not None and duplicates.found:
        held = duplicates.found
        valid -= held
        groups.subtract(duplicates.excluded)
        _mark_duplicates(cfg, duplicates, shown, event_ids)
    if not scan_all:
        valid = sum(1 for r in shown if r.verdict == "ok")
        rejected = Counter(str(r.errcode) for r in shown if r.errcode is not None)
        malformed = sum(1 for r in shown if r.verdict == "rejected" and r.errcode is None)
    total = valid + sum(rejected.values()) + malformed + held
    plan = Plan(
        total, valid, dict(sorted(rejected.items())), malformed, scanned_all=scan_all,
        duplicates=held, duplicate_policy=cfg.job.duplicate_policy if held else "",
    )  # fmt: skip
    count = RowCount({k: v for k, v in groups.items() if v > 0})
    quota = (
        plan_for(cfg, [source], mapper=mapper, valid=count, duplicates=duplicates)
        if scan_all
        else None
    )
    return Preview(shown, plan, str(path), cfg.job_name, cfg.job.kind, quota)


def _mark_duplicates(
    cfg: Config,
    duplicates: Duplicates,
    shown: list[PreviewRow],
    event_ids: dict[int, str | None],
) -> None:
    """The shown rows ``job.duplicates`` holds back: ``skipped_duplicate`` or ``rejected``,
    with the reason a run gives them."""
    ok = [r for r in shown if r.verdict == "ok"]
    lines = np.array([r.line for r in ok], dtype=np.int64)
    codes, refs = duplicates.verdicts(0, lines)
    for row, code, ref in zip(ok, codes.tolist(), refs.tolist(), strict=True):
        if code == 0:
            continue
        where = f"line {place(ref)[1]}"
        row.reason = duplicate_reason(
            code, duplicates.policy, cfg.job.kind, where, event_ids.get(row.line)
        )
        row.verdict = "skipped_duplicate" if code == SKIP_DUPLICATE else "rejected"
        row.body = None


def _first_rows(
    mapper: Mapper, batch: Batch, k: int, event_ids: dict[int, str | None] | None = None
) -> list[PreviewRow]:
    """The first ``k`` records of ``batch`` in file order, good rows mapped with bodies
    (``event_ids``: the good rows' event ids go there, by line)."""
    records: list[tuple[int, int, BadRecord | None]] = [
        (int(line), i, None) for i, line in enumerate(batch.lines.tolist())
    ]
    records += [(bad.line, -1, bad) for bad in batch.bad]
    records.sort(key=lambda r: r[0])
    records = records[:k]
    good = sum(1 for _, _, bad in records if bad is None)  # a prefix of the table, in order
    mapped = mapper.map_table(batch.table.slice(0, good), batch.lines[:good], build_bodies=True)
    out: list[PreviewRow] = []
    for line, i, bad in records:
        if bad is not None:
            out.append(PreviewRow(line, "rejected", None, bad.reason, None))
            continue
        code = int(mapped.errcode[i])
        if event_ids is not None and mapped.event_ids is not None:
            event_ids[line] = mapped.event_ids[i].as_py()
        if code == 0:
            body = mapper.body(mapped, i)
            assert body is not None
            out.append(PreviewRow(line, "ok", None, None, body.decode("utf-8")))
        else:
            out.append(PreviewRow(line, "rejected", code, mapped.reason[i], None))
    return out


def render_preview(p: Preview) -> str:
    """Human text: one line per previewed record, then the plan as an aligned table."""
    who = f"job {p.job} ({p.kind}), " if p.job else ""
    out = [f"dmimport preview: {who}{p.source} -- nothing is sent", ""]
    if p.incomplete:
        out[2:2] = [f"warning: a run would refuse it (exit 7): {p.incomplete}", ""]
    width = max((len(f"line {r.line}") for r in p.rows), default=0)
    for r in p.rows:
        if r.verdict == "ok":
            detail = r.body or ""
        else:
            detail = f"{r.errcode} {r.reason}" if r.errcode is not None else f"{r.reason}"
        out.append(f"{f'line {r.line}':<{width}}  {r.verdict:<8}  {detail}")
    if not p.rows:
        out.append("(no records)")
    out.append("")
    out.extend(_plan_lines(p.plan))
    if p.quota is not None:
        out.append("")
        out.extend(p.quota.lines())
        if not p.quota.fits:
            out.append(
                "a run would stop before sending (exit 2) unless --within-quota; "
                f"the quota resets at {p.quota.resets()}"
            )
    return "\n".join(out)


def _plan_lines(plan: Plan) -> Iterator[str]:
    scope = "the whole file" if plan.scanned_all else f"the first {plan.rows} records only"
    yield f"plan for {scope} (local checks; the platform may still refuse rows):"
    table: list[tuple[str, int]] = [
        ("rows", plan.rows),
        ("valid (would be sent)", plan.valid),
        ("rejected locally", plan.rejected),
    ]
    for code, count in plan.rejected_by_errcode.items():
        member = ErrCode.lookup(int(code))
        table.append((f"  {code} {member.description if member else ''}".rstrip(), count))
    table.append(("malformed records", plan.malformed))
    if plan.duplicates:
        what = "rejected" if plan.duplicate_policy == "reject" else "skipped"
        table.append(
            (f"duplicates {what} (job.duplicates: {plan.duplicate_policy})", plan.duplicates)
        )
    width = max(len(label) for label, _ in table)
    digits = max(len(f"{count:,}") for _, count in table)
    for label, count in table:
        yield f"  {label:<{width}}  {count:>{digits},}"
