"""The commands that prepare a job before its first run, sending nothing (docs/cli.md):
``dmimport init FILE --kind K`` proposes a config from a file's header and a sample of its
rows; ``dmimport preview CONFIG FILE`` shows the exact bodies and the local verdicts. And
``--encoding NAME``, which they and ``run`` / ``validate`` take."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from . import exitcodes
from .errors import UsageError
from .protocol import KINDS


def encoding(name: str) -> str:
    """``--encoding NAME``, checked as the ``input.encoding`` key is: a codec Python knows."""
    import codecs

    if name != "auto":
        try:
            codecs.lookup(name)
        except LookupError:
            raise argparse.ArgumentTypeError(
                f"unknown encoding '{name}' (e.g. utf-8, gb18030, auto)"
            ) from None
    return name


def add_encoding(p: argparse.ArgumentParser) -> None:
    """The ``--encoding NAME`` option (``input.encoding``)."""
    p.add_argument("--encoding", type=encoding, metavar="NAME",  # input.encoding
                   help="the input files' encoding: auto, utf-8, gb18030, latin-1...")  # fmt: skip


def add_parsers(sub: Any) -> None:
    """The ``init`` and ``preview`` sub-commands of ``dmimport``."""
    p: argparse.ArgumentParser = sub.add_parser(
        "init", help="propose a config for a file (header and a sample of rows)"
    )
    p.add_argument("file", help="an exported file")
    p.add_argument("--kind", required=True, choices=list(KINDS))
    p.add_argument("--out", help="where to write the config (default: <file stem>.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite an existing config")
    p.add_argument("--event-name", help="the event name, for --kind event")
    p.add_argument("--sample-rows", type=int, default=1000, help="rows to look at (1000)")
    p.add_argument(
        "--encoding",
        default="auto",
        help="the file's encoding when it cannot be told (latin-1, cp949, ...); default auto",
    )

    p = sub.add_parser("preview", help="show the exact bodies and local verdicts; send nothing")
    p.add_argument("config", help="job config (YAML)")
    p.add_argument("file", help="one input file")
    p.add_argument("-n", type=int, default=20, help="rows to show (default 20)")
    p.add_argument(
        "--quick", action="store_true", help="plan from the shown rows only, not the whole file"
    )
    add_encoding(p)


def cmd_init(args: argparse.Namespace) -> int:
    """Run ``dmimport init``; its exit code."""
    import codecs

    from .errors import LoadError
    from .init import default_out, propose, render_proposal, write_config
    from .load import InputOptions

    try:
        codecs.lookup(args.encoding)
    except LookupError:
        if args.encoding != "auto":
            raise UsageError(f"--encoding: unknown encoding '{args.encoding}'") from None
    try:
        proposal = propose(
            args.file,
            args.kind,
            event_name=args.event_name,
            sample_rows=args.sample_rows,
            input_options=InputOptions(encoding=args.encoding),
        )
    except LoadError as exc:
        if "set input.encoding" in str(exc) and "--encoding" not in str(exc):
            # there is no config yet: say how to give it
            raise LoadError(f"{exc} (to dmimport init: --encoding NAME)") from None
        raise
    out = Path(args.out) if args.out else default_out(args.file)
    write_config(proposal.text, out, force=args.force)
    print(render_proposal(proposal, out))
    for warning in proposal.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    return exitcodes.OK


def cmd_preview(args: argparse.Namespace) -> int:
    """Run ``dmimport preview``; its exit code."""
    from .api import preview
    from .previewer import render_preview

    # preview takes one override: --encoding (as ``cli._overrides`` gives it)
    overrides = {"input.encoding": args.encoding} if args.encoding is not None else {}
    got = preview(args.config, args.file, overrides=overrides, n=args.n, scan_all=not args.quick)
    print(render_preview(got))
    return exitcodes.OK
