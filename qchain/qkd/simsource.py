"""The in-process simulated key source, for unit tests and the consensus simulator.

`LocalKeySource` is a `KeySource` that calls a shared `KeyManager` directly: the same
link model as the HTTP key manager (rates, pool cap, one-shot delivery, faults), with no
sockets. Time comes from the manager's clock, so on a `VirtualClock` a whole run is
deterministic; `full_mesh` builds a manager whose ids and key material derive from a
seed (`SeededKeyFactory`), with the key counter leased in a store when one is given so a
restarted simulation never hands out a key twice.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

from qchain.qkd.clock import Clock
from qchain.qkd.keymanager import KeyManager, LinkConfig, SeededKeyFactory
from qchain.qkd.source import Key, KeyId, KeySource, LinkStatus
from qchain.store.kv import KVStore


class LocalKeySource(KeySource):
    """The key source of one SAE, served by an in-process `KeyManager`."""

    def __init__(self, manager: KeyManager, sae_id: str) -> None:
        self.manager = manager
        self.sae_id = sae_id
        self.calls = 0

    async def _latency(self, peer: str) -> None:
        self.calls += 1
        latency = self.manager.latency(self.sae_id, peer)
        if latency:
            await self.manager.clock.sleep(latency)

    async def enc_keys(self, slave_sae_id: str, number: int, size: int | None = None) -> list[Key]:
        await self._latency(slave_sae_id)
        return self.manager.enc_keys(self.sae_id, slave_sae_id, number, size)

    async def dec_keys(self, master_sae_id: str, key_ids: Sequence[KeyId]) -> list[Key]:
        await self._latency(master_sae_id)
        return self.manager.dec_keys(self.sae_id, master_sae_id, list(key_ids))

    async def status(self, slave_sae_id: str) -> LinkStatus:
        await self._latency(slave_sae_id)
        return self.manager.status(self.sae_id, slave_sae_id)


def full_mesh(
    saes: Iterable[str],
    clock: Clock,
    *,
    seed: bytes = b"qchain-devnet",
    store: KVStore | None = None,
    bits_per_second: int = 20_000_000,
    **link_options: int | float,
) -> KeyManager:
    """A seeded key manager with one link between every pair of SAEs.

    `link_options` are further `LinkConfig` fields (key_size, max_key_count, latency,
    initial_key_count, ...)."""
    links = [
        LinkConfig(saes=(a, b), bits_per_second=bits_per_second, **link_options)  # type: ignore[arg-type]
        for a, b in itertools.combinations(sorted(set(saes)), 2)
    ]
    return KeyManager(links, clock, factory=SeededKeyFactory(seed, store))
