"""The job config: one YAML file that says where to send, what kind of rows, and how columns map.

``load_config(path)`` reads and validates it; ``parse_config(data)`` validates a dict already in
memory. Both collect **every** problem and raise one ``ConfigError`` whose ``problems`` each
carry the dotted key path (``columns.age.type``), a plain message, a hint when there is a likely
fix ("did you mean 'concurrency'?") and the YAML line when the file is known.

Validation happens in layers, and all of them always run so nothing hides behind an earlier
problem:

1. pydantic checks each key's type and range (``extra="forbid"`` everywhere, so a typo is an
   error, never silently ignored);
2. cross-field rules that span sections (primary keys must be columns, events need
   ``event_id`` and ``create_time``, ...) run on the raw dict, defensively, so they are
   reported next to the type errors;
3. a ``column_check`` the caller passes runs on every otherwise valid column. This package
   knows the schema only and imports no stage; ``importer.job.load_job`` passes the mapper's
   ``constant_problems``, so a ``value`` or ``default`` the mapper would reject is a config
   error, not a million row errors;
4. every key or value still holding ``CHANGE_ME`` (what ``dmimport init`` writes where it
   cannot decide) is a problem of its own (``placeholders``), so a draft never runs.

One module per section: ``target``, ``job``, ``columns``, ``notify`` (the webhooks), ``model``
(the whole ``Config``, with ``send``, ``report`` and ``state``; the ``input:`` section is the
loader's own ``importer.load.InputOptions``); ``base`` what the sections share (the strict model
base, did-you-mean hints); ``yamlfile`` reads the file, ``placeholders`` finds the ``CHANGE_ME``s,
``validate`` turns every failure into ConfigProblems, ``redact`` keeps secrets out of them.

The models are frozen; the mapper, loader and sender read them, never change them.
"""

from .columns import CREATE_TIME, EVENT_ID, ColumnSpec, NumberFormat
from .guard import GuardOptions
from .job import EVENT_NAME_PLACEHOLDER
from .model import Config, RetryOptions, check_columns, sending_problems
from .notify import Mention, NotifyHook
from .placeholders import PLACEHOLDER, is_placeholder_problem
from .validate import load_config, parse_config

__all__ = [
    "CREATE_TIME",
    "EVENT_ID",
    "EVENT_NAME_PLACEHOLDER",
    "PLACEHOLDER",
    "ColumnSpec",
    "Config",
    "GuardOptions",
    "Mention",
    "NotifyHook",
    "NumberFormat",
    "RetryOptions",
    "check_columns",
    "is_placeholder_problem",
    "load_config",
    "parse_config",
    "sending_problems",
]
