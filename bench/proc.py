"""Running measured child processes: wall time, CPU time and peak RSS of exactly one command.

``getrusage(RUSAGE_CHILDREN)`` reports the largest ``ru_maxrss`` of *all* children ever waited
for, so it cannot tell a small run after a big one apart; ``os.wait4`` gives the rusage of the
one child it reaps. But a child's ``ru_maxrss`` also starts from the peak of the process it was
forked from, so each command runs under ``spawn.py``, a small fresh interpreter that
``wait4``s it and writes its rusage to a file. The parent blocks meanwhile, using no CPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SPAWN = Path(__file__).resolve().with_name("spawn.py")


@dataclass
class Measured:
    cmd: list[str]
    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    cpu_s: float  # user + system of the child
    maxrss_mb: float
    timed_out: bool = False
    #: (seconds since start, RSS in MB) every ``sample_s`` while it ran, if asked for
    rss_samples: list[tuple[float, float]] = field(default_factory=list)

    def json(self) -> dict[str, Any] | None:
        """The first JSON object the command printed (``dmimport --json``), else None."""
        start = self.stdout.find("{")
        if start < 0:
            return None
        try:
            obj, _ = json.JSONDecoder().raw_decode(self.stdout[start:])
        except ValueError:
            return None
        return obj if isinstance(obj, dict) else None

    def error_line(self) -> str:
        """A one-line description of why the command failed."""
        if self.timed_out:
            return f"timed out after {self.wall_s:.0f} s"
        lines = [ln.strip() for ln in self.stderr.splitlines() if ln.strip()]
        # dmimport's own one-line message ("error: ...", "internal error: ...") says most
        said = [ln for ln in lines if ln.startswith(("error", "internal error", "invalid"))]
        text = (said or lines[-1:] or ["(no output on stderr)"])[0]
        return f"exit {self.returncode}: {text[:200]}"


def run_measured(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 600.0,
    cwd: str | Path | None = None,
    sample_s: float | None = None,
) -> Measured:
    """Run ``cmd`` to completion through ``spawn.py``, which reports the command's own rusage.

    stdout/stderr go to temporary files (no pipes to drain); the wrapper and everything under
    it get a session of their own, so a timeout kills the whole group. With ``sample_s`` the
    command's RSS is also read from /proc at that interval.
    """
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory(prefix="dmbench-spawn-") as tmp,
    ):
        result = Path(tmp) / "rusage.json"
        wrapper = [sys.executable, "-S", str(SPAWN), str(result)]
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [*wrapper, *cmd],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):  # it just exited
                os.killpg(proc.pid, signal.SIGKILL)

        watchdog = threading.Timer(timeout, kill)
        watchdog.daemon = True
        watchdog.start()
        samples: list[tuple[float, float]] = []
        done = threading.Event()
        if sample_s:

            def sample() -> None:
                # the wrapper's one child is the command; stop once the wrapper is reaped
                child = None
                while not done.wait(sample_s):
                    child = child or _only_child(proc.pid)
                    rss = proc_rss_mb(child) if child else None
                    if rss is not None:
                        samples.append((round(time.perf_counter() - t0, 2), round(rss, 1)))

            threading.Thread(target=sample, daemon=True).start()
        try:
            proc.wait()
        finally:
            done.set()
            watchdog.cancel()
        wall = time.perf_counter() - t0
        usage: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):  # killed before it could write
            usage = json.loads(result.read_text())
        out.seek(0)
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
        if "error" in usage:
            stderr += usage["error"] + "\n"
        return Measured(
            cmd=list(cmd),
            returncode=int(usage.get("returncode", proc.returncode)),
            stdout=out.read().decode("utf-8", "replace"),
            stderr=stderr,
            wall_s=float(usage.get("wall_s", wall)),
            cpu_s=float(usage.get("cpu_s", 0.0)),
            # Linux reports kilobytes
            maxrss_mb=float(usage.get("maxrss_kb", 0)) / 1024.0,
            timed_out=timed_out.is_set(),
            rss_samples=samples,
        )


def _only_child(pid: int) -> int | None:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def dmimport_cmd() -> list[str]:
    """The installed ``dmimport`` console script next to this interpreter, else ``-m``."""
    script = Path(sys.executable).with_name("dmimport")
    if script.exists():
        return [str(script)]
    found = shutil.which("dmimport")
    return [found] if found else [sys.executable, "-m", "importer.cli"]


def proc_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a live process has used so far, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    # fields after the command name: state is [0], utime [11], stime [12]
    return (int(fields[11]) + int(fields[12])) / ticks


def proc_rss_mb(pid: int) -> float | None:
    """Current resident set size of a live process, from /proc (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


def machine_busy_s() -> float | None:
    """CPU seconds all cores spent in user and system mode since boot (/proc/stat).

    Subtracting what the measured processes used (their rusage) over an interval gives the
    CPU other programs took from the machine meanwhile: on a shared box, a noisy figure.
    """
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    user, nice, system = (int(x) for x in fields[1:4])
    return (user + nice + system) / os.sysconf("SC_CLK_TCK")
