"""The observer: samples the running network while the timeline runs, and reads every
node's chain at the end.

Every node's `/v1/status` and `/readyz` are sampled every `STATUS_EVERY_S`; `/v1/qkd`
and the key managers' counters every `QKD_EVERY_S`, beside the status loop, so nodes that
hang (their reads time out) do not stretch the status samples' cadence.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from devnet.faults import keys
from devnet.faults.history import (
    BlockView,
    ChainViews,
    History,
    KmsSample,
    QkdSample,
    ReadySample,
    StatusSample,
    link_counters_from_qkd,
)
from devnet.running import BackendError, Network
from qchain.client import AsyncClient
from qchain.errors import ApiError, CodecError, NodeUnavailable
from qchain.types import Block

STATUS_EVERY_S = 0.5
QKD_EVERY_S = 1.0


class Observer:
    def __init__(self, target: Network, history: History, clock: Callable[[], float]) -> None:
        self.target = target
        self.history = history
        self.clock = clock
        self.names = target.node_names()
        self.sae_to_node = {n.sae_id: n.name for n in target.plan.nodes}
        self.clients = {n: AsyncClient(target.api_url(n), timeout_s=2.0) for n in self.names}
        self.kme_last: dict[str, dict[str, dict[str, int]]] = {}
        """Each key manager's counters as last read."""
        self.kme_base: dict[str, dict[str, dict[str, int]]] = {}
        """Each key manager's counters before its latest restart."""

    async def status(self, name: str) -> StatusSample:
        t = self.clock()
        try:
            st = await asyncio.wait_for(self.clients[name].status(), 2.0)
        except (NodeUnavailable, ApiError, TimeoutError):
            return StatusSample(t, name, None, latency_s=round(self.clock() - t, 4))
        return StatusSample(
            t,
            name,
            int(st.get("height", 0)),
            {str(k): int(v) for k, v in (st.get("alerts") or {}).items()},
            st.get("halted"),
            round(self.clock() - t, 4),
            None if st.get("uptime_s") is None else float(st["uptime_s"]),
        )

    async def ready(self, name: str) -> ReadySample:
        t = self.clock()
        try:
            ok, reasons = await asyncio.wait_for(self.clients[name].ready(), 2.0)
        except (NodeUnavailable, ApiError, TimeoutError):
            return ReadySample(t, name, None)
        return ReadySample(t, name, ok, tuple(reasons))

    async def sample_status(self) -> list[StatusSample]:
        samples, readiness = await asyncio.gather(
            asyncio.gather(*(self.status(n) for n in self.names)),
            asyncio.gather(*(self.ready(n) for n in self.names)),
        )
        self.history.statuses.extend(samples)
        self.history.readiness.extend(readiness)
        return list(samples)

    async def qkd(self, name: str) -> QkdSample | None:
        t = self.clock()
        try:
            doc = await asyncio.wait_for(self.clients[name].qkd(), 2.0)
        except (NodeUnavailable, ApiError, TimeoutError):
            return None
        return QkdSample(t, name, link_counters_from_qkd(doc, self.sae_to_node))

    async def sample_qkd(self) -> None:
        # All nodes at once: a node that hangs must not delay the others' samples.
        for sample in await asyncio.gather(*(self.qkd(n) for n in self.names)):
            if sample is not None:
                self.history.qkd.append(sample)
        t = self.clock()
        try:
            per_kme = await asyncio.to_thread(self._kme_links)
        except (OSError, BackendError, ValueError):
            return
        self.history.kms.append(KmsSample(t, keys.sum_links(per_kme)))

    def _kme_links(self) -> list[dict[str, dict[str, int]]]:
        """Every key manager's counters, carried over its restarts (a restarted KME counts
        from zero; the keys it handed out before still count)."""
        out = []
        for kme in self.target.kme_names():
            now = keys.kme_links(self.target, kme)
            last = self.kme_last.get(kme, {})
            base = self.kme_base.get(kme, {})
            if keys.restarted(last, now):
                final = self.history.kme_at_stop.pop(kme, {})
                base = keys.carry_over(base, last, final)
                self.kme_base[kme] = base
            self.kme_last[kme] = now
            out.append(keys.sum_links([base, now]))
        return out

    async def run(self, stop: asyncio.Event) -> None:
        # Key counters are read beside the status loop, so nodes that hang (their reads
        # time out) do not stretch the status samples' cadence.
        next_qkd = 0.0
        qkd: asyncio.Task[None] | None = None
        while not stop.is_set():
            await self.sample_status()
            if self.clock() >= next_qkd and (qkd is None or qkd.done()):
                qkd = asyncio.create_task(self.sample_qkd())
                next_qkd = self.clock() + QKD_EVERY_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STATUS_EVERY_S)
        if qkd is not None:
            await qkd

    async def chains(self) -> ChainViews:
        """Every node's chain. A block that does not verify against its own header (the
        client checks tx_root) is left out and recorded in `history.bad_blocks`."""
        out: ChainViews = {}
        for name in self.names:
            bad = self.history.bad_blocks.setdefault(name, [])
            out[name] = await read_chain(self.clients[name], bad)
            if not bad:
                del self.history.bad_blocks[name]
        return out

    def follow(self, names: list[str]) -> None:
        """Sample these nodes from now on (the set changed: a site added or removed)."""
        for name in names:
            if name not in self.clients:
                self.clients[name] = AsyncClient(self.target.api_url(name), timeout_s=2.0)
        self.sae_to_node = {n.sae_id: n.name for n in self.target.plan.nodes}
        self.names = list(names)

    async def close(self) -> None:
        for c in self.clients.values():
            await c.close()


async def read_chain(client: AsyncClient, bad: list[str]) -> dict[int, BlockView]:
    """One node's chain, block by block. A block that does not verify against its own
    header (the client checks tx_root) is left out and named in `bad`."""
    blocks: dict[int, BlockView] = {}
    start = 1
    with contextlib.suppress(NodeUnavailable, ApiError):
        while True:
            try:
                page = await client.blocks(start, 100)
            except CodecError:
                page, full = await _one_by_one(client, start, 100, bad)
            else:
                full = len(page) == 100
            for b in page:
                blocks[b.height] = BlockView(
                    b.height,
                    b.hash.hex(),
                    b.header.app_hash.hex(),
                    tuple(tx.hash.hex() for tx in b.txs),
                )
            if not full:
                break
            start += 100
    return blocks


async def _one_by_one(
    client: AsyncClient, start: int, count: int, bad: list[str]
) -> tuple[list[Block], bool]:
    """The blocks start..start+count-1 one at a time, naming in `bad` those that do not
    verify. Returns the good ones and whether the node had the whole range."""
    good: list[Block] = []
    for h in range(start, start + count):
        try:
            page = await client.blocks(h, 1)
        except CodecError as e:
            bad.append(f"height {h}: {e.message}")
            continue
        if not page:
            return good, False
        good += page
    return good, True
