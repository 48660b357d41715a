"""State commitments at checkpoint heights (`contracts.snapshot`): the pinned vector, the
chunk cut, manifests checked against app hashes, and the decoders under hostile input.

The vector (`tests/vectors/contracts/checkpoint.json`) replays the blocks of the contract
vector with `state_root_interval` 2 and a large synthetic state; a change to the bytes of
the commitment makes this test fail. Regenerate it only for an intended change:

    QCHAIN_REGEN_VECTORS=1 .venv/bin/pytest tests/contracts/test_snapshot.py
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from contracts import snapshot
from contracts.execution import BlockContext, execute_block
from contracts.genesis import Genesis, init_state, parse_genesis
from contracts.snapshot import (
    CHUNK_MAX_ENTRIES,
    CHUNK_TARGET_BYTES,
    MAX_CHUNK_BYTES,
    Manifest,
    compute_checkpoint,
    decode_chunk,
    decode_manifest,
)
from qchain.codec import encode_value
from qchain.errors import CodecError, GenesisError, InvalidSnapshot
from qchain.keys import Scheme
from qchain.store import Batch, KVStore, MemoryStore, open_store, schema
from qchain.types import decode_transaction

VECTORS = Path(__file__).parents[1] / "vectors" / "contracts"
CHAIN = VECTORS / "chain.json"
CHECKPOINT = VECTORS / "checkpoint.json"
INTERVAL = 2


def _load(store: KVStore, writes: Any) -> None:
    batch = Batch()
    for k, v in writes:
        if v is None:
            batch.delete(k)
        else:
            batch.put(k, v)
    store.write(batch)


def replay(
    store: KVStore, interval: int, executed: int | None = None
) -> tuple[Genesis, list[dict[str, Any]]]:
    """The contract vector's blocks under a genesis with `state_root_interval` interval,
    executed with checkpoints every `executed` heights (default: interval)."""
    vector = json.loads(CHAIN.read_text())
    genesis = dataclasses.replace(parse_genesis(vector["genesis"]), state_root_interval=interval)
    state = init_state(store, genesis)
    _load(store, state.write_set)
    prev = state.app_hash
    out = []
    for b in vector["blocks"]:
        txs = [decode_transaction(bytes.fromhex(t)) for t in b["txs"]]
        k = interval if executed is None else executed
        ctx = BlockContext(genesis.chain_id, b["height"], b["time"], prev, k)
        result = execute_block(store, ctx, txs)
        _load(store, result.write_set)
        entry: dict[str, Any] = {"height": b["height"], "app_hash": result.app_hash.hex()}
        cp = result.checkpoint
        if cp is not None:
            entry |= {
                "chained": cp.chained.hex(),
                "entry_count": cp.entry_count,
                "chunks": [h.hex() for h in cp.hashes],
                "state_root": cp.root.hex(),
            }
        out.append(entry)
        prev = result.app_hash
    return genesis, out


def synthetic_state(store: KVStore) -> None:
    """12,000 entries in two contracts, a few values large enough to close a chunk by
    bytes, the rest small enough to close them by count."""
    batch = Batch()
    for i in range(12_000):
        contract = "alpha" if i % 3 else "beta"
        size = 70_000 if i % 2_500 == 7 else i % 40
        batch.put(schema.state_key(contract, schema.u64(i)), bytes([i % 251]) * size)
    store.write(batch)


def build_vector() -> dict[str, Any]:
    genesis, blocks = replay(MemoryStore(), INTERVAL)
    store = MemoryStore()
    synthetic_state(store)
    cp = compute_checkpoint(store, 1000, bytes(32))
    return {
        "state_root_interval": INTERVAL,
        "genesis_hash": genesis.hash.hex(),
        "blocks": blocks,
        "synthetic": {
            "entry_count": cp.entry_count,
            "chunk_sizes": [len(c) for c in cp.chunks],
            "chunks": [h.hex() for h in cp.hashes],
            "state_root": cp.root.hex(),
            "app_hash": cp.app_hash.hex(),
        },
    }


@pytest.mark.skipif(not os.environ.get("QCHAIN_REGEN_VECTORS"), reason="set QCHAIN_REGEN_VECTORS=1")
def test_regenerate() -> None:
    CHECKPOINT.write_text(json.dumps(build_vector(), indent=1) + "\n")


def test_vector_on_both_backends(tmp_path: Path) -> None:
    stored = json.loads(CHECKPOINT.read_text())
    assert build_vector() == stored
    with open_store(tmp_path / "db") as db:
        _, blocks = replay(db, INTERVAL)
    assert blocks == stored["blocks"]
    with open_store(tmp_path / "db2") as db:
        synthetic_state(db)
        cp = compute_checkpoint(db, 1000, bytes(32))
    assert cp.root.hex() == stored["synthetic"]["state_root"]


def test_checkpoints_leave_other_heights_and_old_chains_alone() -> None:
    chain = json.loads(CHAIN.read_text())
    plain = [b["app_hash"] for b in chain["blocks"]]
    genesis, blocks = replay(MemoryStore(), 0)
    assert [b["app_hash"] for b in blocks] == plain
    assert genesis.hash.hex() == chain["genesis_hash"]
    _, without = replay(MemoryStore(), INTERVAL, 0)
    plain = [b["app_hash"] for b in without]
    _, with_cp = replay(MemoryStore(), INTERVAL)
    # Height 1 is no checkpoint; height 2's write-set chain is the plain app hash, mixed
    # with the state root; height 3 chains from the checkpoint's app hash.
    assert with_cp[0]["app_hash"] == plain[0] and "chained" not in with_cp[0]
    assert with_cp[1]["chained"] == plain[1] and with_cp[1]["app_hash"] != plain[1]
    assert with_cp[2]["app_hash"] != plain[2]


def test_state_root_is_the_state_after_the_block() -> None:
    """Block 2's root equals one computed from the committed store after block 2 (and
    so includes block 2's own writes), on every interval that makes 2 a checkpoint."""
    store = MemoryStore()
    vector = json.loads(CHAIN.read_text())
    genesis = dataclasses.replace(parse_genesis(vector["genesis"]), state_root_interval=1)
    state = init_state(store, genesis)
    _load(store, state.write_set)
    prev = state.app_hash
    for b in vector["blocks"][:2]:
        txs = [decode_transaction(bytes.fromhex(t)) for t in b["txs"]]
        ctx = BlockContext(genesis.chain_id, b["height"], b["time"], prev, 1)
        result = execute_block(store, ctx, txs)
        assert result.write_set and result.checkpoint is not None
        before = compute_checkpoint(store, b["height"], result.checkpoint.chained)
        _load(store, result.write_set)
        after = compute_checkpoint(store, b["height"], result.checkpoint.chained)
        assert result.checkpoint.root == after.root != before.root
        assert result.app_hash == after.app_hash
        prev = result.app_hash


def test_chunk_cut() -> None:
    store = MemoryStore()
    synthetic_state(store)
    cp = compute_checkpoint(store, 5, bytes(32))
    entries = list(store.iterate(schema.STATE))
    assert cp.entry_count == len(entries) == 12_000
    out: list[tuple[bytes, bytes]] = []
    last = None
    for raw, h in zip(cp.chunks, cp.hashes, strict=True):
        chunk = decode_chunk(raw, h, last)
        sizes = [len(encode_value([k, v])) for k, v in chunk]
        assert len(chunk) <= CHUNK_MAX_ENTRIES
        # Only the last entry may take a chunk to or past the target.
        assert sum(sizes[:-1]) < CHUNK_TARGET_BYTES
        out.extend(chunk)
        last = chunk[-1][0]
    assert out == entries
    by_count = [c for c in cp.chunks if len(decode_chunk(c, snapshot.chunk_hash(c), None)) == 4096]
    assert by_count and len(by_count) < len(cp.chunks)


def test_empty_state() -> None:
    cp = compute_checkpoint(MemoryStore(), 4, bytes(32))
    assert cp.entry_count == 0 and cp.chunks == ()
    cp.manifest().check(4, cp.app_hash)


def test_manifest_check_refuses_what_the_app_hash_does_not_commit_to() -> None:
    store = MemoryStore()
    synthetic_state(store)
    cp = compute_checkpoint(store, 8, bytes(range(32)))
    m = cp.manifest()
    m.check(8, cp.app_hash)
    assert decode_manifest(m.encode()) == m
    bad = [
        dataclasses.replace(m, height=16),
        dataclasses.replace(m, chained=bytes(32)),
        dataclasses.replace(m, entry_count=m.entry_count + 1),
        dataclasses.replace(m, chunks=m.chunks[:-1]),
        dataclasses.replace(m, chunks=(m.chunks[1], m.chunks[0], *m.chunks[2:])),
        dataclasses.replace(m, entry_count=0, chunks=()),
    ]
    for other in bad:
        with pytest.raises(InvalidSnapshot):
            other.check(8, cp.app_hash)
    with pytest.raises(InvalidSnapshot):
        m.check(8, bytes(32))


def _chunk(entries: list[list[object]]) -> bytes:
    return encode_value(entries)


def test_decode_chunk_refuses_bad_chunks() -> None:
    k1, k2 = schema.state_key("a", b"1"), schema.state_key("a", b"2")
    good = _chunk([[k1, b"x"], [k2, b"y"]])
    h = snapshot.chunk_hash(good)
    assert decode_chunk(good, h, None) == [(k1, b"x"), (k2, b"y")]
    with pytest.raises(InvalidSnapshot, match="hash"):
        decode_chunk(good, bytes(32), None)
    with pytest.raises(InvalidSnapshot, match="order"):
        decode_chunk(good, h, k1)
    cases = [
        _chunk([]),
        _chunk([[k2, b"y"], [k1, b"x"]]),
        _chunk([[k1, b"x"], [k1, b"y"]]),
        _chunk([[b"m" + k1[1:], b"x"]]),
        _chunk([[k1, "text"]]),
        _chunk([[k1]]),
        _chunk([[schema.STATE + b"a\x00" + bytes(snapshot.MAX_ENTRY_KEY), b""]]),
        encode_value([1, 2]),
        b"\xc1",
    ]
    for raw in cases:
        with pytest.raises(InvalidSnapshot):
            decode_chunk(raw, snapshot.chunk_hash(raw), None)
    big = bytes(MAX_CHUNK_BYTES + 1)
    with pytest.raises(InvalidSnapshot, match="exceeds"):
        decode_chunk(big, snapshot.chunk_hash(big), None)


def test_decode_manifest_bounds() -> None:
    with pytest.raises(InvalidSnapshot, match="exceeds"):
        decode_manifest(bytes(snapshot.MAX_MANIFEST_BYTES + 1))
    too_many = encode_value([1, bytes(32), 1, [bytes(32)] * (snapshot.MAX_CHUNKS + 1)])
    assert len(too_many) <= snapshot.MAX_MANIFEST_BYTES + 40
    with pytest.raises((CodecError, InvalidSnapshot)):
        decode_manifest(too_many)
    at_limit = Manifest(1, bytes(32), 2**64 - 1, (bytes(32),) * snapshot.MAX_CHUNKS)
    assert len(at_limit.encode()) <= snapshot.MAX_MANIFEST_BYTES
    assert decode_manifest(at_limit.encode()) == at_limit


@pytest.mark.parametrize("seed", range(8))
def test_fuzz_decoders(seed: int) -> None:
    """Mutated chunks and manifests are decoded or refused with the snapshot's own errors;
    nothing else escapes."""
    rng = random.Random(seed)
    keys = sorted(schema.state_key("c", rng.randbytes(rng.randint(0, 12))) for _ in range(20))
    good = _chunk([[k, rng.randbytes(rng.randint(0, 30))] for k in dict.fromkeys(keys)])
    m = Manifest(7, rng.randbytes(32), 20, tuple(rng.randbytes(32) for _ in range(3))).encode()
    for _ in range(400):
        for base, is_chunk in ((good, True), (m, False)):
            raw = bytearray(base)
            for _ in range(rng.randint(1, 4)):
                op = rng.randrange(3)
                pos = rng.randrange(len(raw) + 1)
                if op == 0 and raw:
                    raw[min(pos, len(raw) - 1)] = rng.randrange(256)
                elif op == 1:
                    raw[pos:pos] = rng.randbytes(rng.randint(1, 8))
                else:
                    del raw[pos : pos + rng.randint(1, 8)]
            data = bytes(raw)
            try:
                if is_chunk:
                    decode_chunk(data, snapshot.chunk_hash(data), None)
                else:
                    decode_manifest(data)
            except (InvalidSnapshot, CodecError):
                pass


def test_genesis_parameter() -> None:
    chain = json.loads(CHAIN.read_text())
    doc = dict(chain["genesis"])
    plain = parse_genesis(doc)
    with_k = parse_genesis({**doc, "state_root_interval": 100})
    assert plain.state_root_interval == 0 and with_k.state_root_interval == 100
    assert plain.hash.hex() == chain["genesis_hash"]
    assert with_k.hash != plain.hash
    assert parse_genesis(with_k.to_json()) == with_k
    assert "state_root_interval" not in plain.to_json()
    assert parse_genesis({**doc, "state_root_interval": 0}).hash == plain.hash
    every = [s.value for s in Scheme]
    schemes = parse_genesis({**doc, "accepted_schemes": every})
    both = parse_genesis({**doc, "accepted_schemes": every, "state_root_interval": 5})
    assert len({plain.hash, with_k.hash, schemes.hash, both.hash}) == 4
    for bad in (-1, 2**32, "100", 1.5):
        with pytest.raises(GenesisError, match="state_root_interval"):
            parse_genesis({**doc, "state_root_interval": bad})
