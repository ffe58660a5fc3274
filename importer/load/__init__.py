"""Read input files into bounded batches of text: the first stage of load -> map -> send.

``expand_inputs`` turns paths, directories and globs into files; ``open_source`` checks one file
(format, encoding, header) before anything is sent; ``iter_batches`` streams it as ``Batch``es.

Every record of a file ends up exactly once, in file order, either as a row of a batch's table
(with its physical line in ``lines``) or as a ``BadRecord`` saying why not. A problem with the
whole file is a ``LoadError`` naming the file.

``Tuning`` sets block sizes and the JSON Lines engine; ``ReadStats`` counts how a file was read.

Modules: ``options`` (``InputOptions``, ``Tuning``, ``ReadStats``), ``discover`` (finding
files), ``sniff`` (format, encoding, header), ``textstream`` (the transcoding stream and its
throttle), ``quotes`` (malformed CSV quoting), ``csv``, ``jsonl``, ``parquet`` (one reader per
format), ``values`` (checks all formats share), ``batch`` (the types handed on), ``reader``
(``iter_batches``). docs/input-files.md describes the behaviour for users.
"""

from .batch import BadRecord, Batch, Source
from .discover import EXTENSIONS, expand_inputs
from .frames import frame_source
from .options import InputOptions, ReadStats, StableFor, Tuning
from .reader import iter_batches
from .sniff import open_source

__all__ = [
    "EXTENSIONS",
    "BadRecord",
    "Batch",
    "InputOptions",
    "ReadStats",
    "Source",
    "StableFor",
    "Tuning",
    "expand_inputs",
    "frame_source",
    "iter_batches",
    "open_source",
]
