"""Helpers for tests of code that uses the key layer (kept in the package so the node's
tests can use them too)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from qchain.qkd.clock import Clock, VirtualClock
from qchain.qkd.endpoint import QKDEndpoint
from qchain.qkd.keymanager import KeyManager
from qchain.qkd.pool import PoolConfig
from qchain.qkd.simsource import LocalKeySource, full_mesh


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll `predicate` until it holds; `TimeoutError` after `timeout` real seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached before the deadline")
        await asyncio.sleep(0.001)


def sim_endpoints(
    nodes: Iterable[str],
    *,
    chain_id: str = "test-chain",
    clock: Clock | None = None,
    manager: KeyManager | None = None,
    config: PoolConfig | None = None,
    seed: bytes = b"test",
) -> tuple[KeyManager, dict[str, QKDEndpoint]]:
    """A seeded in-process key manager and one started-later endpoint per node, all
    linked to each other. Default: a virtual clock that moves when someone sleeps, and
    10,000 keys stored per link."""
    names = sorted(set(nodes))
    clock = clock or VirtualClock(auto_advance=True)
    if manager is None:
        manager = full_mesh(names, clock, seed=seed, initial_key_count=10_000)
    endpoints = {
        n: QKDEndpoint(
            chain_id, n, names, LocalKeySource(manager, n), config=config, clock=manager.clock
        )
        for n in names
    }
    return manager, endpoints
