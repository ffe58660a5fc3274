"""The Python API: what ``import importer`` offers, and what the ``dmimport`` commands call.

Every entry point takes the job's config as a ``Config`` or as the path of its YAML file, with
optional ``overrides`` (dotted keys, as the command line's options: ``{"send.concurrency": 4}``)
checked and reported exactly as a file's keys are (``ConfigError``).

Nothing is written into the current folder unless you say so (docs/python-api.md):

- a run's reports go to ``report_dir``, else to the config's ``report.dir`` when the config
  (its file, its dict or an override) sets it; with neither, the run is refused with a
  ``ConfigError`` before any file is read or any row is sent. The ``dmimport`` command keeps
  its documented default (``reports`` in the working folder) by setting ``report.dir``.
- the job's ledger is ``ledger``, else ``state.path``, else
  ``<parent of report.dir>/state/state.db`` when the config sets ``report.dir`` (never in
  ``report_dir``: runs with different report folders share the job's ledger); with none of
  them, a run that would use a ledger is refused the same way
  (or set ``state.enabled: false``).

``run`` may be called from inside a running event loop (Jupyter, an async program): the job then
runs on a worker thread, and ``run`` returns when it is over. ``arun`` is the same as an
awaitable, which leaves the loop free meanwhile.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .config import Config
from .errors import (
    ConfigError,
    ConfigProblem,
    LedgerError,
    LoadError,
    NothingToRetry,
    UsageError,
)
from .job import load_job, parse_job
from .ledger import RunRecord, open_job_ledger, rows_to_retry, rows_to_retry_from_run
from .load import Source, frame_source
from .load.frames import as_inputs
from .notify import notify_error, notify_run
from .pipeline import ProgressFn, Run
from .previewer import Preview
from .previewer import preview as _preview
from .quota import QuotaToday, requests_today
from .readback import VerifySummary, verify_after_run, verify_ready, verify_run
from .report import (
    RESULT_SUFFIXES,
    RunSummary,
    changed_since_run,
    metrics_file_problem,
    read_results,
)
from .secrets import redact

__all__ = [
    "arun",
    "list_runs",
    "load_config",
    "preview",
    "quota_today",
    "retry",
    "run",
    "source",
    "validate",
    "verify",
]

log = logging.getLogger("importer")

ConfigLike = Config | str | Path
#: the input files: one path, or a list of them (files, folders or glob patterns); or data in
#: memory: a pandas DataFrame, a ``pyarrow.Table``, an iterable of ``pyarrow.RecordBatch``, or
#: the ``Source`` of one of them that ``source`` names
FilesLike = str | os.PathLike[str] | Source | Any
T = TypeVar("T")


def source(data: Any, name: str | None = None) -> Source:
    """In-memory ``data`` as an input of ``run``, ``validate`` and ``preview``, named ``name``
    in results, rejects and messages (default ``<DataFrame>``, ``<Table>``,
    ``<RecordBatches>``). ``data``: a pandas DataFrame (its index is not a column), a
    ``pyarrow.Table``, or an iterable of ``pyarrow.RecordBatch`` (a generator is read lazily,
    once). Its columns are read as a Parquet file's (docs/input-files.md); a row's ``line`` is
    its positional row number plus one. Passing the data itself, unnamed, works too."""
    return frame_source(data, name)


def load_config(config: ConfigLike, *, overrides: dict[str, Any] | None = None) -> Config:
    """The job config ``config`` (a ``Config``, or the path of a YAML file) with ``overrides``
    applied, validated for a run: every problem in one ``ConfigError`` (with the file's line
    numbers for a path). A ``Config`` without overrides is returned as it is."""
    cfg, _ = _resolve(config, overrides)
    return cfg


def run(
    config: ConfigLike,
    files: FilesLike,
    *,
    overrides: dict[str, Any] | None = None,
    report_dir: str | Path | None = None,
    ledger: str | Path | None = None,
    dry_run: bool = False,
    changed_only: bool | None = None,
    full: bool = False,
    max_reject_rate: float | None = None,
    metrics_file: str | Path | None = None,
    progress: ProgressFn | None = None,
    handle_signals: bool = False,
    within_quota: bool = False,
    notify: bool = True,
    approve: str | Path | None = None,
    ignore_guard: bool = False,
) -> RunSummary:
    """Import ``files`` (a file, folder or glob pattern, or a list of them; or data in memory:
    a pandas DataFrame, a ``pyarrow.Table``, an iterable of ``pyarrow.RecordBatch``, or the
    ``source`` that names one, read as a Parquet file and never resumed) with the job
    ``config`` (a ``Config`` or the path of its YAML file); the run's summary
    (``summary.exit_code`` is what ``dmimport run`` would exit with).

    ``report_dir``: where the run's report folder goes (else ``report.dir``); ``ledger``: the
    job's ledger (else ``state.path``, else ``<parent of report.dir>/state/state.db``); see
    the module's docstring for what happens when neither is said. ``dry_run``: local checks
    only, nothing sent. ``changed_only``: send only rows whose values changed since they were
    last delivered (default: ``state.mode``); ``full``: send every row again (no resume, no
    skipping).
    ``max_reject_rate``: the share of rejected rows tolerated before the run counts as failed.
    ``metrics_file``: Prometheus metrics written there. ``progress``: called with running counts
    (the rows answered of the total: ``importer.progress``).
    ``handle_signals`` (main thread only, what the command line does): SIGINT and SIGTERM stop
    the run cleanly, its report written. ``within_quota``: a run whose plan does not fit in
    what is left of ``send.daily_quota`` today sends what fits and leaves the rest ``not_sent``
    (exit code 1) for the next run to resume, instead of stopping before it sends (docs/quota.md).
    ``notify``: tell the config's ``notify:`` webhooks once the report is written, or when the
    run stops with an error (a dry run tells nobody; docs/notify.md). A webhook that fails is a
    warning in the log; it changes neither the summary nor what is raised.
    ``approve``: the plan file of a run the blast-radius gate (``guard:``) held, to send
    that very run; ``ignore_guard``: never hold this run (docs/guards.md).

    Raises ``ConfigError`` (nothing sent) for a bad config or override, missing columns, a
    missing SECRET or no place for the reports or the ledger; ``LoadError`` for an input file
    that cannot be read at all; ``LockedError`` when another run of the job is going;
    ``UsageError`` for no files, a ``max_reject_rate`` outside 0..1, or a ``metrics_file``
    that could not be written (as the command line refuses its options); ``QuotaError`` (exit
    code 2, nothing sent) when the run's plan does not fit in the daily quota and not
    ``within_quota``; ``HeldError`` (exit code 8, nothing sent, ``.plan`` the plan file) when
    ``guard:`` holds the run. ``full`` wins over ``changed_only``.
    """
    inputs = _file_list(files)
    if not inputs:
        raise UsageError("no input files: files is empty")
    if max_reject_rate is not None and not 0.0 <= max_reject_rate <= 1.0:
        raise UsageError(f"max_reject_rate must be between 0 and 1, got {max_reject_rate}")
    if metrics_file is not None and (problem := metrics_file_problem(Path(metrics_file))):
        raise UsageError(f"metrics file {metrics_file} {problem}")
    cfg, config_path = _resolve(config, overrides)
    keeps_ledger = not dry_run and cfg.state.enabled and not cfg.target.debug
    cfg = _placed(cfg, config_path, report_dir, ledger, needs_ledger=keeps_ledger)
    verifies = bool(cfg.verify.sample) and not dry_run and not cfg.target.debug
    root = Path(report_dir) if report_dir else Path(cfg.report.dir)

    def ready() -> Config:
        if verifies:  # the Open API's keys, before a row is sent (the webhooks are told)
            verify_ready(cfg)
        return cfg

    return _notified(
        cfg,
        lambda: Run(
            ready(),
            inputs,
            dry_run=dry_run,
            report_dir=report_dir,
            progress=progress,
            config_path=config_path,
            full=full,
            changed_only=changed_only,
            max_reject_rate=max_reject_rate,
            metrics_file=metrics_file,
            handle_signals=handle_signals,
            within_quota=within_quota,
            approve=approve,
            ignore_guard=ignore_guard,
        ),
        notify and not dry_run,
        (lambda summary: verify_after_run(cfg, summary, root)) if verifies else None,
    )


async def arun(
    config: ConfigLike,
    files: FilesLike,
    *,
    overrides: dict[str, Any] | None = None,
    report_dir: str | Path | None = None,
    ledger: str | Path | None = None,
    dry_run: bool = False,
    changed_only: bool | None = None,
    full: bool = False,
    max_reject_rate: float | None = None,
    metrics_file: str | Path | None = None,
    progress: ProgressFn | None = None,
    within_quota: bool = False,
    notify: bool = True,
    approve: str | Path | None = None,
    ignore_guard: bool = False,
) -> RunSummary:
    """``run`` as an awaitable: the job runs on a worker thread while the event loop goes on.
    Same arguments and errors as ``run``. Cancelling the await does not stop the job (it ends
    as ``run`` would); ``progress`` is called from the worker thread."""
    return await asyncio.to_thread(
        run,
        config,
        files,
        overrides=overrides,
        report_dir=report_dir,
        ledger=ledger,
        dry_run=dry_run,
        changed_only=changed_only,
        full=full,
        max_reject_rate=max_reject_rate,
        metrics_file=metrics_file,
        progress=progress,
        within_quota=within_quota,
        notify=notify,
        approve=approve,
        ignore_guard=ignore_guard,
    )


def validate(
    config: ConfigLike,
    files: FilesLike,
    *,
    overrides: dict[str, Any] | None = None,
    report_dir: str | Path | None = None,
    progress: ProgressFn | None = None,
) -> RunSummary:
    """The dry run (``dmimport validate``): every row read, mapped and checked locally, the
    report written; nothing sent, no SECRET needed, no ledger used."""
    return run(
        config, files, overrides=overrides, report_dir=report_dir, dry_run=True, progress=progress
    )


def preview(
    config: ConfigLike,
    file: str | Path | Any,
    *,
    overrides: dict[str, Any] | None = None,
    n: int = 20,
    scan_all: bool = True,
) -> Preview:
    """The first ``n`` records of ``file`` as the exact bodies a run would send and their local
    verdicts, and the plan (rows valid and rejected, by errcode) for the whole file (only the
    shown rows with ``scan_all=False``). Writes nothing, sends nothing, needs no SECRET.
    ``importer.previewer.render_preview`` renders it as ``dmimport preview`` prints it."""
    cfg, _ = _resolve(config, overrides)
    return _preview(cfg, file, n=n, scan_all=scan_all)


def quota_today(
    config: ConfigLike,
    *,
    overrides: dict[str, Any] | None = None,
    report_dir: str | Path | None = None,
    ledger: str | Path | None = None,
) -> QuotaToday:
    """Today's requests from the job's ledger: the job's, the account's (every job of it that
    uses this ledger; the account needs the SECRET in ``$<target.secret_env>``) and what is
    left of ``send.daily_quota`` (``dmimport runs`` prints it). ``UsageError`` when the job
    has no ledger yet."""
    cfg, config_path = _resolve(config, overrides)
    cfg = _placed(cfg, config_path, None, ledger, needs_ledger=True, writes_reports=False)
    store = open_job_ledger(cfg, report_dir)
    try:
        secret = os.environ.get(cfg.target.secret_env, "").strip() or None
        return requests_today(store, cfg, secret=secret)
    finally:
        store.close()


def list_runs(
    config: ConfigLike,
    *,
    overrides: dict[str, Any] | None = None,
    all_jobs: bool = False,
    limit: int = 20,
    report_dir: str | Path | None = None,
    ledger: str | Path | None = None,
) -> list[RunRecord]:
    """The job's past runs from its ledger, newest first (every job's with ``all_jobs``).

    ``report_dir``: a folder an older dmimport may have left the job's ledger in (it is moved
    to the job's place). ``UsageError`` when the job has no ledger yet."""
    cfg, config_path = _resolve(config, overrides)
    cfg = _placed(cfg, config_path, None, ledger, needs_ledger=True, writes_reports=False)
    store = open_job_ledger(cfg, report_dir)
    try:
        return store.runs(None if all_jobs else cfg.job_name, limit=limit)
    finally:
        store.close()


def _last_resume(store: Any, run_id: str, job: str) -> str:
    """The run that resumed ``run_id`` last (a resume of a resume ...), or ``run_id``: its
    failed and not_sent rows are the ones still not delivered."""
    resumed_by = {r.resumed_from: r.run_id for r in store.runs(job, limit=1000)[::-1]}
    seen = {run_id}
    while run_id in resumed_by and resumed_by[run_id] not in seen:
        run_id = resumed_by[run_id]
        seen.add(run_id)
    return run_id


def retry(
    config: ConfigLike,
    run_or_results: str | Path,
    *,
    overrides: dict[str, Any] | None = None,
    report_dir: str | Path | None = None,
    ledger: str | Path | None = None,
    progress: ProgressFn | None = None,
    handle_signals: bool = False,
    notify: bool = True,
) -> RunSummary:
    """Send again only the rows that ended ``failed`` or ``not_sent`` in a run, read back from
    their source files. ``run_or_results`` is a run id from the ledger or a results file
    (``results.csv`` / ``results.jsonl``). A failed row whose customer's later row was
    delivered is sent again with that later row after it (alone it would put the older values
    back; left out, a value only it holds would be lost); a warning names them.
    A run id of a run the same command has resumed since stands for the run that resumed it
    last (a warning says so): its failed and not_sent rows are those still not delivered.

    Raises ``NothingToRetry`` (exit code 0) when no row is to be sent again, ``UsageError``
    (exit code 2) when a run id is given and the job has no ledger yet, ``LedgerError`` for a
    run id the ledger does not know or that is another job's."""
    cfg, config_path = _resolve(config, overrides)
    candidate = Path(run_or_results)
    from_results = candidate.suffix in RESULT_SUFFIXES and candidate.exists()
    # a run id is looked up in the ledger; the retry itself records in it as a run does
    keeps_ledger = cfg.state.enabled and not cfg.target.debug
    cfg = _placed(
        cfg, config_path, report_dir, ledger, needs_ledger=keeps_ledger or not from_results
    )
    stopped: str | None = None  # how the run ended, by the ledger
    if from_results:
        seen = [
            (r.file, r.line, r.identity, r.status)
            for r in read_results(candidate, cfg.report.encoding)
        ]
        rows = rows_to_retry(seen, cfg.job.kind)
        recorded = _summary_files(candidate.parent / "summary.json")
    else:
        store = open_job_ledger(cfg, report_dir)
        try:
            latest = _last_resume(store, str(run_or_results), cfg.job_name)
            if latest != str(run_or_results):
                log.warning(
                    "run %s was resumed by run %s (the same command run again): retrying the "
                    "rows that run left failed or not_sent, not the rows it delivered",
                    run_or_results,
                    latest,
                )
                run_or_results = latest
            found = rows_to_retry_from_run(store, latest, cfg.job_name, cfg.job.kind)
            record = store.run(latest)
            recorded = record.files if record is not None else []
            stopped = record.status if record is not None else None
        finally:
            store.close()
        if found is None:
            if candidate.suffix in RESULT_SUFFIXES or len(candidate.parts) > 1:
                raise LoadError(f"{run_or_results}: no such file or directory")
            raise LedgerError(
                f"run {run_or_results} is not in the ledger {store.path}; "
                "`dmimport runs CONFIG` lists the job's runs"
            )
        rows = found
    _refuse_changed_files(recorded, rows.wanted, str(run_or_results))
    if rows.superseded:
        log.warning(
            "sent again with their customer's later delivered row after them (alone they would "
            "put the older values back; left out, the values only they hold would be lost): "
            "%d row(s) of %s: %s",
            len(rows.superseded),
            run_or_results,
            ", ".join(rows.superseded[:5]) + (", ..." if len(rows.superseded) > 5 else ""),
        )
    if not rows.wanted:
        if rows.superseded:
            raise NothingToRetry(
                f"nothing to retry: every failed or not_sent row of {run_or_results} was "
                "overridden by a later row of its customer that was delivered"
            )
        if stopped in ("held", "refused"):  # stopped before sending: no row of it was sent
            why = "held by the blast-radius gate (guard:)" if stopped == "held" else "refused"
            raise NothingToRetry(
                f"nothing to retry: run {run_or_results} was {why} before sending anything; "
                "`dmimport run` with the same files sends it"
                + (" (with --approve PLAN, its plan.json)" if stopped == "held" else "")
            )
        raise NothingToRetry(f"nothing to retry: {run_or_results} has no failed or not_sent rows")
    return _notified(
        cfg,
        lambda: Run(
            cfg,
            [],
            report_dir=report_dir,
            progress=progress,
            config_path=config_path,
            only=rows.wanted,
            handle_signals=handle_signals,
        ),
        notify,
    )


def verify(
    config: ConfigLike,
    run_id: str,
    *,
    sample: int,
    min_match: float = 0.99,
    overrides: dict[str, Any] | None = None,
    report_dir: str | Path | None = None,
    ledger: str | Path | None = None,
) -> VerifySummary:
    """Read ``sample`` of the rows run ``run_id`` reported ``ok`` back through the Open API
    and compare them with what was sent (docs/verify.md); writes ``verify.csv`` in the run's
    report folder (under ``report_dir``, else ``report.dir``). ``summary.exit_code`` is 9 when
    the share found as sent is below ``min_match``.

    Raises ``UsageError`` (exit 2) for a job that is not of kind user, an unknown run, a
    changed input file or no searchable primary key; ``ConfigError`` (exit 2) for the Open
    API's keys missing from the environment; ``QuotaError`` (exit 2) when the look-ups do not
    fit in what is left of the daily quota; ``OpenApiForbidden`` (exit 3) for HTTP 403."""
    if sample < 1:
        raise UsageError(f"sample must be at least 1, got {sample}")
    if not 0.0 <= min_match <= 1.0:
        raise UsageError(f"min_match must be between 0 and 1, got {min_match}")
    cfg, config_path = _resolve(config, overrides)
    cfg = _placed(cfg, config_path, report_dir, ledger, needs_ledger=False)
    root = Path(report_dir) if report_dir else Path(cfg.report.dir)
    return verify_run(cfg, root, str(run_id), sample=sample, min_match=min_match)


# -- helpers -----------------------------------------------------------------------------------


def _summary_files(path: Path) -> list[dict[str, Any]]:
    """The input files' fingerprints a run's ``summary.json`` recorded (none: no such file)."""
    try:
        files = json.loads(path.read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        return []
    return files if isinstance(files, list) else []


def _refuse_changed_files(recorded: list[dict[str, Any]], wanted: Any, run: str) -> None:
    """A retry reads its rows back by their lines: ``UsageError`` (nothing sent) when a file
    is not the one the run read (size or SHA-256), or it would send other rows in their place
    and report them delivered. A file the run did not record (an older run) is not checked."""
    for path in sorted(wanted):
        if changed_since_run(path, recorded):
            raise UsageError(
                f"{path} changed since run {run} read it (its size or contents differ): the "
                "rows that run left failed or not_sent are no longer on the lines it recorded, "
                "so nothing was sent. Send the file as it is now with `dmimport run`, or put "
                "back the file that run read and retry again"
            )


def _resolve(config: ConfigLike, overrides: dict[str, Any] | None) -> tuple[Config, Path | None]:
    """The validated config, and the path of its file when it was given as one."""
    if overrides is not None and not isinstance(overrides, Mapping):
        raise TypeError(
            "overrides must be a dict of dotted keys and values, e.g. "
            f"{{'send.concurrency': 4}}, not a {type(overrides).__name__}"
        )
    if not isinstance(config, Config | str | os.PathLike):
        raise TypeError(
            f"config must be a Config or the path of a YAML file, not a {type(config).__name__}"
        )
    if isinstance(config, Config):
        if not overrides:
            return config, None
        # the keys the config was given (its fields-set), as a file would hold them: an
        # override is checked, and its problems worded, as for a file
        data = config.model_dump(by_alias=True, exclude_unset=True)
        return parse_job(data, "<config>", overrides), None
    return load_job(Path(config), overrides=overrides), Path(config)


def _sets_report_dir(cfg: Config) -> bool:
    """Whether the config itself (its file, dict or an override) names ``report.dir``."""
    return "dir" in cfg.report.model_fields_set


def _placed(
    cfg: Config,
    config_path: Path | None,
    report_dir: str | Path | None,
    ledger: str | Path | None,
    *,
    needs_ledger: bool,
    writes_reports: bool = True,
) -> Config:
    """``cfg`` with ``ledger`` as its ``state.path``; a ConfigError (before anything is read
    or sent) when the reports (``writes_reports``) or the job's ledger (``needs_ledger``)
    would go to a folder nobody named."""
    problems: list[ConfigProblem] = []
    if writes_reports and report_dir is None and not _sets_report_dir(cfg):
        problems.append(
            ConfigProblem(
                "report.dir",
                "no folder for the run's reports: neither report_dir nor report.dir is set",
                hint="pass report_dir=... or set report.dir (the command line's default is "
                "'reports', in the working folder)",
            )
        )
    if ledger is not None:
        state = cfg.state.model_copy(update={"path": str(ledger)})
        cfg = cfg.model_copy(update={"state": state})
    elif needs_ledger and not cfg.state.path and not _sets_report_dir(cfg):
        problems.append(
            ConfigProblem(
                "state.path",
                "no place for the job's ledger: neither ledger, state.path nor report.dir is set",
                hint="pass ledger=... or set state.path (or report.dir, the ledger then being "
                "<parent of report.dir>/state/state.db; or state.enabled: false for no ledger)",
            )
        )
    if problems:
        raise ConfigError(problems, source=str(config_path) if config_path else None)
    return cfg


def _file_list(files: FilesLike) -> list[str | Source]:
    """``files`` as a list: one path given as is (a ``str`` is a path, not a sequence of
    one-letter paths); in-memory data as ``Source``s (``load.frames.as_inputs``)."""
    return as_inputs(files)


def _notified(
    cfg: Config,
    make: Callable[[], Run],
    notify: bool,
    after: Callable[[RunSummary], None] | None = None,
) -> RunSummary:
    """The ``Run`` ``make`` makes, executed outside any event loop; then ``after`` (the
    read-back of ``verify.sample``, which may change the exit code); then ``notify:``'s
    webhooks told about it (its summary, or the error it raised; not a KeyboardInterrupt of
    the caller's). Telling them never changes what the run returns or raises: a failure is
    a warning (``importer.notify``)."""
    try:
        summary = _outside_loop(make().execute)
        if after is not None:
            after(summary)
    except Exception as exc:
        if notify and cfg.notify:
            _tell(notify_error, cfg, exc)
        raise
    if notify and cfg.notify:
        _tell(notify_run, cfg, summary)
    return summary


def _tell(how: Callable[[Config, Any], Any], cfg: Config, what: Any) -> None:
    try:
        how(cfg, what)
    except Exception as exc:  # a bug of notify's must not turn a run into a failure
        said = redact(f"{type(exc).__name__}: {exc}")
        log.warning("notify: the webhooks were not told: %s", said)


def _outside_loop(job: Callable[[], T]) -> T:
    """``job()``, on a worker thread when this thread runs an event loop (a run drives an
    event loop of its own, and a thread has only one)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return job()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dmimport") as pool:
        return pool.submit(job).result()
