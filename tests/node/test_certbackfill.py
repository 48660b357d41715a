"""Certificates a node holds a block without, asked of its peers (`node.certbackfill`):
a good one is stored, a forged one refused and its sender passed over, every bound holds.

The node's store holds the blocks of a `FakeNode` without their certificates and checks
a certificate as the validator's store does (n − f distinct genesis validators); peers
are fakes, or a real API over HTTP."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from node import certbackfill
from node.certbackfill import ApiCertificates, CertificateBackfill
from node.chainstore import ChainStore
from qchain.errors import NodeUnavailable
from qchain.keys import dev_key
from qchain.store.memory import MemoryStore
from qchain.types import (
    CommitCertificate,
    CommitSignature,
    commit_sign_digest,
    verify_certificate,
)

from .conftest import CHAIN_ID, VALIDATOR_KEYS, VALIDATORS, ApiHarness, FakeNode


class Peer:
    """A peer's API: answers[height] gives the bytes it sends, or none (it has none)."""

    def __init__(self, name: str, answer: Callable[[int], bytes | None]) -> None:
        self.name = name
        self.answer = answer
        self.asked: list[int] = []
        self.closed = False

    async def certificate(self, height: int, max_bytes: int) -> bytes:
        self.asked.append(height)
        raw = self.answer(height)
        if raw is None:
            raise NodeUnavailable(f"{self.name} has no certificate of {height}")
        return raw

    async def close(self) -> None:
        self.closed = True


def replayer(node: FakeNode) -> ChainStore:
    """A store with the node's blocks and receipts and none of its certificates."""
    chain = ChainStore(MemoryStore(), lambda cert: verify_certificate(cert, CHAIN_ID, VALIDATORS))
    chain.init_meta(CHAIN_ID, bytes(32))
    for h in range(1, node.chain.height() + 1):
        block = node.chain.block(h)
        assert block is not None
        chain.store.write(chain.commit_batch(block, node.chain.receipts(h), []), sync=True)
    return chain


def honest(node: FakeNode) -> Callable[[int], bytes | None]:
    def answer(h: int) -> bytes | None:
        cert = node.chain.certificate(h)
        return None if cert is None else cert.encode()

    return answer


def one_honest_peer(node: FakeNode) -> tuple[ChainStore, Peer, CertificateBackfill]:
    """A replaying store, one honest peer, and the backfill that asks it."""
    chain = replayer(node)
    peer = Peer("node1", honest(node))
    return chain, peer, CertificateBackfill(chain, [peer])


def signed(height: int, block_hash: bytes, signers: list[int], keys: list | None = None) -> bytes:
    keys = VALIDATOR_KEYS if keys is None else keys
    digest = commit_sign_digest(CHAIN_ID, height, block_hash)
    sigs = tuple(CommitSignature(i, keys[i].sign(digest)) for i in signers)
    return CommitCertificate(height, block_hash, sigs).encode()


@pytest.fixture
def no_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(certbackfill, "GRACE_S", 0.0)


async def test_a_height_is_asked_only_after_the_grace_the_exchange_has(
    fake_node: FakeNode,
) -> None:
    chain, peer, backfill = one_honest_peer(fake_node)
    backfill.committed(1)
    await backfill.tick()
    assert peer.asked == [] and chain.certificate(1) is None


@pytest.mark.usefixtures("no_grace")
async def test_a_missing_certificate_comes_from_a_peer_and_is_stored(
    fake_node: FakeNode,
) -> None:
    chain, peer, backfill = one_honest_peer(fake_node)
    for h in (1, 2):
        backfill.committed(h)
    await backfill.tick()
    assert peer.asked == [1, 2]
    for h in (1, 2):
        assert chain.certificate(h) == fake_node.chain.certificate(h)
    assert backfill.stats.stored == 2 and not backfill.pending
    # The stored certificates are what a receipt carries.
    block = fake_node.chain.block(2)
    assert block is not None
    proof = chain.receipt_proof(block.txs[0].hash)
    assert proof is not None
    proof.verify(CHAIN_ID, VALIDATORS)


@pytest.mark.usefixtures("no_grace")
async def test_a_height_the_exchange_certified_meanwhile_is_not_asked(
    fake_node: FakeNode,
) -> None:
    chain, peer, backfill = one_honest_peer(fake_node)
    backfill.committed(1)
    cert = fake_node.chain.certificate(1)
    assert cert is not None
    chain.put_certificate(cert)
    await backfill.tick()
    assert peer.asked == [] and not backfill.pending


def thrice(raw: bytes) -> bytes:
    cert = CommitCertificate.decode(raw)
    return CommitCertificate(cert.height, cert.block_hash, cert.signatures * 3).encode()


FORGERIES = [
    "non-members",
    "another block",
    "too few",
    "one validator thrice",
    "another height",
    "not a certificate",
    "too long",
]


def _forgeries(node: FakeNode) -> dict[str, Callable[[int], bytes | None]]:
    def block_hash(h: int) -> bytes:
        b = node.chain.block_hash(h)
        assert b is not None
        return b

    outsiders = [dev_key(CHAIN_ID, f"outsider-{i}") for i in range(4)]
    return {
        "non-members": lambda h: signed(h, block_hash(h), [0, 1, 2], outsiders),
        "another block": lambda h: signed(h, bytes(32), [0, 1, 2]),
        "too few": lambda h: signed(h, block_hash(h), [0, 1]),
        "one validator thrice": lambda h: thrice(signed(h, block_hash(h), [0])),
        "another height": lambda h: signed(h + 1, block_hash(h), [0, 1, 2]),
        "not a certificate": lambda h: b"\x93\x01\x02",
        "too long": lambda h: b"\x00" * (certbackfill.MAX_CERT_BYTES + 1),
    }


@pytest.mark.usefixtures("no_grace")
@pytest.mark.parametrize("forgery", FORGERIES)
async def test_a_forged_certificate_is_refused_and_another_peers_is_stored(
    fake_node: FakeNode, forgery: str
) -> None:
    chain = replayer(fake_node)
    forger = Peer("node1", _forgeries(fake_node)[forgery])
    good = Peer("node2", honest(fake_node))
    backfill = CertificateBackfill(chain, [forger, good])
    backfill.committed(2)
    await backfill.tick()
    assert forger.asked == [2] and good.asked == [2]
    assert backfill.stats.refused == 1 and backfill.bad == {"node1": 1}
    assert chain.certificate(2) == fake_node.chain.certificate(2)
    # The forger is not asked again for a while.
    backfill.committed(1)
    await backfill.tick()
    assert forger.asked == [2] and good.asked == [2, 1]
    assert chain.certificate(1) is not None


@pytest.mark.usefixtures("no_grace")
async def test_a_height_no_peer_gives_is_asked_again_later(fake_node: FakeNode) -> None:
    chain = replayer(fake_node)
    peers = [Peer(f"node{i}", lambda h: None) for i in (1, 2, 3)]
    backfill = CertificateBackfill(chain, peers)
    backfill.committed(1)
    await backfill.tick()
    # At most PEERS_PER_HEIGHT peers per attempt; the height waits RETRY_S for the next.
    assert sum(len(p.asked) for p in peers) == certbackfill.PEERS_PER_HEIGHT
    assert [(h, attempts) for _, h, attempts in backfill.pending] == [(1, 1)]
    await backfill.tick()
    assert sum(len(p.asked) for p in peers) == certbackfill.PEERS_PER_HEIGHT
    assert chain.certificate(1) is None and backfill.stats.unavailable == 2


@pytest.mark.usefixtures("no_grace")
async def test_heights_asked_per_tick_and_heights_waiting_are_bounded(
    fake_node: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(certbackfill, "HEIGHTS_PER_TICK", 1)
    monkeypatch.setattr(certbackfill, "MAX_PENDING", 2)
    chain, peer, backfill = one_honest_peer(fake_node)
    for h in (5, 6, 1, 2):
        backfill.committed(h)
    # Two heights wait at most: the first two are dropped.
    assert backfill.stats.dropped == 2 and sorted(h for _, h, _ in backfill.pending) == [1, 2]
    await backfill.tick()
    assert len(peer.asked) == 1
    await backfill.tick()
    assert sorted(peer.asked) == [1, 2]
    assert chain.certificate(1) is not None and chain.certificate(2) is not None


async def test_without_peers_nothing_waits_and_the_task_ends(fake_node: FakeNode) -> None:
    backfill = CertificateBackfill(replayer(fake_node), [])
    backfill.committed(1)
    assert not backfill.pending
    await backfill.run()


@pytest.mark.usefixtures("no_grace")
async def test_a_peers_api_serves_the_certificate_and_an_answer_is_read_up_to_its_bound(
    api: ApiHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain = replayer(api.node)
    peer = ApiCertificates("node1", api.url)
    backfill = CertificateBackfill(chain, [peer])
    try:
        backfill.committed(1)
        await backfill.tick()
        assert chain.certificate(1) == api.node.chain.certificate(1)
        # A peer with no certificate of the height answers 404: not a bad peer.
        backfill.committed(3)
        await backfill.tick()
        assert backfill.stats.unavailable == 1 and backfill.stats.refused == 0
        backfill.passed_over.clear()
        # An answer longer than the bound is not read past it, and refused.
        monkeypatch.setattr(certbackfill, "MAX_CERT_BYTES", 100)
        backfill.committed(2)
        await backfill.tick()
        assert chain.certificate(2) is None
        assert backfill.stats.refused == 1 and backfill.bad == {"node1": 1}
    finally:
        await backfill.close()


@pytest.mark.usefixtures("no_grace")
async def test_the_peers_follow_the_addresses_a_removed_one_is_closed_an_added_one_asked(
    api: ApiHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backfill takes the peers' addresses again every REFRESH_S while heights wait
    (on a node, the latest set's members, `node.peerapis`): a validator removed from
    them is no longer asked (its client closed), one added since the start is."""
    chain = replayer(api.node)
    named: dict[int, tuple[str, str]] = {1: ("node1", "http://127.0.0.1:9")}
    backfill = CertificateBackfill(chain, addresses=lambda: dict(named))
    try:
        backfill.committed(1)
        await backfill.tick()
        # node1's address answers nothing: unavailable, and no certificate.
        assert [s.name for s in backfill.sources] == ["node1"]
        assert chain.certificate(1) is None and backfill.stats.unavailable == 1
        gone = backfill.sources[0]
        assert isinstance(gone, ApiCertificates)
        # node1 leaves the set and node4 joins it, at the harness's API.
        named.clear()
        named[4] = ("node4", api.url)
        await backfill.tick()  # within REFRESH_S: the peers are those of before
        assert [s.name for s in backfill.sources] == ["node1"]
        monkeypatch.setattr(certbackfill, "REFRESH_S", 0.0)
        backfill.pending = [(0.0, h, n) for _, h, n in backfill.pending]
        await backfill.tick()
        assert [s.name for s in backfill.sources] == ["node4"]
        assert gone.client._session is None  # closed
        assert chain.certificate(1) == api.node.chain.certificate(1)
        assert backfill.stats.stored == 1
    finally:
        await backfill.close()
