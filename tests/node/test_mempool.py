"""Mempool admission, nonce queues and gap-free reaping, against a plain account table."""

from __future__ import annotations

import pytest

from devnet.network import account_key
from node.http.problems import problem_status
from node.mempool import Account, Mempool, MempoolLimits
from node.sigcache import SignatureCache
from qchain.errors import (
    BadSignature,
    MempoolFull,
    NonceInUse,
    NonceMismatch,
    NotAMember,
    WrongChain,
)
from qchain.types import Transaction, new_transaction

CHAIN = "mempool-test"


class Accounts:
    def __init__(self) -> None:
        self.nonces: dict[bytes, int] = {}
        self.keys: dict[bytes, tuple[str, bytes]] = {}
        self.suspended: set[bytes] = set()

    def next_nonce(self, address: bytes) -> int:
        return self.nonces.get(address, 0)

    def account(self, address: bytes) -> Account | None:
        key = self.keys.get(address)
        if key is None:
            return None
        scheme, public_key = key
        return Account(self.next_nonce(address), address not in self.suspended, scheme, public_key)


def tx(role: str, nonce: int, tag: int = 0, chain: str = CHAIN) -> Transaction:
    return new_transaction(
        account_key(role, "ed25519"),
        chain_id=chain,
        nonce=nonce,
        contract="notary",
        method="anchor",
        args=[bytes([tag, nonce]) * 16, "sha256", "t", "c", b""],
    )


@pytest.fixture
def pool() -> tuple[Mempool, Accounts]:
    accounts = Accounts()
    for role in ("partner1", "partner2"):
        key = account_key(role, "ed25519")
        accounts.keys[key.address] = (key.scheme.value, key.public_key)
    return Mempool(CHAIN, MempoolLimits(max_txs=5, max_per_sender=4), accounts), accounts


def test_admission_rules(pool: tuple[Mempool, Accounts]) -> None:
    mp, _ = pool
    first = tx("partner1", 0)
    assert mp.add(first, height=0, now=0.0)
    assert not mp.add(first, height=0, now=0.0), "the same bytes again are not new"
    with pytest.raises(NonceInUse):
        mp.add(tx("partner1", 0, tag=1), height=0, now=0.0)
    with pytest.raises(NonceMismatch):
        mp.add(tx("partner1", 9), height=0, now=0.0)
    with pytest.raises(WrongChain):
        mp.add(tx("partner1", 1, chain="other"), height=0, now=0.0)
    with pytest.raises(NotAMember):
        mp.add(tx("auditor", 0), height=0, now=0.0)
    forged = tx("partner2", 0)
    forged = Transaction(*forged.to_wire()[:-1], forged.signature[::-1])  # type: ignore[arg-type]
    with pytest.raises(BadSignature):
        mp.add(forged, height=0, now=0.0)
    assert len(mp) == 1 and mp.rejections["nonce-in-use"] == 1


def test_gaps_are_not_ready_and_reap_stops_at_a_gap(pool: tuple[Mempool, Accounts]) -> None:
    mp, _ = pool
    mp.add(tx("partner1", 1), height=0, now=0.0)
    mp.add(tx("partner1", 2), height=0, now=0.0)
    assert not mp.has_ready(), "only a gap: nothing can go into a block"
    assert mp.reap(100, 1 << 20) == []
    mp.add(tx("partner1", 0), height=0, now=0.0)
    assert mp.has_ready()
    assert [t.nonce for t in mp.reap(100, 1 << 20)] == [0, 1, 2]
    assert [t.nonce for t in mp.reap(2, 1 << 20)] == [0, 1]


def test_limits_and_commit(pool: tuple[Mempool, Accounts]) -> None:
    mp, accounts = pool
    for n in range(4):
        mp.add(tx("partner1", n), height=0, now=0.0)
    mp.add(tx("partner2", 0), height=0, now=0.0)
    with pytest.raises(MempoolFull) as full:
        mp.add(tx("partner2", 1), height=0, now=0.0)
    assert problem_status(full.value)[0] == 503, "a full mempool means retry later"
    included = mp.reap(2, 1 << 20)
    sender = included[0].sender
    accounts.nonces[sender] = 2
    mp.on_commit(included, height=1)
    assert len(mp) == 3
    assert mp.next_free_nonce(sender, 2) == 4


def test_admission_fills_the_signature_cache_that_execution_uses(
    pool: tuple[Mempool, Accounts], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transaction verified at admission is not verified again when a block includes
    it; a forged one is rejected and not remembered."""
    _, accounts = pool
    cache = SignatureCache()
    mp = Mempool(CHAIN, MempoolLimits(), accounts, cache)
    good = tx("partner1", 0)
    forged = tx("partner2", 0)
    forged = Transaction(*forged.to_wire()[:-1], forged.signature[::-1])  # type: ignore[arg-type]
    assert mp.add(good, height=0, now=0.0)
    with pytest.raises(BadSignature):
        mp.add(forged, height=0, now=0.0)
    calls: list[bytes] = []
    real = Transaction.verify_signature

    def counting(self: Transaction, public_key: bytes) -> None:
        calls.append(self.hash)
        real(self, public_key)

    monkeypatch.setattr(Transaction, "verify_signature", counting)
    cache(good, account_key("partner1", "ed25519").public_key)
    assert calls == [], "admission's check is remembered"
    with pytest.raises(BadSignature):
        cache(forged, account_key("partner2", "ed25519").public_key)
    assert calls == [forged.hash]


def test_local_share_bounds_client_transactions_but_not_forwarded_ones(
    pool: tuple[Mempool, Accounts],
) -> None:
    """max_local caps what clients of this node may have pending, so that every node's
    share, forwarded to the leader, fits in the leader's pool."""
    _, accounts = pool
    mp = Mempool(CHAIN, MempoolLimits(max_txs=10, max_local=2), accounts)
    mp.add(tx("partner1", 0), height=0, now=0.0, local=True)
    mp.add(tx("partner1", 1), height=0, now=0.0, local=True)
    with pytest.raises(MempoolFull) as full:
        mp.add(tx("partner1", 2), height=0, now=0.0, local=True)
    assert problem_status(full.value)[0] == 503
    assert mp.add(tx("partner1", 2), height=0, now=0.0), "a peer's forward is not capped"
    assert mp.local_count == 2 and len(mp) == 3
    accounts.nonces[account_key("partner1", "ed25519").address] = 1
    mp.on_commit([tx("partner1", 0)], height=1)
    assert mp.local_count == 1
    # A forwarded transaction that a client then submits here becomes local.
    assert not mp.add(tx("partner1", 2), height=1, now=0.0, local=True)
    assert mp.local_count == 2
    with pytest.raises(MempoolFull):
        mp.add(tx("partner2", 0), height=1, now=0.0, local=True)
    assert mp.add(tx("partner2", 0), height=1, now=0.0)


def test_a_full_block_serves_the_senders_it_left_out_first_next_time() -> None:
    """Round robin under load: the senders a committed block served go behind those it
    left out, so a block cap never starves the same senders."""
    accounts = Accounts()
    roles = [f"rr{i}" for i in range(3)]
    for role in roles:
        key = account_key(role, "ed25519")
        accounts.keys[key.address] = (key.scheme.value, key.public_key)
    mp = Mempool(CHAIN, MempoolLimits(max_txs=100, max_per_sender=10), accounts)
    for n in range(4):
        for role in roles:
            mp.add(tx(role, n), height=0, now=0.0)
    first = mp.reap(4, 1 << 20)
    assert [t.sender for t in first] == [account_key("rr0", "ed25519").address] * 4
    accounts.nonces[first[0].sender] = 4
    mp.on_commit(first, 1)
    second = mp.reap(4, 1 << 20)
    assert {t.sender for t in second} == {account_key("rr1", "ed25519").address}
    accounts.nonces[second[0].sender] = 4
    mp.add(tx("rr0", 4), height=1, now=1.0)
    mp.on_commit(second, 2)
    third = mp.reap(4, 1 << 20)
    assert {t.sender for t in third} == {account_key("rr2", "ed25519").address}, (
        "rr0 was served two blocks ago: rr2 first"
    )
