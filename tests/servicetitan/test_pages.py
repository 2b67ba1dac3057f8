"""Decoding pages of records: the msgspec pass that keeps the JSON text, and the whole-body fallback."""

from __future__ import annotations

import json

import pytest

from rulesd.servicetitan.pages import MalformedPage, RecordArray, decode_page


def export_body(data: str, *, has_more: str = "true", continue_from: str = '"token-2"') -> bytes:
    return f'{{"hasMore": {has_more}, "continueFrom": {continue_from}, "data": {data}}}'.encode()


def test_export_page_keeps_array_text() -> None:
    data = '[{"id": 1, "name": "Ada"}, {"id": 2, "name": "Grace"}]'

    page = decode_page(export_body(data), export=True)

    assert page.records.text == data
    assert page.records.ids == [1, 2]
    assert len(page.records) == 2
    assert page.has_more is True
    assert page.continue_from == "token-2"


def test_export_page_decodes_records_on_request() -> None:
    page = decode_page(export_body('[{"id": 1, "tags": ["a"]}]'), export=True)

    assert page.records.records == [{"id": 1, "tags": ["a"]}]


def test_list_page_reads_total_count() -> None:
    body = b'{"page": 1, "pageSize": 50, "hasMore": false, "totalCount": 2, "data": [{"id": 7}, {"id": 8}]}'

    page = decode_page(body, export=False)

    assert page.records.ids == [7, 8]
    assert page.total_count == 2
    assert page.has_more is False


def test_empty_export_feed_has_null_token() -> None:
    page = decode_page(export_body("[]", has_more="false", continue_from="null"), export=True)

    assert page.records.ids == []
    assert page.continue_from is None


def test_wide_integer_stays_exact() -> None:
    wide = 123456789012345678901234567890
    page = decode_page(export_body(f'[{{"id": 1, "ticks": {wide}}}]'), export=True)

    assert str(wide) in (page.records.text or "")
    assert page.records.records[0]["ticks"] == wide


@pytest.mark.parametrize(
    "data",
    [
        '[{"id": "5"}]',  # an id as a string
        '[{"id": 5.0}]',
        '[{"id": true}]',
        '[{"name": "no id"}]',
        '[{"id": 1, "total": NaN}]',  # the json module accepts NaN
        '[{"id": 1, "name": "\\ud800"}]',  # an unpaired surrogate escape
    ],
)
def test_unusual_records_fall_back_to_dicts(data: str) -> None:
    page = decode_page(export_body(data), export=True)

    assert page.records.text is None
    assert page.records.ids is None
    assert len(page.records) == 1
    assert page.records.records == json.loads(data)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"hasMore": "false", "continueFrom": null, "data": []}', "'hasMore' is not a boolean"),
        (b'{"hasMore": false, "data": []}', "lacks the paging envelope"),
        (b'{"hasMore": false, "continueFrom": null, "data": {"id": 1}}', "'data' is not a list"),
        (b'{"hasMore": false, "continueFrom": null, "data": [1, 2]}', "item 0 is not an object"),
        (b'[{"id": 1}]', "lacks the paging envelope"),
    ],
)
def test_malformed_envelope_is_rejected(body: bytes, message: str) -> None:
    with pytest.raises(MalformedPage, match=message):
        decode_page(body, export=True)


@pytest.mark.parametrize(
    "body",
    [
        export_body('[{"id": 1}, {"id": 2')[:-1],  # cut short
        b"<html>busy</html>",
        b'{"hasMore": false, "continueFrom": null, "data": [{"id": 1, "name": "\xff"}]}',  # invalid UTF-8
    ],
)
def test_body_that_is_not_json_is_rejected(body: bytes) -> None:
    with pytest.raises(ValueError):
        decode_page(body, export=True)


def test_concat_joins_texts_and_skips_empty_pages() -> None:
    first = decode_page(export_body('[{"id": 1}]'), export=True).records
    empty = decode_page(export_body("[ ]"), export=True).records
    second = decode_page(export_body('[ {"id": 2}, {"id": 3} ]'), export=True).records

    joined = RecordArray.concat([first, empty, second])

    assert joined.ids == [1, 2, 3]
    assert json.loads(joined.text or "") == [{"id": 1}, {"id": 2}, {"id": 3}]


def test_concat_with_decoded_page_gives_dicts() -> None:
    first = decode_page(export_body('[{"id": 1}]'), export=True).records
    decoded = RecordArray.from_records([{"id": "2"}])

    joined = RecordArray.concat([first, decoded])

    assert joined.text is None
    assert joined.records == [{"id": 1}, {"id": "2"}]


def test_record_array_needs_records_or_text() -> None:
    with pytest.raises(ValueError, match="needs its records"):
        RecordArray("[]", None, None)


def test_record_texts_keep_each_record_as_sent() -> None:
    page = decode_page(export_body('[{"id": 1, "x": 1.50}, {"id": 2,\n "x": 1e400}]'), export=True)

    assert page.records.record_texts() == [b'{"id": 1, "x": 1.50}', b'{"id": 2,\n "x": 1e400}']


def test_deeply_nested_record_is_malformed() -> None:
    deep = "[" * 3000 + "]" * 3000

    with pytest.raises(MalformedPage, match="nested too deeply"):
        decode_page(export_body(f'[{{"id": 1, "deep": {deep}}}]'), export=True)
