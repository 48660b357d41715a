"""The worst cases of the size chain through a validator's own code paths (no network):

- a mempool full of the largest transactions (64 KiB `notary.anchor_many`, Ed25519 and
  ML-DSA-65) builds a block filled to the byte cap, whose Propose is within the consensus
  message cap and whose frame a peer accepts;
- a block fetch answers with as many blocks as fit one message (two full blocks do not);
- sending a mempool full of large transactions, or of many ML-DSA-65 ones, as this
  node's batches sends envelopes that each fit a frame body;
- a transaction larger than the node's blocks is refused at admission (`tx-too-large`),
  from a client through the API and from a peer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from consensus.events import BlockBuilt, BuildBlock
from consensus.messages import BlockReq, BlockResp, Propose, decode_message, encode_message
from consensus.messages import block_hash as consensus_value
from contracts.testing import sized_anchor_many
from devnet.network import account_key, plan_network, write_network
from node.forwarding import MAX_REFORWARD
from node.http.api import make_api_app
from node.http.testing import start_api
from node.runtime import Validator
from node.wire import (
    Envelope,
    Kind,
    OriginBatch,
    decode_body,
    encode_body,
    tx_batches,
)
from qchain.config import load_config
from qchain.errors import TxTooLarge
from qchain.limits import FRAME_BODY_MAX, MAX_BLOCK_TX_BYTES, MAX_MESSAGE, TX_BATCH_MAX_BYTES
from qchain.qkd.frame import FRAME_VERSION, FrameHeader, decode_frame, encode_frame
from qchain.store.memory import MemoryStore
from qchain.types import MAX_TX_SIZE, Transaction, decode_block, new_transaction

ROLES = ("partner1", "partner2", "auditor", "provider")


def _validator(tmp_path: Path, scheme: str, node: int = 0, **mempool: int) -> Validator:
    if not (tmp_path / "network.json").exists():
        write_network(tmp_path, plan_network(base_port=None, scheme=scheme, heartbeat_ms=300))
    path = tmp_path / "nodes" / f"node{node}" / "config.toml"
    if mempool:
        path.write_text(
            path.read_text() + "\n[mempool]\n" + "".join(f"{k} = {v}\n" for k, v in mempool.items())
        )
    return Validator(load_config(path), store=MemoryStore())


def _largest(v: Validator, role: str, scheme: str, count: int) -> list[Transaction]:
    key = account_key(role, scheme)
    return [sized_anchor_many(key, chain_id=v.chain_id, nonce=n, label=role) for n in range(count)]


class _Sent:
    """Stands in for the transport: records what the node sends to whom."""

    def __init__(self) -> None:
        self.envelopes: list[tuple[int, Envelope]] = []

    def send(self, peer: int, envelope: Envelope) -> None:
        self.envelopes.append((peer, envelope))


def _frame_of(body: bytes) -> bytes:
    """The frame a peer receives for this body; decode_frame checks the frame limits."""
    header = FrameHeader(FRAME_VERSION, "qchain-devnet", "SAE-node0", "SAE-node1", 1, bytes(16), ())
    frame = encode_frame(header, body, bytearray(32))
    decode_frame(frame)
    return frame


@pytest.mark.parametrize("scheme", ["ed25519", "ml-dsa-65"])
async def test_a_block_of_the_largest_transactions_fits_a_frame(
    tmp_path: Path, scheme: str
) -> None:
    v = _validator(tmp_path, scheme)
    txs = [tx for role in ROLES[:2] for tx in _largest(v, role, scheme, 40)]
    for tx in txs:
        v.admission.admit(tx, local=True)
    built: list[object] = []
    v.pacer.feed = built.append
    v.pacer.pending = BuildBlock(1, 0, v.app.committed_value(0) or b"")
    v.pacer.maybe_build()
    assert v.alarms.counts == {}, "the build failed"
    (event,) = built
    assert isinstance(event, BlockBuilt)
    included = decode_block(event.block.body).txs
    assert len(included) == MAX_BLOCK_TX_BYTES // MAX_TX_SIZE
    assert sum(len(tx.encoded) for tx in included) > MAX_BLOCK_TX_BYTES - MAX_TX_SIZE
    assert len(event.block.body) <= v.params.max_block_bytes
    message = encode_message(Propose(v.chain_id, 1, 0, event.block))
    assert len(message) <= MAX_MESSAGE
    body = encode_body([Envelope(Kind.CONSENSUS, message)])
    assert len(body) <= FRAME_BODY_MAX
    (received,) = decode_body(bytes(decode_frame(_frame_of(body))[2]))
    assert decode_message(received.payload) == Propose(v.chain_id, 1, 0, event.block)
    peer = _validator(tmp_path, scheme, node=1)
    assert peer.app.validate(decode_message(received.payload).block).block.txs == included


def test_a_block_fetch_answers_with_what_fits_one_frame(tmp_path: Path) -> None:
    v = _validator(tmp_path, "ed25519")
    for tx in _largest(v, "partner1", "ed25519", 2 * (MAX_BLOCK_TX_BYTES // MAX_TX_SIZE)):
        v.admission.admit(tx, local=True)
    values = []
    for height in (1, 2):
        txs = v.mempool.reap(v.cfg.mempool.max_block_txs, MAX_BLOCK_TX_BYTES)
        parent = v.app.committed_value(height - 1) or b""
        prepared = v.app.build(height, 0, parent, 0, txs)
        v.store.write(v.app.commit_batch(prepared), sync=True)
        v.accounts.invalidate()
        v.mempool.on_commit(prepared.block.txs, height)
        values.append(prepared.value)
    assert len(v.mempool) == 0
    sent = _Sent()
    v.links.transport = sent  # type: ignore[assignment]
    v.fetcher.serve(1, BlockReq(v.chain_id, tuple(values)))
    v.fetcher.serve(1, BlockReq(v.chain_id, (values[1],)))
    answers = []
    for _, env in sent.envelopes:
        assert len(env.payload) <= MAX_MESSAGE
        _frame_of(encode_body([env]))
        resp = decode_message(env.payload)
        assert isinstance(resp, BlockResp)
        answers.append([consensus_value(b) for b in resp.blocks])
    assert answers == [values[:1], values[1:]]


def _assert_each_fits_a_frame(sent: _Sent) -> list[bytes]:
    raws: list[bytes] = []
    seqs = []
    for _, env in sent.envelopes:
        assert env.kind is Kind.BATCH
        assert len(env.payload) <= TX_BATCH_MAX_BYTES
        _frame_of(encode_body([env]))
        batch = OriginBatch.decode(env.payload)
        assert batch.origin == 0
        seqs.append(batch.seq)
        raws.extend(batch.txs)
    assert seqs == sorted(set(seqs)), "each batch has its own sequence number"
    return raws


def test_forwarding_a_pool_of_large_transactions_splits_by_bytes(tmp_path: Path) -> None:
    v = _validator(tmp_path, "ed25519")
    for role in ROLES:
        for tx in _largest(v, role, "ed25519", 100):
            v.admission.admit(tx, local=True)
    sent = _Sent()
    v.links.transport = sent  # type: ignore[assignment]
    mine = [p.tx.encoded for p in v.mempool.pending() if p.local][:MAX_REFORWARD]
    v.forwarder.forward(mine)
    one_peer = _Sent()
    one_peer.envelopes = [(p, e) for p, e in sent.envelopes if p == 1]
    assert len(one_peer.envelopes) > 1
    assert _assert_each_fits_a_frame(one_peer) == mine


def test_reforwarding_many_ml_dsa_transactions_splits_by_bytes(tmp_path: Path) -> None:
    """The leader-change case of the finding: ~780 ML-DSA-65 anchors filled one batch."""
    v = _validator(tmp_path, "ml-dsa-65")
    for role in ROLES:
        key = account_key(role, "ml-dsa-65")
        for n in range(250):
            digest = role.encode().ljust(28, b"-") + n.to_bytes(4, "big")
            tx = new_transaction(
                key,
                chain_id=v.chain_id,
                nonce=n,
                contract="notary",
                method="anchor",
                args=[digest, "sha256", f"evidence {n}", "test", b""],
            )
            v.admission.admit(tx, local=True)
    sent = _Sent()
    v.links.transport = sent  # type: ignore[assignment]
    mine = [p.tx.encoded for p in v.mempool.pending()]
    v.forwarder.forward(mine)
    assert {peer for peer, _ in sent.envelopes} == {1, 2, 3}
    one_peer = _Sent()
    one_peer.envelopes = [(p, e) for p, e in sent.envelopes if p == 1]
    assert _assert_each_fits_a_frame(one_peer) == mine


def test_batches_are_cut_by_count_too() -> None:
    raws = [bytes([i]) * 100 for i in range(5)]
    batches = tx_batches(raws, max_txs=2)
    assert [len(b.txs) for b in batches] == [2, 2, 1]
    assert [tx for b in batches for tx in b.txs] == raws


@pytest.fixture
def small_blocks(tmp_path: Path) -> Iterator[Validator]:
    yield _validator(tmp_path, "ed25519", max_block_bytes=32 * 1024)


def test_a_transaction_larger_than_a_block_is_refused_from_a_peer(
    small_blocks: Validator,
) -> None:
    v = small_blocks
    (big,) = _largest(v, "partner1", "ed25519", 1)
    with pytest.raises(TxTooLarge) as info:
        v.admission.admit(big)
    assert (info.value.size, info.value.limit) == (MAX_TX_SIZE, 32 * 1024)
    assert v.mempool.rejections == {"tx-too-large": 1}


async def test_a_transaction_larger_than_a_block_is_a_413_problem(
    small_blocks: Validator,
) -> None:
    v = small_blocks
    key = account_key("partner1", "ed25519")
    big = sized_anchor_many(key, chain_id=v.chain_id, nonce=0, label="big", size=40_000)
    fits = dataclasses.replace(big, args=[big.args[0][:1]]).signed_by(key)
    runner, port = await start_api(
        make_api_app(v, max_body_bytes=256 * 1024, rate_limit_per_s=0), "127.0.0.1", 0
    )
    try:
        async with aiohttp.ClientSession() as s:
            url = f"http://127.0.0.1:{port}/v1/txs"
            headers = {"Content-Type": "application/msgpack"}
            async with s.post(url, data=big.encode(), headers=headers) as r:
                doc = await r.json(content_type=None)
                assert r.status == 413
                assert doc["type"].endswith("/tx-too-large")
                assert (doc["size"], doc["limit"]) == (40_000, 32 * 1024)
            async with s.post(url, data=fits.encode(), headers=headers) as r:
                assert r.status == 202
    finally:
        await runner.cleanup()
