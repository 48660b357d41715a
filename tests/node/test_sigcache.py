"""The node's signature verifier: a memo of verified signatures that times its checks."""

from __future__ import annotations

import dataclasses

import pytest

from contracts.testing import DevChain, digest, pilot_chain
from node.sigcache import SignatureCache
from qchain.store import MemoryStore
from qchain.types import Transaction


@pytest.fixture
def chain() -> DevChain:
    return pilot_chain(MemoryStore())


def anchor(chain: DevChain, label: str, doc: str) -> Transaction:
    return chain.tx(label, "notary", "anchor", [digest(doc), "sha256", "t", "c", b""])


def test_signature_cache(chain: DevChain) -> None:
    cache = SignatureCache(capacity=1)
    a, b = anchor(chain, "ent", "a"), anchor(chain, "ent2", "b")
    cache(a, chain.keys["ent"].public_key)
    cache(a, chain.keys["ent"].public_key)
    cache(b, chain.keys["ent2"].public_key)
    forged = dataclasses.replace(a, args=[])
    with pytest.raises(Exception, match="signature"):
        cache(forged, chain.keys["ent"].public_key)
    chain.verifier = cache
    assert [r.ok for r in chain.block([a, b]).receipts] == [True, True]


def test_signature_cache_times_the_checks_it_makes(chain: DevChain) -> None:
    cache = SignatureCache()
    assert cache.verify_s == 0.0
    tx = anchor(chain, "ent", "a")
    cache(tx, chain.keys["ent"].public_key)
    measured = cache.verify_s
    assert measured > 0.0
    cache(tx, chain.keys["ent"].public_key)
    assert cache.verify_s == measured, "a remembered signature is not checked again"
