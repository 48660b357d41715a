"""`parse_json`: JSON input from outside is UTF-8, shallow, and holds only what a qchain
value can be; everything else is an `InvalidJson` that says what and where."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qchain import jsonform
from qchain.errors import CodecError, InvalidJson, JsonSyntaxError
from qchain.jsonform import MAX_JSON_DEPTH, parse_json


def refused(data: bytes | str) -> InvalidJson:
    with pytest.raises(InvalidJson) as info:
        parse_json(data, "body")
    assert isinstance(info.value, CodecError) and info.value.code == "malformed-encoding"
    return info.value


@pytest.mark.parametrize(
    ("data", "pointer", "reason"),
    [
        (b'"\\ud800"', "", "lone surrogate"),
        (b'{"args": [1, "ok \\udfff"]}', "/args/1", "lone surrogate"),
        (b'{"a/b~": {"\\udc00": 1}}', "/a~1b~0", "object key holds a lone surrogate"),
        (b'{"nonce": NaN}', "/nonce", "NaN is not a JSON number"),
        (b"[Infinity]", "/0", "Infinity is not a JSON number"),
        (b"[-Infinity]", "/0", "-Infinity is not a JSON number"),
        (b'{"x": 1e400}', "/x", "number 1e400 is out of range"),
        (b"[18446744073709551616]", "/0", "integer 18446744073709551616 is outside"),
        (b"[-9223372036854775809]", "/0", "is outside the 64-bit range"),
        (("[" + str(2**1000) + "]").encode(), "/0", "integer of 302 digits"),
    ],
)
def test_refused_values_are_named_by_pointer(data: bytes, pointer: str, reason: str) -> None:
    e = refused(data)
    assert e.pointer == pointer
    assert reason in e.reason
    assert e.fields() == {"reason": e.reason, "pointer": pointer}
    assert e.message.startswith("body")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b" \n", "empty"),
        (b'{"a": [1, 2', "not JSON: Expecting ',' delimiter (line 1, column 12)"),
        (b'"\x00"', "not JSON: Invalid control character"),
    ],
)
def test_text_that_is_not_json_is_a_syntax_error(data: bytes, reason: str) -> None:
    e = refused(data)
    assert isinstance(e, JsonSyntaxError)
    assert reason in e.reason and e.pointer is None


def test_bytes_must_be_utf8() -> None:
    for data, offset in ((b'"\xff"', 1), (b'["\xed\xa0\x80"]', 2), (b"\xfe\xff\x00[", 0)):
        e = refused(data)
        assert not isinstance(e, JsonSyntaxError)
        assert e.reason.startswith("not valid UTF-8") and f"offset {offset}" in e.reason
    assert parse_json(b"\xef\xbb\xbf[1]") == [1], "a UTF-8 byte order mark is allowed"
    assert isinstance(refused("\ud800"), InvalidJson)


@pytest.mark.parametrize("opener", ["[", '{"a":', '[{"k": ["x", '])
def test_nesting_is_limited_before_parsing(opener: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Too deep a document is refused by the depth scan alone: the parser never sees it
    (no recursion, no work in proportion to the nesting)."""
    closer = {"[": "]", '{"a":': "}", '[{"k": ["x", ': "]}]"}[opener]
    parsed: list[int] = []
    loads = json.loads

    def counting_loads(text: str, **kw: object) -> object:
        parsed.append(len(text))
        return loads(text, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(jsonform.json, "loads", counting_loads)
    for depth in (MAX_JSON_DEPTH + 1, 10_000, 200_000):
        for text in (opener * depth, opener * depth + "1" + closer * depth):
            e = refused(text.encode())
            assert "nested deeper than 64" in e.reason
    assert parsed == []
    shallow = opener * 2 + "1" + closer * 2
    parse_json(shallow)
    assert parsed == [len(shallow)], "the counter sees what the parser is given"


def test_nesting_depth_is_counted_outside_strings() -> None:
    doc = {"a": "[" * 10_000, "b": '"{{{', "c": [[["\\" + "[" * 100]]]}
    assert parse_json(json.dumps(doc)) == doc
    deep: object = 1
    for _ in range(MAX_JSON_DEPTH):
        deep = [deep]
    assert parse_json(json.dumps(deep)) == deep
    refused(json.dumps([deep]))


def test_valid_values_are_unchanged() -> None:
    text = '{"a": [0, -0, -9223372036854775808, 18446744073709551615, 1.5, -0.0, true, null]}'
    assert parse_json(text) == json.loads(text)
    assert parse_json('"\\ud83d\\ude00 \\u0000"') == "\U0001f600 \x00", "a pair is one code point"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, derandomize=True)
@given(json_values)
def test_any_valid_document_parses_as_the_standard_library_does(v: object) -> None:
    text = json.dumps(v)
    assert parse_json(text) == json.loads(text)
    assert parse_json(text.encode()) == json.loads(text)
