"""Leader suspicion: only blocks that had room for our stuck transactions count. A
client's transaction goes out again when its node admits it anew, and to the leader when
the client asks again for one the node holds."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from consensus.params import Params
from devnet.network import account_key
from node.alarms import Alarms
from node.batches import Dissemination
from node.budget import Budgets
from node.forwarding import LEADER_ROOM_TXS, Coalescing, Forwarder, leader_had_room
from node.mempool import Mempool, MempoolLimits
from node.wire import Kind, OriginBatch

from .test_batches import CHAIN, N, _Links, _NoBlocks
from .test_mempool import CHAIN as POOL_CHAIN
from .test_mempool import Accounts, tx

PERIOD = 5.0


def test_blocks_with_room_that_left_ours_out_suggest_censorship() -> None:
    recent = [(90.0, 3), (98.0, 10)]
    assert leader_had_room(recent, stuck=50, now=100.0, period=PERIOD)
    assert not leader_had_room(recent, stuck=10, now=100.0, period=PERIOD), (
        "a block as big as what we have stuck may just have been full"
    )


def test_no_recent_block_is_no_evidence() -> None:
    assert not leader_had_room([(90.0, 0)], stuck=50, now=100.0, period=PERIOD)
    assert not leader_had_room([], stuck=50, now=100.0, period=PERIOD)


def test_the_room_threshold_is_its_own_constant() -> None:
    """Blocks of LEADER_ROOM_TXS or more are full enough whatever we have stuck; the
    threshold no longer moves with the admission slice."""
    full = [(99.0, LEADER_ROOM_TXS)]
    assert not leader_had_room(full, stuck=10 * LEADER_ROOM_TXS, now=100.0, period=PERIOD)
    almost = [(99.0, LEADER_ROOM_TXS - 1)]
    assert leader_had_room(almost, stuck=10 * LEADER_ROOM_TXS, now=100.0, period=PERIOD)


# --- sending a client's transactions again ------------------------------------------------


@dataclass
class _ForwardLinks(_Links):
    transport: object = True

    def key_rate(self, peer: int) -> float:
        return 1e9


@dataclass
class _View:
    leader: int | None = 2


def _forwarder(me: int = 0) -> tuple[Forwarder, _ForwardLinks, Mempool, _View]:
    links = _ForwardLinks(me)
    accounts = Accounts()
    key = account_key("partner1", "ed25519")
    accounts.keys[key.address] = (key.scheme.value, key.public_key)
    mempool = Mempool(POOL_CHAIN, MempoolLimits(), accounts)
    batches = Dissemination(
        Params(n=N, chain_id=CHAIN),
        links,
        Budgets(),
        Alarms(),
        [].append,
        _NoBlocks(),  # type: ignore[arg-type]
    )
    view = _View()
    fwd = Forwarder(
        links,  # type: ignore[arg-type]
        mempool,
        None,  # type: ignore[arg-type]
        Budgets(),
        True,
        lambda: view,  # type: ignore[arg-type, return-value]
        5.0,
        [].append,
        None,  # type: ignore[arg-type]
        batches,
        Coalescing(delay_s=0.0),  # each batch leaves at the end of its turn
    )
    return fwd, links, mempool, view


def _sent_txs(links: _ForwardLinks) -> list[tuple[int, list[bytes]]]:
    return [(j, list(OriginBatch.decode(e.payload).txs)) for j, e in links.take(Kind.BATCH)]


async def test_a_transaction_admitted_again_goes_out_although_an_earlier_batch_held_it() -> None:
    """A peer's batch (or this node's, long ago) held the transaction, but it was not in
    this node's pool when its client sent it: the peers that got that batch may not hold
    it either (a full pool, a place given up behind a nonce gap), so it goes again."""
    fwd, links, mempool, _ = _forwarder()
    t = tx("partner1", 0)
    assert fwd.batches.received(3, OriginBatch(3, 0, (t.encoded,)))
    mempool.add(t, height=0, now=0.0, local=True)
    fwd.queue(t)
    await asyncio.sleep(0)
    assert sorted(j for j, _ in _sent_txs(links)) == [1, 2, 3]
    # A transaction a proposal sent since it was admitted does not go twice.
    u = tx("partner1", 1)
    mempool.add(u, height=0, now=0.0, local=True)
    fwd.queue(u)
    fwd.batches.send([u.encoded], [1, 2, 3], lambda j: 0.0)  # as `compact` does
    links.take(Kind.BATCH)
    await asyncio.sleep(0)
    assert _sent_txs(links) == []


async def test_a_client_asking_again_for_a_next_nonce_sends_it_to_the_leader_each_second() -> None:
    fwd, links, mempool, view = _forwarder()
    t = tx("partner1", 0)
    mempool.add(t, height=0, now=10.0)  # a peer forwarded it
    fwd.resubmitted(t.hash, 10.5)
    await asyncio.sleep(0)
    assert _sent_txs(links) == [], "just received: not yet"
    fwd.resubmitted(t.hash, 11.0)
    fwd.resubmitted(t.hash, 11.1)
    await asyncio.sleep(0)
    assert _sent_txs(links) == [(2, [t.encoded])], "once, to the leader only"
    fwd.resubmitted(t.hash, 11.9)
    await asyncio.sleep(0)
    assert _sent_txs(links) == []
    view.leader = 0
    fwd.resubmitted(t.hash, 12.5)
    await asyncio.sleep(0)
    assert _sent_txs(links) == [], "this node leads: it has it"
    view.leader = 1
    later = tx("partner1", 1)
    fwd.resubmitted(later.hash, 20.0)
    fwd.resubmitted(t.hash, 20.0)
    await asyncio.sleep(0)
    assert _sent_txs(links) == [(1, [t.encoded])], "an unknown transaction is not sent"
    mempool.add(later, height=0, now=10.0)
    fwd.resubmitted(later.hash, 30.0)
    await asyncio.sleep(0)
    assert _sent_txs(links) == [], "not its sender's next nonce: its turn has not come"
    mempool.accounts.nonces[later.sender] = 1  # type: ignore[attr-defined]
    fwd.resubmitted(later.hash, 30.0)
    await asyncio.sleep(0)
    assert _sent_txs(links) == [(1, [later.encoded])]


async def test_client_transactions_that_waited_behind_a_gap_go_to_the_leader_when_ready() -> None:
    fwd, links, mempool, view = _forwarder()
    waited = tx("partner1", 1)
    mempool.add(waited, height=0, now=0.0, local=True)
    fwd.send_became_ready()
    assert _sent_txs(links) == [], "still waiting"
    mempool.add(tx("partner1", 0), height=0, now=0.0)
    fwd.send_became_ready()
    fwd.send_became_ready()
    assert _sent_txs(links) == [(2, [waited.encoded])], "once, to the leader"
    view.leader = 0
    later = tx("partner1", 3)
    mempool.add(later, height=0, now=0.0, local=True)
    mempool.add(tx("partner1", 2), height=0, now=0.0)
    fwd.send_became_ready()
    assert _sent_txs(links) == [], "this node leads"


async def test_a_next_nonce_held_past_the_inclusion_timeout_goes_to_the_leader_from_any_node() -> (
    None
):
    """Peers' transactions (their forwarders may have let them go since) of a sender's
    next nonce and the run after it: once held here for an inclusion timeout (5 s), they
    go to the leader, once per timeout; one waiting behind a gap does not go."""
    fwd, links, mempool, view = _forwarder()
    run = [tx("partner1", n) for n in range(3)]
    for t in run:
        mempool.add(t, height=0, now=10.0)
    mempool.add(tx("partner1", 5), height=0, now=10.0)  # behind a gap at 3
    fwd.check_inclusion(14.0)
    await asyncio.sleep(0)
    assert _sent_txs(links) == [], "within the timeout"
    fwd.check_inclusion(15.5)
    await asyncio.sleep(0)
    assert _sent_txs(links) == [(2, [t.encoded for t in run])]
    assert fwd.resent["stalled"] == 3
    fwd.check_inclusion(16.0)
    await asyncio.sleep(0)
    assert _sent_txs(links) == [], "once per timeout"
    mempool.accounts.nonces[run[0].sender] = 1  # type: ignore[attr-defined]
    mempool.on_commit([run[0]], 1)
    fwd.check_inclusion(21.0)
    await asyncio.sleep(0)
    assert _sent_txs(links) == [(2, [t.encoded for t in run[1:]])]
    view.leader = 0
    fwd.check_inclusion(27.0)
    await asyncio.sleep(0)
    assert _sent_txs(links) == [], "this node leads: it has them"
