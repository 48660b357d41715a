"""Helpers for tests of code that uses the key layer (kept in the package so the node's
tests can use them too)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp

from qchain.qkd.clock import Clock, VirtualClock
from qchain.qkd.endpoint import QKDEndpoint
from qchain.qkd.keymanager import KeyManager, LinkConfig
from qchain.qkd.kms import KMSServer
from qchain.qkd.kms_config import Behaviour, KMSConfig, TLSFiles
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


def kms_test_config(
    links: Iterable[LinkConfig],
    *,
    tls: TLSFiles | None = None,
    behaviour: Behaviour | None = None,
) -> KMSConfig:
    """A key-manager config on free loopback ports; insecure dev mode unless `tls`;
    the standard's answers unless `behaviour`."""
    links = tuple(links)
    saes = sorted({s for lk in links for s in lk.saes})
    return KMSConfig(
        links=links,
        kme_ids={s: f"KME-{s}" for s in saes},
        host="127.0.0.1",
        port=0,
        admin_port=0,
        admin_token=ADMIN_TOKEN,
        tls=tls,
        insecure_dev_mode=tls is None,
        behaviour=behaviour,
    )


ADMIN_TOKEN = "test-admin-token-0123456789"


@contextlib.asynccontextmanager
async def running_kms(config: KMSConfig, clock: Clock | None = None) -> AsyncIterator[KMSServer]:
    """A started key manager, stopped on exit."""
    server = KMSServer(config, clock=clock)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@dataclass
class KMSClient:
    """Raw HTTP to a running key manager for its tests: the ETSI API as one SAE (by the dev
    header) and the admin API with a bearer token."""

    server: KMSServer
    clock: VirtualClock
    http: aiohttp.ClientSession

    async def call(
        self,
        sae: str | None,
        method: str,
        path: str,
        json: Any = None,
        *,
        params: Any = None,
        data: Any = None,
    ) -> tuple[int, Any]:
        """`method /api/v1/keys/{path}` as `sae`; (status, decoded JSON answer). Every
        answer of the ETSI API must be JSON."""
        headers = {"X-SAE-ID": sae} if sae else {}
        async with self.http.request(
            method,
            f"{self.server.url}/api/v1/keys/{path}",
            params=params,
            json=json,
            data=data,
            headers=headers,
        ) as resp:
            if resp.content_type != "application/json":
                raise AssertionError(f"{method} {path}: answer of type {resp.content_type}")
            return resp.status, await resp.json()

    async def admin(
        self, method: str, path: str, json: Any = None, token: str = ADMIN_TOKEN
    ) -> tuple[int, Any]:
        async with self.http.request(
            method,
            f"{self.server.admin_url}/admin/{path}",
            json=json,
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            return resp.status, await resp.json()
