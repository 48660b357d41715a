"""Two endpoints exchange 10,000 authenticated frames each way over TCP (length-prefixed,
as the node transport will), with keys from the simulated key manager over HTTP: no key
is used twice, and after warm-up no frame waits on the key manager."""

from __future__ import annotations

import asyncio
import struct
from asyncio import StreamReader, StreamWriter
from collections.abc import Awaitable, Callable

from qchain.qkd.client import ETSIClient
from qchain.qkd.endpoint import QKDEndpoint
from qchain.qkd.frame import decode_frame
from qchain.qkd.keymanager import PROFILES, LinkConfig
from qchain.qkd.source import KeyId
from qchain.qkd.testing import kms_test_config, running_kms

N = 10_000
LEN = struct.Struct(">I")


async def read_frames(
    reader: asyncio.StreamReader, ep: QKDEndpoint, seen: list[KeyId], count: int
) -> None:
    for i in range(count):
        (n,) = LEN.unpack(await reader.readexactly(LEN.size))
        frame = await reader.readexactly(n)
        seen.append(decode_frame(frame)[0].key_id)
        opened = await ep.receiver.open(frame)
        assert opened.seq == i + 1 and opened.body[:4] == i.to_bytes(4, "big")


async def write_frames(writer: asyncio.StreamWriter, ep: QKDEndpoint, peer: str) -> None:
    sender = ep.sender(peer)
    for i in range(N):
        frame = await sender.seal(i.to_bytes(4, "big") + bytes(252))
        writer.write(LEN.pack(len(frame)) + frame)
        await writer.drain()
        await asyncio.sleep(0)
    writer.close()
    await writer.wait_closed()


async def test_two_endpoints_exchange_10000_frames_each_way() -> None:
    link = LinkConfig(
        saes=("a", "b"),
        bits_per_second=PROFILES["lab"],
        max_key_count=50_000,
        initial_key_count=1024,
    )
    async with running_kms(kms_test_config([link])) as kms:
        clients = {n: ETSIClient(kms.url, n, insecure_sae_header=True) for n in "ab"}
        eps = {n: QKDEndpoint("test-chain", n, "ab", clients[n]) for n in "ab"}
        seen: dict[str, list[KeyId]] = {"a": [], "b": []}
        loop = asyncio.get_running_loop()
        received = {n: loop.create_future() for n in "ab"}

        def on_conn_for(me: str) -> Callable[[StreamReader, StreamWriter], Awaitable[None]]:
            async def on_conn(r: StreamReader, w: StreamWriter) -> None:
                try:
                    await read_frames(r, eps[me], seen[me], N)
                    received[me].set_result(None)
                except Exception as e:
                    received[me].set_exception(e)
                finally:
                    w.close()
                    await w.wait_closed()

            return on_conn

        servers = {me: await asyncio.start_server(on_conn_for(me), "127.0.0.1", 0) for me in "ab"}
        try:
            for ep in eps.values():
                ep.start()
            writers = []
            for me, peer in (("a", "b"), ("b", "a")):
                port = servers[peer].sockets[0].getsockname()[1]
                _, w = await asyncio.open_connection("127.0.0.1", port)
                writers.append(asyncio.create_task(write_frames(w, eps[me], peer)))
            await asyncio.wait_for(asyncio.gather(*writers), 100)
            await asyncio.wait_for(asyncio.gather(*received.values()), 100)

            all_ids = seen["a"] + seen["b"]
            assert len(all_ids) == 2 * N and len(set(all_ids)) == 2 * N  # no key reused
            report = []
            for me, peer in (("a", "b"), ("b", "a")):
                send = eps[me].send_pools[peer].counters
                recv = eps[peer].receive_pools[me].counters
                report.append(
                    f"{me}->{peer}: sender waits {send.waits}, receiver waits {recv.waits}, "
                    f"enc_keys calls {send.kms_calls}, dec_keys calls {recv.kms_calls}"
                )
                # warm-up: the first frame waits for the first batch on each side; then none
                assert send.waits <= 1 and recv.waits <= 1, report
                assert send.keys_consumed == recv.keys_consumed == N
                assert eps[peer].receiver.peers[me].accepted == N
                assert not eps[peer].receiver.rejected
            print("\n" + "\n".join(report))
        finally:
            for s in servers.values():
                s.close()
                await s.wait_closed()
            for ep in eps.values():
                await ep.close()
            for c in clients.values():
                await c.close()
