"""`Admission` with the admission bound: a client's transaction beyond the bound is
refused before its signature is checked, a peer's forwarded one is not, and the measured
rate comes from the node's own commits (a clock the test sets)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from devnet.network import account_key
from node.accounts import Admission
from node.backlog import GAP_GRACE_S, INTERVALS, UNSATURATED_MIN_ROOM, Backlog
from node.mempool import Mempool, MempoolLimits
from node.metrics import NodeMetrics
from qchain.errors import MempoolFull, Overloaded
from qchain.types import Transaction

from .test_mempool import CHAIN, Accounts, tx


class _Pacer:
    pending = None


class _CountingVerifier:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, t: Transaction, public_key: bytes) -> None:
        self.calls += 1
        t.verify_signature(public_key)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def members(*roles: str) -> Accounts:
    """Accounts holding the dev keys of roles as members."""
    accounts = Accounts()
    for role in roles:
        key = account_key(role, "ed25519")
        accounts.keys[key.address] = (key.scheme.value, key.public_key)
    return accounts


def admission_of(
    mempool: Mempool,
    accounts: Accounts,
    backlog: Backlog,
    clock: Callable[[], float],
    events: Callable[[Any], None] = lambda event: None,
) -> Admission:
    """An `Admission` over mempool at height 0, not in idle mode, with a pacer that has
    nothing pending and metrics of its own."""
    return Admission(
        mempool,
        accounts,  # type: ignore[arg-type]
        lambda: 0,
        False,
        _Pacer(),  # type: ignore[arg-type]
        NodeMetrics("admission-test"),
        events,
        backlog,
        clock,
    )


@pytest.fixture
def setup() -> tuple[Admission, Accounts, _CountingVerifier, _Clock]:
    accounts = members("partner1", "partner2")
    verifier = _CountingVerifier()
    mempool = Mempool(CHAIN, MempoolLimits(max_txs=100, max_per_sender=50), accounts, verifier)
    clock = _Clock()
    events: list[Any] = []
    admission = admission_of(mempool, accounts, Backlog(2000, 4), clock, events.append)
    return admission, accounts, verifier, clock


def test_without_commit_history_the_unsaturated_floor_applies(setup: Any) -> None:
    admission, _, _, _ = setup
    for n in range(20):
        assert admission.admit(tx("partner1", n), local=True)
    assert admission.room() == UNSATURATED_MIN_ROOM - 20


def test_beyond_the_bound_a_client_tx_is_refused_before_its_signature_is_checked(
    setup: Any,
) -> None:
    admission, _, verifier, clock = setup
    admission.backlog.committed(0.0, 8, 2, True)  # saturated; 2 local/s (share 8/4/1)
    clock.now = 1.0
    for n in range(4):  # peers' transactions: the pool is not below a block's worth
        assert admission.admit(tx("partner2", n))
    assert admission.room() == 4
    for n in range(4):
        assert admission.admit(tx("partner1", n), local=True)
    checked = verifier.calls
    with pytest.raises(Overloaded) as refused:
        admission.admit(tx("partner1", 4), local=True)
    assert verifier.calls == checked, "refused before the signature check"
    assert refused.value.retry_after_s == 1
    assert tx("partner1", 4).hash not in admission.mempool
    assert admission.room() == 0
    assert admission.overloaded().retry_after_s == 1
    # The same bytes again are no new transaction: answered as known, not refused.
    assert admission.admit(tx("partner1", 3), local=True) is False


def test_forwarded_transactions_are_not_bounded(setup: Any) -> None:
    """A peer accepted them and keeps them until they commit: the static limits only."""
    admission, _, _, clock = setup
    admission.backlog.committed(0.0, 4, 1, True)
    clock.now = 1.0
    assert admission.admit(tx("partner2", 0))
    assert admission.admit(tx("partner2", 1))
    assert admission.admit(tx("partner1", 0), local=True)
    assert admission.admit(tx("partner1", 1), local=True)
    with pytest.raises(Overloaded):
        admission.admit(tx("partner1", 2), local=True)
    for n in range(2, 12):
        assert admission.admit(tx("partner2", n))


def test_a_commit_that_leaves_ready_client_transactions_behind_saturates(
    setup: Any,
) -> None:
    admission, accounts, _, clock = setup
    sender = tx("partner1", 0).sender
    early = [tx("partner1", n) for n in range(3)]
    for t in early:
        admission.admit(t, local=True)  # at t = 0
    clock.now = 1.0
    admission.on_commit([], 1)
    assert not admission.backlog.saturated, "no cutoff yet: one commit seen"
    clock.now = 2.0
    admission.on_commit([], 2)
    assert not admission.backlog.saturated, "no cutoff yet: two commits seen"
    clock.now = 3.0
    accounts.nonces[sender] = 1
    admission.on_commit(early[:1], 3)
    assert admission.backlog.saturated, "nonce 1, ready since t = 0, was left behind"
    assert admission.room() < 1_000_000

    clock.now = 4.0
    accounts.nonces[sender] = 3
    admission.on_commit(early[1:], 4)
    assert admission.backlog.saturated, "everything ready got in, but only once"
    for k in (5, 6):
        clock.now = float(k)
        admission.on_commit([], k)
    assert not admission.backlog.saturated, "three commits took everything"
    # 3 committed since t = 2 (the commit before the first that carried any): 0.75/s
    # over 4 s; commits 1 s apart: the bound in force is the bound (2 s, above INTERVALS
    # x 1 s), doubled.
    assert admission.backlog.bound_in_force(6.0) == max(2.0, INTERVALS * 1.0)
    assert admission.room() == 1000, "unsaturated: at least 1,000 may be pending"


def test_a_nonce_gap_left_behind_does_not_saturate(setup: Any) -> None:
    admission, _, _, clock = setup
    admission.admit(tx("partner1", 5), local=True)  # nonce 0 never came: not ready
    for k in range(3):
        clock.now = 1.0 + k
        admission.on_commit([], 1 + k)
    assert not admission.backlog.saturated


def test_commits_drain_the_backlog_and_feed_the_rate(setup: Any) -> None:
    admission, accounts, _, clock = setup
    admission.backlog.committed(0.0, 8, 2, True)
    clock.now = 1.0
    for n in range(4):  # peers' transactions: the pool is not below a block's worth
        assert admission.admit(tx("partner2", n))
    sent = [tx("partner1", n) for n in range(5)]
    for t in sent[:4]:
        admission.admit(t, local=True)
    with pytest.raises(Overloaded):
        admission.admit(sent[4], local=True)
    clock.now = 2.0
    accounts.nonces[sent[0].sender] = 4
    admission.on_commit(sent[:4], 1)
    assert len(admission.mempool) == 4, "the peers' four wait"
    # 6 local transactions committed in 2 s: 3/s; commits 2 s apart make the bound in
    # force INTERVALS x 2 s (4 s): room for 12 pending.
    assert admission.backlog.rates(2.0).local == pytest.approx(3.0)
    assert admission.room() == int(INTERVALS * 2.0 * 3.0)
    assert admission.admit(sent[4], local=True)


def test_beyond_the_bound_a_gap_filler_replaces_a_waiting_client_tx(setup: Any) -> None:
    """A client that went on sending after a refusal: the node's room is taken by its
    later nonces, waiting behind the refused one. Sent again, the refused nonce takes
    the place of the latest of them (the pending count the bound measures stays); any
    other transaction is still refused before its signature is checked."""
    admission, _, verifier, clock = setup
    for n in range(1, 5):  # before the chain is saturated: accepted behind the gap
        assert admission.admit(tx("partner1", n), local=True)
    admission.backlog.committed(0.0, 8, 2, True)  # saturated; room for 4
    clock.now = 1.0
    for n in range(4):  # peers' transactions: the pool is not below a block's worth
        assert admission.admit(tx("partner2", n))
    assert admission.mempool.waiting_local == 4
    assert admission.room() == 4, "no room under the bound, four places of waiting txs"
    checked = verifier.calls
    with pytest.raises(Overloaded):
        admission.admit(tx("partner1", 5), local=True)
    with pytest.raises(Overloaded):
        admission.admit(tx("partner2", 5), local=True)
    assert verifier.calls == checked, "refused before the signature check"
    assert admission.admit(tx("partner1", 0), local=True)
    mine = sorted(p.tx.nonce for p in admission.mempool.pending() if p.local)
    assert mine == [0, 1, 2, 3] and admission.mempool.local_count == 4
    assert len(admission.mempool) == 8, "the depth did not grow either"
    assert admission.room() == 0 and admission.mempool.waiting_local == 0
    with pytest.raises(Overloaded):
        admission.admit(tx("partner2", 4), local=True)


def test_peers_transactions_waiting_for_admission_count_in_the_depth(setup: Any) -> None:
    """What the peers sent and this node has not admitted yet is ahead of a new client
    transaction as much as the pool is."""
    admission, _, _, clock = setup
    admission.backlog.committed(0.0, 8, 8, True)  # 8 tx/s, all local: room for 16
    clock.now = 1.0
    assert admission.room() == 16
    admission.queued = lambda: 12
    assert admission.depth() == 12
    assert admission.room() == 4
    for n in range(3):
        assert admission.admit(tx("partner2", n))
    assert admission.depth() == 15 and admission.room() == 1
    assert admission.admit(tx("partner1", 0), local=True)
    with pytest.raises(Overloaded) as e:
        admission.admit(tx("partner1", 1), local=True)
    assert e.value.backlog_ms == 2000


def test_while_saturated_a_client_tx_behind_an_open_nonce_gap_is_refused(setup: Any) -> None:
    """It could commit only once the missing nonce arrives: once the gap is open (seen
    for longer than the grace) it is refused with the nonce it waits for, before its
    signature is checked, though the bound has room; a peer's is taken (that peer
    answers for it), and so is the client's once the gap is filled."""
    admission, _, verifier, clock = setup
    assert admission.admit(tx("partner1", 1), local=True), "not saturated: it may wait"
    assert admission.admit(tx("partner2", 2), local=True)
    admission.backlog.committed(0.0, 80, 20, True)  # saturated; room for 40
    clock.now = GAP_GRACE_S + 0.5
    assert admission.backlog.bounding(clock.now) and admission.room() > 0
    checked = verifier.calls
    with pytest.raises(Overloaded) as refused:
        admission.admit(tx("partner1", 3), local=True)
    assert refused.value.waits_for == 0 and refused.value.fields()["waits_for"] == 0
    assert refused.value.retry_after_s >= 1
    with pytest.raises(Overloaded) as refused:
        admission.admit(tx("partner2", 1), local=True)
    assert refused.value.waits_for == 0
    assert verifier.calls == checked, "refused before the signature check"
    assert admission.admit(tx("partner2", 3))  # forwarded: waits behind the gap
    assert admission.admit(tx("partner1", 0), local=True)
    assert admission.admit(tx("partner1", 2), local=True), "its nonce 1 is pending"
    assert admission.admit(tx("partner2", 0), local=True)
    assert admission.admit(tx("partner2", 1), local=True), "fills the gap: ready"


def test_with_admission_control_off_a_gap_is_never_refused(setup: Any) -> None:
    admission, _, _, _ = setup
    off = Backlog(0, 4)
    off.committed(0.0, 80, 20, True)
    admission.backlog = off
    assert not off.bounding(0.0)
    assert admission.admit(tx("partner1", 5), local=True)


def test_after_a_refusal_for_the_bound_a_gap_is_refused_though_not_saturated(
    setup: Any,
) -> None:
    """Under overload the saturation signal comes and goes from block to block; a
    refusal for the bound within the window keeps the node under load."""
    admission, _, _, clock = setup
    admission.backlog.committed(0.0, 80, 20, False)
    clock.now = 1.0
    assert not admission.backlog.bounding(clock.now)
    assert admission.admit(tx("partner1", 1), local=True), "not under load: it may wait"
    clock.now += GAP_GRACE_S + 0.5
    admission.overloaded()  # a batch item beyond the room was refused
    with pytest.raises(Overloaded) as refused:
        admission.admit(tx("partner1", 2), local=True)
    assert refused.value.waits_for == 0
    clock.now += admission.backlog.window_s + 0.5
    assert admission.admit(tx("partner1", 2), local=True), "no refusal within the window"


def test_a_refusal_for_the_nodes_share_of_the_pool_is_load_too() -> None:
    """`mempool-full` for the node's clients' share marks the node under load as the
    bound's refusals do: a gap is refused next."""
    accounts = members("partner1", "partner2")
    mempool = Mempool(CHAIN, MempoolLimits(max_txs=100, max_local=2), accounts)
    clock = _Clock()
    admission = admission_of(mempool, accounts, Backlog(2000, 4), clock)
    assert admission.admit(tx("partner1", 0), local=True)
    assert admission.admit(tx("partner1", 1), local=True)
    assert not admission.backlog.bounding(clock.now)
    with pytest.raises(MempoolFull):
        admission.admit(tx("partner2", 0), local=True)
    assert admission.backlog.bounding(clock.now)
    # Refused here: its client sends it again after a second, what is behind it waits.
    with pytest.raises(Overloaded) as refused:
        admission.admit(tx("partner2", 1), local=True)
    assert refused.value.waits_for == 0


def _validator(accounts: Accounts, clock: _Clock) -> Admission:
    mempool = Mempool(CHAIN, MempoolLimits(max_txs=100, max_per_sender=50), accounts)
    return admission_of(mempool, accounts, Backlog(2000, 4), clock)


def test_under_load_consecutive_nonces_sent_at_once_to_different_validators_commit() -> None:
    """A client that sends a sender's outstanding nonces at once, each to another
    validator (a load balancer; a retry that goes to another node), with both validators
    under load: each nonce's predecessor is in the other validator's pool, on its way
    here in a batch. Refused there as waiting behind a gap, each sending got one nonce
    in (the one whose predecessor was committed), and a sender with hundreds
    outstanding committed one a `Retry-After` (the whole-network simulator's eager
    client, seed 5). Now the gap seen only now is fresh: all are accepted, and once the
    batches cross both pools hold the sender's whole run, which a block takes."""
    accounts = Accounts()
    key = account_key("partner1", "ed25519")
    accounts.keys[key.address] = (key.scheme.value, key.public_key)
    clock = _Clock()
    nodes = [_validator(accounts, clock) for _ in range(2)]
    for a in nodes:
        a.backlog.committed(0.0, 80, 20, True)  # saturated; room for 40
    clock.now = 1.0
    assert all(a.backlog.bounding(clock.now) and a.room() > 0 for a in nodes)
    sent = [tx("partner1", n) for n in range(6)]
    for t in sent:
        assert nodes[t.nonce % 2].admit(t, local=True), f"nonce {t.nonce} refused"
    for i, a in enumerate(nodes):
        for t in sent:
            if t.nonce % 2 != i:
                assert a.admit(t)  # the other validator's batch
    for a in nodes:
        assert [t.nonce for t in a.mempool.reap(100, 1 << 30)] == list(range(6))


def test_under_load_a_gap_its_node_refused_stays_closed_to_what_is_behind_it(
    setup: Any,
) -> None:
    """A client that goes on sending later nonces to the node that refused an earlier
    one: that nonce stays missing until the client sends it again after `Retry-After`,
    so what is behind it is refused at once, fresh gap or not."""
    admission, _, _, clock = setup
    admission.backlog.committed(0.0, 20, 5, True)  # saturated; room for 20
    clock.now = 1.0
    n = 0
    while admission.room() > 0:
        assert admission.admit(tx("partner1", n), local=True)
        n += 1
    with pytest.raises(Overloaded) as refused:
        admission.admit(tx("partner1", n), local=True)
    assert refused.value.waits_for is None
    with pytest.raises(Overloaded) as behind:
        admission.admit(tx("partner1", n + 1), local=True)
    assert behind.value.waits_for == n
    clock.now += refused.value.retry_after_s
    with pytest.raises(Overloaded) as again:
        admission.admit(tx("partner1", n), local=True)
    assert again.value.waits_for is None, "no room yet: refused again"
    with pytest.raises(Overloaded) as behind:
        admission.admit(tx("partner1", n + 1), local=True)
    assert behind.value.waits_for == n
