"""`qchain tx send --args`: byte strings as `{"hex": ...}` in arrays and objects alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.cli_tx import parse_call_args
from qchain.cli import main
from qchain.errors import ArgumentError, CodecError
from qchain.keys import dev_key

DIGEST = "ab" * 32
ANCHOR = {
    "digest": {"hex": DIGEST},
    "algorithm": "sha256",
    "title": "t",
    "category": "c",
    "metadata": {"hex": "00"},
}
ANCHOR_VALUE = [bytes.fromhex(DIGEST), "sha256", "t", "c", b"\x00"]


def test_positional_and_named_args_take_bytes_the_same_way() -> None:
    positional = parse_call_args(json.dumps(list(ANCHOR.values())), "notary", "anchor")
    named = parse_call_args(json.dumps(ANCHOR), "notary", "anchor")
    assert positional == named == ANCHOR_VALUE


def test_named_args_of_nested_structs_take_bytes_as_hex_objects() -> None:
    by_field = json.dumps({"items": [ANCHOR]})
    by_position = json.dumps({"items": [list(ANCHOR.values())]})
    assert parse_call_args(by_field, "notary", "anchor_many") == [[ANCHOR_VALUE]]
    assert parse_call_args(by_position, "notary", "anchor_many") == [[ANCHOR_VALUE]]


@pytest.mark.parametrize(
    ("method", "args", "field"),
    [
        ("anchor", {**ANCHOR, "digest": DIGEST}, "digest"),
        ("anchor", {**ANCHOR, "metadata": ""}, "metadata"),
        ("anchor_many", {"items": [{**ANCHOR, "digest": "0x" + DIGEST}]}, "items[0].digest"),
        ("anchor_many", {"items": [[DIGEST, "sha256", "t", "c", {"hex": ""}]]}, "items[0].digest"),
    ],
)
def test_named_bytes_as_bare_hex_text_are_refused_naming_the_form(
    method: str, args: dict[str, object], field: str
) -> None:
    """Behaviour change: named arguments used to take byte strings as bare hex text."""
    with pytest.raises(ArgumentError, match=r'is given as \{"hex": "\.\.\."\}') as e:
        parse_call_args(json.dumps(args), "notary", method)
    assert e.value.field == field


def test_bad_hex_objects_and_floats_in_named_args_are_refused() -> None:
    with pytest.raises(CodecError, match="not valid hex"):
        parse_call_args('{"address": {"hex": "xyz"}}', "membership", "reinstate")
    with pytest.raises(CodecError, match="floats"):
        parse_call_args('{"address": 1.5}', "membership", "reinstate")


def test_tx_send_with_bare_hex_fails_before_reaching_a_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "key.json"
    dev_key("cli-tx", "k", "ed25519").save(key_file)
    args = json.dumps({"address": "00" * 20})
    argv = ["tx", "send", "membership", "reinstate", "--args", args, "--key", str(key_file)]
    assert main([*argv, "--node", "http://127.0.0.1:9"]) == 1
    assert 'argument address: a byte string is given as {"hex": "..."}' in capsys.readouterr().err
