"""Pending transactions leave at their expiry height, found without walking the pool."""

from __future__ import annotations

from devnet.network import account_key
from node.expiry import SLACK, ExpiryIndex
from node.mempool import Mempool, MempoolLimits

from .test_mempool import CHAIN, Accounts, tx


def test_a_commit_drops_what_expired_and_keeps_the_rest() -> None:
    accounts = Accounts()
    for role in ("partner1", "partner2"):
        key = account_key(role, "ed25519")
        accounts.keys[key.address] = (key.scheme.value, key.public_key)
    mp = Mempool(CHAIN, MempoolLimits(), accounts)
    soon, later, never = tx("partner1", 0, expiry=3), tx("partner1", 1, expiry=9), tx("partner2", 0)
    for t in (soon, later, never):
        mp.add(t, height=0, now=0.0)
    mp.on_commit([], 2)
    assert len(mp) == 3
    mp.on_commit([], 3)
    assert soon.hash not in mp and later.hash in mp and never.hash in mp
    mp.on_commit([], 100)
    assert list(mp.pending()) == [mp.get(never.hash)]
    assert mp.size_bytes == len(never.encoded), "each left once: the byte count holds"


def test_each_due_transaction_comes_once_and_departed_entries_are_trimmed() -> None:
    idx: ExpiryIndex[str] = ExpiryIndex()
    idx.add(5, b"a")
    idx.add(5, b"a")  # admitted again after it left
    idx.add(0, b"z")  # never expires: no entry
    idx.add(7, b"b")
    assert len(idx) == 3
    assert idx.due(4, {b"a": "A", b"b": "B"}) == []
    assert idx.due(6, {b"a": "A", b"b": "B"}) == ["A"]
    assert idx.due(9, {}) == [], "b left the pool before its height"
    for k in range(2 * SLACK):
        idx.add(1_000_000, k.to_bytes(4, "big"))
    kept = {(7).to_bytes(4, "big"): "x"}
    assert idx.due(10, kept) == []
    assert len(idx) == 1, "rebuilt from the pool once the departed outnumber it"
    assert idx.due(1_000_000, kept) == ["x"]
