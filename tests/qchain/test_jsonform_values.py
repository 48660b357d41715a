"""The JSON forms of values: canonical values with byte strings as `{"hex": ...}`, the
node's own document fields with bytes as plain hex, and named arguments."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qchain.codec import INT_MAX, INT_MIN
from qchain.errors import CodecError
from qchain.jsonform import (
    fields_to_json,
    named_value_from_json,
    value_from_json,
    value_to_json,
)

values = st.recursive(
    st.none() | st.booleans() | st.integers(INT_MIN, INT_MAX) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=12,
)


@given(values)
def test_canonical_values_round_trip(v: object) -> None:
    assert value_from_json(value_to_json(v)) == v


@dataclass(frozen=True)
class Record:
    owner: bytes
    amounts: tuple[int, ...]


def test_query_results_write_bytes_as_hex_objects_at_any_depth() -> None:
    result = {"found": Record(b"\x01", (1, 2)), "keys": [b"\xff"], 3: None}
    assert value_to_json(result) == {
        "found": {"owner": {"hex": "01"}, "amounts": [1, 2]},
        "keys": [{"hex": "ff"}],
        "3": None,
    }


def test_document_fields_write_bytes_as_plain_hex() -> None:
    status = {"node": "n0", "leader_key": b"\xab", "peers": {b"\x01"}, "rate": math.inf}
    assert fields_to_json(status) == {
        "node": "n0",
        "leader_key": "ab",
        "peers": ["01"],
        "rate": None,
    }
    assert fields_to_json(Record(b"", ())) == "Record(owner=b'', amounts=())"


def test_text_is_never_taken_for_bytes() -> None:
    assert value_from_json(["00ff", {"hex": "00ff"}]) == ["00ff", b"\x00\xff"]
    assert named_value_from_json({"a": "00ff", "b": {"hex": "0x00ff"}}) == {
        "a": "00ff",
        "b": b"\x00\xff",
    }


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"a": 1.5}, "value.a: floats are not allowed"),
        ({"a": [{"hex": "0"}]}, "value.a[0]: not valid hex"),
        ({"a": {"b": {"hex": 5}}}, "value.a.b: expected a hex string"),
    ],
)
def test_named_values_name_what_is_refused(doc: object, message: str) -> None:
    with pytest.raises(CodecError) as e:
        named_value_from_json(doc)
    assert e.value.message == message


def test_value_objects_other_than_hex_are_refused() -> None:
    with pytest.raises(CodecError, match="args: dict is not a canonical value"):
        value_from_json({"a": 1}, "args")
