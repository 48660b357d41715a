"""The client SDK and the CLI against the API over real HTTP; the event bus and metrics."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from node.backlog import Backlog
from node.events import EventBus
from node.http.api import make_api_app, make_ssl_context
from node.http.testing import start_api
from node.metrics import NodeMetrics
from qchain.cli import main as cli_main
from qchain.client import AsyncClient, Client, TxInfo, ssl_context_for
from qchain.errors import ApiError, BadSignature, NodeUnavailable, Overloaded
from qchain.jsonform import (
    block_from_json,
    block_to_json,
    receipt_proof_from_json,
    receipt_proof_to_json,
)

from .conftest import CHAIN_ID, PARTNERS, VALIDATORS, ApiHarness, FakeNode, make_tx


async def test_async_client_end_to_end(api: ApiHarness) -> None:
    async with AsyncClient(api.url) as c:
        assert (await c.status())["height"] == 2
        assert (await c.next_nonce(PARTNERS[2].address)) == 1
        assert (await c.next_nonce(b"\x07" * 20)) == 0
        tx = make_tx(PARTNERS[2], 1)
        info = await c.submit(tx)
        assert info == TxInfo(tx.hash, "pending", new=True)
        assert (await c.submit(tx.encode())).new is False
        assert (await c.transaction(tx.hash)) == tx

        waiter = asyncio.create_task(c.submit_and_wait(make_tx(PARTNERS[2], 2), 60))
        await api.node.waiting.wait()
        api.node.commit_pending()
        done = await waiter
        assert done.status == "committed" and done.receipt is not None
        assert done.receipt.ok

        proof = await c.receipt(tx.hash)
        proof.verify(CHAIN_ID, VALIDATORS)
        assert (await c.block("latest")).height == 3
        blocks = await c.blocks(1, 10)
        assert [b.height for b in blocks] == [1, 2, 3]
        assert blocks[2].txs[0] == tx
        assert (await c.account(PARTNERS[2].address.hex()))["nonce"] == 3
        result = await c.query(
            "membership", "member", {"address": {"hex": PARTNERS[0].address.hex()}}
        )
        assert result[1] == 2
        assert (await c.qkd())["links"]
        assert await c.ready() == (True, [])
        api.node.ready, api.node.reasons = False, ["catching up"]
        assert await c.ready() == (False, ["catching up"])

        batch = await c.submit_batch([make_tx(PARTNERS[2], 3), make_tx(PARTNERS[2], 0)])
        assert isinstance(batch[0], TxInfo) and batch[0].new
        assert isinstance(batch[1], ApiError) and batch[1].code == "nonce-mismatch"


async def test_async_client_typed_errors(api: ApiHarness) -> None:
    async with AsyncClient(api.url) as c:
        with pytest.raises(ApiError) as e:
            await c.submit(make_tx(PARTNERS[0], 0, method="again"))
        assert e.value.status == 422
        assert e.value.code == "nonce-mismatch"
        assert e.value.extra["expected_nonce"] == 2
        assert e.value.fields()["expected_nonce"] == 2
        with pytest.raises(ApiError) as e:
            await c.submit_and_wait(make_tx(PARTNERS[2], 1), timeout_s=0.05)
        assert (e.value.status, e.value.code) == (504, "commit-timeout")
        with pytest.raises(ApiError) as e:
            await c.receipt("ab" * 32)
        assert (e.value.status, e.value.code) == (404, "not-found")
        assert e.value.extra["kind"] == "receipt"
    async with AsyncClient("http://127.0.0.1:9", timeout_s=2) as c:
        with pytest.raises(NodeUnavailable):
            await c.status()


async def test_async_client_events_resume(api: ApiHarness) -> None:
    async with AsyncClient(api.url) as c:
        before = api.node.bus.last_id
        api.node.submit(make_tx(PARTNERS[2], 1).encode())
        block = api.node.commit_pending()
        stream = c.events(before)
        ev = await anext(stream)
        assert (ev.kind, ev.data["height"]) == ("block", block.height)
        await stream.aclose()  # type: ignore[attr-defined]
        resumed = c.events(ev.id)
        nxt = await anext(resumed)
        assert (nxt.id, nxt.kind) == (ev.id + 1, "tx")
        assert nxt.data["tx_hash"] == block.txs[0].hash.hex()
        await resumed.aclose()  # type: ignore[attr-defined]


async def test_sync_client_and_events(api: ApiHarness) -> None:
    def use_client() -> tuple[int, TxInfo, list[int]]:
        with Client(api.url) as c:
            height = int(c.status()["height"])
            info = c.submit(make_tx(PARTNERS[2], 1))
            ids = []
            for ev in c.events(0):
                ids.append(ev.id)
                if len(ids) == 3:
                    break
            return height, info, ids

    height, info, ids = await asyncio.to_thread(use_client)
    assert height == 2
    assert info.status == "pending" and info.new
    assert ids == [1, 2, 3]


def test_json_forms_round_trip(fake_node: FakeNode) -> None:
    block = fake_node.chain.block(1)
    assert block is not None
    assert block_from_json(json.loads(json.dumps(block_to_json(block)))) == block
    proof = fake_node.receipt_proof(block.txs[1].hash)
    assert proof is not None
    assert receipt_proof_from_json(json.loads(json.dumps(receipt_proof_to_json(proof)))) == proof


# --- CLI -------------------------------------------------------------------------------------


async def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = await asyncio.to_thread(cli_main, argv)
    out, err = capsys.readouterr()
    return rc, out, err


async def test_cli_send_status_receipt_query(
    api: ApiHarness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "partner.json"
    PARTNERS[2].save(key_file)
    node = ["--node", api.url]

    rc, out, _ = await run_cli(
        [
            "tx",
            "send",
            "membership",
            "register",
            "--args",
            '[{"hex": "0a"}, 5]',
            "--key",
            str(key_file),
            "--async",
            "--json",
            *node,
        ],
        capsys,
    )
    assert rc == 0
    sent = json.loads(out)
    assert sent["status"] == "pending"
    tx = api.node.transaction(bytes.fromhex(sent["tx_hash"]))
    assert tx is not None and tx.nonce == 1 and tx.args == [b"\n", 5]

    api.node.commit_pending()
    rc, out, _ = await run_cli(["tx", "status", sent["tx_hash"], *node], capsys)
    assert rc == 0
    assert "committed" in out and "height 3 index 0: ok" in out

    out_file = tmp_path / "receipt.bin"
    rc, out, _ = await run_cli(
        ["receipt", "get", sent["tx_hash"], "--out", str(out_file), *node], capsys
    )
    assert rc == 0 and out_file.stat().st_size > 0
    validators = tmp_path / "validators.json"
    validators.write_text(
        json.dumps([{"scheme": v.scheme, "public_key": v.public_key.hex()} for v in VALIDATORS])
    )
    rc, out, _ = await run_cli(
        ["receipt", "verify", str(out_file), "--validators", str(validators)], capsys
    )
    assert rc == 0 and out.startswith("verified: transaction " + sent["tx_hash"])

    rc, out, _ = await run_cli(["receipt", "get", sent["tx_hash"], *node], capsys)
    json_file = tmp_path / "receipt.json"
    json_file.write_text(out)
    rc, out, _ = await run_cli(
        ["receipt", "verify", str(json_file), "--validators", str(validators), "--json"], capsys
    )
    assert rc == 0 and json.loads(out)["verified"] is True

    rc, _, err = await run_cli(
        [
            "receipt",
            "verify",
            str(out_file),
            "--validators",
            str(validators),
            "--chain-id",
            "other",
        ],
        capsys,
    )
    assert rc == 1 and "error:" in err

    addr = PARTNERS[0].address.hex()
    rc, out, _ = await run_cli(
        ["query", "membership", "member", json.dumps({"address": {"hex": addr}}), *node], capsys
    )
    assert rc == 0
    assert json.loads(out)[0] == {"hex": addr}


async def test_cli_send_waits_for_commit_and_reports_problems(
    api: ApiHarness,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key_file = tmp_path / "partner.json"
    PARTNERS[2].save(key_file)
    monkeypatch.setenv("QCHAIN_NODE", api.url)
    send = asyncio.create_task(
        run_cli(["tx", "send", "membership", "register", "--key", str(key_file)], capsys)
    )
    await api.node.waiting.wait()
    api.node.commit_pending()
    rc, out, _ = await send
    assert rc == 0 and "committed" in out

    rc, _, err = await run_cli(["tx", "status", "ab" * 32], capsys)
    assert rc == 1 and "error: Not found" in err
    monkeypatch.delenv("QCHAIN_NODE")
    rc, _, err = await run_cli(["tx", "status", "ab" * 32], capsys)
    assert rc == 1 and "QCHAIN_NODE" in err


def test_receipt_verify_rejects_a_tampered_certificate(fake_node: FakeNode, tmp_path: Path) -> None:
    block = fake_node.chain.block(1)
    assert block is not None
    proof = fake_node.receipt_proof(block.txs[0].hash)
    assert proof is not None
    doc = receipt_proof_to_json(proof)
    doc["certificate"]["signatures"] = doc["certificate"]["signatures"][:2]
    tampered = receipt_proof_from_json(doc)
    with pytest.raises(BadSignature):
        tampered.verify(CHAIN_ID, VALIDATORS)


# --- TLS -------------------------------------------------------------------------------------


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "api.crt", tmp_path / "api.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def test_api_over_tls(fake_node: FakeNode, tmp_path: Path) -> None:
    cert_file, key_file = self_signed(tmp_path)
    app = make_api_app(fake_node, max_body_bytes=1 << 20, rate_limit_per_s=0)
    runner, port = await start_api(app, "127.0.0.1", 0, make_ssl_context(cert_file, key_file))
    try:
        async with AsyncClient(
            f"https://127.0.0.1:{port}", ssl_context=ssl_context_for(str(cert_file))
        ) as c:
            assert (await c.status())["height"] == 2
        async with AsyncClient(
            f"https://127.0.0.1:{port}", ssl_context=ssl.create_default_context()
        ) as c:
            with pytest.raises(NodeUnavailable):
                await c.status()
    finally:
        await runner.cleanup()


# --- event bus and metrics -------------------------------------------------------------------


async def test_event_bus_replay_live_and_slow_subscribers() -> None:
    bus = EventBus(capacity=4, queue_size=2)
    for i in range(6):
        bus.publish("tx", {"n": i})
    assert bus.last_id == 6
    replay = bus.subscribe(1)
    assert [(await anext(replay)).id for _ in range(4)] == [3, 4, 5, 6]
    live = bus.subscribe(None)
    slow = bus.subscribe(None)
    bus.publish("block", {"n": 6})
    assert (await anext(live)).id == 7
    assert (await anext(replay)).id == 7
    for i in range(3):
        bus.publish("tx", {"n": 7 + i})
    assert bus.dropped_subscribers >= 1
    with pytest.raises(StopAsyncIteration):
        while True:
            await anext(slow)
    bus.close()
    for stream in (live, replay):
        with pytest.raises(StopAsyncIteration):
            while True:
                await anext(stream)
    after = bus.subscribe(None)
    with pytest.raises(StopAsyncIteration):
        await anext(after)
    assert bus.subscriber_count == 0


async def test_a_full_block_of_events_reaches_a_subscriber_and_ready_drains_it() -> None:
    """A block of 10,000 transactions publishes 10,001 events at once: a live subscriber
    keeps up (it is not dropped), and `ready()` hands over what is queued without
    waiting."""
    bus = EventBus()
    stream = bus.subscribe(None)
    bus.publish("block", {"n": 0})
    for i in range(10_000):
        bus.publish("tx", {"n": i})
    first = await anext(stream)
    rest = stream.ready(limit=20_000)
    assert bus.dropped_subscribers == 0
    assert [first.id, *(e.id for e in rest)] == list(range(1, 10_002))
    assert stream.ready() == []
    await stream.aclose()
    assert bus.subscriber_count == 0


def test_metrics_names_help_and_isolation() -> None:
    a, b = NodeMetrics("a"), NodeMetrics("b")
    a.observe_commit(5, 3, 0.5)
    a.observe_round(2, changed=True)
    a.observe_frame("b", "out", 100)
    a.mempool_rejections.labels("nonce-mismatch").inc()
    a.qkd_key_manager_latency.labels("a->b").observe(0.01)
    a.observe_api_request("/v1/status", "GET", 200, 0.001)
    text = a.exposition().decode()
    assert "qchain_consensus_height 5.0" in text
    assert "qchain_consensus_decided_txs_total 3.0" in text
    assert 'qchain_transport_bytes_total{direction="out",peer="b"} 100.0' in text
    assert "qchain_consensus_height 0.0" in b.exposition().decode()
    for metric in a.registry.collect():
        assert metric.name.startswith("qchain_"), metric.name
        assert metric.documentation, metric.name


def test_cli_receipt_verify_against_genesis(
    fake_node: FakeNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from contracts.testing import dev_genesis
    from node.genesis_file import save_genesis

    genesis, _ = dev_genesis({"admin": ["admin"]}, seed="api-test", validators=4, chain_id=CHAIN_ID)
    genesis_file = tmp_path / "genesis.json"
    save_genesis(genesis, genesis_file)
    block = fake_node.chain.block(2)
    assert block is not None
    proof = fake_node.receipt_proof(block.txs[1].hash)
    assert proof is not None
    receipt_file = tmp_path / "receipt.hex"
    receipt_file.write_text(proof.encode().hex())
    assert cli_main(["receipt", "verify", str(receipt_file), "--genesis", str(genesis_file)]) == 0
    assert "4 validators" in capsys.readouterr().out
    other, _ = dev_genesis({"admin": ["admin"]}, seed="other", validators=4, chain_id=CHAIN_ID)
    save_genesis(other, genesis_file)
    assert cli_main(["receipt", "verify", str(receipt_file), "--genesis", str(genesis_file)]) == 1


def _overloaded_node(api: ApiHarness) -> asyncio.Event:
    """The fake node at its admission bound (room for 2 at 1 tx/s, 2 s), and an event
    set when it refuses something for the bound."""
    api.node.backlog = Backlog(2000, 1, window_s=10.0)
    api.node.backlog.committed(0.0, 1, 1, True)
    api.node.now = 1.0
    refused = asyncio.Event()
    backlog = api.node.backlog
    check, refusal = backlog.check, backlog.refusal

    def counting_check(pending: int, now: float, depth: int) -> None:
        try:
            check(pending, now, depth)
        except Overloaded:
            refused.set()
            raise

    def counting_refusal(pending: int, now: float, depth: int) -> Overloaded:
        refused.set()
        return refusal(pending, now, depth)

    backlog.check = counting_check  # type: ignore[method-assign]
    backlog.refusal = counting_refusal  # type: ignore[method-assign]
    return refused


async def _drain_when(refused: asyncio.Event, api: ApiHarness) -> None:
    await refused.wait()
    api.node.now = 2.0
    api.node.commit_pending()


async def test_client_honours_retry_after(api: ApiHarness) -> None:
    refused = _overloaded_node(api)
    txs = [make_tx(PARTNERS[2], 1 + i) for i in range(3)]
    async with AsyncClient(api.url, retry_wait_s=0) as impatient:
        for t in txs[:2]:
            assert (await impatient.submit(t)).new
        with pytest.raises(ApiError) as e:
            await impatient.submit(txs[2])
        assert e.value.code == "overloaded" and e.value.retry_after_s == 1.0
    refused.clear()
    drain = asyncio.create_task(_drain_when(refused, api))
    async with AsyncClient(api.url) as c:
        info = await c.submit(txs[2])
    await drain
    assert info.new is True and txs[2].hash in api.node.pending


async def test_client_batch_sends_again_only_the_items_refused_for_the_bound(
    api: ApiHarness,
) -> None:
    refused = _overloaded_node(api)
    txs = [make_tx(PARTNERS[2], 1 + i) for i in range(4)]
    drain = asyncio.create_task(_drain_when(refused, api))
    async with AsyncClient(api.url) as c:
        results = await c.submit_batch([*txs, b"\x01junk"])
    await drain
    assert [r.tx_hash for r in results[:4] if isinstance(r, TxInfo)] == [t.hash for t in txs]
    assert all(isinstance(r, TxInfo) and r.new for r in results[:4])
    assert isinstance(results[4], ApiError) and results[4].code == "malformed-encoding"
    committed = {t.hash for b in [api.node.chain.block(3)] if b for t in b.txs}
    assert committed | set(api.node.pending) == {t.hash for t in txs}, "nothing lost"
