"""The ETSI GS QKD 014 client against the simulated key manager: over mutual TLS with
certificates made by `qchain kms certs`, by GET and POST, with typed errors and retries;
and the key manager's refusal of unknown certificates."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from qchain.cli import main as qchain_main
from qchain.qkd.certs import Issued, issue, make_ca, save
from qchain.qkd.client import ETSIClient, TLSConfig
from qchain.qkd.clock import VirtualClock
from qchain.qkd.errors import (
    KeyBadRequest,
    KeyConfigError,
    KeySourceError,
    KeyUnauthorised,
    KeyUnavailable,
)
from qchain.qkd.keymanager import LinkConfig
from qchain.qkd.kms import KMSServer
from qchain.qkd.kms_config import TLSFiles
from qchain.qkd.testing import kms_test_config, running_kms

LINK = LinkConfig(saes=("a", "b"), bits_per_second=25_600, initial_key_count=300)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    assert qchain_main(["kms", "certs", "--out", str(out), "--sae", "a", "--sae", "b"]) == 0
    # a certificate from the right CA for an SAE the key manager does not know
    ca_key = serialization.load_pem_private_key((out / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
    save(issue(Issued(ca_key, ca_cert), "eve"), out / "sae-eve.pem", out / "sae-eve.key")
    # and a certificate from a CA the key manager does not trust
    save(issue(make_ca("rogue CA"), "a"), out / "rogue-a.pem", out / "rogue-a.key")
    return out


def tls_for(certs: Path, name: str) -> TLSConfig:
    return TLSConfig(certs / "ca.pem", certs / f"{name}.pem", certs / f"{name}.key")


@pytest.fixture
async def mtls_kms(certs: Path) -> AsyncIterator[KMSServer]:
    files = TLSFiles(certs / "ca.pem", certs / "kms.pem", certs / "kms.key")
    async with running_kms(kms_test_config([LINK], tls=files), VirtualClock()) as server:
        yield server


async def test_client_over_mtls(mtls_kms: KMSServer, certs: Path) -> None:
    assert mtls_kms.url.startswith("https://127.0.0.1:")
    for method in ("POST", "GET"):
        a = ETSIClient(mtls_kms.url, "a", tls=tls_for(certs, "sae-a"), method=method)  # type: ignore[arg-type]
        b = ETSIClient(mtls_kms.url, "b", tls=tls_for(certs, "sae-b"), method=method)  # type: ignore[arg-type]
        try:
            status = await a.status("b")
            assert (status.master_sae_id, status.slave_sae_id) == ("a", "b")
            assert status.bits_per_second == 25_600
            keys = await a.enc_keys("b", 5, 256)
            got = await b.dec_keys("a", [k.key_id for k in reversed(keys)])
            assert [g.material for g in got] == [k.material for k in reversed(keys)]
            with pytest.raises(KeyBadRequest):  # delivered once
                await b.dec_keys("a", [keys[0].key_id])
        finally:
            await a.close()
            await b.close()


async def test_unknown_certificate_rejected(mtls_kms: KMSServer, certs: Path) -> None:
    url = f"{mtls_kms.url}/api/v1/keys/b/status"
    rogue = tls_for(certs, "rogue-a").context()
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            async with http.get(url, ssl=rogue) as resp:
                await resp.read()
        no_cert = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        with pytest.raises(aiohttp.ClientError):
            async with http.get(url, ssl=no_cert) as resp:
                await resp.read()
    client = ETSIClient(mtls_kms.url, "a", tls=tls_for(certs, "rogue-a"), retries=0)
    with pytest.raises(KeyUnavailable):
        await client.status("b")
    await client.close()
    # a client that does not trust the key manager's certificate: a configuration error
    wrong_ca = TLSConfig(certs / "rogue-a.pem", certs / "sae-a.pem", certs / "sae-a.key")
    client = ETSIClient(mtls_kms.url, "a", tls=wrong_ca, retries=3)
    with pytest.raises(KeyConfigError, match="TLS"):
        await client.status("b")
    assert client.calls == 1, "not retried like a transient error"
    await client.close()
    # a certificate from the devnet CA, but for an SAE the key manager does not serve
    eve = ETSIClient(mtls_kms.url, "eve", tls=tls_for(certs, "sae-eve"))
    with pytest.raises(KeyUnauthorised):
        await eve.status("b")
    await eve.close()


async def test_retries_then_typed_errors() -> None:
    clock = VirtualClock(auto_advance=True)
    link = LinkConfig(saes=("a", "b"), bits_per_second=0, initial_key_count=3)
    async with running_kms(kms_test_config([link]), VirtualClock()) as server:
        a = ETSIClient(server.url, "a", insecure_sae_header=True, retries=3, clock=clock)
        try:
            with pytest.raises(KeyUnavailable) as exc:
                await a.enc_keys("b", 4)
            assert exc.value.http_status == 503  # the 503 body's reason is not relied on
            assert a.calls == 4  # one try and three retries
            server.manager.set_outage("a", "b", True)
            with pytest.raises(KeyUnavailable, match="outage"):
                await a.status("b")
            server.manager.set_outage("a", "b", False)
            with pytest.raises(KeyBadRequest):
                await a.enc_keys("b", 1, 12)
            zed = ETSIClient(server.url, "zed", insecure_sae_header=True)
            with pytest.raises(KeyUnauthorised):
                await zed.status("a")
            await zed.close()
            assert len(await a.enc_keys("b", 3)) == 3
        finally:
            await a.close()
        port = server.port
    gone = ETSIClient(f"http://127.0.0.1:{port}", "a", insecure_sae_header=True, clock=clock)
    calls_before = gone.calls
    with pytest.raises(KeyUnavailable, match="unreachable"):
        await gone.status("b")
    assert gone.calls - calls_before == 4
    await gone.close()


async def test_malformed_answers_are_key_source_errors() -> None:
    async def bad(request: web.Request) -> web.Response:
        answers = {
            "status": {"source_KME_ID": 1},
            "enc_keys": {"keys": [{"key_ID": "nope", "key": "AAAA"}]},
            "dec_keys": {"keys": [{"key_ID": "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "key": "!!"}]},
        }
        return web.json_response(answers[request.match_info["op"]])

    app = web.Application()
    app.router.add_route("*", "/api/v1/keys/{sae}/{op}", bad)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    client = ETSIClient(url, "a", insecure_sae_header=True)
    try:
        for call in (
            client.status("b"),
            client.enc_keys("b", 1),
            client.dec_keys("b", [bytes(16)]),
        ):
            with pytest.raises(KeySourceError) as exc:
                await call
            assert type(exc.value) is KeySourceError
    finally:
        await client.close()
        await runner.cleanup()


def test_client_needs_tls_or_explicit_dev_mode() -> None:
    with pytest.raises(ValueError):
        ETSIClient("https://kms:8443", "a")
