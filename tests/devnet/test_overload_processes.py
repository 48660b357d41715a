"""Admission control on a real devnet: four validator processes and the key manager on
127.0.0.1, blocks capped small so that the chain saturates, and clients that offer far
more than it commits for several seconds, each sender holding its later nonces while a
refused one waits for its `Retry-After` (as the bench's load generator does).

- the nodes refuse with `overloaded`, each refused item carrying `retry_after` and the
  batch answer a `Retry-After` header (whole seconds, at least 1, at most the bound in
  force); nothing is refused for any other reason;
- every accepted transaction commits (once offering stops, clients send what was
  refused again until it is accepted), and none waits unboundedly: a generous bound on
  the time from acceptance to commit, far below what an unbounded pool of this size
  would queue at this commit rate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgpack
import pytest

from devnet.bench.workload import add_bench_members, sender_key
from devnet.kms import write_kms_files
from devnet.local import LocalNetwork
from devnet.network import plan_network, write_network
from devnet.testing import anchor_tx
from qchain.keys import SigningKey
from qchain.types import Transaction

pytestmark = pytest.mark.slow
SCHEME = "ed25519"
NODES = 4
SENDERS_PER_NODE = 6
BLOCK_TXS = 10
"""A block holds at most this many: the chain commits a few hundred a second at most."""
BOUND_MS = 1000
OFFER_S = 8.0
TICK_S = 0.05
PER_SENDER_PER_TICK = 4
"""Offered: 4 nodes x 6 senders x 4 per 50 ms = 1,920 tx/s."""
COMMIT_WAIT_S = 30.0
"""Generous: the longest an accepted transaction may wait for its commit."""


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    directory = tmp_path_factory.mktemp("overload")
    plan = plan_network(base_port=None, scheme=SCHEME, heartbeat_ms=300)
    write_network(directory, plan)
    write_kms_files(directory, plan)
    add_bench_members(directory, plan, NODES * SENDERS_PER_NODE)
    for n in plan.nodes:
        path = directory / "nodes" / n.name / "config.toml"
        text = path.read_text()
        text = text.replace(
            'log_format = "text"\n', f'log_format = "text"\nadmission_bound_ms = {BOUND_MS}\n', 1
        )
        path.write_text(text + f"\n[mempool]\nmax_block_txs = {BLOCK_TXS}\n")
    net = LocalNetwork(directory)
    try:
        net.start_all(min_height=1)
        yield net
    finally:
        net.stop()


@dataclass
class Sender:
    key: SigningKey
    chain_id: str
    accepted: dict[int, float] = field(default_factory=dict)
    """Nonce -> when the node accepted it (monotonic)."""
    blocked_until: float = 0.0
    txs: dict[int, Transaction] = field(default_factory=dict)

    def tx(self, nonce: int) -> Transaction:
        if nonce not in self.txs:
            digest = self.key.address[:16] + nonce.to_bytes(16, "big")
            self.txs[nonce] = anchor_tx(self.key, self.chain_id, nonce, digest)
        return self.txs[nonce]

    def first_missing(self) -> int:
        n = 0
        while n in self.accepted:
            n += 1
        return n

    def due(self, limit: int, until: int | None = None) -> list[int]:
        """Up to `limit` nonces to send now, from the first not accepted (up to `until`
        exclusive)."""
        if time.monotonic() < self.blocked_until:
            return []
        first = self.first_missing()
        stop = first + limit if until is None else min(first + limit, until)
        return [n for n in range(first, stop) if n not in self.accepted]


@dataclass
class Tally:
    accepted: int = 0
    refused: int = 0
    batches_refused: int = 0
    retry_headers: list[int] = field(default_factory=list)
    retry_items: list[int] = field(default_factory=list)
    other_problems: list[str] = field(default_factory=list)


async def _post(
    session: aiohttp.ClientSession, url: str, slots: list[tuple[Sender, int]], tally: Tally
) -> None:
    body = msgpack.packb([s.tx(n).encode() for s, n in slots], use_bin_type=True)
    async with session.post(
        f"{url}/v1/txs/batch", data=body, headers={"Content-Type": "application/msgpack"}
    ) as resp:
        assert resp.status == 200, await resp.text()
        doc = await resp.json()
        header = resp.headers.get("Retry-After")
    now = time.monotonic()
    refused_here = False
    for (s, n), r in zip(slots, doc["results"], strict=True):
        problem = r.get("problem")
        if problem is None:
            s.accepted[n] = now
            tally.accepted += 1
            continue
        slug = str(problem["type"]).rsplit("/", 1)[-1]
        if slug != "overloaded":
            tally.other_problems.append(f"{slug}: {problem.get('detail')}")
            continue
        refused_here = True
        tally.refused += 1
        tally.retry_items.append(problem["retry_after"])
        s.blocked_until = max(s.blocked_until, now + problem["retry_after"])
    if refused_here:
        tally.batches_refused += 1
        assert header is not None, "a batch with refused items says when to come back"
        tally.retry_headers.append(int(header))


async def _offer(net: LocalNetwork, senders: list[list[Sender]], tally: Tally) -> None:
    urls = [n.api_url for n in net.plan.nodes]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        end = time.monotonic() + OFFER_S
        while time.monotonic() < end:
            started = time.monotonic()
            posts = []
            for url, mine in zip(urls, senders, strict=True):
                slots = [(s, n) for s in mine for n in s.due(PER_SENDER_PER_TICK)]
                if slots:
                    posts.append(_post(session, url, slots, tally))
            await asyncio.gather(*posts)
            await asyncio.sleep(max(0.0, TICK_S - (time.monotonic() - started)))
        # Offering stopped: what was refused below an accepted nonce goes again until
        # accepted, so that every accepted transaction can commit.
        deadline = time.monotonic() + 60.0
        while True:
            gaps = [
                [(s, n) for s in mine for n in s.due(1000, max(s.accepted, default=-1))]
                for mine in senders
            ]
            if not any(gaps) and all(
                s.first_missing() > max(s.accepted, default=-1) for mine in senders for s in mine
            ):
                return
            assert time.monotonic() < deadline, "refused transactions never accepted"
            await asyncio.gather(
                *(_post(session, url, g, tally) for url, g in zip(urls, gaps, strict=True) if g)
            )
            await asyncio.sleep(0.2)


async def _committed_nonce(session: aiohttp.ClientSession, url: str, s: Sender) -> int:
    async with session.get(f"{url}/v1/accounts/{s.key.address.hex()}") as resp:
        doc: dict[str, Any] = await resp.json()
        return int(doc["nonce"])


async def _wait_commits(net: LocalNetwork, senders: list[Sender]) -> dict[int, float]:
    """Per sender index, when its last accepted nonce was seen committed."""
    url = net.plan.nodes[0].api_url
    done: dict[int, float] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        deadline = time.monotonic() + COMMIT_WAIT_S + 30.0
        while len(done) < len(senders):
            for i, s in enumerate(senders):
                if i in done:
                    continue
                if await _committed_nonce(session, url, s) > max(s.accepted, default=-1):
                    done[i] = time.monotonic()
            assert time.monotonic() < deadline, "accepted transactions did not commit"
            await asyncio.sleep(0.2)
    return done


async def test_overload_is_refused_with_retry_after_and_what_is_accepted_commits(
    devnet: LocalNetwork,
) -> None:
    chain_id = devnet.plan.chain_id
    senders = [
        [
            Sender(sender_key(j * SENDERS_PER_NODE + k, SCHEME), chain_id)
            for k in range(SENDERS_PER_NODE)
        ]
        for j in range(NODES)
    ]
    tally = Tally()
    await _offer(devnet, senders, tally)
    flat = [s for mine in senders for s in mine]
    done = await _wait_commits(devnet, flat)

    assert tally.other_problems == [], tally.other_problems[:5]
    assert tally.refused > 0 and tally.batches_refused > 0, "the chain was never overloaded"
    assert all(1 <= r <= 30 for r in tally.retry_items + tally.retry_headers)
    # Every accepted transaction committed, the last of each sender's within a generous
    # bound of its acceptance (an unbounded pool would hold nearly all that was offered:
    # minutes at this commit rate).
    for i, s in enumerate(flat):
        assert sorted(s.accepted) == list(range(len(s.accepted))), "no gap left behind"
        waited = done[i] - s.accepted[len(s.accepted) - 1]
        assert waited < COMMIT_WAIT_S, (i, waited)
    url = devnet.plan.nodes[0].api_url
    async with aiohttp.ClientSession() as session:
        on_chain = [await _committed_nonce(session, url, s) for s in flat]
    assert on_chain == [len(s.accepted) for s in flat], "exactly what was accepted"
    assert sum(on_chain) > BLOCK_TXS * 10
