"""The hostile Byzantine modes: their messages decode as real peers' would, the periodic
task sends them to every peer but the node itself and stops, and a real validator sends
them through its authenticated transport."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from consensus.messages import BlockReq, SyncResp, Vote, decode_message
from devnet.network import plan_network, write_network
from node import byzantine
from node.http.admin import BYZANTINE_MODES
from node.runtime import Validator
from node.wire import CertSig, Envelope, Kind, decode_body, encode_body
from qchain.config import load_config
from qchain.qkd.clock import SystemClock
from qchain.qkd.simsource import LocalKeySource, full_mesh
from qchain.qkd.testing import wait_until

CHAIN = "qchain-test"


def test_far_height_vote_is_a_vote_at_the_largest_height() -> None:
    env = byzantine.far_height_vote(CHAIN, bytes(32))
    assert env.kind is Kind.CONSENSUS
    vote = decode_message(env.payload)
    assert isinstance(vote, Vote)
    assert vote.height == 2**64 - 1 and vote.chain_id == CHAIN


def test_flood_votes_have_distinct_rounds_and_values() -> None:
    envs = byzantine.flood_votes(CHAIN, 7, 100, 50, random.Random(2))
    votes = [decode_message(e.payload) for e in envs]
    assert all(isinstance(v, Vote) for v in votes)
    keys = {(v.height, v.round) for v in votes if isinstance(v, Vote)}
    assert len(keys) == 50
    heights = {v.height for v in votes if isinstance(v, Vote)}
    assert heights == {2**64 - 1, 7}
    assert len({v.value for v in votes if isinstance(v, Vote)}) == 50
    # One frame body holds them all, as the transport would pack them.
    assert len(decode_body(encode_body(envs))) == 50


def test_far_claims_decode_with_far_heights_and_oversized_fields() -> None:
    sync, req, sig = byzantine.far_claims(CHAIN, random.Random(3))
    s = decode_message(sync.payload)
    assert isinstance(s, SyncResp)
    assert s.height + len(s.hashes) - 1 == 2**64 - 1 and len(s.hashes) == 1024
    r = decode_message(req.payload)
    assert isinstance(r, BlockReq) and len(r.hashes) == 64
    assert sig.kind is Kind.CERT_SIG
    c = CertSig.decode(sig.payload)
    assert c.height == 2**64 - 1 and len(c.signature) == 8192


def test_only_future_time_changes_the_block_time() -> None:
    assert byzantine.block_time_ms("future-time") == 2**64 - 1
    for mode in (None, "vote-flood", "equivocate"):
        assert byzantine.block_time_ms(mode) is None


def test_the_admin_api_accepts_the_new_modes() -> None:
    assert set(byzantine.MODES) <= set(BYZANTINE_MODES)


@dataclass
class FakeTransport:
    sent: list[tuple[int, Envelope]] = field(default_factory=list)

    def send(self, peer: int, envelope: Envelope) -> None:
        self.sent.append((peer, envelope))


@dataclass
class FakeParams:
    n: int = 4
    chain_id: str = CHAIN


@dataclass
class FakeEngine:
    cur: int = 5


@dataclass
class FakeNode:
    me: int = 2
    params: FakeParams = field(default_factory=FakeParams)
    engine: FakeEngine = field(default_factory=FakeEngine)
    transport: FakeTransport = field(default_factory=FakeTransport)


async def _until(cond: object, deadline_s: float = 5.0) -> None:
    end = time.monotonic() + deadline_s
    while not cond() and time.monotonic() < end:  # type: ignore[operator]
        await asyncio.sleep(0.01)


async def test_flood_modes_send_to_every_peer_and_stop() -> None:
    node = FakeNode()
    hostile = byzantine.Hostile(node, random.Random(4))  # type: ignore[arg-type]
    hostile.set_mode("far-height-vote")
    await _until(lambda: len(node.transport.sent) >= 3)
    assert sorted(p for p, _ in node.transport.sent[:3]) == [0, 1, 3]
    hostile.set_mode("vote-flood")
    await _until(lambda: len(node.transport.sent) >= 300)
    assert {p for p, _ in node.transport.sent} == {0, 1, 3}
    hostile.set_mode("future-time")
    await asyncio.sleep(0)
    count = len(node.transport.sent)
    await asyncio.sleep(0.1)
    assert len(node.transport.sent) == count
    hostile.set_mode("far-claims")
    await _until(lambda: len(node.transport.sent) >= count + 9)
    await hostile.stop()
    count = len(node.transport.sent)
    await asyncio.sleep(0.1)
    assert len(node.transport.sent) == count


async def test_a_validator_floods_through_its_real_transport(tmp_path: Path) -> None:
    """Four validators over TCP with keys from an in-process key manager; node3 has the
    devnet flag. Its far-height votes and vote flood are sealed with its own keys, so
    every peer accepts the frames (no rejection), and switching the mode off stops them."""
    plan = plan_network(base_port=None, scheme="ed25519", heartbeat_ms=200)
    write_network(tmp_path, plan)
    manager = full_mesh([n.sae_id for n in plan.nodes], SystemClock(), initial_key_count=10_000)
    nodes = []
    for n in plan.nodes:
        cfg = load_config(tmp_path / "nodes" / n.name / "config.toml")
        if n.index == 3:
            cfg = replace(cfg, admin=replace(cfg.admin, byzantine=True))
        nodes.append(Validator(cfg, key_source=LocalKeySource(manager, n.sae_id)))
    for v in nodes:
        await v.start()
    try:
        byz, honest = nodes[3], nodes[:3]
        await wait_until(lambda: all(v.chain.height() >= 2 for v in nodes), timeout=20)

        def from_byz() -> list[int]:
            return [v.transport.stats[3].frames_received for v in honest]  # type: ignore[union-attr]

        byz.set_byzantine("far-height-vote")
        before = from_byz()
        await wait_until(lambda: byz.byzantine.hostile.sent >= 3, timeout=5)
        byz.set_byzantine("vote-flood")
        await wait_until(lambda: byz.byzantine.hostile.sent >= 3 + 3 * 500, timeout=10)
        await wait_until(lambda: all(a > b for a, b in zip(from_byz(), before, strict=True)), 10)
        assert all(not v.transport.stats[3].rejected for v in honest)  # type: ignore[union-attr]
        byz.set_byzantine(None)
        sent = byz.byzantine.hostile.sent
        await asyncio.sleep(0.2)
        assert byz.byzantine.hostile.sent == sent
    finally:
        for v in nodes:
            await v.stop()
