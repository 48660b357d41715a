"""One Byzantine validator against three honest ones, in one event loop over real TCP: it
uses its own real transport and QKD keys, so every frame it sends verifies. Each test is
one attack found against a live devnet; the honest nodes must keep committing and keep
telling the truth on /readyz (CONSENSUS.md §3.5, §3.7; docs/SECURITY.md)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from consensus.equivocation import VOTE_WATCH_ROUNDS
from consensus.messages import SyncResp, Vote, encode_message
from devnet.testing import inproc_network
from node.chain import MAX_BLOCK_TIME_MS
from node.runtime import Validator
from node.wire import Envelope, Kind
from qchain.qkd.testing import wait_until

FAR = 2**64 - 1


@pytest.fixture
async def network(tmp_path: Path) -> AsyncIterator[list[Validator]]:
    async with inproc_network(tmp_path, heartbeat_ms=200) as nodes:
        await wait_until(lambda: all(v.chain.height() >= 1 for v in nodes), timeout=20)
        yield nodes


def _send_consensus(byz: Validator, msg: Any) -> None:
    """Send msg from byz to every peer over its real, keyed transport."""
    assert byz.transport is not None
    env = Envelope(Kind.CONSENSUS, encode_message(msg))
    for j in range(byz.params.n):
        if j != byz.me:
            byz.transport.send(j, env)


async def _drained(v: Validator) -> None:
    assert v.transport is not None
    out = v.transport._out
    await wait_until(lambda: all(len(p.queue) < 100 for p in out.values()), timeout=20)


async def _keeps_committing(nodes: list[Validator], blocks: int, timeout: float = 30) -> None:
    start = max(v.chain.height() for v in nodes)
    await wait_until(lambda: all(v.chain.height() >= start + blocks for v in nodes), timeout)


async def test_one_vote_claiming_a_far_height_does_not_make_anyone_catch_up(
    network: list[Validator],
) -> None:
    byz, honest = network[3], network[:3]
    _send_consensus(byz, Vote(byz.chain_id, FAR, 0, 1, b"\x01" * 32))
    _send_consensus(byz, SyncResp(byz.chain_id, FAR - 5, (b"\x02" * 32,) * 5))
    await wait_until(lambda: all(3 in v.engine.view().peer_heights for v in honest), timeout=10)
    await _keeps_committing(honest, 3)
    for v in honest:
        view = v.engine.view()
        assert view.peer_heights[3] <= view.height + v.params.height_window
        ready, reasons = v.health()
        assert ready, reasons
        assert v.status()["syncing"] is False


async def test_vote_flood_keeps_the_equivocation_watch_bounded(
    network: list[Validator],
) -> None:
    byz, honest = network[3], network[:3]
    h = byz.chain.height() + 1
    sent = 0
    for r in range(20_000):
        _send_consensus(byz, Vote(byz.chain_id, FAR - r, r, 1 + r % 4, r.to_bytes(32, "big")))
        _send_consensus(byz, Vote(byz.chain_id, h, r, 1 + r % 4, r.to_bytes(32, "big")))
        sent += 2
        if r % 200 == 0:
            # The transport queue holds 1,024 messages a peer: let it drain, so that the
            # flood reaches the peers instead of being dropped at the sender.
            await _drained(byz)
    await _drained(byz)
    assert sent == 40_000
    await _keeps_committing(honest, 3)
    bound = 4 * (VOTE_WATCH_ROUNDS + 64) * 4
    for v in honest:
        # Two values at most per (height, round, phase) in the watched window.
        assert v.driver.equivocation.size() <= 2 * bound, v.driver.equivocation.size()
        started = time.perf_counter()
        v.status()
        v.health()
        assert time.perf_counter() - started < 0.5


async def test_leader_with_a_time_past_the_limit_cannot_end_the_chain(
    network: list[Validator],
) -> None:
    """The Byzantine node builds every block it proposes with time 2^64 - 1 (and then with
    the last representable time): honest nodes refuse both, and once it leads no more the
    chain goes on with honest times."""
    byz, honest = network[0], network[1:]
    real_build = byz.app.build
    times = iter([FAR, MAX_BLOCK_TIME_MS] * 1000)
    built: list[int] = []

    def hostile_build(*args: Any, now_ms: int | None = None) -> Any:
        built.append(next(times))
        return real_build(*args[:5], now_ms=built[-1])

    byz.app.build = hostile_build  # type: ignore[method-assign]
    start = max(v.chain.height() for v in honest)
    await _keeps_committing(honest, 4, timeout=40)
    now_ms = int(time.time() * 1000)
    for v in honest:
        top = v.chain.height()
        for h in range(start, top + 1):
            block = v.chain.block(h)
            assert block is not None
            assert block.header.time <= now_ms + v.cfg.timing.clock_precision_ms
    assert built, "the Byzantine leader never built a block"


async def test_leader_with_a_future_time_gets_no_votes(network: list[Validator]) -> None:
    """A time an hour ahead is valid but not timely: no honest vote, a round change, and
    the next leader's block commits."""
    byz, honest = network[0], network[1:]
    real_build = byz.app.build

    built: list[int] = []

    def hostile_build(*args: Any, now_ms: int | None = None) -> Any:
        built.append(int(time.time() * 1000) + 3_600_000)
        return real_build(*args[:5], now_ms=built[-1])

    byz.app.build = hostile_build  # type: ignore[method-assign]
    start = max(v.chain.height() for v in honest)
    await _keeps_committing(honest, 3, timeout=40)
    later = int(time.time() * 1000) + 60_000
    for v in honest:
        for h in range(start + 1, v.chain.height() + 1):
            block = v.chain.block(h)
            assert block is not None and block.header.time < later
    assert built, "the Byzantine leader never built a block"
    assert any(v.alarms.counts.get("untimely-proposal") for v in honest)
