"""Helpers shared by the tests, each defined once here: running the ``dmimport`` command as a
user would, writing input files, and reading a run's results back.

- ``dmimport(*args, cwd=..., secret=...)``: the installed command in a subprocess, finished;
  ``start_dmimport(...)``: the same, started (a ``Popen``) for tests that signal or watch it;
  ``on_terminal(...)``: finished, with its stderr on a pseudo-terminal.
  Neither passes on a ``DMART_*`` variable of the test's own environment unless given.
- ``write_file``, ``write_csv``: input files; ``reference``: what Python's ``csv`` module reads
  in a CSV text (what the loader's tests compare the loader with).
- ``read_results``: the rows of a run's results.csv.
- ``send_changes``: a lake-side change set sent to a sandbox (the run between plan and commit);
  ``NAMED_EVENTS``: an event job whose event names come from a column.
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import importer

#: the console script of the package installed in the test's virtual environment
DMIMPORT = Path(sys.executable).with_name("dmimport")
#: the repository checkout
ROOT = Path(__file__).resolve().parent.parent


# -- the command --------------------------------------------------------------------------------


def cli_env(secret: str | None = None, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without its ``DMART_*`` variables, plus ``env``, plus
    ``DMART_SECRET=secret`` when a secret is given."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("DMART_")}
    out.update(env or {})
    if secret is not None:
        out["DMART_SECRET"] = secret
    return out


def cli_command(*args: str | Path) -> list[str]:
    """The argv of ``dmimport ARGS``."""
    return [str(DMIMPORT), *map(str, args)]


def dmimport(
    *args: str | Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    secret: str | None = None,
    timeout: float = 120,
    **kwargs: Any,
) -> subprocess.CompletedProcess[str]:
    """Run ``dmimport ARGS`` to its end; stdout and stderr captured as text (unless ``kwargs``
    say otherwise: ``stdout=``, ``preexec_fn=`` ... go to ``subprocess.run``). ``cwd`` defaults
    to the current folder, which conftest makes the test's own ``tmp_path``."""
    if "stdout" not in kwargs and "stderr" not in kwargs:
        kwargs["capture_output"] = True
    return subprocess.run(
        cli_command(*args),
        text=True,
        env=cli_env(secret, env),
        cwd=cwd or Path.cwd(),
        timeout=timeout,
        **kwargs,
    )


def start_dmimport(
    *args: str | Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    secret: str | None = None,
    **kwargs: Any,
) -> subprocess.Popen[str]:
    """Start ``dmimport ARGS`` (stdout and stderr piped, text unless ``kwargs`` say
    otherwise); the caller waits for it, signals it, or kills it."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    kwargs.setdefault("text", True)
    return subprocess.Popen(
        cli_command(*args), env=cli_env(secret, env), cwd=cwd or Path.cwd(), **kwargs
    )


def on_terminal(
    *args: str | Path, cwd: Path, secret: str | None, timeout: float = 120, columns: int = 120
) -> tuple[int, str, list[tuple[float, str]]]:
    """``dmimport ARGS`` with its stderr on a pseudo-terminal of ``columns`` columns (0: a
    terminal nobody sized, 0x0): its exit code, its stdout, and what the terminal received,
    each chunk with the time it arrived."""
    master, slave = pty.openpty()
    rows = 24 if columns else 0
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    chunks: list[tuple[float, str]] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append((time.monotonic(), data.decode("utf-8", "replace")))

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    with subprocess.Popen(cli_command(*args), stdout=subprocess.PIPE, stderr=slave, text=True,
                          env=cli_env(secret), cwd=cwd) as proc:  # fmt: skip
        os.close(slave)
        out, _ = proc.communicate(timeout=timeout)
    reader.join(timeout=10)
    os.close(master)
    return proc.returncode, out, chunks


# -- input files --------------------------------------------------------------------------------


def write_file(
    path: Path, data: str | bytes, *, encoding: str = "utf-8", dedent: bool = False
) -> Path:
    """``path`` holding ``data`` (text encoded with ``encoding``, as is: no newline
    translation; ``dedent`` strips the common indentation of a triple-quoted text)."""
    if isinstance(data, str):
        data = (textwrap.dedent(data) if dedent else data).encode(encoding)
    path.write_bytes(data)
    return path


def write_csv(
    path: Path,
    header: list[str],
    rows: list[list[str]],
    encoding: str = "utf-8",
    *,
    lineterminator: str = "\n",
) -> Path:
    """A CSV file of ``header`` and ``rows`` (quoted where needed, LF line ends unless told)."""
    with open(path, "w", encoding=encoding, newline="") as fh:
        w = csv.writer(fh, lineterminator=lineterminator)
        w.writerow(header)
        w.writerows(rows)
    return path


def reference(text: str, width: int) -> tuple[list[tuple[int, list[str]]], list[int]]:
    """What a straightforward reader finds: good (line, values), and the lines of bad ones."""
    good: list[tuple[int, list[str]]] = []
    bad: list[int] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    next(reader)
    line = reader.line_num + 1
    for record in reader:
        if record and any(record):
            if len(record) == width:
                good.append((line, record))
            else:
                bad.append(line)
        line = reader.line_num + 1
    return good, bad


# -- results ------------------------------------------------------------------------------------


def read_results(summary: Any, *, cwd: Path | None = None) -> list[dict[str, str]]:
    """The rows of a run's results.csv, in file order. ``summary`` is a ``RunSummary``, the
    dict of ``--json`` / summary.json (its ``results`` path is relative to ``cwd`` when it is
    not absolute), or the path itself."""
    if isinstance(summary, Mapping):
        path = Path(str(summary["results"]))
    elif isinstance(summary, str | Path):
        path = Path(summary)
    else:
        assert summary.results_path is not None, "the run wrote no results"
        path = Path(summary.results_path)
    if cwd is not None:
        path = cwd / path
    with open(path, newline="", encoding="utf-8-sig") as fh:  # the BOM of report.encoding
        return list(csv.DictReader(fh))


# -- lake-side jobs -----------------------------------------------------------------------------

#: an event job named by its ``kind`` column
NAMED_EVENTS = """\
target: {secret_env: DMART_SECRET}
job: {name: named, kind: event, event_name_from: kind, primary_keys: [phone]}
columns:
  phone: {from: tel}
  event_id: {from: id}
  create_time: {from: at, timezone: Asia/Shanghai}
"""


def send_changes(
    config: Path, changes: Path, url: str, report_dir: Path, ledger: Path
) -> importer.RunSummary:
    """``importer.run`` of the change set ``changes`` against the sandbox at ``url``."""
    return importer.run(
        config,
        [changes],
        overrides={"target.base_url": url},
        report_dir=report_dir,
        ledger=ledger,
    )
