"""Pipelined heights (CONSENSUS.md §3.3, Revision 1.13): the next height runs while the
commit batch of the last one is still being written, and nothing of a height is announced
before its batch is durable.

Driven by a store whose commit batch blocks in the writer thread until the test lets it
go (`GatedStore`): what the node did meanwhile is recorded when it happens, not inferred
from timing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

from consensus.events import Persist, PersistBlock
from consensus.messages import Block as CBlock
from consensus.messages import Record, load_record
from devnet.network import account_key
from devnet.testing import anchor_tx, inproc_network
from node.alarms import Alarms
from node.commitwriter import CommitWriter
from node.driver import Driver, Handlers
from node.runtime import Validator
from qchain.config import NodeConfig
from qchain.errors import QChainError, StorageError
from qchain.qkd.testing import wait_until
from qchain.store import schema
from qchain.store.kv import Batch, KVStore, Snapshot, open_store
from qchain.store.memory import MemoryStore

HANG_GUARD_S = 60.0
"""Only against a hang: a gate nobody opens lets go after this and the test fails."""


@dataclass
class Overlap:
    """A consensus record of height `height` written while the commit batch of
    `height - 1` was held, and what the node showed of `height - 1` at that moment."""

    record: Record
    durable_height: int
    certificate: bool
    tx_states: list[str] = field(default_factory=list)


class GatedStore(KVStore):
    """A store whose commit batch of height `target` (set by `arm`) waits in the writer
    thread until `release`. `on_overlap` is called, on the event loop, with each consensus
    record of the next height that carries a vote or a proposal and is written while that
    batch is held. `cut` models a power cut: the held batch and every later write are
    lost."""

    concurrent_writes = True

    def __init__(self, inner: KVStore) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.target: int | None = None
        self.held: int | None = None
        self.held_txs: list[bytes] = []
        self.cut_off = False
        self.timed_out = False
        self.on_overlap: Callable[[Record], None] = lambda rec: None
        self.on_hold: Callable[[], None] = lambda: None
        """Called on the event loop (`loop`) when a batch starts being held."""
        self.loop: asyncio.AbstractEventLoop | None = None

    def arm(self, height: int) -> None:
        self.gate = threading.Event()
        self.target = height

    def release(self, *, cut: bool = False) -> None:
        self.cut_off = self.cut_off or cut
        self.gate.set()

    def write(self, batch: Batch, *, sync: bool = True) -> None:
        if self.cut_off:
            return
        ops = dict(batch.ops())
        last = ops.get(schema.META_LAST_HEIGHT)
        if last is not None and schema.read_u64(last) == self.target:
            self.held = self.target
            self.held_txs = [k[len(schema.TX) :] for k in ops if k.startswith(schema.TX)]
            if self.loop is not None:
                self.loop.call_soon_threadsafe(self.on_hold)
            self.timed_out = not self.gate.wait(HANG_GUARD_S)
            if self.cut_off:
                return
            self.held = self.target = None
        elif self.held is not None:
            for key, value in ops.items():
                if key.startswith(schema.CONSENSUS) and value is not None:
                    rec = load_record(value)
                    voted = rec.s[0].last_value is not None or rec.proposal_value is not None
                    if rec.height == self.held + 1 and voted:
                        self.on_overlap(rec)
        self.inner.write(batch, sync=sync)

    def get(self, key: bytes) -> bytes | None:
        return self.inner.get(key)

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        if not self.cut_off:
            self.inner.put(key, value, sync=sync)

    def delete(self, key: bytes, *, sync: bool = False) -> None:
        if not self.cut_off:
            self.inner.delete(key, sync=sync)

    def iterate(
        self, prefix: bytes = b"", *, start: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        return self.inner.iterate(prefix, start=start, reverse=reverse)

    def snapshot(self) -> Snapshot:
        return self.inner.snapshot()

    def close(self) -> None:
        self.gate.set()
        self.inner.close()


def _watch(store: GatedStore, v: Validator, seen: list[Overlap], cut: bool) -> None:
    """Record the first overlap and what the node shows of the held height then; then let
    the held batch go (or cut the power). All validators share the test's event loop, so
    the node's commit barrier must not wait for a batch only the loop can let go: when
    the node learns a decision of h+1 before it voted there (from its peers' DONEs), the
    barrier lets the batch go and that attempt shows no overlap."""

    def on_overlap(rec: Record) -> None:
        if seen:
            return
        held = rec.height - 1
        states = [s.state if (s := v.tx_status(t)) is not None else "none" for t in store.held_txs]
        seen.append(Overlap(rec, v.chain.height(), v.chain.certificate(held) is not None, states))
        store.release(cut=cut)

    def barrier() -> None:
        if store.target is not None and writer.in_flight == store.target:
            store.release()
        writer.wait()

    store.on_overlap = on_overlap
    writer = v.committer.writer
    v.driver.handlers = dataclasses.replace(v.driver._handlers(), commit_barrier=barrier)


async def _overlap(v: Validator, store: GatedStore, seen: list[Overlap]) -> Overlap:
    """Hold the commit batch of a coming height until one shows an overlap (a few
    heights at most: voting or proposing at h+1 before learning its decision is the
    rule)."""
    for _ in range(8):
        target = v.app.head_height() + 2
        store.arm(target)
        await wait_until(lambda t=target: bool(seen) or v.chain.height() >= t, timeout=30)
        if seen:
            return seen[0]
    raise AssertionError("no overlap in 8 heights")


def _gated(
    tmp_path: Path, which: set[int]
) -> tuple[dict[int, GatedStore], Callable[[NodeConfig], KVStore | None]]:
    stores: dict[int, GatedStore] = {}

    def make(cfg: NodeConfig) -> KVStore | None:
        if cfg.node.index not in which:
            return None
        stores[cfg.node.index] = GatedStore(open_store(tmp_path / f"gated-{cfg.node.index}"))
        return stores[cfg.node.index]

    return stores, make


async def _submit(network: list[Validator], count: int) -> None:
    key = account_key("partner1", "ed25519")
    for nonce in range(count):
        tx = anchor_tx(key, network[0].chain_id, nonce, bytes([nonce]) * 32, f"d{nonce}", "r")
        network[0].submit_tx(tx)


async def test_next_height_proposes_and_votes_while_the_commit_batch_is_held(
    tmp_path: Path,
) -> None:
    """Nodes 0 and 1 (the stable leader, which proposes, and a follower, which validates
    on the executed block and votes; under a leader change, both vote) act at h+1 while
    the commit batch of h is held in their writer threads; neither shows h as committed
    (height, receipts, certificate) before the batch is let go, and after it both commit
    the same chain as the others."""
    stores, make = _gated(tmp_path, {0, 1})
    async with inproc_network(tmp_path, store=make) as network:
        await wait_until(lambda: all(v.chain.height() >= 2 for v in network), timeout=20)
        seen: dict[int, list[Overlap]] = {0: [], 1: []}
        for i in (0, 1):
            _watch(stores[i], network[i], seen[i], cut=False)
        await _submit(network, 6)
        await wait_until(lambda: network[0].mempool.has_ready(), timeout=20)
        leader = await _overlap(network[0], stores[0], seen[0])
        follower = await _overlap(network[1], stores[1], seen[1])
        for i, o in ((0, leader), (1, follower)):
            if network[i].params.leader(o.record.anchor, o.record.round) == i:
                assert o.record.proposal_value is not None  # a leader proposes first
            h = o.record.height - 1
            assert o.durable_height == h - 1
            assert not o.certificate
            assert "committed" not in o.tx_states
        top = max(o.record.height for o in (leader, follower))
        await wait_until(lambda: all(v.chain.height() >= top + 1 for v in network), timeout=30)
        for h in range(1, top + 2):
            assert len({v.chain.block_hash(h) for v in network}) == 1
        for o in (leader, follower):
            # What it signed at h+1 stands on block h, which was not durable then.
            assert o.record.parent_hash == network[0].app.committed_value(o.record.height - 1)
        assert not any(s.timed_out for s in stores.values())
        assert all(v.alarms.fatal is None for v in network)


async def test_a_transaction_in_a_held_commit_is_pending_and_resubmits_as_such(
    tmp_path: Path,
) -> None:
    """A block is executed (its transactions out of the pool, their nonces spent) while
    its commit batch is held: its transactions read as pending, not unknown, and a client
    sending one again gets its pending status and then its receipt, not a nonce mismatch
    (the pool would refuse the spent nonce)."""
    stores, make = _gated(tmp_path, {0})
    async with inproc_network(tmp_path, store=make) as network:
        v, store = network[0], stores[0]
        await wait_until(lambda: v.chain.height() >= 2, timeout=20)
        key = account_key("partner1", "ed25519")
        txs = {}
        seen: list[tuple[list[str], list[tuple[str, bool]]]] = []

        def on_hold() -> None:
            held = [txs[h] for h in store.held_txs if h in txs]
            try:
                if held and not seen:
                    states = [s.state if (s := v.tx_status(t.hash)) else "none" for t in held]
                    resent = []
                    for t in held:
                        try:
                            st, new = v.submit_tx(t)
                            resent.append((st.state, new))
                        except QChainError as e:
                            resent.append((e.code, False))
                    seen.append((states, resent))
            finally:
                store.release()

        store.loop = asyncio.get_running_loop()
        store.on_hold = on_hold
        for nonce in range(40):
            if seen:
                break
            store.arm(v.app.head_height() + 1)
            tx = anchor_tx(key, v.chain_id, nonce, bytes([nonce]) * 32, f"h{nonce}", "r")
            txs[tx.hash] = tx
            v.submit_tx(tx)
            await wait_until(
                lambda t=tx.hash: t in store.held_txs or v.chain.tx_location(t) is not None, 20
            )
        assert seen, "no commit batch carrying a submitted transaction was held"
        states, resent = seen[0]
        assert states and set(states) == {"pending"}
        assert set(resent) == {("pending", False)}
        done = [await v.wait_committed(t, 20) for t in store.held_txs if t in txs]
        assert done and all(d is not None and d.state == "committed" for d in done)
        assert not store.timed_out and v.alarms.fatal is None


async def test_power_cut_with_the_commit_in_flight_loses_no_height(tmp_path: Path) -> None:
    """Node 1 decides h, starts h+1 and votes there; the power goes before the commit
    batch of h (and anything after) reaches the disk. Restarted on what is durable, it
    commits h again from its decided record and follows the chain."""
    stores, make = _gated(tmp_path, {1})
    async with inproc_network(tmp_path, store=make) as network:
        await wait_until(lambda: all(v.chain.height() >= 2 for v in network), timeout=20)
        seen: list[Overlap] = []
        _watch(stores[1], network[1], seen, cut=True)
        lost = (await _overlap(network[1], stores[1], seen)).record.height - 1
        old = network[1]
        cfg, source = old.cfg, old._key_source
        await old.stop()
        inner = open_store(tmp_path / "gated-1")
        assert chain_height(inner) == lost - 1
        assert inner.get(schema.consensus_key(lost)) is not None
        # Its vote of the next height reached the disk before the lost batch would have.
        assert inner.get(schema.consensus_key(lost + 1)) is not None
        restarted = Validator(cfg, key_source=source, store=inner)
        network[1] = restarted
        await restarted.start()
        others = [network[0], network[2], network[3]]
        target = max(v.chain.height() for v in others)
        await wait_until(lambda: restarted.chain.height() >= max(target, lost + 1), timeout=30)
        for h in range(1, lost + 2):
            assert restarted.chain.block_hash(h) == others[0].chain.block_hash(h)
        assert restarted.alarms.fatal is None


def chain_height(store: KVStore) -> int:
    raw = store.get(schema.META_LAST_HEIGHT)
    return 0 if raw is None else schema.read_u64(raw)


# --- the writer and the barrier, one by one ---------------------------------------


class HeldWrites(MemoryStore):
    """An in-memory store whose writes wait until released (from the test's thread)."""

    concurrent_writes = True

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.fail_with: StorageError | None = None

    def write(self, batch: Batch, *, sync: bool = True) -> None:
        if not self.gate.wait(HANG_GUARD_S):
            raise StorageError("never released")
        if self.fail_with is not None:
            raise self.fail_with
        super().write(batch, sync=sync)


def _batch(height: int) -> Batch:
    b = Batch()
    b.put(schema.META_LAST_HEIGHT, schema.u64(height))
    return b


async def test_writer_runs_the_continuation_once_after_the_batch_is_durable() -> None:
    store = HeldWrites()
    alarms = Alarms()
    writer = CommitWriter(store, alarms.fail)
    durable: list[int] = []
    writer.write(5, _batch(5), lambda: durable.append(store.get(schema.META_LAST_HEIGHT) or b""))
    assert writer.in_flight == 5
    await asyncio.sleep(0)
    assert durable == [] and store.get(schema.META_LAST_HEIGHT) is None
    store.gate.set()
    writer.wait()
    assert durable == [schema.u64(5)] and writer.in_flight is None
    writer.close()  # the writer thread has handed its callback to the loop
    await asyncio.sleep(0)  # which runs it: it finds the batch settled
    assert len(durable) == 1


async def test_writer_waits_for_the_batch_in_flight_before_the_next() -> None:
    store = HeldWrites()
    writer = CommitWriter(store, Alarms().fail)
    order: list[int] = []
    writer.write(1, _batch(1), lambda: order.append(1))
    threading.Thread(target=store.gate.set).start()
    writer.write(2, _batch(2), lambda: order.append(2))
    writer.wait()
    assert order == [1, 2]
    assert store.get(schema.META_LAST_HEIGHT) == schema.u64(2)
    writer.close()


async def test_a_failed_commit_batch_halts_and_announces_nothing() -> None:
    store = HeldWrites()
    alarms = Alarms()
    writer = CommitWriter(store, alarms.fail)
    durable: list[int] = []
    writer.write(3, _batch(3), lambda: durable.append(3))
    store.fail_with = StorageError("disk full")
    store.gate.set()
    writer.wait()
    assert durable == []
    assert alarms.fatal is not None and "height 3" in alarms.fatal and "disk full" in alarms.fatal
    writer.close()


async def test_inline_store_is_durable_when_write_returns() -> None:
    store = MemoryStore()
    writer = CommitWriter(store, Alarms().fail)
    durable: list[bytes | None] = []
    writer.write(1, _batch(1), lambda: durable.append(store.get(schema.META_LAST_HEIGHT)))
    assert durable == [schema.u64(1)] and writer.in_flight is None
    writer.close()


@pytest.mark.parametrize(
    ("decided", "waits"),
    [(None, False), (b"\x07" * 32, True)],
)
def test_driver_waits_for_the_commit_only_before_a_decision(
    decided: bytes | None, waits: bool
) -> None:
    """A vote's batch goes to the disk beside the commit in flight; a decision's batch
    waits for it (the commit barrier)."""
    from consensus.engine import Engine
    from consensus.params import Params

    log: list[str] = []

    class Store(MemoryStore):
        def write(self, batch: Batch, *, sync: bool = True) -> None:
            log.append("write")
            super().write(batch, sync=sync)

    driver = Driver(
        Engine(Params(n=4), 0),
        Store(),
        SimpleNamespace(me=0),  # type: ignore[arg-type]
        Alarms(),
        None,  # type: ignore[arg-type]
        committed=lambda: 0,
        committed_value=lambda h: None,
    )
    none = lambda *a: None  # noqa: E731
    callbacks = {f.name: none for f in dataclasses.fields(Handlers) if f.name != "commit_barrier"}
    driver.bind(Handlers(**callbacks, commit_barrier=lambda: log.append("barrier")))
    rec = Record(height=2, anchor=0, parent_hash=b"\x01" * 32, decided=decided)
    body = CBlock(2, b"\x01" * 32, 0, 0, b"body")
    driver._write([Persist(rec), PersistBlock(body)])
    assert log == (["barrier", "write"] if waits else ["write"])


class SlowDisk(MemoryStore):
    """A simulated store with a write latency (as the whole-network simulator's)."""

    write_latency_s = 3600.0


async def test_store_with_a_write_latency_is_durable_at_the_barrier_not_before() -> None:
    store = SlowDisk()
    writer = CommitWriter(store, Alarms().fail)
    durable: list[int] = []
    writer.write(4, _batch(4), lambda: durable.append(4))
    await asyncio.sleep(0)
    assert durable == [] and store.get(schema.META_LAST_HEIGHT) is None
    assert writer.in_flight == 4
    writer.wait()
    assert durable == [4] and store.get(schema.META_LAST_HEIGHT) == schema.u64(4)
    writer.write(5, _batch(5), lambda: durable.append(5))
    writer.close()  # stopping: the batch lands, nothing more is announced
    assert store.get(schema.META_LAST_HEIGHT) == schema.u64(5) and durable == [4]


class HeldByHeight(MemoryStore):
    """An in-memory store whose commit batch of each height in `gates` waits, in the
    writer thread, until its gate is set."""

    concurrent_writes = True

    def __init__(self, gates: dict[int, threading.Event]) -> None:
        super().__init__()
        self.gates = gates

    def write(self, batch: Batch, *, sync: bool = True) -> None:
        last = dict(batch.ops()).get(schema.META_LAST_HEIGHT)
        gate = None if last is None else self.gates.get(schema.read_u64(last))
        if gate is not None and not gate.wait(HANG_GUARD_S):
            raise StorageError("never released")
        super().write(batch, sync=sync)


async def test_catching_up_two_heights_in_one_step_waits_for_the_disk(tmp_path: Path) -> None:
    """CONSENSUS.md §2.6's start row (Revision 1.17, T1): a node that commits heights 1 and
    2 from its peers' claims in one step (as a catch-up does: the engine's step yields both
    `Commit`s, carried out one after the other) starts height 3 only once block 1's batch
    is durable; block 2's may still be in flight (one batch in flight, never two). The
    batch of 1 is let go from another thread while the node waits, so a node that queued
    the second batch without waiting would start 3 with block 1 still held."""
    from consensus.events import Commit, StartHeight
    from devnet.network import plan_network, write_network
    from qchain.config import load_config

    write_network(tmp_path, plan_network(base_port=None, scheme="ed25519"))
    nodes = tmp_path / "nodes"
    builder = Validator(load_config(nodes / "node0" / "config.toml"), store=MemoryStore())
    commits = []
    for height in (1, 2):
        parent = builder.app.committed_value(height - 1)
        assert parent is not None
        p = builder.app.build(height, 0, parent, 0, [], now_ms=1_000 * height)
        builder.store.write(builder.app.commit_batch(p), sync=True)
        commits.append(Commit(height, p.cblock, 0))

    gates = {1: threading.Event(), 2: threading.Event()}
    store = HeldByHeight(gates)
    node = Validator(load_config(nodes / "node1" / "config.toml"), store=store)
    writer = node.committer.writer
    started: dict[int, tuple[int, int | None]] = {}

    def feed(ev: object) -> None:
        if isinstance(ev, StartHeight):
            started[ev.height] = (chain_height(store), writer.in_flight)

    node.committer.feed = feed
    release = threading.Timer(0.2, gates[1].set)  # while the node waits, if it does
    release.start()
    try:
        for c in commits:  # one step's actions
            node.committer.commit(c)
        assert started[2] == (0, 1)  # height 2 runs while block 1's batch is written
        assert started[3] == (1, 2)  # height 3 only with block 1 durable; 2 in flight
        gates[2].set()
        writer.wait()
        assert chain_height(store) == 2 and node.alarms.fatal is None
    finally:
        release.cancel()
        for gate in gates.values():
            gate.set()
        writer.close()
