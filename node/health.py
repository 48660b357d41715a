"""Readiness of a validator (`/readyz`): whether it can take part in consensus now, and
if not, every reason why.

A node is not ready when its store is damaged or consensus halted, when it reaches fewer
peers than a quorum needs (a peer whose link has had no keys for KEY_STARVED_S does not
count), while it catches up, before the first block with heartbeat blocks, and when it
should have committed and did not for a while.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from consensus.params import Params
from consensus.view import EngineView
from node.alarms import Alarms
from node.chainstore import ChainStore
from node.links import Links
from node.mempool import Mempool
from node.pacing import BlockPacer
from qchain import clock
from qchain.config import TimingConfig

STALL_MIN_S = 15.0
"""A node that should have committed and did not for this long is not ready (at least;
three heartbeat intervals when they are longer)."""
KEY_STARVED_S = 3.0
"""A link whose key pool has failed to get keys for this long does not count toward the
quorum of peers that readiness needs."""


class Health:
    """The readiness checks of one validator."""

    def __init__(
        self,
        params: Params,
        timing: TimingConfig,
        chain: ChainStore,
        view: Callable[[], EngineView],
        links: Links,
        mempool: Mempool,
        pacer: BlockPacer,
        alarms: Alarms,
    ) -> None:
        self.params = params
        self.timing = timing
        self.chain = chain
        self.view = view
        self.links = links
        self.mempool = mempool
        self.pacer = pacer
        self.alarms = alarms

    def check(self) -> tuple[bool, Sequence[str]]:
        """(ready, reasons it is not ready)."""
        reasons: list[str] = []
        if self.alarms.store_corrupt is not None:
            reasons.append(f"store-corrupt: {self.alarms.store_corrupt}")
        if self.alarms.fatal is not None:
            reasons.append(f"consensus halted: {self.alarms.fatal}")
        peers = self.links.connected_peers()
        if len(peers) + 1 < self.params.q:
            reasons.append(f"connected to {len(peers)} peers, a quorum needs {self.params.q - 1}")
        ahead = self.quorum_ahead()
        if ahead > self.chain.height() + 2:
            reasons.append(f"catching up: at height {self.chain.height()}, peers at {ahead}")
        wait = self.timing.propose_wait_max_ms
        if wait is not None and self.chain.height() == 0:
            reasons.append("no block decided yet")
        stalled = self.stalled_for()
        if stalled is not None:
            reasons.append(f"no block committed for {stalled:.0f}s")
        starved = self.starved_links()
        if len([j for j in peers if j not in starved]) + 1 < self.params.q:
            reasons.append("no keys from the key manager: " + "; ".join(starved.values()))
        return not reasons, reasons

    def starved_links(self) -> dict[int, str]:
        """Peers (index -> why) whose link, either direction, has had no keys for
        KEY_STARVED_S: frames to or from them wait, so they do not count toward a quorum
        (a peer both disconnected and starved is one peer short, not two)."""
        ep = self.links.endpoint
        if ep is None:
            return {}
        out: dict[int, str] = {}
        for peer in ep.send_pools:
            for pool in (ep.send_pools[peer], ep.receive_pools[peer]):
                h = pool.health
                if h.state != "ok" and h.since is not None:
                    idle = pool.clock.now() - h.since
                    if idle > KEY_STARVED_S:
                        out[self.links.index_of_sae[peer]] = (
                            f"{peer} {h.state} for {idle:.0f}s ({h.message})"
                        )
                        break
        return out

    def quorum_ahead(self) -> int:
        """The highest height that f + 1 peers claim to have reached: at least one of them
        is honest, so one Byzantine peer's claim alone never makes this node look behind."""
        heights = sorted(self.view().peer_heights.values(), reverse=True)
        b = self.params.b
        return heights[b - 1] if len(heights) >= b else 0

    def stalled_for(self) -> float | None:
        """Seconds since the last commit, if the chain should have committed in that time:
        with heartbeat blocks always, in idle mode when a transaction was ready to include
        all along. None if not stalled."""
        if self.chain.height() == 0:
            return None
        t = self.timing
        limit = max(STALL_MIN_S, 3 * (t.propose_wait_max_ms or 0) / 1000)
        now = clock.monotonic()
        idle = now - self.pacer.last_commit_at
        if idle <= limit:
            return None
        if t.propose_wait_max_ms is None:
            oldest = min((p.seen_at for p in self.mempool.pending()), default=now)
            if now - oldest <= limit or not self.mempool.has_ready():
                return None
        return idle
