"""Measure the QKD frame layer: authenticated frames per second on one core, and key
manager round trips per 1,000 frames.

    python -m devnet.bench.qkd_frames [--frames N] [--json FILE]

1. seal+open: one sender and one receiver in one process, keys from the in-process
   simulated key manager, bodies of 1 KiB and 64 KiB; the figure includes key-pool
   bookkeeping and header encoding/decoding, i.e. what a node pays per frame.
2. round trips: two endpoints exchange frames through the simulated key manager over
   HTTP (`qchain kms` in insecure dev mode on loopback); every GET/POST the two
   `ETSIClient`s make is counted.

This is a measurement, not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from qchain.qkd.client import ETSIClient
from qchain.qkd.clock import VirtualClock
from qchain.qkd.endpoint import QKDEndpoint
from qchain.qkd.keymanager import PROFILES, LinkConfig
from qchain.qkd.simsource import LocalKeySource, full_mesh
from qchain.qkd.testing import kms_test_config, running_kms


async def frames_per_second(body_size: int, frames: int) -> dict[str, float]:
    clock = VirtualClock(auto_advance=True)
    manager = full_mesh(
        ["a", "b"], clock, max_key_count=frames + 1024, initial_key_count=frames + 512
    )
    a = QKDEndpoint("bench", "a", ["b"], LocalKeySource(manager, "a"), clock=clock)
    b = QKDEndpoint("bench", "b", ["a"], LocalKeySource(manager, "b"), clock=clock)
    a.start()
    sender, receiver = a.sender("b"), b.receiver
    body = bytes(body_size)
    await receiver.open(await sender.seal(body))  # warm-up: first batch on both sides
    seal_time = open_time = 0.0
    for _ in range(frames):
        t0 = time.perf_counter()
        frame = await sender.seal(body)
        t1 = time.perf_counter()
        await receiver.open(frame)
        t2 = time.perf_counter()
        seal_time += t1 - t0
        open_time += t2 - t1
        await asyncio.sleep(0)
    await a.close()
    await b.close()
    return {
        "body_bytes": body_size,
        "frames": frames,
        "seal_per_s": frames / seal_time,
        "open_per_s": frames / open_time,
        "seal_and_open_per_s": frames / (seal_time + open_time),
        "mbyte_per_s": frames * body_size / (seal_time + open_time) / 1e6,
    }


async def kms_round_trips(frames: int) -> dict[str, object]:
    link = LinkConfig(
        saes=("a", "b"),
        bits_per_second=PROFILES["lab"],
        max_key_count=4 * frames,
        initial_key_count=1024,
    )
    async with running_kms(kms_test_config([link])) as kms:
        clients = {n: ETSIClient(kms.url, n, insecure_sae_header=True) for n in "ab"}
        eps = {n: QKDEndpoint("bench", n, "ab", clients[n]) for n in "ab"}
        for ep in eps.values():
            ep.start()
        t0 = time.perf_counter()
        for _ in range(frames):
            await eps["b"].receiver.open(await eps["a"].sender("b").seal(b"x" * 256))
            await eps["a"].receiver.open(await eps["b"].sender("a").seal(b"y" * 256))
            await asyncio.sleep(0)
        elapsed = time.perf_counter() - t0
        calls = clients["a"].calls + clients["b"].calls
        waits = {
            f"{me}->{peer}": (
                eps[me].send_pools[peer].counters.waits,
                eps[peer].receive_pools[me].counters.waits,
            )
            for me, peer in (("a", "b"), ("b", "a"))
        }
        for ep in eps.values():
            await ep.close()
        for c in clients.values():
            await c.close()
    total = 2 * frames
    return {
        "frames": total,
        "kms_round_trips": calls,
        "round_trips_per_1000_frames": 1000 * calls / total,
        "frames_per_s_with_http_kms": total / elapsed,
        "waits_sender_receiver": waits,
    }


async def main_async(frames: int) -> dict[str, object]:
    return {
        "seal_open_1KiB": await frames_per_second(1024, frames),
        "seal_open_64KiB": await frames_per_second(64 * 1024, max(1000, frames // 10)),
        "kms": await kms_round_trips(frames),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    report = asyncio.run(main_async(args.frames))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
