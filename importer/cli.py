"""The ``dmimport`` command line: parses arguments, calls ``importer.api``, renders the result.

The exit codes are decided by ``importer.exitcodes`` (see docs/exit-codes.md): a run's from its
outcome (``exitcodes.for_run``), an error's from its type (``exitcodes.for_exception``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import select
import shlex
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__, cli_prepare, cli_verify, exitcodes
from .errors import ConfigError, DmImportError, HeldError, Interrupted, NothingToRetry, UsageError
from .secrets import is_secret_key, redact

log = logging.getLogger("importer")


def _add_run_options(p: argparse.ArgumentParser, *, network: bool) -> None:
    p.add_argument("config", help="job config (YAML)")
    p.add_argument("files", nargs="+", help="input files, directories or glob patterns")
    p.add_argument("--report-dir", help="where run reports go (default: report.dir)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    cli_prepare.add_encoding(p)
    if network:
        p.add_argument(
            "--debug",
            action="store_true",
            help="server-side debug mode: the platform checks every row and stores nothing",
        )
        p.add_argument("--dry-run", action="store_true", help="local checks only; nothing is sent")
        p.add_argument("--concurrency", type=int, help="requests in flight (send.concurrency)")
        p.add_argument("--rate-limit", type=float, help="requests per second (send.rate_limit)")
        p.add_argument("--base-url", help="platform base URL (target.base_url)")
        p.add_argument("--no-notify", action="store_true", help="tell none of the notify: webhooks")
        p.add_argument(
            "--workers", type=int, help="sender processes, each owning a share of the customers"
        )
        p.add_argument(
            "--changed-only",
            action="store_true",
            help="send only rows whose values changed since they were last delivered",
        )
        p.add_argument(
            "--full", action="store_true", help="send every row again (no resume, no skipping)"
        )
        p.add_argument(
            "--within-quota",
            action="store_true",
            help="when the plan does not fit in today's send.daily_quota, send what fits and "
            "leave the rest not_sent for the next run (exit 1) instead of refusing (exit 2)",
        )
        p.add_argument("--approve", metavar="PLAN", help="send a run guard: held (its plan.json)")
        p.add_argument("--ignore-guard", action="store_true", help="never hold this run (guard:)")
        p.add_argument(
            "--max-reject-rate",
            type=float,
            metavar="R",
            help="tolerate rejected rows up to this share (0..1); above it the run exits 1",
        )
        p.add_argument(
            "--metrics-file", help="write Prometheus metrics here (node_exporter textfile format)"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dmimport",
        description="Bulk-import customer and event files into the Dmartech platform.",
    )
    parser.add_argument("--version", action="version", version=f"dmimport {__version__}")
    parser.add_argument(
        "--verbose", "-v", action="store_true", help="log details; show tracebacks of bugs"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="import files: check every row, send the valid ones, report")
    _add_run_options(p, network=True)

    p = sub.add_parser("validate", help="dry run: check every row locally, send nothing")
    _add_run_options(p, network=False)

    p = sub.add_parser("check-config", help="check a job config alone")
    p.add_argument("config")

    cli_prepare.add_parsers(sub)

    p = sub.add_parser("runs", help="list past runs from the ledger")
    p.add_argument("config", help="job config (YAML): its ledger and job name")
    p.add_argument("--all-jobs", action="store_true", help="every job in the ledger")
    p.add_argument("-n", type=int, default=20, help="how many runs (default 20)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("retry", help="re-send the failed and not_sent rows of a run")
    p.add_argument("config", help="job config (YAML)")
    p.add_argument("run", help="a run id from `dmimport runs`, or a results.csv/.jsonl file")
    p.add_argument("--report-dir", help="where run reports go (default: report.dir)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--base-url", help="platform base URL (target.base_url)")
    p.add_argument("--no-notify", action="store_true", help="tell none of the notify: webhooks")

    cli_verify.add_parser(sub)
    sub.add_parser("sandbox", add_help=False,  # its own options: dmimport sandbox --help
                   help="run the local sandbox server")  # fmt: skip
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if getattr(args, "debug", False):
        out["target.debug"] = True
    if getattr(args, "concurrency", None) is not None:
        out["send.concurrency"] = args.concurrency
    if getattr(args, "rate_limit", None) is not None:
        out["send.rate_limit"] = args.rate_limit
    if getattr(args, "workers", None) is not None:
        out["send.workers"] = args.workers
    if getattr(args, "changed_only", False):
        out["state.mode"] = "incremental"
    if getattr(args, "base_url", None):
        out["target.base_url"] = args.base_url
    if getattr(args, "encoding", None) is not None:
        out["input.encoding"] = args.encoding
    return out


class _Progress:
    """The progress line (``importer.progress.ProgressBar``) on stderr, only when stderr is a
    terminal and not --quiet."""

    def __init__(self, enabled: bool) -> None:
        self.bar: Any = None
        if enabled:
            from .progress import ProgressBar

            self.bar = ProgressBar(sys.stderr)
            for handler in logging.getLogger().handlers:  # a log line blanks the bar first
                handler.addFilter(self._clear)

    def _clear(self, record: logging.LogRecord) -> bool:
        self.bar.clear()
        return True

    def __call__(self, counts: dict[str, int]) -> None:
        if self.bar is not None:
            self.bar(counts)

    def close(self) -> None:
        if self.bar is not None:
            for handler in logging.getLogger().handlers:
                handler.removeFilter(self._clear)
            self.bar.close()


def render_summary(
    summary: Any, command: str | None = None, config: str | None = None, retry_options: Any = ()
) -> str:
    """The one-screen end-of-run summary, numbers ending in one column. ``command``: the
    command line that ran (``dmimport run ...``), to run again when the run stopped early;
    ``config`` and ``retry_options`` (``--base-url URL``, ``--report-dir DIR``, as the run
    had them): the ``dmimport retry`` line."""
    d = summary.to_dict()
    w = max([24, *(3 + max(9, len(s)) + len(f"{n:,}") for s, n in d["counts"].items() if n)]) - 12
    lines = [
        f"dmimport {d['mode']}: job {d['job']} ({d['kind']}), run {d['run_id']}",
        f"  rows      {d['rows']:>{w},}   in {d['duration_s']:.1f} s"
        f" ({d['rows_per_s']:,.0f} rows/s)",
    ]
    if d.get("resumed_from"):
        lines.append(f"  resumed   from run {d['resumed_from']}")
    lines += _encoding_lines(d["files"])
    for skipped in d["skipped_inputs"]:
        lines.append(f"  skipped   {skipped['path']}: {skipped['reason']}")
    for status, n in d["counts"].items():
        if n:
            lines.append(f"  {status:<9} {n:>{w + 9 - max(9, len(status))},}")
    if d["requests"]:
        lines.append(f"  requests  {d['requests']:>{w},}")
        sending = getattr(summary, "sending", None)
        for said in sending.describe() if sending is not None else ():
            lines.append(f"            {said}")
    if q := d.get("quota"):
        lines.append(
            f"  quota     {q['needed']:,} requests planned; {q['left']:,} of {q['daily_quota']:,} "
            f"were left ({q['day']}, {q['timezone']})" + ("; ran out" if q["exhausted"] else "")
        )
    if d["errcodes"]:
        codes = ", ".join(f"{c}: {n:,}" for c, n in d["errcodes"].items())
        lines.append(f"  errcodes  {codes}")
    if d["top_reasons"]:
        lines.append("  top reasons:")
        for r in d["top_reasons"]:
            lines.append(f"    {r['rows']:>8,}  {r['reason']}  (e.g. {r['example']})")
    if v := d.get("verify"):
        lines.append(f"  verify    {v.get('error') or v.get('skipped') or cli_verify.verified(v)}")
    if d["aborted"]:
        lines.append(f"  ABORTED: {d['aborted']}")
    if d.get("interrupted"):
        lines.append(f"  INTERRUPTED by {d['interrupted']}: the rows not sent are not_sent")
    stopped = bool(d["aborted"] or d.get("interrupted")) and d["mode"] == "send"
    if stopped:
        lines += _next_steps(d["run_id"], command, config, retry_options)
    lines.append(f"  report    {d['report_dir']}")
    if d["rejects"]:
        names = sorted(Path(p).name for p in d["rejects"])
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        why = f"; why: {Path(d['rejects_reasons']).name}" if d.get("rejects_reasons") else ""
        use = "to fix and import again"
        counts = d["counts"]
        if counts.get("not_sent") or (stopped and counts.get("failed")):  # quota: not_sent
            # importing them as well as running the same command again would send them twice
            use = (
                "the rejected rows to fix and import again; the failed and not_sent ones are "
                "for the same command, not to import"
            )
        lines.append(f"  rejects   {shown} ({use}){why}")
    lines.append(f"  exit code {d['exit_code']}")
    return "\n".join(_CONTROL.sub(_escaped, line) for line in lines)


def _next_steps(run_id: str, command: str | None, config: str | None, opts: Any = ()) -> list[str]:
    """What to do after a run that stopped early: the same command resumes it (the one rule,
    docs/ledger.md); ``dmimport retry`` re-sends its failed rows later."""
    retry_command = redact(shlex.join(["dmimport", "retry", config or "CONFIG", run_id, *opts]))
    retry = f"`{retry_command}` re-sends this run's failed and not_sent rows"
    if command is None:  # a retry (it resumes nothing), or a caller that did not say
        return [f"  next      {retry}"]
    return [
        "  next      run the same command again: with the same config and files it resumes, "
        "and rows already delivered are not sent again:",
        f"              {command}",
        f"            {retry} later",
    ]


def command_line(argv: Sequence[str]) -> str:
    """``dmimport ARGS`` as a shell would take it back (quoted where needed). The SECRET is
    never on a dmimport command line (only in the environment); redacted all the same."""
    return redact(shlex.join(["dmimport", *argv]))


#: C0 and C1 control characters and DEL: a platform's message (or a file name) holding them
#: would move the cursor, clear the screen or retitle the terminal the summary is printed on
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char, f"\\x{ord(char):02x}")


def _encoding_lines(files: list[dict[str, Any]]) -> list[str]:
    """The encoding the text files were read with and why: one line when they agree."""
    groups: dict[tuple[str, str], list[str]] = {}
    for f in files:
        if f.get("encoding_reason"):  # not Parquet
            groups.setdefault((f["encoding"], f["encoding_reason"]), []).append(f["path"])
    lines = [
        f"  encoding  {encoding} ({why}): "
        + (Path(paths[0]).name if len(paths) == 1 else f"{len(paths)} files")
        for (encoding, why), paths in groups.items()
    ]
    if len(lines) > 10:
        lines[9:] = [f"  encoding  ... {len(lines) - 9} more in summary.json"]
    return lines


def _job_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The command line's overrides, plus its documented default ``report.dir: reports`` (in
    the working folder) when the config names no ``report.dir``: the library writes nowhere
    it was not told to (``importer.api``)."""
    from .api import load_config

    overrides = _overrides(args)
    config = load_config(args.config, overrides=overrides)
    if "dir" not in config.report.model_fields_set:
        overrides["report.dir"] = config.report.dir
    return overrides


def _cmd_run(args: argparse.Namespace, *, dry_run: bool) -> int:
    from .api import run

    if getattr(args, "full", False) and getattr(args, "changed_only", False):
        raise UsageError("--full and --changed-only exclude each other: pick one")
    rate = getattr(args, "max_reject_rate", None)
    if rate is not None and not 0.0 <= rate <= 1.0:
        raise UsageError(f"--max-reject-rate must be between 0 and 1, got {rate}")
    progress = _Progress(enabled=not args.quiet and sys.stderr.isatty())
    try:
        summary = run(
            args.config,
            args.files,
            dry_run=dry_run,
            overrides=_job_overrides(args),
            report_dir=args.report_dir,
            progress=progress,
            full=getattr(args, "full", False),
            max_reject_rate=rate,
            metrics_file=getattr(args, "metrics_file", None),
            handle_signals=True,
            within_quota=getattr(args, "within_quota", False),
            notify=not getattr(args, "no_notify", False),
            approve=getattr(args, "approve", None),
            ignore_guard=getattr(args, "ignore_guard", False),
        )
    except HeldError as e:  # the exact command to approve it: this one, plus --approve
        raise e.again(command_line([*args.argv, "--approve", str(e.plan)])) from None
    finally:
        progress.close()
    return _print_summary(args, summary)


def _print_summary(args: argparse.Namespace, summary: Any) -> int:
    try:
        if args.json:
            print(json.dumps(summary.to_dict(), ensure_ascii=False, indent=2))
        else:
            argv = getattr(args, "argv", None) if args.command == "run" else None
            command = command_line(argv) if argv is not None else None
            url, out = getattr(args, "base_url", None), getattr(args, "report_dir", None)
            opts = [*(["--base-url", url] if url else []), *(["--report-dir", out] if out else [])]
            print(render_summary(summary, command, str(args.config), opts))
        sys.stdout.flush()
    except BrokenPipeError:  # `dmimport run ... | head`: the run is over and reported
        _stdout_closed()
    return int(summary.exit_code)


def _stdout_closed() -> None:
    """Whoever read stdout has gone (``dmimport ... | head``): like other Unix tools, stop
    writing, quietly. Python would otherwise fail again when it flushes stdout at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout is not a file (captured)
        pass


def _stdout_gone() -> bool:
    """Whether stdout is a pipe nobody reads any more (not some other pipe that broke)."""
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poll.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _flushed(code: int) -> int:
    """``code``, once stdout is flushed: a reader that has gone ends the command quietly."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _stdout_closed()
    return code


def _cmd_runs(args: argparse.Namespace) -> int:
    from .api import list_runs, quota_today

    overrides = _job_overrides(args)
    records = list_runs(args.config, overrides=overrides, all_jobs=args.all_jobs, limit=args.n)
    today = quota_today(args.config, overrides=overrides)
    if args.json:
        print(json.dumps([r.__dict__ for r in records], ensure_ascii=False, indent=2))
        return exitcodes.OK
    if not records:
        print("no runs recorded yet")
        print("\n".join(today.lines()))
        return exitcodes.OK
    print(f"{'run id':<24} {'job':<16} {'started':<20} {'duration':>9} {'status':<11} "
          f"{'exit':>4}  counts")  # fmt: skip
    for r in records:
        duration = f"{r.duration_s:.1f}s" if r.duration_s is not None else "-"
        counts = " ".join(f"{k}={v}" for k, v in r.counts.items() if v)
        exit_code = "-" if r.exit_code is None else str(r.exit_code)
        print(f"{r.run_id:<24} {r.job:<16} {r.started[:19]:<20} {duration:>9} "
              f"{r.status:<11} {exit_code:>4}  {counts}")  # fmt: skip
    print()
    print("\n".join(today.lines()))
    return exitcodes.OK


def _cmd_retry(args: argparse.Namespace) -> int:
    from .api import retry

    progress = _Progress(enabled=not args.quiet and sys.stderr.isatty())
    try:
        summary = retry(
            args.config,
            args.run,
            overrides=_job_overrides(args),
            report_dir=args.report_dir,
            progress=progress,
            handle_signals=True,
            notify=not args.no_notify,
        )
    finally:
        progress.close()
    return _print_summary(args, summary)


def config_excerpt(exc: ConfigError, limit: int = 5) -> str:
    """The offending YAML lines with a pointer under the key, for the problems that have one."""
    if not exc.source:
        return ""
    try:
        lines = Path(exc.source).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return ""
    out: list[str] = []
    for problem in exc.problems[:limit]:
        if problem.line is None or not 1 <= problem.line <= len(lines):
            continue
        text = _safe_line(lines[problem.line - 1], problem.path, exc.secrets)
        key = problem.path.rsplit(".", 1)[-1]
        col = text.find(key) if key else -1
        col = min(col if col >= 0 else len(text) - len(text.lstrip()), len(text))
        gutter = f"{problem.line:>5} | "
        out.append(f"{gutter}{text}")
        out.append(" " * (len(gutter) - 2) + "| " + " " * col + "^ " + problem.message)
    return "\n".join(out)


#: ``key:`` in a YAML line, block or flow style, and where its value starts
_YAML_KEY = re.compile(r"""(?P<key>[A-Za-z0-9_.-]+)["']?[ \t]*:(?:[ \t]+|$)""")
_EXCERPT_WIDTH = 160


def _safe_line(text: str, path: str, secrets: tuple[str, ...]) -> str:
    """A config line fit to print: values of credential-named keys, anything that looks like
    the SECRET, and the SECRET itself replaced by ``****``; cut to a screen's width."""
    if any(is_secret_key(part) for part in path.split(".")[:-1]):
        # inside a credential's value (a list item, a nested mapping): only its indentation
        text = re.sub(r"^(\s*(?:-\s+)?(?:[^:#'\"]+:\s+)?).*$", r"\1****", text)
    out, pos = [], 0
    for m in _YAML_KEY.finditer(text):
        if m.start() < pos or not is_secret_key(m.group("key")):
            continue
        start = m.end()
        before = text[:start]
        flow = before.count("{") + before.count("[") > before.count("}") + before.count("]")
        end = len(text)
        if text[start : start + 1] in ("'", '"'):
            close = text.find(text[start], start + 1)
            end = close + 1 if close > 0 else end
        elif flow:
            stop = re.search(r"[,}\]]", text[start:])
            end = start + stop.start() if stop else end
        else:
            comment = re.search(r"\s#", text[start:])
            end = start + comment.start() if comment else end
        if end > start:
            out += [text[pos:start], "****"]
            pos = end
    text = redact("".join(out) + text[pos:], secrets)
    if len(text) > _EXCERPT_WIDTH:
        text = text[:_EXCERPT_WIDTH] + " ..."
    return text


#: said on stderr as plain lines, at every run: which run a run resumes, and what it skips
_PLAIN = "importer.resume"


class _RedactingFormatter(logging.Formatter):
    """Log lines (and the tracebacks they carry) without the SECRET (``importer.secrets``);
    the ``importer.resume`` lines as they are, without level and logger name."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        if record.name == _PLAIN:
            return redact(record.getMessage())
        return redact(self.inner.format(record))


def _terminated(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


def _cmd_check_config(args: argparse.Namespace) -> int:
    from .api import load_config

    cfg = load_config(args.config)
    print(
        f"{args.config}: ok (job {cfg.job_name}, kind {cfg.job.kind}, {len(cfg.columns)} columns)"
    )
    for warning in cfg.target.warnings():  # not errors: the documented host is plain http://
        print(f"warning: {warning}", file=sys.stderr)
    return exitcodes.OK


def arrow_memory_pool() -> str:
    """The Arrow memory pool a ``dmimport`` process allocates from: jemalloc where pyarrow
    has it, unless ``ARROW_DEFAULT_MEMORY_POOL`` names one. mimalloc (pyarrow's default)
    keeps what a run frees: a 200,000-row send peaked at 329 MB with it, 267 MB with jemalloc
    (20,000 rows: 241 and 192 MB; 1,000,000: 361 and 314 MB), at no cost in CPU. A process
    decision, so the CLI makes it, not the library. Returns the pool's name."""
    import pyarrow as pa

    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        with contextlib.suppress(NotImplementedError, AttributeError):  # built without it
            pa.set_memory_pool(pa.jemalloc_memory_pool())
    return str(pa.default_memory_pool().backend_name)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code."""
    arrow_memory_pool()
    if threading.current_thread() is not threading.main_thread():
        return _flushed(_main(argv))
    # SIGTERM (systemd, docker stop, kill) stops dmimport as Ctrl-C does; a run replaces this
    # with its own handlers while it holds the job's lock (importer.interrupts.Stopper)
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return _flushed(_main(argv))
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sandbox":
        from .sandbox import main as sandbox_main

        return int(sandbox_main(argv[1:], prog="dmimport sandbox") or 0)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv  # the command line, named in the summary as the one to run again
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_RedactingFormatter(handler.formatter))
    # which run a run resumes, and what it skips: said on stderr at the start of every run
    logging.getLogger(_PLAIN).setLevel(logging.INFO)
    # the daily quota's plan at the top of a run, on a terminal (as the progress bar; the
    # summary and summary.json say it for every run): docs/quota.md
    if sys.stderr.isatty():
        logging.getLogger("importer.quota").setLevel(logging.INFO)
    if args.command is None:
        parser.print_help()
        return exitcodes.USAGE
    try:
        if args.command == "run":
            if args.dry_run and args.debug:
                parser.error("--dry-run and --debug exclude each other: pick one")
            return _cmd_run(args, dry_run=args.dry_run)
        if args.command == "validate":
            return _cmd_run(args, dry_run=True)
        simple = {"check-config": _cmd_check_config, "init": cli_prepare.cmd_init}
        simple.update(preview=cli_prepare.cmd_preview)
        simple.update(runs=_cmd_runs, retry=_cmd_retry, verify=cli_verify.cmd_verify)
        if args.command in simple:
            return simple[args.command](args)
    except NothingToRetry as exc:  # not a failure: say so, and exit 0
        if getattr(args, "json", False):  # what a script piping --json into jq can read
            said = {"exit_code": exitcodes.for_exception(exc), "nothing_to_retry": str(exc)}
            print(redact(json.dumps(said, ensure_ascii=False, indent=2)))
        else:
            print(redact(str(exc)))
        return exitcodes.for_exception(exc)
    except ConfigError as exc:
        print(redact(f"error: {exc}"), file=sys.stderr)
        excerpt = config_excerpt(exc)
        if excerpt:
            print(excerpt, file=sys.stderr)
        return exitcodes.for_exception(exc)
    except DmImportError as exc:
        print(redact(f"error: {exc}"), file=sys.stderr)
        refused: Any = getattr(exc, "summary", None)  # a refused run's (InputIncomplete)
        if getattr(args, "json", False) and hasattr(refused, "to_dict"):
            print(redact(json.dumps(refused.to_dict(), ensure_ascii=False, indent=2)))
        return exitcodes.for_exception(exc)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM: no traceback
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return exitcodes.for_signal(signum)
    except Exception as exc:  # a bug: one line unless --verbose
        if isinstance(exc, BrokenPipeError) and _stdout_gone():
            # stdout's reader has gone (`dmimport preview ... | head`): the work is done
            _stdout_closed()
            return exitcodes.OK
        # the SECRET of whatever variable the config named, in any form (issue 12)
        print(redact(f"internal error: {type(exc).__name__}: {exc}"), file=sys.stderr)
        if args.verbose:
            print(redact("".join(traceback.format_exception(exc))), end="", file=sys.stderr)
        else:
            print("(run with --verbose for the traceback)", file=sys.stderr)
        return exitcodes.INTERNAL
    parser.error(f"unknown command {args.command}")  # exits with the usage code, 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
