"""Where ``dmimport init`` writes its proposal, writing it without clobbering a file, and what
it prints once written."""

from __future__ import annotations

import shlex
from pathlib import Path

from ..protocol import SANDBOX_URL
from .names import job_name
from .propose import InitError, Proposal

#: the public demo SECRET that the bundled sandbox's default schema accepts (not a credential)
SANDBOX_DEMO_SECRET = "00000000-0000-4000-8000-000000000000"


def default_out(path: str | Path) -> Path:
    """``<job name>.yaml`` in the current directory, the job named after the file without its
    date: ``exports/shop.csv.gz`` -> ``shop.yaml``, ``orders_20261204.jsonl`` ->
    ``orders.yaml``."""
    return Path(f"{job_name(path)}.yaml")


def write_config(text: str, out: str | Path, *, force: bool = False) -> Path:
    """Write ``text`` to ``out``; an existing file is replaced only with ``force``."""
    out = Path(out)
    if out.exists() and not force:
        raise InitError(f"{out} exists; use --force to overwrite")
    if out.parent != Path(""):
        out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(out, "w" if force else "x", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
    except FileExistsError:  # created between the check and the open
        raise InitError(f"{out} exists; use --force to overwrite") from None
    except OSError as exc:
        raise InitError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out


def render_proposal(proposal: Proposal, out: str | Path) -> str:
    """What ``dmimport init`` prints after writing the config to ``out``."""
    source = proposal.source
    lines = [
        f"wrote {out}: kind {proposal.kind}, {len(proposal.properties)} properties, "
        f"primary keys {', '.join(proposal.primary_keys)} "
        f"(guessed from {source.path}'s header and first {proposal.sample_rows} rows)",
    ]
    if proposal.notes:
        lines.append("check before the first run:")
        lines += [f"  - {note}" for note in proposal.notes]
    lines += [
        "next: read the comments in the config and fix what is wrong, then",
        f"  dmimport check-config {shlex.quote(str(out))}",
        f"  dmimport preview {shlex.quote(str(out))} {shlex.quote(str(source.path))}",
        "the config sends to the platform's documented host (target.base_url); to try it on the",
        "local sandbox first, run `dmimport sandbox` in another terminal, then (--debug: the",
        "sandbox checks every row as the platform would and stores nothing; the job's ledger",
        "records no delivery)",
        f"  DMART_SECRET={SANDBOX_DEMO_SECRET} dmimport run {shlex.quote(str(out))} "
        f"{shlex.quote(str(source.path))} --base-url {SANDBOX_URL} --debug",
    ]
    return "\n".join(lines)
