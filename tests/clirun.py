"""Run the installed ``dmimport`` command as a user would: a subprocess, no DMART_* variables
from the test's own environment unless given."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DMIMPORT = Path(sys.executable).with_name("dmimport")


def dmimport(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DMART_")}
    full_env.update(env or {})
    return subprocess.run(
        [str(DMIMPORT), *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=120,
    )
