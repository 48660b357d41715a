"""The snapshot endpoints over real HTTP, answers checked against openapi.yaml: the list,
an offer that checks against the certified header, chunks that check against the
manifest, and 404 problems for what the node does not keep."""

from __future__ import annotations

from contracts.snapshot import compute_checkpoint, decode_chunk, decode_manifest
from node import snapshots
from node.snapshots import SnapshotOffer
from node.statesync import check_block
from qchain.store import Batch, schema
from qchain.types import (
    Block,
    BlockHeader,
    CommitCertificate,
    CommitSignature,
    commit_sign_digest,
    receipts_root,
    tx_root,
    verify_certificate,
)

from ..conftest import CHAIN_ID, VALIDATOR_KEYS, VALIDATORS, ApiHarness, FakeNode


def _with_snapshot(node: FakeNode, entries: int) -> BlockHeader:
    """Commit an empty block whose app hash is a checkpoint over `entries` state entries,
    with its snapshot kept (no certificate yet); its header."""
    batch = Batch()
    for i in range(entries):
        batch.put(schema.state_key("notary", schema.u64(i)), bytes(300))
    node.store.write(batch)
    height = node.chain.height() + 1
    cp = compute_checkpoint(node.store, height, bytes(32))
    header = BlockHeader(
        CHAIN_ID,
        height,
        0,
        1_700_000_000_000 + height,
        node.chain.block_hash(height - 1) or bytes(32),
        0,
        tx_root(()),
        receipts_root([]),
        cp.app_hash,
    )
    b = node.chain.commit_batch(Block(header, ()), [], [])
    b.put(schema.consensus_value_key(height), bytes([height]) * 32)
    snapshots.add_to_batch(node.store, cp, 2, b)
    node.store.write(b, sync=True)
    return header


def _certify(node: FakeNode, header: BlockHeader) -> None:
    digest = commit_sign_digest(CHAIN_ID, header.height, header.hash)
    sigs = tuple(CommitSignature(i, VALIDATOR_KEYS[i].sign(digest)) for i in range(3))
    node.chain.put_certificate(CommitCertificate(header.height, header.hash, sigs))


async def test_snapshots_are_listed_offered_and_chunked(api: ApiHarness) -> None:
    assert (await api.request("GET", "/v1/snapshots")).json() == {"snapshots": []}
    api.node.commit_pending()
    header = _with_snapshot(api.node, 2_000)
    h = header.height
    # Not listed nor offered until the certificate of its header is stored (a validator
    # stores it once the commit signatures are in).
    assert (await api.request("GET", "/v1/snapshots")).json() == {"snapshots": []}
    assert (await api.request("GET", f"/v1/snapshots/{h}")).status == 404
    _certify(api.node, header)
    listed = (await api.request("GET", "/v1/snapshots")).json()["snapshots"]
    assert [s["height"] for s in listed] == [h] and listed[0]["entries"] == 2_000
    r = await api.request("GET", f"/v1/snapshots/{h}")
    assert r.status == 200 and r.content_type == "application/msgpack"
    offer = SnapshotOffer.decode(r.body)
    assert offer.header.hash == header.hash and offer.value == bytes([h]) * 32
    assert [p.hash for p in offer.parent] == [header.parent]
    verify_certificate(offer.certificate, CHAIN_ID, VALIDATORS)
    m = decode_manifest(offer.manifest)
    m.check(h, offer.header.app_hash)
    assert len(m.chunks) == listed[0]["chunks"] > 1
    got = []
    for i, expected in enumerate(m.chunks):
        c = await api.request("GET", f"/v1/snapshots/{h}/chunks/{i}")
        assert c.status == 200
        got.extend(decode_chunk(c.body, expected, got[-1][0] if got else None))
    assert got == list(api.node.store.iterate(schema.STATE))
    b = await api.request("GET", f"/v1/snapshots/{h}/block")
    assert b.status == 200 and b.content_type == "application/msgpack"
    assert check_block(b.body, offer.header).block == api.node.chain.block(h).encode()  # type: ignore[union-attr]
    assert (await api.request("GET", f"/v1/snapshots/{h + 1}/block")).status == 404
    for path in (
        f"/v1/snapshots/{h}/chunks/{len(m.chunks)}",
        f"/v1/snapshots/{h + 1}",
        f"/v1/snapshots/{h + 1}/chunks/0",
    ):
        assert (await api.request("GET", path)).status == 404
    for path in ("/v1/snapshots/x", f"/v1/snapshots/{h}/chunks/-1", "/v1/snapshots/1/chunks/2e9"):
        assert (await api.request("GET", path)).status == 400


async def test_blocks_below_the_base_are_gone_with_the_base_height(api: ApiHarness) -> None:
    for _ in range(3):
        api.node.commit_pending()
    api.node.store.put(schema.META_BASE_HEIGHT, schema.u64(3))
    for path in ("/v1/blocks/1", "/v1/blocks/2", "/v1/blocks?from=2"):
        r = await api.request("GET", path)
        assert r.status == 410, path
        doc = r.json()
        assert doc["type"].endswith("/below-base") and doc["base_height"] == 3
        assert doc["height"] == int(path.rsplit("/", 1)[-1].rsplit("=", 1)[-1])
    assert (await api.request("GET", "/v1/blocks/3")).status == 200
    assert (await api.request("GET", "/v1/blocks?from=3")).json()["blocks"][0]["height"] == 3
    top = api.node.chain.height()
    assert (await api.request("GET", f"/v1/blocks/{top + 1}")).status == 404
    api.node.store.put(schema.META_BASE_HEIGHT, schema.u64(top))
    assert (await api.request("GET", "/v1/blocks/latest")).status == 200
    assert (await api.request("GET", f"/v1/blocks/{top - 1}")).status == 410


async def test_unknown_transactions_name_the_base_on_a_synced_node(api: ApiHarness) -> None:
    missing = "ab" * 32
    for path in (f"/v1/txs/{missing}", f"/v1/receipts/{missing}"):
        doc = (await api.request("GET", path)).json()
        assert doc["type"].endswith("/not-found") and "base_height" not in doc
    api.node.store.put(schema.META_BASE_HEIGHT, schema.u64(7))
    for path in (f"/v1/txs/{missing}", f"/v1/receipts/{missing}"):
        r = await api.request("GET", path)
        doc = r.json()
        assert r.status == 404 and doc["type"].endswith("/not-found")
        assert doc["base_height"] == 7 and "snapshot of height 7" in doc["detail"]
