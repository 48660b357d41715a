"""What the benchmark watches while the load runs: commit events, CPU time of the node
processes, and the QKD counters of every link.

- `CommitListener` follows one node's `/v1/events` stream and stamps every block and tx
  event with the wall time it arrived (the end of a transaction's end-to-end latency).
  A node drops a subscriber that falls too far behind; the listener then reconnects with
  its last event id and gets the missed events from the node's replay buffer (their
  arrival stamp is then the reconnection time, a slight overestimate).
- `cpu_seconds(pid)` reads user + system time from /proc/PID/stat.
- `Snapshot` holds, at one instant, each node's height and the per-directed-link QKD
  counters from `/v1/qkd` (keys and bytes consumed by the sender, frames and bytes sent,
  key waits, and the keys in each send pool).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from qchain.client import AsyncClient
from qchain.errors import NodeUnavailable

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass(frozen=True)
class BlockSeen:
    height: int
    tx_count: int
    round: int
    at: float
    built: float
    """The block's header time (its proposer's wall clock when it built the block, in
    seconds): `at - built` is the block's consensus latency, build to commit."""


@dataclass
class CommitListener:
    url: str
    blocks: list[BlockSeen] = field(default_factory=list)
    txs: dict[str, tuple[float, bool, str]] = field(default_factory=dict)
    """tx hash (hex) -> (arrival wall time, ok, code)."""
    reconnects: int = 0
    gaps: int = 0
    """Events the node no longer had when the listener came back."""
    _task: asyncio.Task[None] | None = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self, timeout_s: float = 10.0) -> None:
        self._task = asyncio.create_task(self._run(), name="commit-listener")
        await asyncio.wait_for(self._ready.wait(), timeout_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        last: int | None = None
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=None)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                headers = {"Accept": "text/event-stream"}
                if last is not None:
                    headers["Last-Event-ID"] = str(last)
                try:
                    async with session.get(self.url + "/v1/events", headers=headers) as resp:
                        # The node subscribes before it sends the headers: from here on
                        # no commit is missed.
                        self._ready.set()
                        last = await self._read(resp.content, last)
                except (aiohttp.ClientError, TimeoutError):
                    pass
                self.reconnects += 1
                await asyncio.sleep(0.05)

    async def _read(self, content: aiohttp.StreamReader, last: int | None) -> int | None:
        kind = ""
        ev_id = 0
        data = ""
        while True:
            line_b = await content.readline()
            if not line_b:
                return last
            line = line_b.decode().rstrip("\r\n")
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("id:"):
                ev_id = int(line[3:].strip())
            elif line.startswith("data:"):
                data += line[5:].strip()
            elif not line and data:
                if kind in ("block", "tx"):
                    last = self._record(kind, ev_id, json.loads(data), last)
                kind, data = "", ""

    def _record(self, kind: str, ev_id: int, d: dict[str, Any], last: int | None) -> int:
        now = time.time()
        if last is not None and ev_id > last + 1:
            self.gaps += ev_id - last - 1
        if kind == "block":
            self.blocks.append(
                BlockSeen(d["height"], d["tx_count"], d["round"], now, d["time"] / 1000)
            )
        else:
            self.txs.setdefault(d["tx_hash"], (now, bool(d["ok"]), str(d["code"])))
        return ev_id

    def height(self) -> int:
        return self.blocks[-1].height if self.blocks else 0


@dataclass(frozen=True)
class LinkCounters:
    keys: int
    key_bytes: int
    frames: int
    bytes_sent: int
    waits: int


@dataclass(frozen=True)
class Snapshot:
    at: float
    heights: dict[int, int]
    links: dict[tuple[int, int], LinkCounters]
    """(sender, receiver) validator indices -> the sender's counters for that link."""
    pool_levels: dict[tuple[int, int], int] = field(default_factory=dict)
    """(sender, receiver) -> keys in the sender's send pool at that instant (stock)."""

    def minus(self, earlier: Snapshot) -> dict[tuple[int, int], LinkCounters]:
        out = {}
        for key, now in self.links.items():
            then = earlier.links.get(key, LinkCounters(0, 0, 0, 0, 0))
            out[key] = LinkCounters(
                now.keys - then.keys,
                now.key_bytes - then.key_bytes,
                now.frames - then.frames,
                now.bytes_sent - then.bytes_sent,
                now.waits - then.waits,
            )
        return out


async def snapshot(urls: dict[int, str]) -> Snapshot:
    """Heights and link counters of the nodes that answer (crashed ones are left out)."""

    async def one(i: int, url: str) -> tuple[int, dict[str, Any], dict[str, Any]] | None:
        async with AsyncClient(url, timeout_s=3.0) as c:
            try:
                return i, await c.status(), await c.qkd()
            except (NodeUnavailable, OSError):
                return None

    answers = await asyncio.gather(*(one(i, u) for i, u in urls.items()))
    heights: dict[int, int] = {}
    links: dict[tuple[int, int], LinkCounters] = {}
    levels: dict[tuple[int, int], int] = {}
    for a in answers:
        if a is None:
            continue
        i, status, qkd = a
        heights[i] = int(status["height"])
        for link in qkd["links"].values():
            send = link["send"]
            transport = link.get("transport") or {}
            links[(i, int(link["peer"]))] = LinkCounters(
                int(send.get("keys_consumed", 0)),
                int(send.get("bytes_consumed", 0)),
                int(transport.get("frames_sent", send.get("frames", 0))),
                int(transport.get("bytes_sent", 0)),
                int(send.get("waits", 0)),
            )
            levels[(i, int(link["peer"]))] = int(send.get("level", 0))
    return Snapshot(time.time(), heights, links, levels)
