"""Key pools and the in-process simulated source: prefetch, starvation, failure, wiping,
determinism and crash-safe key counters."""

from __future__ import annotations

import asyncio

import pytest

from qchain.qkd.clock import VirtualClock
from qchain.qkd.endpoint import QKDEndpoint
from qchain.qkd.errors import KeyBadRequest, KeyExhausted, KeyUnauthorised, LinkClosed
from qchain.qkd.frame import decode_frame
from qchain.qkd.keymanager import KeyManager, LinkConfig, SeededKeyFactory
from qchain.qkd.lease import Lease
from qchain.qkd.pool import PoolConfig, ReceiveKeyPool, SendKeyPool
from qchain.qkd.simsource import LocalKeySource, full_mesh
from qchain.qkd.testing import sim_endpoints, wait_until
from qchain.store.memory import MemoryStore


async def test_steady_state_never_waits() -> None:
    _, eps = sim_endpoints(["a", "b"], config=PoolConfig(batch_size=32, low_water=16))
    for ep in eps.values():
        ep.start()
    try:
        for i in range(2000):
            frame = await eps["a"].sender("b").seal(i.to_bytes(4, "big"))
            await asyncio.sleep(0)
            assert (await eps["b"].receiver.open(frame)).body == i.to_bytes(4, "big")
            await asyncio.sleep(0)
        send = eps["a"].send_pools["b"].counters
        recv = eps["b"].receive_pools["a"].counters
        # one wait each, for the very first key (warm-up), none after
        assert send.waits <= 1 and recv.waits == 1
        assert send.keys_consumed == recv.keys_consumed == 2000
        assert send.kms_calls == 1 + 2000 // 32 + 1  # status, then one call per batch
        assert recv.kms_calls == 2000 // 32 + 1
    finally:
        for ep in eps.values():
            await ep.close()


async def test_starvation_waits_until_keys_come() -> None:
    clock = VirtualClock()
    manager = KeyManager([LinkConfig(saes=("a", "b"), bits_per_second=0)], clock)
    pool = SendKeyPool(
        LocalKeySource(manager, "a"), "b", PoolConfig(batch_size=4, low_water=2), clock
    )
    taker = asyncio.create_task(pool.take())
    await wait_until(lambda: pool.counters.kms_errors >= 1)
    assert not taker.done() and pool.counters.waits == 1
    manager.set_rate("a", "b", 256 * 100)
    clock.advance(1.0)
    key, announce = await asyncio.wait_for(taker, 10)
    assert len(announce) == 4 and announce[0] == key.key_id
    key.wipe()
    await pool.close()
    assert pool.counters.keys_discarded == 3


async def test_unauthorised_link_is_a_config_error_not_a_dead_link() -> None:
    clock = VirtualClock()
    manager_other = full_mesh(["c", "d"], clock)
    pool = SendKeyPool(LocalKeySource(manager_other, "zed"), "c", clock=clock)
    taker = asyncio.create_task(pool.take())
    await wait_until(lambda: pool.health.state == "config-error")
    assert pool.health.error_class == "config" and pool.health.retry_in == 30.0
    assert not taker.done()
    await pool.close()
    with pytest.raises(LinkClosed):
        await taker
    manager = full_mesh(["a", "b"], clock)
    pool2 = SendKeyPool(LocalKeySource(manager, "a"), "b", clock=clock)
    await pool2.close()
    with pytest.raises(LinkClosed):
        await pool2.take()


async def test_receive_pool_hands_key_once_and_wipes_on_close() -> None:
    clock = VirtualClock(auto_advance=True)
    manager = full_mesh(["a", "b"], clock, initial_key_count=100)
    keys = await LocalKeySource(manager, "a").enc_keys("b", 10)
    rpool = ReceiveKeyPool(LocalKeySource(manager, "b"), "a", clock=clock)
    rpool.announce([k.key_id for k in keys])
    got = await rpool.take(keys[0].key_id)
    assert got is not None and got.material == keys[0].material
    assert await rpool.take(keys[0].key_id) is None
    await wait_until(lambda: rpool.level == 9)
    held = [rpool._keys[k.key_id] for k in keys[1:]]
    await rpool.close()
    assert all(k.wiped for k in held) and rpool.counters.keys_discarded == 9


async def test_outage_retries_then_recovers() -> None:
    clock = VirtualClock()
    manager = full_mesh(["a", "b"], clock, initial_key_count=100)
    manager.set_outage("a", "b", True)
    pool = SendKeyPool(
        LocalKeySource(manager, "a"), "b", PoolConfig(batch_size=8, low_water=4), clock
    )
    taker = asyncio.create_task(pool.take())
    await wait_until(lambda: pool.counters.kms_errors >= 1)
    clock.advance(10)
    await wait_until(lambda: pool.counters.kms_errors >= 2)
    assert not taker.done()
    manager.set_outage("a", "b", False)
    clock.advance(10)
    key, _ = await asyncio.wait_for(taker, 10)
    key.wipe()
    await pool.close()


def test_key_manager_model() -> None:
    clock = VirtualClock()
    cfg = LinkConfig(saes=("a", "b"), bits_per_second=25_600, max_key_count=50)
    manager = KeyManager([cfg], clock)
    assert manager.status("a", "b").stored_key_count == 0
    clock.advance(1.0)
    assert manager.status("a", "b").stored_key_count == 50  # capped
    keys = manager.enc_keys("a", "b", 10, None)
    assert manager.status("a", "b").stored_key_count == 40
    with pytest.raises(KeyExhausted):
        manager.enc_keys("a", "b", 41, None)
    got = manager.dec_keys("b", "a", [k.key_id for k in keys])
    assert [g.material for g in got] == [k.material for k in keys]
    with pytest.raises(KeyBadRequest):  # delivered once, then forgotten
        manager.dec_keys("b", "a", [keys[0].key_id])
    with pytest.raises(KeyUnauthorised):
        manager.enc_keys("mallory", "b", 1, None)
    manager.set_eavesdropper("a", "b", True)
    assert manager.status("a", "b").stored_key_count == 0
    clock.advance(5)
    assert manager.status("a", "b").stored_key_count == 0
    manager.set_eavesdropper("a", "b", False)
    clock.advance(0.25)
    assert manager.status("a", "b").stored_key_count == 25


def test_seeded_source_is_deterministic() -> None:
    def run() -> list[bytes]:
        manager = full_mesh(["a", "b"], VirtualClock(), seed=b"s", initial_key_count=10)
        return [k.key_id + bytes(k.material) for k in manager.enc_keys("a", "b", 5, None)]

    assert run() == run()
    other = full_mesh(["a", "b"], VirtualClock(), seed=b"t", initial_key_count=10)
    assert other.enc_keys("a", "b", 1, None)[0].key_id not in {x[:16] for x in run()}


def test_seeded_counter_is_leased_before_use() -> None:
    store = MemoryStore()
    first = SeededKeyFactory(b"seed", store, lease_block=10)
    ids = {first.new_key("a~b", 32)[0] for _ in range(3)}
    # a crash now: the restarted factory with the same seed and store skips the lease
    again = SeededKeyFactory(b"seed", store, lease_block=10)
    assert not ids & {again.new_key("a~b", 32)[0] for _ in range(30)}
    lease = Lease(store, "sim/a~b", 10)
    assert lease.next() >= 40


async def test_sequence_numbers_survive_a_restart() -> None:
    clock = VirtualClock(auto_advance=True)
    manager = full_mesh(["a", "b"], clock, initial_key_count=100)
    store = MemoryStore()
    seqs = []
    for _ in range(2):  # run, "crash", run again on the same store
        ep = QKDEndpoint("c", "a", ["b"], LocalKeySource(manager, "a"), clock=clock, store=store)
        ep.start()
        for _ in range(3):
            seqs.append(decode_frame(await ep.sender("b").seal(b"x"))[0].seq)
        await ep.close()
    assert seqs[:3] == [1, 2, 3] and seqs[3] > 3 and seqs == sorted(seqs)


async def test_delivery_latency_on_the_virtual_clock() -> None:
    clock = VirtualClock()
    link = LinkConfig(saes=("a", "b"), bits_per_second=0, latency=0.25, initial_key_count=5)
    source = LocalKeySource(KeyManager([link], clock), "a")
    call = asyncio.create_task(source.enc_keys("b", 1))
    await wait_until(lambda: source.calls == 1)
    clock.advance(0.2)
    await asyncio.sleep(0)
    assert not call.done()
    clock.advance(0.05)
    assert len(await asyncio.wait_for(call, 10)) == 1


async def test_restarted_receiver_reads_frames_after_resync() -> None:
    """A receiver that restarts loses the keys it fetched; the key manager will not hand
    them out again. After the reconnection the sender drops what it announced and goes on
    with keys the new receiver can resolve."""
    manager, eps = sim_endpoints(["a", "b"], config=PoolConfig(batch_size=16, low_water=8))
    for ep in eps.values():
        ep.start()
    sender = eps["a"].sender("b")
    try:
        for i in range(5):
            frame = await sender.seal(bytes([i]))
            assert (await eps["b"].receiver.open(frame)).body == bytes([i])
        await eps["b"].close()
        reborn = QKDEndpoint(
            "test-chain", "b", ["a", "b"], LocalKeySource(manager, "b"), clock=manager.clock
        )
        eps["b"] = reborn
        held = eps["a"].send_pools["b"].level
        sender.resync()
        assert eps["a"].send_pools["b"].counters.keys_discarded == held
        for i in range(40):
            frame = await sender.seal(bytes([i]))
            assert (await reborn.receiver.open(frame)).body == bytes([i])
    finally:
        for ep in eps.values():
            await ep.close()


async def test_lost_announcement_is_recovered_key_by_key() -> None:
    """The frame that announced a batch never arrives (dropped or corrupted): the
    receiver looks each later key up by its id instead of rejecting the link forever."""
    _, eps = sim_endpoints(["a", "b"], config=PoolConfig(batch_size=16, low_water=4))
    for ep in eps.values():
        ep.start()
    sender = eps["a"].sender("b")
    try:
        lost = await sender.seal(b"lost")
        assert decode_frame(lost)[0].announce, "the first frame announces the batch"
        for i in range(10):
            frame = await sender.seal(bytes([i]))
            assert (await eps["b"].receiver.open(frame)).body == bytes([i])
        assert eps["b"].receive_pools["a"].counters.recovered >= 10
    finally:
        for ep in eps.values():
            await ep.close()


async def test_recovery_lookups_are_rate_limited() -> None:
    """A forger naming fresh ids cannot make the receiver call the key manager without
    bound."""
    clock = VirtualClock()
    manager = full_mesh(["a", "b"], clock, initial_key_count=100)
    pool = ReceiveKeyPool(LocalKeySource(manager, "b"), "a", clock=clock)
    started = sum(pool.recover(bytes([i]) * 16) for i in range(200))
    assert started == 64
    clock.advance(1.0)
    assert sum(pool.recover(bytes([i]) * 16) for i in range(100, 200)) == 50
    await pool.close()
