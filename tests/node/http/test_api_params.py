"""Parsers of the API's parameters (`node.http.params`)."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from node.http.params import (
    media_type,
    parse_address,
    parse_hash,
    parse_seconds,
    parse_uint,
    query_arg,
    wants_msgpack,
)
from qchain.errors import BadParameter


def test_hashes_and_addresses_are_fixed_length_hex() -> None:
    assert parse_hash("0x" + "Ab" * 32) == b"\xab" * 32
    assert parse_address("01" * 20) == b"\x01" * 20
    for bad in ("ab" * 31, "zz" * 32, "ab" * 33, ""):
        with pytest.raises(BadParameter, match="64 hex digits"):
            parse_hash(bad)
    with pytest.raises(BadParameter) as e:
        parse_address("01" * 21)
    assert e.value.name == "address"


def test_unsigned_integers_are_decimal_and_in_range() -> None:
    assert parse_uint("0", "h") == 0
    assert parse_uint("20", "limit", 1, 100) == 20
    for bad in ("-1", "1.0", "0x10", " 1", "1" * 21):
        with pytest.raises(BadParameter, match="non-negative integer"):
            parse_uint(bad, "h")
    with pytest.raises(BadParameter, match="between 1 and 100"):
        parse_uint("101", "limit", 1, 100)


def test_seconds_are_positive_finite_and_bounded() -> None:
    assert parse_seconds("2.5", "timeout", 300.0) == 2.5
    with pytest.raises(BadParameter, match="number of seconds"):
        parse_seconds("soon", "timeout", 300.0)
    for bad in ("0", "-1", "nan", "inf", "300.5"):
        with pytest.raises(BadParameter, match=r"above 0 and at most 300\.0"):
            parse_seconds(bad, "timeout", 300.0)


def test_query_arguments_are_json_when_they_parse_and_text_otherwise() -> None:
    assert query_arg("5", "n") == 5
    assert query_arg('"5"', "n") == "5"
    assert query_arg("plain words", "n") == "plain words"
    assert query_arg('{"hex": "00ff"}', "a") == b"\x00\xff"
    assert query_arg('{"x": [{"hex": "01"}], "y": null}', "s") == {"x": [b"\x01"], "y": None}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1.5", "floats are not allowed"),
        ('{"hex": "xyz"}', "not valid hex"),
        ('{"hex": 5}', "expected a hex string"),
        ("[" * 18 + "1" + "]" * 18, "nested too deeply"),
        ("1e400", "out of range"),
        ('["\\ud800"]', "lone surrogate (not Unicode) (at /0)"),
    ],
)
def test_refused_query_arguments_name_the_parameter(text: str, reason: str) -> None:
    with pytest.raises(BadParameter) as e:
        query_arg(text, "digest")
    assert e.value.name == "digest"
    assert reason in e.value.reason
    assert not e.value.reason.startswith("digest:")


def test_media_type_and_accept() -> None:
    json_req = make_mocked_request("POST", "/", headers={"Content-Type": "Application/JSON; x=1"})
    assert media_type(json_req) == "application/json"
    assert wants_msgpack(make_mocked_request("GET", "/", headers={"Accept": "application/msgpack"}))
    refused = make_mocked_request("GET", "/", headers={"Accept": "application/msgpack;q=0"})
    assert not wants_msgpack(refused)
    assert not wants_msgpack(make_mocked_request("GET", "/"))
