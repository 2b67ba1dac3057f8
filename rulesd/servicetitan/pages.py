"""Decoding a page of records: the paging envelope, and the records kept as the JSON text that arrived.

A sync writes each record's JSON into Postgres, which parses it again for
the ``raw jsonb`` column. Turning a 5,000-record page into Python dicts
only to encode them again cost more CPU than anything else in the sync
process, so a page is read in two quick passes instead. msgspec reads the
envelope and keeps the ``data`` array as raw JSON text, then reads only
each record's ``id``. ``RecordArray.records`` turns the records into
dicts on first use, for callers that read fields; the sync's slower paths
use each record's text (``RecordArray.record_texts``).

A body that msgspec does not take this way, such as records without
integer ids, a NaN, or a lone surrogate escape, is decoded whole with
orjson or the json module. A body that neither accepts is malformed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson


class MalformedPage(ValueError):
    """A 200 body that is not a page of records: cut short, not JSON, or without the paging envelope."""


class _ExportEnvelope(msgspec.Struct):
    data: msgspec.Raw
    hasMore: bool
    continueFrom: Any  # required by the feed's schema, and null on an empty feed


class _ListEnvelope(msgspec.Struct):
    data: msgspec.Raw
    hasMore: bool
    totalCount: Any = None


class _RecordId(msgspec.Struct):
    id: int


_EXPORT_DECODER = msgspec.json.Decoder(_ExportEnvelope)
_LIST_DECODER = msgspec.json.Decoder(_ListEnvelope)
_IDS_DECODER = msgspec.json.Decoder(list[_RecordId])
_TEXTS_DECODER = msgspec.json.Decoder(list[msgspec.Raw])
_ENVELOPE_KEYS = {True: ("data", "hasMore", "continueFrom"), False: ("data", "hasMore")}


class RecordArray:
    """The records of one or more pages.

    When every record is an object with an integer id, ``text`` is the JSON
    array of the records and ``ids`` lists their ids in order. Otherwise
    both are None. ``records`` decodes the text into dicts on first use.
    """

    __slots__ = ("text", "ids", "_records")

    def __init__(self, text: str | None, ids: list[int] | None, records: list[dict[str, Any]] | None) -> None:
        if records is None and (text is None or ids is None):
            raise ValueError("a RecordArray needs its records, or its JSON text and ids")
        self.text = text
        self.ids = ids
        self._records = records

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]]) -> RecordArray:
        """Wrap records that are already dicts; ``text`` and ``ids`` stay None."""
        return cls(None, None, [dict(record) for record in records])

    @classmethod
    def concat(cls, arrays: Sequence[RecordArray]) -> RecordArray:
        """Join several pages into one array, keeping the JSON text when every page has it."""
        if len(arrays) == 1:
            return arrays[0]
        if all(array.text is not None and array.ids is not None for array in arrays):
            parts = [_inner(array.text) for array in arrays if array.ids]  # type: ignore[arg-type]
            ids = [record_id for array in arrays for record_id in array.ids]  # type: ignore[union-attr]
            return cls("[" + ",".join(parts) + "]", ids, None)
        return cls(None, None, [record for array in arrays for record in array.records])

    def __len__(self) -> int:
        return len(self.ids) if self.ids is not None else len(self.records)

    def record_texts(self) -> list[bytes]:
        """Return each record's JSON text as it arrived, in order; only for an array with ``text``."""
        assert self.text is not None
        return [bytes(raw) for raw in _TEXTS_DECODER.decode(self.text)]

    @property
    def records(self) -> list[dict[str, Any]]:
        if self._records is None:
            # The json module, not orjson: it keeps integers wider than 64
            # bits exact, as the text sent to Postgres does.
            assert self.text is not None
            self._records = json.loads(self.text)
        return self._records


@dataclass(frozen=True)
class PageBody:
    """A decoded page: its records, ``hasMore``, and ``continueFrom`` or ``totalCount`` as the endpoint sends."""

    records: RecordArray
    has_more: bool
    continue_from: Any = None
    total_count: Any = None


def decode_page(content: bytes, *, export: bool) -> PageBody:
    """Decode an export (``export=True``) or list page.

    Raises ``MalformedPage`` for JSON that is not a page of records, and
    ``ValueError`` for a body that is not JSON.
    """
    try:
        envelope = (_EXPORT_DECODER if export else _LIST_DECODER).decode(content)
        text = bytes(envelope.data).decode()
        ids = [record.id for record in _IDS_DECODER.decode(text)]
    except (msgspec.DecodeError, UnicodeDecodeError):  # a ValidationError is a DecodeError too
        return _decode_whole(content, export=export)
    except RecursionError:
        raise MalformedPage("a record is nested too deeply to decode") from None
    return PageBody(
        RecordArray(text, ids, None),
        envelope.hasMore,
        continue_from=getattr(envelope, "continueFrom", None),
        total_count=getattr(envelope, "totalCount", None),
    )


def _decode_whole(content: bytes, *, export: bool) -> PageBody:
    """Decode a page into dicts: the path for bodies the msgspec pass does not take.

    Raises ``ValueError`` for text that is not JSON at all.
    """
    try:
        body = loads(content)
    except RecursionError:
        raise MalformedPage("a record is nested too deeply to decode") from None
    if not isinstance(body, dict) or any(key not in body for key in _ENVELOPE_KEYS[export]):
        raise MalformedPage("response body lacks the paging envelope")
    data = body["data"]
    if not isinstance(data, list):
        raise MalformedPage("response body 'data' is not a list")
    # bool("false") is True, so a string here would page on forever.
    if not isinstance(body["hasMore"], bool):
        raise MalformedPage(f"response body 'hasMore' is not a boolean: {body['hasMore']!r:.40}")
    for index, record in enumerate(data):
        if not isinstance(record, dict):
            raise MalformedPage(f"response body 'data' item {index} is not an object: {record!r:.40}")
    return PageBody(
        RecordArray(None, None, data),
        body["hasMore"],
        continue_from=body.get("continueFrom"),
        total_count=body.get("totalCount"),
    )


def loads(content: bytes | str) -> Any:
    """Parse JSON with orjson, falling back to the json module for what orjson rejects.

    The json module also accepts a leading BOM, NaN and unpaired surrogate
    escapes, so only text both reject raises ``ValueError``.

    NOTE: orjson (3.8) reads an integer wider than 64 bits as a float, where
    the json module keeps it exact. The fallback does not cover that case.
    Pages that take the msgspec pass never go through here.

    NOTE: the json module reads NaN and Infinity, which are not JSON, and
    orjson writes them back as null, so such a value is stored as null.
    """
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return json.loads(content)


def _inner(text: str) -> str:
    """Return a JSON array's text without its brackets."""
    return text.strip()[1:-1]
