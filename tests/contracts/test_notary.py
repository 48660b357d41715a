from __future__ import annotations

import pytest

from contracts.notary import Anchor
from contracts.testing import DevChain, digest
from qchain.errors import ArgumentError, NotFound


def anchor_args(label: str, algorithm: str = "sha256", metadata: bytes = b"") -> list[object]:
    return [digest(label), algorithm, f"contract {label}", "contracts", metadata]


def test_anchor_and_query(chain: DevChain) -> None:
    tx = chain.tx("ent", "notary", "anchor", anchor_args("a", "sm3", b"\x00meta"))
    r = chain.run(tx)
    assert r.ok and r.result == 1
    assert [e.name for e in r.events] == ["anchored"]
    a = chain.query("notary", "get", [digest("a")])
    assert a == Anchor(
        digest("a"),
        "sm3",
        "contract a",
        "contracts",
        b"\x00meta",
        chain.address("ent"),
        1,
        chain.time,
        tx.hash,
        0,
    )


def test_duplicate_names_first_anchor(chain: DevChain) -> None:
    first = chain.tx("ent", "notary", "anchor", anchor_args("a"))
    chain.run(first)
    r = chain.run(chain.tx("prov", "notary", "anchor", anchor_args("a")))
    assert not r.ok and r.code == "duplicate"
    assert first.hash.hex() in r.message and chain.address("ent").hex() in r.message
    assert "height 1" in r.message


def test_anchor_many(chain: DevChain) -> None:
    items = [anchor_args(x) for x in "abc"]
    tx = chain.tx("ent", "notary", "anchor_many", [items])
    r = chain.run(tx)
    assert r.ok and r.result == 3 and len(r.events) == 3
    a = chain.query("notary", "get", [digest("c")])
    assert isinstance(a, Anchor) and a.item == 2 and a.tx_hash == tx.hash


def test_anchor_many_is_all_or_nothing(chain: DevChain) -> None:
    chain.run(chain.tx("ent", "notary", "anchor", anchor_args("b")))
    r = chain.run(chain.tx("ent", "notary", "anchor_many", [[anchor_args("a"), anchor_args("b")]]))
    assert r.code == "duplicate"
    with pytest.raises(NotFound):
        chain.query("notary", "get", [digest("a")])
    r = chain.run(chain.tx("ent", "notary", "anchor_many", [[anchor_args("z"), anchor_args("z")]]))
    assert r.code == "duplicate"
    with pytest.raises(NotFound):
        chain.query("notary", "get", [digest("z")])


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (anchor_args("a", "md5"), "algorithm"),
        (anchor_args("a", metadata=b"x" * 4097), "metadata"),
        ([b"\x01" * 31, "sha256", "t", "c", b""], "digest"),
        ([digest("a"), "sha256", "", "c", b""], "title"),
        ([digest("a"), "sha256", "t", "c" * 65, b""], "category"),
        ([digest("a"), "sha256", "t", "c", "not bytes"], "metadata"),
    ],
)
def test_anchor_argument_errors(chain: DevChain, args: list[object], field: str) -> None:
    r = chain.run(chain.tx("ent", "notary", "anchor", args))
    assert r.code == ArgumentError.code and f"argument {field}" in r.message


def test_anchor_many_argument_errors(chain: DevChain) -> None:
    r = chain.run(chain.tx("ent", "notary", "anchor_many", [[]]))
    assert r.code == ArgumentError.code and "items" in r.message
    r = chain.run(chain.tx("ent", "notary", "anchor_many", [[anchor_args("a", "md5")]]))
    assert r.code == ArgumentError.code and "items[0].algorithm" in r.message


def test_get_unknown_digest(chain: DevChain) -> None:
    with pytest.raises(NotFound):
        chain.query("notary", "get", [digest("nothing")])
