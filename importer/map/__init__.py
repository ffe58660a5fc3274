"""The map stage: a table of source text in, per-row local verdicts and request items out.

Work is column-at-a-time with ``pyarrow.compute``; fast paths are picked from byte scans of a
whole column (``arrays``). Python touches single values only for rare cases: reasons of
rejected rows, odd control characters, numbers Python prints in exponent form, integers past
18 digits, datetimes a configured ``format`` cannot parse vectorised. Every path yields the
same bytes for the same value, so one odd cell never changes another row's output.

Per property, in config order (``mapper``, ``values``):

1. cell text -> ``transform`` steps (``transforms``; ``digits`` and ``phone_cn`` may refuse a
   value) -> for typed columns, surrounding whitespace dropped;
2. empty (null or "") -> omitted, then ``default`` (if any) fills it;
3. typed conversion to the JSON text the body will carry (``values``; ``number_format`` read
   first); a reason for a value that does not convert is built only for rejected rows
   (``reasons``).

Local checks then mirror the server: the first failure decides the errcode (``checks``;
``ErrCode`` values), the reason lists every failure (a row-wide one first, then one per failing
property in config order, joined with ``"; "``; ``Mapped.column`` their columns, joined with
``";"``):

1. event name empty (``event_name_from``)                   DATA_CHECK_FAILED   20003
2. no property has a value                                  PROPERTIES_EMPTY    10004
3. no primary-key property; event without ``event_id``      PRIMARY_KEY_MISSING 20001
4. primary keys all whitespace; ``event_id`` whitespace     PRIMARY_KEY_EMPTY   20002
5. a transform refused a value, or it does not convert      the profile's ``wrong_type``:
                                                            DATA_CHECK_FAILED   20003
                                                            (import-api), INVALID_TYPE
                                                            10002 (signed)
6. ``create_time`` missing or invalid; event name longer    DATA_CHECK_FAILED   20003
   than ``max_value_length``; then per property in config
   order: ``required`` empty, string longer than
   ``max_value_length``, ``pattern`` mismatch

Items (``bodies``) are joined per row from ``"key":value`` fragments: a row's item is its
encoded properties object ``{"k":v,...}``, byte-identical to ``protocol.encode_body`` of the
same dict; ``Profile.body(kind, items, event)`` joins items into a request body (one record,
or a batch). An event name from a column becomes per row its JSON string literal
(``Mapped.events``), to group rows by name and to pass as ``event``; a fixed one is
``Mapper.event``. Both stay in Arrow arrays: ``Mapped.items`` (``sequences.TextList``) hands
out ``bytes`` per row on access, so a million-row table never becomes a million Python objects
before the sender needs them.
``Mapped.properties_hash`` (``hashes``) is the change hash a changed-only run compares.
"""

from .checks import constant_problems
from .mapper import Mapped, Mapper
from .values import FALSE_WORDS, TRUE_WORDS, convert_values

__all__ = [
    "FALSE_WORDS",
    "TRUE_WORDS",
    "Mapped",
    "Mapper",
    "constant_problems",
    "convert_values",
]
