"""Coalescing this node's outgoing batches (`node.forwarding.Coalescing`): a batch leaves
when it is full, at the next commit, or after a delay that is short while the leader may
be about to build and up to `batch_delay_ms` while the next build is known to come after
a commit (the current height's proposal is out, or a busy leader built already); so a
slow trickle of client transactions costs a few frames per height instead of one
per transaction on every link."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from consensus.params import Params
from node.alarms import Alarms
from node.batches import Dissemination
from node.budget import Budgets
from node.forwarding import BUILD_SLACK_S, PROMPT_S, PROPOSED_AHEAD, Coalescing, Forwarder
from node.wire import Envelope, Kind, OriginBatch
from qchain.limits import TX_BATCH_MAX_TXS
from qchain.types import Transaction

from .test_batches import CHAIN, _Mode, _propose, _txs

N = 16
PEERS = N - 1


@dataclass
class _Links:
    """Stands in for `node.links.Links`: records the batches sent to each peer."""

    me: int = 0
    n: int = N
    transport: object = True
    byzantine: _Mode = field(default_factory=_Mode)
    sent: list[tuple[int, Envelope]] = field(default_factory=list)

    def others(self) -> list[int]:
        return [j for j in range(self.n) if j != self.me]

    def knows(self, j: int) -> bool:
        return 0 <= j < self.n

    def key_rate(self, peer: int) -> float | None:
        return None  # the `lab` profile: no lazy wait of the transport on top

    def send_all(self, env: Envelope, to: list[int], lazy_s: float = 0.0) -> None:
        self.sent.extend((j, env) for j in to if j != self.me)

    def batches(self) -> list[OriginBatch]:
        """The distinct batches sent, each checked to have gone to every peer."""
        out: dict[bytes, OriginBatch] = {}
        peers: dict[bytes, list[int]] = {}
        for j, env in self.sent:
            assert env.kind is Kind.BATCH
            b = OriginBatch.decode(env.payload)
            out[b.digest] = b
            peers.setdefault(b.digest, []).append(j)
        assert all(sorted(p) == list(range(1, N)) for p in peers.values())
        return list(out.values())


@dataclass
class _Pool:
    """Stands in for the mempool: whether it holds a ready transaction."""

    ready: bool = False

    def has_ready(self) -> bool:
        return self.ready


class _NoBlocks:
    def block_of(self, cblock: Any) -> None:
        return None

    def offer(self, cblock: Any, block: Any) -> None:
        pass


def _forwarder(
    coalescing: Coalescing, pool: _Pool | None = None
) -> tuple[Forwarder, Dissemination, _Links]:
    links = _Links()
    batches = Dissemination(
        Params(n=N, chain_id=CHAIN),
        links,  # type: ignore[arg-type]
        Budgets(),
        Alarms(),
        lambda e: None,
        _NoBlocks(),  # type: ignore[arg-type]
    )
    f = Forwarder(
        links,  # type: ignore[arg-type]
        pool or _Pool(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        Budgets(),
        False,
        lambda: None,  # type: ignore[arg-type,return-value]
        30.0,
        lambda e: None,
        None,  # type: ignore[arg-type]
        batches,
        coalescing,
    )
    return f, batches, links


def _sent_txs(links: _Links) -> list[bytes]:
    return [raw for b in links.batches() for raw in b.txs]


def _raw(txs: list[Transaction]) -> list[bytes]:
    return [t.encoded for t in txs]


async def test_while_the_leader_may_build_a_batch_waits_only_a_few_milliseconds() -> None:
    """No proposal out for the current height: the leader may be about to build, so what
    arrives within PROMPT_S goes together, at once after."""
    f, _, links = _forwarder(Coalescing(delay_s=1.0))
    assert not f.proposal_out()
    txs = _txs(3)
    f.queue(txs[0])
    await asyncio.sleep(0)
    f.queue(txs[1])
    assert links.sent == [], "held for the others of the same few milliseconds"
    await asyncio.sleep(PROMPT_S * 4)
    f.queue(txs[2])  # a new batch: the first left
    await asyncio.sleep(PROMPT_S * 4)
    (first, second) = links.batches()
    assert list(first.txs) == _raw(txs[:2]) and list(second.txs) == _raw(txs[2:])
    assert f.flushes == 2


async def test_with_the_proposal_out_a_batch_waits_for_the_commit() -> None:
    """The next leader builds only after the current height commits: the batch gathers
    until that commit (not the delay) and leaves at it, in time for the build."""
    f, batches, links = _forwarder(Coalescing(delay_s=1.0))
    batches.compact(_propose([], height=1))  # this node's own proposal counts as out
    assert batches.proposed == 1 and f.proposal_out()
    txs = _txs(5)
    for t in txs:
        f.queue(t)
        await asyncio.sleep(PROMPT_S * 2)
    assert links.sent == [], "held past PROMPT_S while the proposal is out"
    f.committed(0.0, 1, 0)
    (batch,) = links.batches()
    assert list(batch.txs) == _raw(txs)
    assert not f.proposal_out(), "committed: the leader of height 2 may build"


async def test_a_proposal_heard_while_a_batch_gathers_lets_it_wait_for_the_commit() -> None:
    """The batch's first transaction came while the leader could still build; a
    proposal heard since then puts the next build behind a commit."""
    f, batches, links = _forwarder(Coalescing(delay_s=1.0))
    txs = _txs(2)
    f.queue(txs[0])
    batches.proposed = 1
    f.queue(txs[1])
    await asyncio.sleep(PROMPT_S * 4)
    assert links.sent == []
    f.committed(0.0, 1, 0)
    assert _sent_txs(links) == _raw(txs)


async def test_a_busy_chain_holds_what_comes_after_the_leaders_build() -> None:
    """Ready transactions left after a commit: the leader builds once its propose wait
    has passed. Until then (and a little slack) a batch goes promptly, so that it makes
    that block; after, nothing sent makes it, and the batch waits for the next commit."""
    pool = _Pool(ready=True)
    wait = 0.05
    f, _, links = _forwarder(Coalescing(delay_s=1.0, build_wait_s=wait), pool)
    txs = _txs(3)
    f.committed(0.0, 1, 10)
    f.queue(txs[0])
    await asyncio.sleep(PROMPT_S * 4)
    assert _sent_txs(links) == _raw(txs[:1]), "within the propose wait: at once"
    links.sent.clear()
    await asyncio.sleep(wait + BUILD_SLACK_S)
    f.queue(txs[1])
    await asyncio.sleep(PROMPT_S * 4)
    assert links.sent == [], "the leader has built: held"
    f.committed(0.0, 2, 10)
    assert _sent_txs(links) == _raw(txs[1:2]), "sent at the commit"
    links.sent.clear()
    pool.ready = False
    f.committed(0.0, 3, 1)
    await asyncio.sleep(wait + BUILD_SLACK_S)
    f.queue(txs[2])
    await asyncio.sleep(PROMPT_S * 4)
    assert _sent_txs(links) == _raw(txs[2:]), "nothing was ready: the leader waits for it"


async def test_with_the_proposal_out_a_batch_leaves_after_the_delay_at_the_latest() -> None:
    f, batches, links = _forwarder(Coalescing(delay_s=0.1))
    batches.proposed = 1
    started = asyncio.get_running_loop().time()
    f.queue(_txs(1)[0])
    await asyncio.sleep(0.05)
    assert links.sent == []
    while not links.sent:
        await asyncio.sleep(0.01)
        assert asyncio.get_running_loop().time() - started < 5.0
    assert asyncio.get_running_loop().time() - started >= 0.1


async def test_a_trickle_costs_a_few_batches_per_height_not_one_per_transaction() -> None:
    """n = 16, one transaction every 10 ms while heights take 200 ms: without
    coalescing each would be a batch (a frame on each of 15 links); coalesced, a height
    sends at most a couple of batches, each of many transactions."""
    f, batches, links = _forwarder(Coalescing(delay_s=0.25))
    txs = _txs(60)
    height = 0
    for k, t in enumerate(txs):
        if k % 20 == 0:
            batches.proposed = height + 1  # the height's proposal is heard
        f.queue(t)
        await asyncio.sleep(0.01)
        if k % 20 == 19:
            height += 1
            f.committed(0.0, height, 0)
    await asyncio.sleep(PROMPT_S * 4)
    sent = links.batches()
    assert _sent_txs(links) == _raw(txs), "everything, once, in order"
    assert len(sent) <= 2 * height, [len(b.txs) for b in sent]
    assert len(links.sent) / len(txs) <= 1.5, "batch envelopes per transaction (15 before)"
    assert f.flushes == len(sent)


async def test_a_full_batch_leaves_at_once() -> None:
    f, batches, links = _forwarder(Coalescing(delay_s=1.0, max_txs=4))
    batches.proposed = 1
    txs = _txs(9)
    for t in txs:
        f.queue(t)
    assert [len(b.txs) for b in links.batches()] == [4, 4], "two full, one waits"
    by_bytes, batches2, links2 = _forwarder(Coalescing(delay_s=1.0, max_bytes=1))
    batches2.proposed = 1
    by_bytes.queue(txs[0])
    assert [len(b.txs) for b in links2.batches()] == [1]


async def test_a_height_claimed_far_ahead_holds_no_batch() -> None:
    """A peer's proposal can name any height: one more than PROPOSED_AHEAD above the
    committed height is not believed to be out."""
    f, batches, links = _forwarder(Coalescing(delay_s=1.0))
    f.committed(0.0, 5, 0)
    batches.proposed = 5 + PROPOSED_AHEAD
    assert f.proposal_out()
    batches.proposed = 5 + PROPOSED_AHEAD + 1
    assert not f.proposal_out()
    f.queue(_txs(1)[0])
    await asyncio.sleep(PROMPT_S * 4)
    assert len(links.batches()) == 1


async def test_delay_zero_sends_each_turns_transactions_together() -> None:
    f, batches, links = _forwarder(Coalescing(delay_s=0.0))
    batches.proposed = 1
    txs = _txs(3)
    f.queue(txs[0])
    f.queue(txs[1])
    assert links.sent == []
    await asyncio.sleep(0)
    f.queue(txs[2])
    await asyncio.sleep(0)
    assert [len(b.txs) for b in links.batches()] == [2, 1]


async def test_what_a_proposal_already_sent_and_what_comes_after_stop_is_not_sent() -> None:
    f, batches, links = _forwarder(Coalescing(delay_s=1.0))
    txs = _txs(3)
    f.queue(txs[0])
    f.queue(txs[1])
    batches.compact(_propose(txs[:1]))  # this node's proposal sends what is in no batch
    links.sent.clear()
    f.committed(0.0, 1, 1)
    assert _sent_txs(links) == _raw(txs[1:2])
    links.sent.clear()
    f.queue(txs[2])
    assert f.stop() is None
    f.queue(txs[2])
    await asyncio.sleep(PROMPT_S * 4)
    assert links.sent == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"delay_s": -0.001},
        {"delay_s": 5.001},
        {"max_txs": 0},
        {"max_txs": TX_BATCH_MAX_TXS + 1},
        {"max_bytes": 0},
        {"build_wait_s": -1.0},
    ],
)
def test_coalescing_bounds(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Coalescing(**kwargs)
