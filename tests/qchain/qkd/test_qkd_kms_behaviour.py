"""The simulated key manager's behaviour switches (what vendor KMEs do instead of the
standard's answers), set in the config file and at run time with `PUT /admin/behaviour`,
its drain and refill endpoint, integer SAE ids, and SAEs named by the common name or the
serial number of their certificate over mutual TLS. Every server here is the real one,
in-process, on a virtual clock."""

from __future__ import annotations

import ssl
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from qchain.cli import main as qchain_main
from qchain.errors import ConfigError
from qchain.qkd.certs import issue, make_ca, save
from qchain.qkd.clock import VirtualClock
from qchain.qkd.keymanager import LinkConfig
from qchain.qkd.kms_config import Behaviour, TLSFiles, parse_kms_config
from qchain.qkd.testing import KMSClient, kms_test_config, running_kms

LINK = LinkConfig(saes=("a", "b"), bits_per_second=0, max_key_count=100, initial_key_count=50)
DEFAULTS = {
    "exhausted_status": 503,
    "partial_batches": False,
    "max_key_per_request": 0,
    "delay_ms": 0,
    "delay_jitter_ms": 0,
    "sae_identity": "header",
}


class KMS(KMSClient):
    async def behave(self, **fields: object) -> None:
        status, body = await self.admin("PUT", "behaviour", fields)
        assert status == 200, body
        assert body == {**DEFAULTS, **fields}

    async def take(self, number: int) -> tuple[int, Any]:
        return await self.call("a", "POST", "b/enc_keys", {"number": number})


@pytest.fixture
async def kms() -> AsyncIterator[KMS]:
    clock = VirtualClock(auto_advance=True)
    async with (
        running_kms(kms_test_config([LINK]), clock) as server,
        aiohttp.ClientSession() as http,
    ):
        yield KMS(server, clock, http)


async def test_default_behaviour_is_the_standard(kms: KMS) -> None:
    assert await kms.admin("GET", "behaviour") == (200, DEFAULTS)
    for _ in range(5):
        assert (await kms.take(10))[0] == 200
    status, body = await kms.take(1)
    assert status == 503 and body["details"][0]["reason"] == "exhausted"
    assert (await kms.take(129))[0] == 400  # the link's own cap, 128


@pytest.mark.parametrize("code", [404, 409])
async def test_exhausted_status(kms: KMS, code: int) -> None:
    await kms.behave(exhausted_status=code)
    assert (await kms.take(50))[0] == 200
    status, body = await kms.take(1)
    assert status == code and "not enough keys" in body["message"]
    await kms.admin("POST", "links/a/b/outage", {"active": True})
    assert (await kms.take(1))[0] == 503  # an outage is still 503
    await kms.behave()
    await kms.admin("POST", "links/a/b/outage", {"active": False})
    assert (await kms.take(1))[0] == 503


async def test_partial_batches(kms: KMS) -> None:
    await kms.behave(partial_batches=True, max_key_per_request=10)
    status, body = await kms.take(25)  # more than the cap: the cap
    assert status == 200 and len(body["keys"]) == 10
    assert (await kms.admin("POST", "links/a/b/stored", {"stored_key_count": 3}))[0] == 200
    status, body = await kms.take(5)  # more than stored: what is stored
    assert status == 200 and len(body["keys"]) == 3
    assert (await kms.take(1))[0] == 503  # nothing stored: still an error


async def test_max_key_per_request(kms: KMS) -> None:
    await kms.behave(max_key_per_request=10)
    status, body = await kms.call("a", "GET", "b/status")
    assert status == 200 and body["max_key_per_request"] == 10
    status, body = await kms.take(11)
    assert status == 400 and body["details"] == [{"number": 11, "max_key_per_request": 10}]
    status, body = await kms.take(10)
    assert status == 200
    ids = [{"key_ID": k["key_ID"]} for k in body["keys"]]
    _, more = await kms.take(1)
    ids.append({"key_ID": more["keys"][0]["key_ID"]})
    assert (await kms.call("b", "POST", "a/dec_keys", {"key_IDs": ids}))[0] == 400
    assert (await kms.call("b", "POST", "a/dec_keys", {"key_IDs": ids[:10]}))[0] == 200
    await kms.behave(max_key_per_request=500)  # above the link's own cap: the link's
    assert (await kms.call("a", "GET", "b/status"))[1]["max_key_per_request"] == 128


async def test_delay_with_jitter(kms: KMS) -> None:
    await kms.behave(delay_ms=50, delay_jitter_ms=20)
    for _ in range(10):
        before = kms.clock.now()
        assert (await kms.call("a", "GET", "b/status"))[0] == 200
        assert 0.050 <= kms.clock.now() - before <= 0.070
    before = kms.clock.now()
    assert (await kms.call("zed", "GET", "b/status"))[0] == 401  # errors are slow too
    assert kms.clock.now() - before >= 0.050
    await kms.behave()
    before = kms.clock.now()
    await kms.call("a", "GET", "b/status")
    assert kms.clock.now() == before


async def test_admin_behaviour_is_validated_and_protected(kms: KMS) -> None:
    for bad in (
        {"exhausted_status": 500},
        {"delay_ms": -1},
        {"partial_batches": "yes"},
        {"colour": "red"},
        {"sae_identity": "cn"},  # no TLS on this server
        {"sae_identity": "fingerprint"},
    ):
        status, body = await kms.admin("PUT", "behaviour", bad)
        assert status == 400 and body["message"].startswith("behaviour."), bad
    assert (await kms.admin("GET", "behaviour"))[1] == DEFAULTS
    async with kms.http.put(
        f"{kms.server.admin_url}/admin/behaviour", json={"exhausted_status": 404}
    ) as resp:
        assert resp.status == 401
    assert (await kms.admin("GET", "behaviour"))[1] == DEFAULTS


async def test_drain_and_refill(kms: KMS) -> None:
    status, body = await kms.admin("POST", "links/a/b/stored", {"stored_key_count": 0})
    assert status == 200 and body["stored_key_count"] == 0
    assert body["counters"]["flushed_bits"] == 50 * 256
    assert (await kms.take(1))[0] == 503
    status, body = await kms.admin("POST", "links/a/b/stored", {"stored_key_count": 7})
    assert status == 200 and body["stored_key_count"] == 7
    assert (await kms.take(7))[0] == 200
    assert (await kms.take(1))[0] == 503
    assert (await kms.admin("POST", "links/a/b/stored", {"stored_key_count": 101}))[0] == 400
    assert (await kms.admin("POST", "links/a/b/stored", {"stored_key_count": "7"}))[0] == 400
    assert (await kms.admin("POST", "links/a/zed/stored", {"stored_key_count": 1}))[0] == 404


CONFIG = """
insecure_dev_mode = true
full_mesh = true

[admin]
token = "a-test-token-of-sixteen"

[defaults]
initial_key_count = 20
bits_per_second = 0

[behaviour]
exhausted_status = 409
partial_batches = true
max_key_per_request = 10
delay_ms = 5
delay_jitter_ms = 1

[[sae]]
id = 1001

[[sae]]
id = "1002"
"""


def test_config_behaviour_and_integer_sae_ids() -> None:
    cfg = parse_kms_config(tomllib.loads(CONFIG))
    assert set(cfg.kme_ids) == {"1001", "1002"}
    assert cfg.resolved_behaviour == Behaviour(
        exhausted_status=409,
        partial_batches=True,
        max_key_per_request=10,
        delay_ms=5,
        delay_jitter_ms=1,
        sae_identity="header",
    )
    without = tomllib.loads(CONFIG)
    del without["behaviour"]
    assert parse_kms_config(without).resolved_behaviour.exhausted_status == 503
    for table, field in (
        ({"exhausted_status": 418}, "behaviour.exhausted_status"),
        ({"sae_identity": "serial"}, "behaviour.sae_identity"),
        ({"delay": 3}, "behaviour.delay"),
        ({"max_key_per_request": 1.5}, "behaviour.max_key_per_request"),
    ):
        doc = tomllib.loads(CONFIG)
        doc["behaviour"] = table
        with pytest.raises(ConfigError) as exc:
            parse_kms_config(doc)
        assert exc.value.field == field


async def test_integer_sae_ids_served() -> None:
    cfg = parse_kms_config(tomllib.loads(CONFIG))
    async with (
        running_kms(cfg, VirtualClock(auto_advance=True)) as server,
        aiohttp.ClientSession() as http,
    ):
        kms = KMS(server, VirtualClock(), http)
        status, body = await kms.call("1001", "GET", "1002/status")
        assert status == 200
        assert (body["master_SAE_ID"], body["slave_SAE_ID"]) == ("1001", "1002")
        assert body["max_key_per_request"] == 10
        _, body = await kms.call("1001", "POST", "1002/enc_keys", {"number": 3})
        key_id = body["keys"][0]["key_ID"]
        status, _ = await kms.call("1002", "GET", "1001/dec_keys", params={"key_ID": key_id})
        assert status == 200
        status, body = await kms.call("1001", "POST", "1002/enc_keys", {"number": 30})
        assert status == 200 and len(body["keys"]) == 10  # partial: the cap
        status, body = await kms.call("1001", "POST", "1002/enc_keys", {"number": 30})
        assert status == 200 and len(body["keys"]) == 7  # partial: what is left
        assert (await kms.call("1001", "POST", "1002/enc_keys", {"number": 1}))[0] == 409


# --- mutual TLS: the SAE named by the certificate's common name or serial number --------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, the KME's certificate, and SAE certificates whose common names differ from
    their serial numbers: "alice" has serial 1001, "bob" 1002; "mallory" has serial 1003,
    which no SAE has."""
    out = tmp_path_factory.mktemp("pki")
    ca = make_ca()
    save(ca, out / "ca.pem", out / "ca.key")
    save(issue(ca, "kms", server_hosts=["127.0.0.1"]), out / "kms.pem", out / "kms.key")
    for name, serial in (("alice", 1001), ("bob", 1002), ("mallory", 1003)):
        save(issue(ca, name, serial=serial), out / f"{name}.pem", out / f"{name}.key")
    save(issue(ca, "1001"), out / "cn-1001.pem", out / "cn-1001.key")
    return out


def client_ctx(pki: Path, name: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.load_cert_chain(str(pki / f"{name}.pem"), str(pki / f"{name}.key"))
    return ctx


async def status_as(http: aiohttp.ClientSession, url: str, ctx: ssl.SSLContext) -> int:
    async with http.get(f"{url}/api/v1/keys/1002/status", ssl=ctx) as resp:
        await resp.read()
        return resp.status


async def test_mtls_sae_by_serial_then_common_name(pki: Path) -> None:
    files = TLSFiles(pki / "ca.pem", pki / "kms.pem", pki / "kms.key")
    link = LinkConfig(saes=("1001", "1002"), bits_per_second=0, initial_key_count=10)
    cfg = kms_test_config([link], tls=files, behaviour=Behaviour(sae_identity="serial"))
    async with running_kms(cfg, VirtualClock()) as server, aiohttp.ClientSession() as http:
        kms = KMS(server, VirtualClock(), http)
        assert server.switches.behaviour.sae_identity == "serial"
        assert await status_as(http, server.url, client_ctx(pki, "alice")) == 200
        assert await status_as(http, server.url, client_ctx(pki, "mallory")) == 401
        assert await status_as(http, server.url, client_ctx(pki, "cn-1001")) == 401
        async with http.post(
            f"{server.url}/api/v1/keys/1002/enc_keys",
            json={"number": 2},
            ssl=client_ctx(pki, "alice"),
        ) as resp:
            keys = (await resp.json())["keys"]
        async with http.get(
            f"{server.url}/api/v1/keys/1001/dec_keys",
            params={"key_ID": keys[0]["key_ID"]},
            ssl=client_ctx(pki, "bob"),
        ) as resp:
            assert resp.status == 200 and (await resp.json())["keys"] == keys[:1]
        status, body = await kms.admin("PUT", "behaviour", {"sae_identity": "cn"})
        assert status == 200 and body["sae_identity"] == "cn"
        assert await status_as(http, server.url, client_ctx(pki, "alice")) == 401
        assert await status_as(http, server.url, client_ctx(pki, "cn-1001")) == 200
        assert (await kms.admin("PUT", "behaviour", {"sae_identity": "header"}))[0] == 400
        assert (await kms.admin("PUT", "behaviour", {}))[1]["sae_identity"] == "cn"


def test_certs_with_serial_from_id(tmp_path: Path) -> None:
    out = tmp_path / "tls"
    argv = ["kms", "certs", "--out", str(out), "--sae", "1001", "--sae", "42"]
    assert qchain_main([*argv, "--serial-from-id"]) == 0
    for sae in ("1001", "42"):
        cert = x509.load_pem_x509_certificate((out / f"sae-{sae}.pem").read_bytes())
        assert cert.serial_number == int(sae)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == sae
    assert qchain_main([*argv, "--sae", "node0", "--serial-from-id"]) == 1
