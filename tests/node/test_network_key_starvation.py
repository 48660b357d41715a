"""Keys run out on every link of a four-validator network and come back: the chain
stands still while the key manager is empty and resumes on its own, with no node
restarted, within seconds of the refill.

The validators talk ETSI GS QKD 014 over HTTP (`ETSIClient`) to a KME front written
here, which serves an in-process `KeyManager` the way a third-party KME did in the
field: it allows 10 keys per request and answers an empty pool with 404, not 503. The
pool is emptied and refilled with the manager's eavesdropper switch (flush and halt
generation; clear to resume)."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from devnet.network import plan_network, write_network
from node.runtime import Validator
from qchain.config import load_config
from qchain.qkd.client import ETSIClient
from qchain.qkd.clock import SystemClock
from qchain.qkd.errors import KeyBadRequest, KeyUnauthorised, KeyUnavailable
from qchain.qkd.keymanager import KeyManager
from qchain.qkd.kms import SAE_HEADER
from qchain.qkd.simsource import full_mesh
from qchain.qkd.source import Key, key_id_str
from qchain.qkd.testing import wait_until

STARVED_FOR = 10.0
RESUME_WITHIN = 5.0


def kme_front(manager: KeyManager) -> web.Application:
    """ETSI 014 over HTTP for `manager`, answering "no keys" with 404."""

    def keys_doc(keys: list[Key]) -> dict[str, object]:
        return {
            "keys": [
                {"key_ID": key_id_str(k.key_id), "key": base64.b64encode(k.material).decode()}
                for k in keys
            ]
        }

    async def handle(request: web.Request) -> web.Response:
        caller = request.headers.get(SAE_HEADER, "")
        other, op = request.match_info["sae"], request.match_info["op"]
        body = await request.json() if request.can_read_body else {}
        try:
            if op == "status":
                return web.json_response(manager.status(caller, other).to_json())
            if op == "enc_keys":
                number = int(body.get("number", request.query.get("number", 1)))
                size = body.get("size")
                return web.json_response(keys_doc(manager.enc_keys(caller, other, number, size)))
            texts = (
                [d["key_ID"] for d in body["key_IDs"]] if body else request.query.getall("key_ID")
            )
            ids = [uuid.UUID(t).bytes for t in texts]
            return web.json_response(keys_doc(manager.dec_keys(caller, other, ids)))
        except KeyUnauthorised as e:
            return web.json_response({"message": e.message}, status=401)
        except KeyBadRequest as e:
            return web.json_response({"message": e.message}, status=400)
        except KeyUnavailable as e:
            return web.json_response({"message": e.message}, status=404)

    app = web.Application()
    app.router.add_route("*", "/api/v1/keys/{sae}/{op}", handle)
    return app


@pytest.fixture
async def starvable(tmp_path: Path) -> AsyncIterator[tuple[KeyManager, list[Validator]]]:
    plan = plan_network(base_port=None, scheme="ed25519", heartbeat_ms=200, validators=4)
    write_network(tmp_path, plan)
    manager = full_mesh(
        [n.sae_id for n in plan.nodes],
        SystemClock(),
        initial_key_count=10_000,
        max_key_per_request=10,
    )
    runner = web.AppRunner(kme_front(manager))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    clients = [
        ETSIClient(url, n.sae_id, insecure_sae_header=True, retries=0, timeout=2.0)
        for n in plan.nodes
    ]
    nodes = [
        Validator(load_config(tmp_path / "nodes" / n.name / "config.toml"), key_source=c)
        for n, c in zip(plan.nodes, clients, strict=True)
    ]
    try:
        for v in nodes:
            await v.start()
        yield manager, nodes
    finally:
        for v in nodes:
            await v.stop()
        for c in clients:
            await c.close()
        await runner.cleanup()


def set_starved(manager: KeyManager, starved: bool) -> None:
    for name in manager.link_names():
        a, b = name.split("~")
        manager.set_eavesdropper(a, b, starved)


async def test_chain_resumes_after_keys_run_out_on_every_link(
    starvable: tuple[KeyManager, list[Validator]],
) -> None:
    manager, nodes = starvable
    await wait_until(lambda: all(v.chain.height() >= 3 for v in nodes), timeout=30)
    for v in nodes:
        assert v.endpoint is not None
        assert all(p.batch_size == 10 for p in v.endpoint.send_pools.values())

    starved_at = time.monotonic()
    set_starved(manager, True)
    heights = [v.chain.height() for v in nodes]
    still_since = time.monotonic()

    def stalled() -> bool:
        nonlocal heights, still_since
        now = [v.chain.height() for v in nodes]
        if now != heights:
            heights, still_since = now, time.monotonic()
        return time.monotonic() - still_since >= 2.0

    await wait_until(stalled, timeout=STARVED_FOR)
    stalled_height = max(heights)
    degraded = [
        p.health
        for v in nodes
        if v.endpoint is not None
        for p in v.endpoint.send_pools.values()
        if p.health.state == "degraded"
    ]
    assert degraded, "some link reports why it has no keys"
    assert all(h.http_status == 404 and h.error_class == "transient" for h in degraded)

    await wait_until(lambda: time.monotonic() - starved_at >= STARVED_FOR, timeout=STARVED_FOR)
    assert max(v.chain.height() for v in nodes) == stalled_height, "no keys, no blocks"

    set_starved(manager, False)
    refilled_at = time.monotonic()
    first: list[float] = []

    def all_committed() -> bool:
        done = [v.chain.height() > stalled_height for v in nodes]
        if any(done) and not first:
            first.append(time.monotonic() - refilled_at)
        return all(done)

    await wait_until(all_committed, timeout=RESUME_WITHIN)
    resumed = time.monotonic() - refilled_at
    wait_ms = sum(
        int(p.counters.wait_ms)
        for v in nodes
        if v.endpoint is not None
        for p in v.endpoint.send_pools.values()
    )
    print(
        f"\nstalled {still_since - starved_at:.1f}s after the KME emptied (height "
        f"{stalled_height}); refill -> first commit {first[0]:.2f}s, all 4 nodes "
        f"{resumed:.2f}s; frames waited {wait_ms / 1000:.1f}s in total"
    )
    assert resumed <= RESUME_WITHIN
    await wait_until(lambda: all(v.chain.height() >= stalled_height + 3 for v in nodes), 20)
