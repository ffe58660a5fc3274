"""Loading and validating a config, turning every kind of failure into ConfigProblems."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import (
    BaseModel,
    ValidationError,
)

from ..errors import ConfigError, ConfigProblem, escaped
from .base import did_you_mean, show, text_problems
from .columns import ColumnSpec
from .job import cross_problems
from .model import Config, with_event_defaults
from .placeholders import PLACEHOLDER, placeholder_problems
from .redact import redact_problem, secret_values
from .yamlfile import read_yaml

#: A check the caller adds to the schema's (``importer.job`` adds the mapper's conversion of
#: ``value`` and ``default``): given the columns that are otherwise valid and
#: ``job.max_value_length``, ``(key path, message, hint)`` for each problem it finds.
ColumnCheck = Callable[
    [Mapping[str, ColumnSpec], int], list[tuple[tuple[str, ...], str, str | None]]
]


def load_config(
    path: str | Path,
    overrides: Mapping[str, Any] | None = None,
    *,
    column_check: ColumnCheck | None = None,
) -> Config:
    """Read, validate and return the config at ``path``; ConfigError lists every problem.

    This checks the schema only; ``importer.job.load_job`` also checks that every ``value``
    and ``default`` converts, which is what a run needs."""
    path = Path(path)
    data, lines, duplicates = read_yaml(path)
    return _validate(data, str(path), overrides, lines, duplicates, path.stem, column_check)


def parse_config(
    data: Mapping[str, Any],
    source: str = "<config>",
    overrides: Mapping[str, Any] | None = None,
    *,
    column_check: ColumnCheck | None = None,
) -> Config:
    """Validate an in-memory config dict (the parsed YAML), as ``load_config`` does a file."""
    stem = None if source.startswith("<") else Path(source).stem
    return _validate(data, source, overrides, {}, [], stem, column_check)


def _validate(
    data: Any,
    source: str,
    overrides: Mapping[str, Any] | None,
    lines: dict[tuple[str, ...], int],
    duplicates: list[ConfigProblem],
    default_name: str | None,
    column_check: ColumnCheck | None,
) -> Config:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            [ConfigProblem("", "the config must be a mapping of sections (target, job, columns)")],
            source=source,
        )
    data = _deep_copy(data)
    problems = list(duplicates)
    overridden: list[tuple[str, ...]] = []
    for dotted, value in (overrides or {}).items():
        why = _apply_override(data, dotted, value)
        if why:
            problems.append(ConfigProblem(dotted, why, "fix the override"))
        overridden.append(tuple(dotted.split(".")))
    job = data.get("job")
    if default_name and isinstance(job, dict) and job.get("name") is None:
        # the file's name stands in for job.name; make it usable as a directory name
        data["job"] = {**job, "name": re.sub(r"[^\w.-]+", "_", default_name).strip("._-") or "job"}

    def line_of(path: tuple[str, ...]) -> int | None:
        if any(path[: len(o)] == o for o in overridden):
            return None
        while path:
            if path in lines:
                return lines[path]
            path = path[:-1]
        return None

    config: Config | None = None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems += _schema_problems(exc, line_of)
    except ConfigError as exc:
        # pydantic runs InputOptions.__init__ for the input: section, whose ConfigError
        # would stop the whole check there (no file, no line, no other problem, CHANGE_ME
        # not said): its problems get their lines, and the rest is checked without it
        for p in exc.problems:
            problems.append(
                ConfigProblem(p.path, p.message, p.hint, line_of(tuple(p.path.split("."))))
            )
        try:
            Config.model_validate({k: v for k, v in data.items() if k != "input"})
        except ValidationError as rest:
            problems += _schema_problems(rest, line_of)
    for path, message, hint in text_problems(data):
        shown = tuple(escaped(p) for p in path)
        problems.append(ConfigProblem(".".join(shown), message, hint, line_of(path)))
    for path, message, hint in cross_problems(data):
        problems.append(ConfigProblem(".".join(path), message, hint, line_of(path)))
    if column_check is not None:
        for path, message, hint in _column_problems(with_event_defaults(data), column_check):
            problems.append(ConfigProblem(".".join(path), message, hint, line_of(path)))
    placeholders = [
        ConfigProblem(".".join(path), message, None, line_of(path))
        for path, message in placeholder_problems(data)
    ]
    if placeholders:
        # 'primary key CHANGE_ME is not a property': the placeholder problem says it better
        problems = [p for p in problems if PLACEHOLDER not in p.message] + placeholders
    if problems:
        unique = list(dict.fromkeys(problems))
        unique.sort(key=lambda p: (p.line is None, p.line or 0))
        secrets = secret_values(data)
        unique = [redact_problem(p, secrets) for p in unique]
        raise ConfigError(unique, source=source, secrets=secrets)
    assert config is not None
    return config


def _schema_problems(
    exc: ValidationError, line_of: Callable[[tuple[str, ...]], int | None]
) -> list[ConfigProblem]:
    out = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        message, hint = _explain(err, loc)
        # Line of the key itself; a missing key points at its parent.
        out.append(ConfigProblem(".".join(loc), message, hint, line_of(loc)))
    return out


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _apply_override(data: dict[str, Any], dotted: str, value: Any) -> str | None:
    parts = dotted.split(".")
    if not all(parts):
        return f"override key '{dotted}' is not a dotted path"
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            return f"cannot set '{dotted}': '{'.'.join(parts[: i + 1])}' is not a mapping"
        node = child
    node[parts[-1]] = value
    return None


_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "list": "a list",
    "dict": "a mapping (key: value)",
    "model": "a mapping (key: value)",
}


def _explain(err: Any, loc: tuple[str, ...]) -> tuple[str, str | None]:
    """A plain-language message and hint for one pydantic error."""
    kind: str = err["type"]
    ctx = err.get("ctx") or {}
    got = err.get("input")
    if kind == "dmimport":
        return ctx["message"], ctx.get("hint")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = did_you_mean(loc[-1], allowed) if allowed else None
        if hint is None and allowed:
            hint = "allowed keys: " + ", ".join(allowed)
        return f"unknown key '{loc[-1]}'", hint
    if kind == "missing":
        return f"required key '{loc[-1]}' is missing", None
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", ctx.get("expected", ""))
        hint = did_you_mean(str(got), choices) if isinstance(got, str) else None
        return f"expected one of {', '.join(choices)}, got {show(got)}", hint
    base = kind.split("_")[0]
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<"}.get(kind, "<=")
        bound = next(iter(ctx.values()))
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return f"must be {op} {bound}, got {show(got)}", None
    if kind == "too_short":
        if loc == ("job", "primary_keys"):
            return "list at least one primary-key property", "e.g. primary_keys: [phone, email]"
        return f"must have at least {ctx.get('min_length', 1)} entry", None
    if kind in ("int_from_float", "int_parsing", "float_parsing", "bool_parsing") or (
        kind.endswith("_type") and base in _TYPE_WORDS
    ):
        word = _TYPE_WORDS.get(base, base)
        hint = "quote it in YAML to make it text" if base == "string" else None
        if loc[:1] == ("columns",) and base == "model":
            word = "a column name or a mapping like {from: 列名, type: string}"
        return f"expected {word}, got {show(got)}", hint
    return err["msg"], None


def _allowed_keys(loc: tuple[str, ...]) -> list[str]:
    """Keys allowed at ``loc`` (used for did-you-mean on unknown keys)."""
    model: type[BaseModel] = Config
    rest = list(loc)
    while rest:
        part = rest.pop(0)
        if model is Config and part == "columns":
            if not rest:
                return []
            rest.pop(0)
            model = ColumnSpec
            continue
        field = model.model_fields.get(part)
        ann = field.annotation if field is not None else None
        if get_origin(ann) is list and rest:  # ``notify: [...]``: the entry's index
            rest.pop(0)
            ann = get_args(ann)[0]
        if ann is not None and not isinstance(ann, type):  # ``Model | None``
            ann = next((a for a in get_args(ann) if isinstance(a, type)), None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return [f.alias or name for name, f in model.model_fields.items()]


def _column_problems(
    data: Mapping[str, Any], check: ColumnCheck
) -> list[tuple[tuple[str, ...], str, str | None]]:
    """``check`` run on every column that is otherwise valid (so what it finds is reported
    alongside any other problem), with ``job.max_value_length`` (1024 when it is not valid)."""
    columns = data.get("columns")
    if not isinstance(columns, Mapping):
        return []
    specs: dict[str, ColumnSpec] = {}
    for name, raw in columns.items():
        if text_problems(raw):
            continue  # a lone surrogate is reported already; a check cannot take it
        try:
            specs[str(name)] = ColumnSpec.model_validate(raw)
        except ValidationError:
            continue
    job = data.get("job")
    limit = job.get("max_value_length") if isinstance(job, Mapping) else None
    return check(specs, limit if isinstance(limit, int) and limit > 0 else 1024)
