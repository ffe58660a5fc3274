"""The proposal as commented YAML, and what ``dmimport init`` prints after writing it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from ..load import Source
from ..protocol import DEFAULT_BASE_URL, DEFAULT_PROTOCOL, SANDBOX_URL
from .names import job_name
from .plan import Plan
from .sample import Sample, nested_list


def _scalar(text: str) -> str:
    """``text`` as a YAML scalar inside a flow mapping: plain when that reads back the same."""
    if text and not text.startswith(("%", "@", "`", "!", "&", "*", "|", ">", "'", '"', "#")):
        try:
            if yaml.safe_load("{k: " + text + "}") == {"k": text}:
                return text
        except yaml.YAMLError:
            pass
    return json.dumps(text, ensure_ascii=False)


def _flow(spec: dict[str, Any]) -> str:
    parts = []
    for key, value in spec.items():
        if isinstance(value, list):
            shown = "[" + ", ".join(_scalar(v) for v in value) + "]"
        elif isinstance(value, dict):
            shown = _flow(value)
        else:
            shown = _scalar(str(value))
        parts.append(f"{key}: {shown}")
    return "{" + ", ".join(parts) + "}"


def _one_line(text: str) -> str:
    return re.sub(r"\s*[\r\n]+\s*", " ", text)


def _wrap(text: str, indent: str, width: int = 98) -> list[str]:
    words = _one_line(text).split(" ")
    lines: list[str] = []
    line = indent + "#"
    for word in words:
        if len(line) + 1 + len(word) > width and line != indent + "#":
            lines.append(line)
            line = indent + "#"
        line += " " + word
    lines.append(line)
    return lines


def _describe(source: Source) -> str:
    encoding = {"utf-8-sig": "UTF-8 with BOM", "utf-8": "UTF-8", "binary": ""}.get(
        source.encoding, source.encoding
    )
    fmt = "TSV" if source.delimiter == "\t" else source.format.upper()
    return f"{fmt}, {encoding}" if encoding else fmt


def render_yaml(path: Path, kind: str, sample: Sample, plan: Plan) -> str:
    source = sample.source
    out: list[str] = []
    out += _wrap(
        f"Proposed by `dmimport init` from {path} ({_describe(source)}): the header and the "
        f"first {sample.rows} rows. Every line below is a guess with its reason: read them, "
        "fix what is wrong, then run `dmimport check-config` and `dmimport preview` on it. "
        "docs/config.md explains every key.",
        "",
    )
    if sample.malformed:
        out += _wrap(
            f"{sample.malformed} of the sampled records could not be read at all; "
            "`dmimport preview` shows which and why.",
            "",
        )
    if sample.not_text:
        out += _wrap(
            f"Left out: {', '.join(sample.not_text)} (binary, and most sampled values are not "
            "text: they cannot be sent as properties).",
            "",
        )
    out += [
        "target:",
        "  # import-api: the platform's documented endpoint (one URL, typed bodies, batches);",
        "  # signed: dmimport's version-1 protocol (per-call paths, HMAC headers); see",
        "  # docs/protocol.md",
        f"  # protocol: {DEFAULT_PROTOCOL}",
        "  # The platform's documented host. It is plain http:// and the SECRET travels in the",
        "  # URL: use https:// where your platform offers it. To try this config on the local",
        f"  # sandbox (`dmimport sandbox`), run with --base-url {SANDBOX_URL}",
        f"  base_url: {DEFAULT_BASE_URL}",
        "  secret_env: DMART_SECRET          # NAME of the environment variable holding the SECRET",
        "  debug: false",
        "job:",
        "  # the job's name: its ledger and run history are kept under it (the file's name",
        "  # without the date of a nightly export)",
        f"  name: {_scalar(job_name(path))}",
        f"  kind: {kind}",
    ]
    if plan.event_name is not None:
        out += _wrap(plan.event_comment, "  ")
        out.append(f"  event_name: {_scalar(plan.event_name)}")
    if plan.event_name_from is not None:
        out += _wrap(plan.event_comment, "  ")
        out.append(f"  event_name_from: {_scalar(plan.event_name_from)}")
    out += _wrap(plan.pk_comment, "  ")
    out.append("  primary_keys: [" + ", ".join(_scalar(k) for k in plan.primary_keys) + "]")
    out.append("columns:")
    for name, guess, comment in plan.properties:
        out += _wrap(comment, "  ")
        if guess.warning:
            out += _wrap(f"WARNING: {guess.warning}", "  ")
        out.append(f"  {_scalar(name)}: {_flow(guess.spec())}")
    if sample.nested:
        out += _wrap(f"skipped (nested, not a flat value): {nested_list(sample.nested)}", "  ")
    if plan.skipped:
        shown = ", ".join(plan.skipped[:20]) + (", ..." if len(plan.skipped) > 20 else "")
        why = "a delete needs only the primary keys" if kind == "user_delete" else "see above"
        out += _wrap(f"Not imported ({why}): {shown}", "  ")
    out.append("input:")
    out.append(f"  format: {sample.options.format}")
    if source.encoding == "gb18030":
        out.append("  encoding: gb18030   # detected: this export is not UTF-8")
    elif sample.options.encoding != "auto":
        out.append(f"  encoding: {_scalar(sample.options.encoding)}")
    elif source.format == "parquet":
        out.append("  encoding: auto")
    else:
        detected = _describe(source).split(", ")[-1]
        out.append(f"  encoding: auto   # detected: {detected}")
    if source.format == "csv" and (sample.delimiter_guessed or sample.options.delimiter):
        note = "   # detected from the header" if sample.delimiter_guessed else ""
        out.append(f"  delimiter: {json.dumps(source.delimiter)}{note}")
    out += [
        "send:",
        "  concurrency: 32   # requests in flight; lower it if the platform answers 429",
        "report:",
        "  dir: reports",
        "",
    ]
    return "\n".join(out)
