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


def tx(role: str, nonce: int, tag: int = 0, chain: str = CHAIN, expiry: int = 0) -> Transaction:
    return new_transaction(
        account_key(role, "ed25519"),
        chain_id=chain,
        nonce=nonce,
        contract="notary",
        method="anchor",
        args=[bytes([tag, nonce]) * 16, "sha256", "t", "c", b""],
        expiry_height=expiry,
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


def test_the_local_share_follows_the_validator_set(pool: tuple[Mempool, Accounts]) -> None:
    """On a chain whose set changes, each validator's share is max_txs over the set's
    size: after an add, five shares still fit the leader's pool; a pool with no share
    (not a validator's) keeps none."""
    _, accounts = pool
    mp = Mempool(CHAIN, MempoolLimits(max_txs=1_280, max_local=320), accounts)
    mp.share_among(5)
    assert mp.limits.max_local == 256 and 5 * mp.limits.max_local <= mp.limits.max_txs
    mp.share_among(4)
    assert mp.limits.max_local == 320
    mp.share_among(2_000)
    assert mp.limits.max_local == 1
    plain = Mempool(CHAIN, MempoolLimits(max_txs=10), accounts)
    plain.share_among(5)
    assert plain.limits.max_local is None


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


def test_a_peers_ready_transaction_may_go_one_share_past_the_count_limit(
    pool: tuple[Mempool, Accounts],
) -> None:
    """A peer that committed a block and refilled its share before this node committed
    it sends more than its share meanwhile: a forwarded transaction a block could take
    still finds room, up to one share (max_local) past max_txs; a client's, or a
    forwarded one behind a nonce gap, does not."""
    _, accounts = pool
    mp = Mempool(CHAIN, MempoolLimits(max_txs=4, max_per_sender=8, max_local=1), accounts)
    for n in range(4):
        mp.add(tx("partner1", n), height=0, now=0.0)
    with pytest.raises(MempoolFull):
        mp.add(tx("partner2", 0), height=0, now=0.0, local=True)
    with pytest.raises(MempoolFull):
        mp.add(tx("partner2", 1), height=0, now=0.0)  # behind partner2's gap at 0
    assert mp.add(tx("partner1", 4), height=0, now=0.0)
    assert len(mp) == 5
    with pytest.raises(MempoolFull):
        mp.add(tx("partner2", 0), height=0, now=0.0)
    plain = Mempool(CHAIN, MempoolLimits(max_txs=4, max_per_sender=8), accounts)
    for n in range(4):
        plain.add(tx("partner1", n), height=0, now=0.0)
    with pytest.raises(MempoolFull):
        plain.add(tx("partner1", 4), height=0, now=0.0)  # no share: not a validator's


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


# --- transactions waiting behind a nonce gap ---------------------------------------------


def _members(*roles: str) -> Accounts:
    accounts = Accounts()
    for role in roles:
        key = account_key(role, "ed25519")
        accounts.keys[key.address] = (key.scheme.value, key.public_key)
    return accounts


def _nonces(mp: Mempool, role: str) -> list[int]:
    address = account_key(role, "ed25519").address
    return sorted(p.tx.nonce for p in mp.pending() if p.tx.sender == address)


def test_a_gap_filler_takes_the_place_of_its_senders_latest_waiting_tx() -> None:
    """The stall: a sender's later nonces fill the pool behind a refused one. Sent again,
    the refused nonce gets in in the place of the sender's latest waiting transaction,
    and the run it completes is ready."""
    members = _members("partner1", "partner2")
    mp = Mempool(CHAIN, MempoolLimits(max_txs=5, max_per_sender=5), members)
    for n in range(1, 5):
        mp.add(tx("partner1", n), height=0, now=0.0)
    mp.add(tx("partner2", 0), height=0, now=0.0)
    assert len(mp) == 5 and mp.waiting_count == 4 and mp.has_ready()
    with pytest.raises(MempoolFull):
        mp.add(tx("partner2", 2), height=0, now=0.0)  # waiting itself: displaces nothing
    assert mp.add(tx("partner1", 0), height=0, now=0.0)
    assert _nonces(mp, "partner1") == [0, 1, 2, 3], "the latest waiting one gave way"
    assert mp.waiting_count == 0 and mp.waiting_dropped["displaced"] == 1
    assert [t.nonce for t in mp.reap(10, 1 << 20) if t.sender == tx("partner1", 0).sender] == [
        0,
        1,
        2,
        3,
    ]
    with pytest.raises(MempoolFull):
        mp.add(tx("partner1", 4), height=0, now=0.0)  # ready, but nothing waits: load


def test_an_earlier_nonce_displaces_its_senders_later_waiting_ones_only() -> None:
    """Of one sender's waiting transactions, the earlier nonce is worth more (a later one
    can go into no block before it); a waiting transaction never displaces another
    sender's."""
    members = _members("partner1", "partner2")
    mp = Mempool(CHAIN, MempoolLimits(max_txs=4, max_per_sender=8), members)
    for n in (2, 3, 4):
        mp.add(tx("partner1", n), height=0, now=0.0)
    mp.add(tx("partner2", 5), height=0, now=0.0)
    assert mp.waiting_count == 4
    assert mp.add(tx("partner1", 1), height=0, now=0.0), "still waiting, but earlier"
    assert _nonces(mp, "partner1") == [1, 2, 3] and _nonces(mp, "partner2") == [5]
    assert mp.add(tx("partner2", 4), height=0, now=0.0)
    assert _nonces(mp, "partner2") == [4], "its own later nonce gave way"
    with pytest.raises(MempoolFull):
        mp.add(tx("partner1", 7), height=0, now=0.0)  # later than all of its own
    with pytest.raises(MempoolFull):
        mp.add(tx("partner2", 6), height=0, now=0.0)
    assert _nonces(mp, "partner1") == [1, 2, 3] and _nonces(mp, "partner2") == [4]


def test_a_ready_tx_displaces_the_sender_with_most_waiting_latest_first() -> None:
    mp = Mempool(CHAIN, MempoolLimits(max_txs=5, max_per_sender=8), _members("rr0", "rr1", "rr2"))
    for n in (1, 2, 3):
        mp.add(tx("rr0", n), height=0, now=0.0)
    for n in (1, 2):
        mp.add(tx("rr1", n), height=0, now=0.0)
    assert mp.add(tx("rr2", 0), height=0, now=0.0)
    assert _nonces(mp, "rr0") == [1, 2] and _nonces(mp, "rr1") == [1, 2]
    assert mp.add(tx("rr2", 1), height=0, now=0.0)
    assert _nonces(mp, "rr0") == [1], "ties go to the sender first in the pool"
    assert mp.waiting_count == 3 and len(mp) == 5


def test_the_local_share_gives_way_only_to_local_waiting_transactions() -> None:
    """A client's ready transaction over this node's share takes the place of one of
    this node's clients' waiting ones; a forwarded waiting one frees no share."""
    mp = Mempool(
        CHAIN,
        MempoolLimits(max_txs=10, max_per_sender=8, max_local=2),
        _members("partner1", "partner2"),
    )
    mp.add(tx("partner1", 2), height=0, now=0.0, local=True)
    mp.add(tx("partner2", 0), height=0, now=0.0, local=True)
    mp.add(tx("partner1", 3), height=0, now=0.0)
    assert mp.local_count == 2 and mp.waiting_local == 1 and mp.waiting_count == 2
    with pytest.raises(MempoolFull):
        mp.add(tx("partner2", 2), height=0, now=0.0, local=True)  # waiting: no place
    assert mp.add(tx("partner2", 1), height=0, now=0.0, local=True)
    assert _nonces(mp, "partner1") == [3], "the local waiting one went, the forwarded stayed"
    assert mp.local_count == 2 and mp.waiting_local == 0
    with pytest.raises(MempoolFull):
        mp.add(tx("partner1", 0), height=0, now=0.0, local=True)


def test_beyond_the_admission_bound_a_local_tx_only_replaces_a_local_waiting_one() -> None:
    mp = Mempool(CHAIN, MempoolLimits(max_txs=10, max_per_sender=8), _members("partner1"))
    mp.add(tx("partner1", 3), height=0, now=0.0, local=True)
    assert mp.may_displace_local(tx("partner1", 0))
    assert mp.may_displace_local(tx("partner1", 2)), "earlier than a waiting one"
    assert not mp.may_displace_local(tx("partner1", 4))
    assert mp.add(tx("partner1", 0), height=0, now=0.0, local=True, bounded=True)
    assert _nonces(mp, "partner1") == [0] and mp.local_count == 1, "the count did not grow"
    assert not mp.may_displace_local(tx("partner1", 1)), "nothing waits any more"
    with pytest.raises(MempoolFull):
        mp.add(tx("partner1", 1), height=0, now=0.0, local=True, bounded=True)


def test_a_forged_gap_filler_displaces_nothing() -> None:
    mp = Mempool(CHAIN, MempoolLimits(max_txs=2, max_per_sender=8), _members("partner1"))
    mp.add(tx("partner1", 1), height=0, now=0.0)
    mp.add(tx("partner1", 2), height=0, now=0.0)
    good = tx("partner1", 0)
    forged = Transaction(*good.to_wire()[:-1], good.signature[::-1])  # type: ignore[arg-type]
    with pytest.raises(BadSignature):
        mp.add(forged, height=0, now=0.0)
    assert _nonces(mp, "partner1") == [1, 2] and mp.waiting_dropped["displaced"] == 0


def test_bytes_are_made_room_for_with_as_many_waiting_txs_as_it_takes() -> None:
    small = tx("partner1", 1)
    mp = Mempool(
        CHAIN,
        MempoolLimits(max_txs=10, max_per_sender=8, max_bytes=4 * len(small.encoded)),
        _members("partner1"),
    )
    for n in (1, 2, 3, 4):
        mp.add(tx("partner1", n), height=0, now=0.0)
    assert mp.add(tx("partner1", 0), height=0, now=0.0)
    assert _nonces(mp, "partner1") == [0, 1, 2, 3]
    assert mp.size_bytes <= mp.limits.max_bytes


def test_waiting_transactions_expire_and_ready_ones_never_do() -> None:
    accounts = _members("partner1", "partner2")
    mp = Mempool(CHAIN, MempoolLimits(max_txs=10, max_per_sender=8), accounts)
    mp.add(tx("partner1", 0), height=0, now=0.0)
    mp.add(tx("partner1", 2), height=0, now=1.0, local=True)
    mp.add(tx("partner2", 1), height=0, now=2.0)
    assert mp.drop_waiting(1.0) == 0, "admitted at the bound itself: stays"
    assert mp.drop_waiting(1.5) == 1 and _nonces(mp, "partner1") == [0]
    assert mp.local_count == 0 and mp.waiting_local == 0
    assert mp.drop_waiting(100.0) == 1 and _nonces(mp, "partner2") == []
    assert _nonces(mp, "partner1") == [0], "ready: never expires for waiting"
    assert mp.waiting_dropped["expired"] == 2


def test_a_commit_that_fills_a_gap_makes_the_waiting_ones_ready() -> None:
    """The gap may be filled by a block (its transaction came in another node's pool):
    the waiting transactions behind it become ready and stop counting as waiting."""
    accounts = _members("partner1")
    mp = Mempool(CHAIN, MempoolLimits(max_txs=10, max_per_sender=8), accounts)
    for n in (2, 3):
        mp.add(tx("partner1", n), height=0, now=0.0, local=True)
    assert mp.waiting_count == 2 and not mp.has_ready()
    accounts.nonces[tx("partner1", 0).sender] = 2
    mp.on_commit([tx("partner1", 0), tx("partner1", 1)], height=1)
    assert mp.waiting_count == 0 and mp.waiting_local == 0 and mp.has_ready()
    assert mp.drop_waiting(100.0) == 0
    # An included transaction leaving opens a gap again only if a later one is missing.
    mp.add(tx("partner1", 5), height=1, now=0.0)
    assert mp.waiting_count == 1
    assert mp.add(tx("partner1", 4), height=1, now=0.0) and mp.waiting_count == 0


def test_a_waiting_tx_a_client_sends_here_after_a_peer_counts_as_local_waiting() -> None:
    mp = Mempool(CHAIN, MempoolLimits(max_txs=10, max_per_sender=8), _members("partner1"))
    mp.add(tx("partner1", 3), height=0, now=0.0)
    assert mp.waiting_count == 1 and mp.waiting_local == 0
    assert not mp.add(tx("partner1", 3), height=0, now=0.0, local=True)
    assert mp.local_count == 1 and mp.waiting_local == 1
    mp.drop_waiting(1.0)
    assert (len(mp), mp.local_count, mp.waiting_count, mp.waiting_local) == (0, 0, 0, 0)


def test_client_transactions_that_waited_are_reported_once_when_ready() -> None:
    """What waited behind a gap may have lost its place in the leader's pool meanwhile:
    the node learns which of its clients' transactions became ready, each once."""
    accounts = _members("partner1")
    mp = Mempool(CHAIN, MempoolLimits(max_txs=10, max_per_sender=8), accounts)
    mp.add(tx("partner1", 2), height=0, now=0.0, local=True)
    mp.add(tx("partner1", 3), height=0, now=0.0)
    mp.add(tx("partner1", 5), height=0, now=0.0, local=True)
    assert mp.became_ready() == []
    mp.add(tx("partner1", 1), height=0, now=0.0)  # a peer's: the gap at 0 stays
    assert mp.became_ready() == []
    accounts.nonces[tx("partner1", 0).sender] = 1
    mp.on_commit([tx("partner1", 0)], height=1)
    assert [p.tx.nonce for p in mp.became_ready()] == [2], "local ones only; 5 still waits"
    assert mp.became_ready() == []
    mp.add(tx("partner1", 4), height=1, now=0.0, local=True)
    assert [p.tx.nonce for p in mp.became_ready()] == [5]


def test_gap_before_names_the_first_missing_nonce(pool: tuple[Mempool, Accounts]) -> None:
    mp, accounts = pool
    sender = tx("partner1", 0).sender
    assert mp.gap_before(sender, 0) is None and mp.gap_before(sender, 2) == 0
    mp.add(tx("partner1", 0), height=0, now=0.0)
    mp.add(tx("partner1", 1), height=0, now=0.0)
    assert mp.gap_before(sender, 2) is None and mp.gap_before(sender, 3) == 2
    accounts.nonces[sender] = 2
    mp.on_commit([tx("partner1", 0), tx("partner1", 1)], 1)
    assert mp.gap_before(sender, 2) is None and mp.gap_before(sender, 4) == 2


def test_a_block_takes_the_oldest_first_across_senders_each_in_nonce_order(
    pool: tuple[Mempool, Accounts],
) -> None:
    """Under load a full block leaves the youngest behind, whoever sent them: taking each
    sender's whole run in turn let the last senders' oldest wait a whole turn (p99 about
    twice the median at 1.5 times the saturation rate, docs/BENCHMARKS.md)."""
    mp, _ = pool
    mp.add(tx("partner1", 0), height=0, now=0.0)
    mp.add(tx("partner1", 1), height=0, now=1.0)
    mp.add(tx("partner1", 2), height=0, now=2.0)
    mp.add(tx("partner2", 0), height=0, now=0.5)
    mp.add(tx("partner2", 1), height=0, now=0.6)
    p1, p2 = (account_key(r, "ed25519").address for r in ("partner1", "partner2"))
    taken = [(t.sender, t.nonce) for t in mp.reap(4, 1 << 20)]
    assert taken == [(p1, 0), (p2, 0), (p2, 1), (p1, 1)]
    assert [t.nonce for t in mp.reap(5, 1 << 20) if t.sender == p1] == [0, 1, 2]
