"""Which record of a JSON dataset holds a given offset, found after the full parse failed.

A syntax error or a non-UTF-8 byte stops the parser, so its position (line,
offset) is all the parser can say. :func:`record_at` adds the record: it
walks the record list (the top-level list of ALIGNN files, or the ``"data"``
list of a Matbench table) one element at a time with the C JSON scanner
(``raw_decode``), so the elements before the bad spot parse and are counted,
and the one that fails, or that spans the offset, is the record. Its
``jid``/``id`` is read from the part of its text that is known to be valid.
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass

_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"\s*")
_ID_FIELD = re.compile(r'"j?id"\s*:\s*("(?:[^"\\]|\\.){0,200}"|-?\d{1,30})')


@dataclass(frozen=True)
class RecordSpan:
    """Where one record's text lies.

    Attributes:
        index: 0-based position of the record in the record list.
        start: Offset of its first character.
        end: Offset just past it, or past the part of it that parses.
    """

    index: int
    start: int
    end: int


def _skip(text: str, pos: int) -> int:
    return _SPACE.match(text, pos).end()  # type: ignore[union-attr]  # \s* always matches


def _value_end(text: str, pos: int) -> int | None:
    """End of the JSON value at ``pos``, or ``None`` when it does not parse."""
    try:
        return _DECODER.raw_decode(text, pos)[1]
    except (ValueError, RecursionError):
        return None


def _list_start(text: str, offset: int) -> int | None:
    """Offset just inside the record list's ``[``; ``None`` if the list starts after
    ``offset`` or cannot be found."""
    pos = _skip(text, 0)
    if text.startswith("[", pos):
        return pos + 1
    if not text.startswith("{", pos):
        return None
    pos += 1
    while pos < offset:  # the top-level object's members, up to "data"
        pos = _skip(text, pos)
        key_end = _value_end(text, pos)
        if key_end is None or not text.startswith('"', pos):
            return None
        key = text[pos:key_end]
        pos = _skip(text, key_end)
        if not text.startswith(":", pos):
            return None
        pos = _skip(text, pos + 1)
        if key == '"data"' and text.startswith("[", pos):
            return pos + 1 if pos < offset else None
        end = _value_end(text, pos)
        if end is None:
            return None
        pos = _skip(text, end)
        if not text.startswith(",", pos):
            return None
        pos += 1
    return None


def _span(text: str, offset: int) -> RecordSpan | None:
    """The record whose text holds ``offset``; ``None`` outside the record list."""
    pos = _list_start(text, offset)
    if pos is None or offset < pos:
        return None
    index = 0
    while True:
        pos = _skip(text, pos)
        if text.startswith("]", pos) or pos >= len(text):
            return RecordSpan(index, pos, pos) if offset <= pos else None
        end = _value_end(text, pos)
        if end is None or end > offset:  # this record fails to parse, or holds the offset
            return RecordSpan(index, pos, offset if end is None else end)
        after = _skip(text, end)
        if after >= offset and not text.startswith((",", "]"), after):
            return RecordSpan(index + 1, after, after)  # a separator is missing here
        if text.startswith("]", after):
            return None  # the list closed before the offset
        if not text.startswith(",", after):
            return None
        pos, index = after + 1, index + 1


def _record_id(text: str, span: RecordSpan) -> str | None:
    """The ``jid``/``id`` written in the part of the record's text that parses, if any."""
    found = _ID_FIELD.search(text, span.start, span.end)
    if found is None:
        return None
    try:
        return str(json.loads(found.group(1))).strip() or None
    except ValueError:
        return None


def record_at(text: str | bytes, offset: int) -> str:
    """``", in record I (id X)"`` for the record holding ``offset``, else ``""``.

    Args:
        text: The file's decoded text (``offset`` in characters), or its raw
            bytes (``offset`` in bytes, e.g. where decoding failed: bytes that
            are not UTF-8 are replaced, so the rest of the text still parses).
        offset: Where the parser or decoder stopped.
    """
    if isinstance(text, bytes):
        bom = len(codecs.BOM_UTF8) if text.startswith(codecs.BOM_UTF8) else 0
        offset = len(text[bom:offset].decode("utf-8", errors="replace"))
        text = text[bom:].decode("utf-8", errors="replace")
    span = _span(text, offset)
    if span is None:
        return ""
    record_id = _record_id(text, span)
    return f", in record {span.index}" + (f" (id {record_id})" if record_id else "")
