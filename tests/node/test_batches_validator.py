"""Dissemination through two real validators (no network): the leader's proposal of a
large block leaves as references, after the batches it needs, and a follower that gets
those envelopes rebuilds the very block, which it validates; a follower that lacks a
batch fetches it from the leader through the validators' own handlers."""

from __future__ import annotations

import asyncio
from pathlib import Path

from consensus.events import BlockBuilt, BuildBlock, Event, MessageIn
from consensus.messages import Propose
from consensus.messages import block_hash as consensus_value
from devnet.network import account_key, plan_network, write_network
from node.runtime import Validator
from node.wire import Envelope, Kind
from qchain.config import load_config
from qchain.store.memory import MemoryStore
from qchain.types import decode_block, new_transaction


def _validator(tmp_path: Path, node: int) -> Validator:
    if not (tmp_path / "network.json").exists():
        plan = plan_network(base_port=None, scheme="ml-dsa-65", heartbeat_ms=300)
        write_network(tmp_path, plan)
    path = tmp_path / "nodes" / f"node{node}" / "config.toml"
    return Validator(load_config(path), store=MemoryStore())


class _Sent:
    """Stands in for the transport: records what the node sends to whom."""

    def __init__(self) -> None:
        self.envelopes: list[tuple[int, Envelope]] = []

    def send(self, peer: int, envelope: Envelope, lazy_s: float = 0.0) -> None:
        self.envelopes.append((peer, envelope))

    def to(self, peer: int) -> list[Envelope]:
        return [e for p, e in self.envelopes if p == peer]


def _built_proposal(leader: Validator, count: int) -> Propose:
    key = account_key("partner1", "ml-dsa-65")
    for n in range(count):
        tx = new_transaction(
            key,
            chain_id=leader.chain_id,
            nonce=n,
            contract="notary",
            method="anchor",
            args=[n.to_bytes(32, "big"), "sha256", f"evidence {n}", "test", b""],
        )
        leader.admission.admit(tx, local=True)
    built: list[Event] = []
    leader.pacer.feed = built.append
    leader.pacer.pending = BuildBlock(1, 0, leader.app.committed_value(0) or b"")
    leader.pacer.maybe_build()
    (event,) = built
    assert isinstance(event, BlockBuilt)
    return Propose(leader.chain_id, 1, 0, event.block)


async def test_the_leader_uploads_references_and_the_follower_rebuilds_and_validates(
    tmp_path: Path,
) -> None:
    leader, follower = _validator(tmp_path, 0), _validator(tmp_path, 1)
    msg = _built_proposal(leader, 150)
    included = decode_block(msg.block.body).txs
    assert len(included) == 150
    sent = _Sent()
    leader.links.transport = sent  # type: ignore[assignment]
    for peer in (1, 2, 3):
        leader.links.send_consensus(peer, msg)
    to_one = sent.to(1)
    assert to_one[-1].kind is Kind.PROPOSE_REFS
    assert {e.kind for e in to_one[:-1]} == {Kind.BATCH}, "the batches go first"
    assert [e.kind for e in sent.to(2)] == [e.kind for e in to_one]
    assert len(to_one[-1].payload) <= 1024 + 4 * len(included)
    assert len(msg.block.body) > 150 * 3000, "an ML-DSA-65 block of 150 transactions"
    fed: list[Event] = []
    follower.batches.feed = fed.append
    for env in to_one:
        follower.driver.on_envelope(0, env)
    (ev,) = [e for e in fed if isinstance(e, MessageIn)]
    assert ev.msg == msg
    assert isinstance(ev.msg, Propose)
    assert consensus_value(ev.msg.block) == consensus_value(msg.block)
    assert follower.app.validate(ev.msg.block).block.txs == included
    follower.forwarder.stop()
    await leader.forwarder.verify_pool.close()
    await follower.forwarder.verify_pool.close()


async def test_a_follower_fetches_the_missing_batch_from_the_leader(tmp_path: Path) -> None:
    leader, follower = _validator(tmp_path, 0), _validator(tmp_path, 2)
    msg = _built_proposal(leader, 20)
    to_leader, to_follower = _Sent(), _Sent()
    leader.links.transport = to_leader  # type: ignore[assignment]
    follower.links.transport = to_follower  # type: ignore[assignment]
    leader.links.send_consensus(2, msg)
    (refs,) = [e for e in to_leader.to(2) if e.kind is Kind.PROPOSE_REFS]
    fed: list[Event] = []
    follower.batches.feed = fed.append
    follower.driver.on_envelope(0, refs)
    await asyncio.sleep(0)
    (req,) = to_follower.to(0)
    assert req.kind is Kind.BATCH_REQ
    leader.driver.on_envelope(2, req)
    (resp,) = [e for e in to_leader.to(2) if e.kind is Kind.BATCH_RESP]
    follower.driver.on_envelope(0, resp)
    assert [e.msg for e in fed if isinstance(e, MessageIn)] == [msg]
    assert follower.batches.fetched >= 1
    follower.batches.cancel_timers()
    await leader.forwarder.verify_pool.close()
    await follower.forwarder.verify_pool.close()


async def test_clients_transactions_a_proposal_sent_already_are_not_sent_again(
    tmp_path: Path,
) -> None:
    """A client's transactions admitted in the same turn as the leader's build go out in
    the leader's batch ahead of its proposal; the turn's own batch then leaves them out.
    One admitted after the proposal waits for its commit (`node.forwarding`)."""
    leader = _validator(tmp_path, 0)
    key = account_key("partner2", "ml-dsa-65")
    sent = _Sent()
    leader.links.transport = sent  # type: ignore[assignment]
    for n in range(3):
        tx = new_transaction(
            key,
            chain_id=leader.chain_id,
            nonce=n,
            contract="notary",
            method="anchor",
            args=[(100 + n).to_bytes(32, "big"), "sha256", "late", "test", b""],
        )
        leader.submit_tx(tx)
    built: list[Event] = []
    leader.pacer.feed = built.append
    leader.pacer.pending = BuildBlock(1, 0, leader.app.committed_value(0) or b"")
    leader.pacer.maybe_build()
    (event,) = built
    assert isinstance(event, BlockBuilt)
    leader.links.send_consensus(1, Propose(leader.chain_id, 1, 0, event.block))
    before = len(sent.envelopes)
    assert [e.kind for e in sent.to(1)] == [Kind.BATCH, Kind.PROPOSE_REFS]
    await asyncio.sleep(0)
    assert len(sent.envelopes) == before, "the turn's batch had nothing left to send"
    later = new_transaction(
        key,
        chain_id=leader.chain_id,
        nonce=3,
        contract="notary",
        method="anchor",
        args=[(200).to_bytes(32, "big"), "sha256", "later", "test", b""],
    )
    leader.submit_tx(later)
    await asyncio.sleep(0.02)
    assert len(sent.envelopes) == before, "held: height 2 is built only after 1 commits"
    leader.forwarder.committed(0.0, 1, 3)
    assert [e.kind for _, e in sent.envelopes[before:]] == [Kind.BATCH] * 3
    await leader.forwarder.verify_pool.close()
