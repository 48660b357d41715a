"""One KME per site: the relay model and two simulated KMEs relaying keys over loopback.

The KMEs run on a virtual clock, so "the relay has not arrived yet" is a state the test
holds on purpose, not a race it hopes to win: `dec_keys` at B before the relay delay has
passed is answered 400 (unknown key_ID, as a real KME answers), after it the keys match
the master's, and each key reaches the slave once."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from devnet.network import free_ports
from qchain.errors import ConfigError
from qchain.qkd.clock import VirtualClock
from qchain.qkd.errors import KeyBadRequest, KeyUnauthorised
from qchain.qkd.keymanager import LinkConfig
from qchain.qkd.kms import SAE_HEADER, KMSServer
from qchain.qkd.kms_config import parse_kms_config
from qchain.qkd.relay import MAC_HEADER, RELAY_PATH, RelayKeyManager
from qchain.qkd.source import Key

SECRET = "relay-secret-for-tests"
DELAY_MS = 400
LINK = LinkConfig(saes=("A", "B"), bits_per_second=0, initial_key_count=100)


def test_model_hands_each_key_to_the_slave_once() -> None:
    clock = VirtualClock()
    shipped: list[tuple[str, str, list[Key]]] = []
    a = RelayKeyManager(
        [LINK], clock, local_sae="A", ship=lambda m, s, k: shipped.append((m, s, k))
    )
    b = RelayKeyManager([LINK], clock, local_sae="B", ship=lambda m, s, k: None)
    keys = a.enc_keys("A", "B", 3, None)
    ids = [k.key_id for k in keys]
    with pytest.raises(KeyBadRequest, match="not relayed here yet"):
        b.dec_keys("B", "A", ids)
    [(master, slave, copies)] = shipped
    assert (master, slave) == ("A", "B")
    relayed = [(k.key_id, bytes(k.material)) for k in copies]
    assert b.accept("A", "B", relayed) == 3
    got = b.dec_keys("B", "A", ids)
    assert [bytes(k.material) for k in got] == [bytes(k.material) for k in keys]
    assert b.accept("A", "B", relayed) == 0  # the same shipment again delivers nothing
    with pytest.raises(KeyBadRequest):
        b.dec_keys("B", "A", ids[:1])
    with pytest.raises(KeyUnauthorised, match="serves SAE 'A' only"):
        a.enc_keys("B", "A", 1, None)
    with pytest.raises(KeyUnauthorised):
        b.dec_keys("A", "B", ids[:1])
    assert a.link_report("A", "B")["awaiting_slave"] == 0  # nothing left behind at A
    with pytest.raises(KeyBadRequest, match="no link"):
        b.accept("Z", "B", relayed)
    with pytest.raises(KeyBadRequest):
        b.dec_keys("B", "Z", ids[:1])


def kme_doc(local: str, relay_ports: dict[str, int], delay_ms: int = DELAY_MS) -> dict[str, Any]:
    return {
        "insecure_dev_mode": True,
        "full_mesh": True,
        "server": {"port": 0},
        "admin": {"port": 0, "token": "admin-token-for-tests"},
        "defaults": {"profile": "lab", "initial_key_count": 100},
        "sae": [{"id": "A"}, {"id": "B"}],
        "relay": {
            "local_sae": local,
            "port": relay_ports[local],
            "secret": SECRET,
            "delay_ms": delay_ms,
            "peers": {s: f"http://127.0.0.1:{p}" for s, p in relay_ports.items() if s != local},
        },
    }


@dataclass
class Sites:
    a: KMSServer
    b: KMSServer
    clock: VirtualClock
    http: aiohttp.ClientSession

    async def call(
        self, kme: KMSServer, sae: str, method: str, path: str, **kw: Any
    ) -> tuple[int, Any]:
        headers = {SAE_HEADER: sae}
        async with self.http.request(method, f"{kme.url}{path}", headers=headers, **kw) as r:
            return r.status, await r.json()


@pytest.fixture(params=[DELAY_MS])
async def sites(request: pytest.FixtureRequest) -> AsyncIterator[Sites]:
    pa, pb = free_ports(2)
    ports = {"A": pa, "B": pb}
    clock = VirtualClock()
    a = KMSServer(parse_kms_config(kme_doc("A", ports, request.param)), clock=clock)
    b = KMSServer(parse_kms_config(kme_doc("B", ports, request.param)), clock=clock)
    await a.start()
    await b.start()
    async with aiohttp.ClientSession() as http:
        yield Sites(a, b, clock, http)
    await a.stop()
    await b.stop()


async def test_dec_before_the_relay_is_not_yet_then_once(sites: Sites) -> None:
    status, doc = await sites.call(sites.a, "A", "GET", "/api/v1/keys/B/enc_keys?number=2")
    assert status == 200
    keys = {k["key_ID"]: k["key"] for k in doc["keys"]}
    body = {"key_IDs": [{"key_ID": k} for k in keys]}
    # B asks its own KME before the relay delay has passed: the key is unknown there yet.
    status, err = await sites.call(sites.b, "B", "POST", "/api/v1/keys/A/dec_keys", json=body)
    assert status == 400 and "unknown key_ID" in err["message"]
    sites.clock.advance(DELAY_MS / 1000)
    deadline = time.monotonic() + 10
    while True:
        status, doc = await sites.call(sites.b, "B", "POST", "/api/v1/keys/A/dec_keys", json=body)
        if status == 200:
            break
        assert status == 400 and time.monotonic() < deadline, doc
        await asyncio.sleep(0.02)
    assert {k["key_ID"]: k["key"] for k in doc["keys"]} == keys
    status, _ = await sites.call(sites.b, "B", "POST", "/api/v1/keys/A/dec_keys", json=body)
    assert status == 400  # delivered once only
    # Each KME serves its own SAE only.
    status, _ = await sites.call(sites.b, "A", "GET", "/api/v1/keys/B/enc_keys")
    assert status == 401


@pytest.mark.parametrize("sites", [0], indirect=True)
async def test_without_delay_the_master_is_answered_once_the_slave_kme_has_the_keys(
    sites: Sites,
) -> None:
    status, doc = await sites.call(sites.a, "A", "GET", "/api/v1/keys/B/enc_keys?number=3")
    assert status == 200
    body = {"key_IDs": [{"key_ID": k["key_ID"]} for k in doc["keys"]]}
    status, got = await sites.call(sites.b, "B", "POST", "/api/v1/keys/A/dec_keys", json=body)
    assert status == 200
    assert [k["key"] for k in got["keys"]] == [k["key"] for k in doc["keys"]]


async def test_without_delay_an_unreachable_slave_kme_is_503_for_the_master() -> None:
    pa, nobody = free_ports(2)
    a = KMSServer(parse_kms_config(kme_doc("A", {"A": pa, "B": nobody}, 0)), clock=VirtualClock())
    await a.start()
    try:
        async with aiohttp.ClientSession() as http:
            url = f"{a.url}/api/v1/keys/B/enc_keys"
            async with http.get(url, headers={SAE_HEADER: "A"}) as r:
                assert r.status == 503
                assert (await r.json())["details"] == [{"reason": "relay"}]
    finally:
        await a.stop()


async def test_relay_refuses_a_wrong_mac(sites: Sites) -> None:
    assert sites.b.relay is not None
    url = f"http://127.0.0.1:{sites.b.relay.port}{RELAY_PATH}"
    key = base64.b64encode(bytes(32)).decode()
    body = (
        '{"master_SAE_ID": "A", "slave_SAE_ID": "B", "keys": [{"key_ID": '
        f'"00000000-0000-4000-8000-000000000000", "key": "{key}"}}]}}'
    )
    async with sites.http.post(url, data=body, headers={MAC_HEADER: "00" * 32}) as r:
        assert r.status == 401
    assert sites.b.relay.manager is not None and sites.b.relay.manager.awaiting() == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"local_sae": "C"}, "relay.local_sae"),
        ({"secret": "short"}, "relay.secret"),
        ({"peers": {}}, "relay.peers.B"),
        ({"colour": 1}, "relay.colour"),
    ],
)
def test_relay_config_errors_name_the_field(change: dict[str, Any], field: str) -> None:
    doc = kme_doc("A", {"A": 1, "B": 2})
    doc["relay"].update(change)
    with pytest.raises(ConfigError) as e:
        parse_kms_config(doc)
    assert e.value.field == field
