"""The key layer's error policy against a key manager this project did not write: a fake
ETSI GS QKD 014 KME (an aiohttp app in this file) gives each kind of answer in turn, and
the pools must classify it, back off, use the keys that came, and recover on their own
once the KME answers normally again. No link is ever closed by an answer."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import random
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from qchain.qkd.client import ETSIClient
from qchain.qkd.clock import SystemClock, VirtualClock
from qchain.qkd.errors import ErrorClass, KeySourceError, classify
from qchain.qkd.pool import RECOVER_BURST, RECOVER_PER_S, PoolConfig, ReceiveKeyPool, SendKeyPool
from qchain.qkd.simsource import LocalKeySource, full_mesh
from qchain.qkd.source import key_id_str
from qchain.qkd.testing import wait_until


@dataclass
class FakeKME:
    """A scriptable ETSI 014 KME for SAE "a" (master) and "b" (slave).

    `fail` is None (answer normally) or the failure for enc_keys and dec_keys: an HTTP
    status, "timeout" (never answer), "short" (one key, whatever was asked for), "malformed" (a
    200 that is not JSON). Every request is logged as (method, op, query, body)."""

    max_key_per_request: int = 128
    min_key_size: int = 64
    fail: int | str | None = None
    requests: list[tuple[str, str, list[tuple[str, str]], object]] = field(default_factory=list)
    delivered: dict[str, bytes] = field(default_factory=dict)
    hang: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/api/v1/keys/{sae}/{op}", self.handle)
        return app

    def _keys(self, n: int) -> list[dict[str, str]]:
        out = []
        for _ in range(n):
            kid, material = str(uuid.uuid4()), os.urandom(32)
            self.delivered[kid] = material
            out.append({"key_ID": kid, "key": base64.b64encode(material).decode()})
        return out

    async def handle(self, request: web.Request) -> web.Response:
        op = request.match_info["op"]
        body = await request.json() if request.can_read_body else None
        self.requests.append((request.method, op, list(request.query.items()), body))
        if op == "status":
            return web.json_response(
                {
                    "source_KME_ID": "KME-a",
                    "target_KME_ID": "KME-b",
                    "master_SAE_ID": "a",
                    "slave_SAE_ID": "b",
                    "key_size": 256,
                    "stored_key_count": 1000,
                    "max_key_count": 10_000,
                    "max_key_per_request": self.max_key_per_request,
                    "max_key_size": 1024,
                    "min_key_size": self.min_key_size,
                    "max_SAE_ID_count": 0,
                }
            )
        if op == "enc_keys":
            number = int(body["number"]) if isinstance(body, dict) else 1
            if number > self.max_key_per_request:
                return web.json_response({"message": "too many"}, status=400)
        else:
            ids = (
                [str(d["key_ID"]) for d in body["key_IDs"]]
                if isinstance(body, dict)
                else request.query.getall("key_ID")
            )
            if len(ids) > self.max_key_per_request:
                return web.json_response({"message": "too many"}, status=400)
        if self.fail == "timeout":
            await self.hang.wait()
        fail = self.fail
        if fail == "malformed":
            return web.Response(text="<html>gateway</html>", content_type="text/html")
        if isinstance(fail, int):
            return web.json_response({"message": f"scripted {fail}"}, status=fail)
        if op == "enc_keys":
            return web.json_response({"keys": self._keys(1 if fail else number)})
        known = [k for k in ids if k in self.delivered]
        if len(known) != len(ids):
            return web.json_response({"message": "unknown key_ID"}, status=400)
        keys = [{"key_ID": k, "key": base64.b64encode(self.delivered.pop(k)).decode()} for k in ids]
        return web.json_response({"keys": keys})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def start_app(app: web.Application, port: int = 0) -> web.AppRunner:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    runner = await start_app(app)
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


class RecordingClock(SystemClock):
    """Real time, but every backoff is recorded and waited a hundredth of, so a 30 s
    configuration retry takes 0.3 s of test time."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(seconds / 100)


POLICY = PoolConfig(batch_size=8, low_water=4, retry_initial=0.1, retry_max=0.8)

CASES: list[tuple[int | str, ErrorClass, int | None]] = [
    (401, ErrorClass.CONFIG, 401),
    (400, ErrorClass.TRANSIENT, 400),
    (404, ErrorClass.TRANSIENT, 404),
    (409, ErrorClass.TRANSIENT, 409),
    (429, ErrorClass.TRANSIENT, 429),
    (500, ErrorClass.TRANSIENT, 500),
    (503, ErrorClass.TRANSIENT, 503),
    ("timeout", ErrorClass.TRANSIENT, None),
    ("refused", ErrorClass.TRANSIENT, None),
    ("short", ErrorClass.TRANSIENT, None),
    ("malformed", ErrorClass.TRANSIENT, 200),
]


def check_backoff(sleeps: list[float], cls: ErrorClass) -> None:
    """Config errors wait `config_retry`; transient ones double from retry_initial up
    to retry_max, each drawn from [half, all] of the step (jitter)."""
    assert len(sleeps) >= 3
    if cls is ErrorClass.CONFIG:
        assert set(sleeps) == {POLICY.config_retry}
        return
    for i, s in enumerate(sleeps):
        step = min(POLICY.retry_max, POLICY.retry_initial * 2**i)
        assert step / 2 <= s <= step, (i, s)
    assert len(set(sleeps)) == len(sleeps), "jittered waits differ"


@pytest.mark.parametrize(("answer", "cls", "http_status"), CASES, ids=[str(c[0]) for c in CASES])
async def test_send_pool_classifies_backs_off_and_recovers(
    answer: int | str, cls: ErrorClass, http_status: int | None, caplog: pytest.LogCaptureFixture
) -> None:
    kme = FakeKME(fail=None if answer == "refused" else answer)
    port = free_port()
    clock = RecordingClock()
    client = ETSIClient(
        f"http://127.0.0.1:{port}", "a", insecure_sae_header=True, retries=0, timeout=0.3
    )
    pool = SendKeyPool(client, "b", POLICY, clock, rng=random.Random(7))
    runner = None if answer == "refused" else await start_app(kme.app(), port)
    try:
        taker = asyncio.create_task(pool.take())
        await wait_until(lambda: pool.health.errors_in_row >= 3, timeout=20)
        h = pool.health
        assert h.state == ("config-error" if cls is ErrorClass.CONFIG else "degraded")
        assert h.error_class == cls.value and h.http_status == http_status
        assert h.since is not None and h.message
        check_backoff(clock.sleeps[:3], cls)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == (1 if cls is ErrorClass.CONFIG else 0), "loud once per change"
        if answer == "short":
            # the keys that came are used: the frame did not wait for a full batch
            key, announce = await asyncio.wait_for(taker, 5)
            assert key_id_str(key.key_id) in kme.delivered and announce[0] == key.key_id
            assert pool.counters.short_batches >= 3
        else:
            assert not taker.done()
        if runner is None:
            runner = await start_app(kme.app(), port)
        kme.fail = None
        kme.hang.set()
        await asyncio.wait_for(taker, 10)
        for _ in range(6):  # traffic goes on; the pool refills below its low-water mark
            await asyncio.wait_for(pool.take(), 10)
        await wait_until(lambda: pool.health.state == "ok" and pool.level >= 4, timeout=10)
        assert pool.health.error_class == cls.value, "the last error stays visible"
        assert pool.health.since is None and pool.health.errors_in_row == 0
        assert not pool.closed
    finally:
        await pool.close()
        await client.close()
        if runner is not None:
            await runner.cleanup()


async def test_error_classes_are_decided_in_one_place() -> None:
    from qchain.qkd.client import http_error

    for answer, cls, status in CASES:
        if isinstance(answer, int):
            err = http_error(answer, "x")
            assert classify(err) is cls and err.http_status == status
    assert classify(KeySourceError("malformed")) is ErrorClass.TRANSIENT


async def test_receive_pool_retries_a_key_not_yet_at_this_site() -> None:
    """A relay delay between the two KMEs: the slave's KME answers 404 (then 400) for an
    id the master already took. The receive pool retries instead of calling it forged."""
    kme = FakeKME()
    clock = RecordingClock()
    async with serving(kme.app()) as url:
        a = ETSIClient(url, "a", insecure_sae_header=True, retries=0)
        b = ETSIClient(url, "b", insecure_sae_header=True, retries=0)
        pool = ReceiveKeyPool(b, "a", POLICY, clock, rng=random.Random(3))
        try:
            keys = await a.enc_keys("b", 3, 256)
            kme.fail = 404
            pool.announce([k.key_id for k in keys])
            await wait_until(lambda: pool.counters.kms_errors >= 2)
            kme.fail = 400
            await wait_until(lambda: pool.counters.kms_errors >= 4)
            assert pool.health.state == "degraded" and pool.health.http_status == 400
            kme.fail = None
            got = await pool.take(keys[1].key_id)
            assert got is not None and got.material == keys[1].material
            assert pool.health.state == "ok"
        finally:
            await pool.close()
            await a.close()
            await b.close()


async def test_forged_ids_still_bounded_by_the_recovery_budget() -> None:
    """Retries of single-id lookups spend the recovery budget, so a forger naming fresh
    ids every 50 ms for 5 s gets at most burst + rate * time key-manager calls."""
    clock = VirtualClock()
    manager = full_mesh(["a", "b"], clock, initial_key_count=10)
    source = LocalKeySource(manager, "b")
    pool = ReceiveKeyPool(source, "a", PoolConfig(resolve_unverified_for=60.0), clock)
    forged = 0
    for _ in range(100):
        for _ in range(20):
            pool.recover(uuid.uuid4().bytes)
            forged += 1
        for _ in range(5):
            await asyncio.sleep(0)
        clock.advance(0.05)
    await pool.close()
    assert forged == 2000
    assert source.calls <= RECOVER_BURST + RECOVER_PER_S * 5
    assert pool.counters.kms_errors == source.calls


async def test_dec_keys_uses_post_for_two_or_more_ids() -> None:
    kme = FakeKME()
    async with serving(kme.app()) as url:
        a = ETSIClient(url, "a", insecure_sae_header=True, retries=0)
        b = ETSIClient(url, "b", insecure_sae_header=True, retries=0, method="GET")
        try:
            keys = await a.enc_keys("b", 3, 256)
            one = await b.dec_keys("a", [keys[0].key_id])
            two = await b.dec_keys("a", [keys[2].key_id, keys[1].key_id])
            assert [k.material for k in one + two] == [keys[i].material for i in (0, 2, 1)]
        finally:
            await a.close()
            await b.close()
    dec = [(m, q, body) for m, op, q, body in kme.requests if op == "dec_keys"]
    assert dec[0] == ("GET", [("key_ID", key_id_str(keys[0].key_id))], None)
    method, query, body = dec[1]
    assert method == "POST" and query == []
    assert body == {"key_IDs": [{"key_ID": key_id_str(keys[i].key_id)} for i in (2, 1)]}


async def test_batches_sized_from_status_max_key_per_request() -> None:
    """A KME that allows 10 keys per request: the send pool asks for 10 and keeps its
    low-water mark within one batch; the receive pool asks for at most 10 ids per call
    even when a frame announces more."""
    kme = FakeKME(max_key_per_request=10)
    async with serving(kme.app()) as url:
        a = ETSIClient(url, "a", insecure_sae_header=True, retries=0)
        b = ETSIClient(url, "b", insecure_sae_header=True, retries=0)
        send = SendKeyPool(a, "b", PoolConfig(), rng=random.Random(1))
        recv = ReceiveKeyPool(b, "a", PoolConfig(), batch_size=lambda: send.batch_size)
        try:
            send.start()
            taken = []
            announced: list[bytes] = []
            for _ in range(25):
                key, ann = await send.take()
                taken.append(key)
                announced.extend(ann)
            assert send.batch_size == 10 and send.low_water == 10
            assert send.health.max_key_per_request == 10 and send.health.batch_size == 10
            recv.announce(announced)
            for key in taken:
                got = await recv.take(key.key_id)
                assert got is not None and got.material == key.material
            assert send.counters.kms_errors == recv.counters.kms_errors == 0
        finally:
            await send.close()
            await recv.close()
            await a.close()
            await b.close()
    for _, op, _, body in kme.requests:
        if op == "enc_keys":
            assert isinstance(body, dict) and body["number"] == 10
        if op == "dec_keys":
            assert isinstance(body, dict) and 1 <= len(body["key_IDs"]) <= 10
    assert kme.requests[0][1] == "status"


async def test_status_is_read_again_after_an_error() -> None:
    """The KME lowers its cap from 10 to 5 keys per request and refuses bigger requests
    with 400: the pool re-reads the status and goes on in batches of 5."""
    kme = FakeKME(max_key_per_request=10)
    async with serving(kme.app()) as url:
        client = ETSIClient(url, "a", insecure_sae_header=True, retries=0)
        pool = SendKeyPool(client, "b", POLICY, RecordingClock(), rng=random.Random(5))
        try:
            (await pool.take())[0].wipe()
            assert pool.batch_size == 8
            kme.max_key_per_request = 5
            for _ in range(12):
                (await pool.take())[0].wipe()
            await wait_until(lambda: pool.batch_size == 5 and pool.health.state == "ok")
            assert pool.health.http_status == 400 and pool.low_water == 4
        finally:
            await pool.close()
            await client.close()
    statuses = [op for _, op, _, _ in kme.requests if op == "status"]
    assert len(statuses) >= 2


async def test_link_without_256_bit_keys_is_a_configuration_error() -> None:
    kme = FakeKME(min_key_size=512)
    async with serving(kme.app()) as url:
        client = ETSIClient(url, "a", insecure_sae_header=True, retries=0)
        pool = SendKeyPool(client, "b", POLICY, RecordingClock(), rng=random.Random(5))
        try:
            pool.start()
            await wait_until(lambda: pool.health.state == "config-error")
            assert pool.health.message is not None and "256-bit" in pool.health.message
            assert not any(op == "enc_keys" for _, op, _, _ in kme.requests)
        finally:
            await pool.close()
            await client.close()
