from __future__ import annotations

import pytest

from contracts.query import query
from contracts.registry import DEFAULT_REGISTRY
from contracts.runtime import Kind, named_args
from contracts.testing import DevChain, digest
from qchain.errors import ArgumentError, UnknownContract, UnknownMethod
from qchain.jsonform import value_to_json


def test_every_method_has_a_schema_and_doc() -> None:
    for c in DEFAULT_REGISTRY.contracts():
        for m in c.methods():
            assert m.doc, f"{c.name}.{m.name} has no docstring"
            assert isinstance(m.params, tuple)


def test_named_args_for_anchor() -> None:
    m = DEFAULT_REGISTRY.method("notary", "anchor", Kind.TX)
    d = digest("a")
    args = named_args(
        m,
        {
            "digest": "0x" + d.hex(),
            "algorithm": "sha256",
            "title": "t",
            "category": "c",
            "metadata": "",
        },
    )
    assert args == [d, "sha256", "t", "c", b""]


def test_named_args_nested() -> None:
    m = DEFAULT_REGISTRY.method("notary", "anchor_many", Kind.TX)
    item = {
        "digest": digest("a").hex(),
        "algorithm": "sm3",
        "title": "t",
        "category": "c",
        "metadata": "00",
    }
    as_list = [digest("b").hex(), "sm3", "t", "c", ""]
    assert named_args(m, {"items": [item, as_list]}) == [
        [[digest("a"), "sm3", "t", "c", b"\x00"], [digest("b"), "sm3", "t", "c", b""]]
    ]


@pytest.mark.parametrize(
    ("named", "field"),
    [
        (
            {"digest": "zz", "algorithm": "sha256", "title": "t", "category": "c", "metadata": ""},
            "digest",
        ),
        (
            {"digest": 5, "algorithm": "sha256", "title": "t", "category": "c", "metadata": ""},
            "digest",
        ),
        ({"algorithm": "sha256", "title": "t", "category": "c", "metadata": ""}, "digest"),
        (
            {"digest": "00", "algorithm": "sha256", "title": "t", "category": "c", "metadata": ""},
            "digest",
        ),
        (
            {
                "digest": "00" * 32,
                "algorithm": "sha256",
                "title": "t",
                "category": "c",
                "metadata": "",
                "x": 1,
            },
            "x",
        ),
    ],
)
def test_named_args_errors(named: dict[str, object], field: str) -> None:
    m = DEFAULT_REGISTRY.method("notary", "anchor", Kind.TX)
    with pytest.raises(ArgumentError) as e:
        named_args(m, named)
    assert e.value.field == field


def test_named_args_nested_errors() -> None:
    m = DEFAULT_REGISTRY.method("notary", "anchor_many", Kind.TX)
    with pytest.raises(ArgumentError, match=r"items\[0\].title"):
        named_args(
            m,
            {"items": [{"digest": "00" * 32, "algorithm": "sm3", "category": "c", "metadata": ""}]},
        )
    with pytest.raises(ArgumentError, match="items"):
        named_args(m, {"items": "nope"})
    with pytest.raises(ArgumentError, match=r"items\[0\]"):
        named_args(m, {"items": [7]})


def test_query_with_named_args_and_json(chain: DevChain) -> None:
    chain.run(chain.tx("ent", "notary", "anchor", [digest("a"), "sha256", "t", "c", b"\x01"]))
    found = query(chain.store, "notary", "get", {"digest": digest("a").hex()})
    doc = value_to_json(found)
    assert isinstance(doc, dict)
    assert doc["member"] == {"hex": chain.address("ent").hex()}
    assert doc["metadata"] == {"hex": "01"}
    assert doc["height"] == 1


def test_query_errors(chain: DevChain) -> None:
    with pytest.raises(UnknownContract):
        query(chain.store, "bank", "get", [])
    with pytest.raises(UnknownMethod):
        query(chain.store, "notary", "anchor", [])
    with pytest.raises(ArgumentError):
        query(chain.store, "notary", "get", [b"short"])
    with pytest.raises(ArgumentError):
        query(chain.store, "notary", "get", "not a list")  # type: ignore[arg-type]
