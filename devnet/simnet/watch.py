"""Partners that follow each node's event stream, as `/v1/events` serves it.

One follower per node reads the node's `Subscription` (the object the HTTP handler
streams) and takes every event as soon as the loop lets it run: it never falls behind
by more than what one step of the node publishes at once. When its stream ends while
the node is up, the node dropped it; it reconnects with its last id (as the stream's
contract asks) and the drop is recorded. A node's crash ends its follower with it (the
follower's task belongs to the node, as a connection to a dead process ends); the
restarted node gets a new one, and its event ids start afresh.

The `events-followed` check: no follower was dropped, and within one life of a node the
ids a follower received are consecutive (nothing published was missed).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from devnet.faults.checkers import CheckResult
from node.runtime import Validator


@dataclass
class Follows:
    """What the followers saw, across every node's lives."""

    events: int = 0
    blocks: int = 0
    largest_block: int = 0
    """The most transactions in one block event a follower received."""
    first_seen: dict[int, tuple[float, int]] = field(default_factory=dict)
    """height -> when a node first published its block (the chain's tip reaching it),
    and its transaction count."""
    drops: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    stopping: bool = False
    """The run is over and the nodes stop (their streams end normally)."""


async def follow(name: str, v: Validator, clock: asyncio.AbstractEventLoop, f: Follows) -> None:
    """Follow v's events until the task is cancelled (v crashed) or the run ends."""
    last: int | None = None
    while True:
        stream = v.events(last)
        async for event in stream:
            if last is not None and event.id != last + 1:
                f.gaps.append(f"{name}: event {event.id} after {last} at {clock.time():.3f}s")
            last = event.id
            f.events += 1
            if event.kind == "block":
                f.blocks += 1
                txs = int(event.data["tx_count"])
                f.largest_block = max(f.largest_block, txs)
                f.first_seen.setdefault(int(event.data["height"]), (clock.time(), txs))
        if f.stopping:
            return
        f.drops.append(f"{name}: stream ended at {clock.time():.3f}s after event {last}")
        await asyncio.sleep(0.05)


def empty_block_times(f: Follows) -> list[float]:
    return [t for t, txs in f.first_seen.values() if txs == 0]


def check_events_followed(f: Follows) -> CheckResult:
    bad = f.drops + f.gaps
    summary = (
        f"{f.events} events, {f.blocks} blocks (up to {f.largest_block} txs), "
        "no follower dropped or gap"
        if not bad
        else f"{len(f.drops)} followers dropped, {len(f.gaps)} gaps"
    )
    return CheckResult(
        "events-followed", not bad, summary, tuple(bad[:20]), {"largest_block": f.largest_block}
    )
