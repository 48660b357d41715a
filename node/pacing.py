"""When a leader builds its block and how many transactions it may hold; how a proposal's
block is validated and judged timely.

A leader builds as soon as transactions wait (but not before `propose_wait_min` since the
last commit, nor before the key budget of its links allows: `node.keypacing`), or at the
heartbeat (`propose_wait_max`); in idle mode it waits for a transaction, and in a round
above 0 it builds at once. The block cap comes from a cost model: a moving average of
what executing a transaction costs on this node, so that a block never takes longer to
validate than BLOCK_TIME_SHARE of the round's timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from consensus.events import BlockBuilt, BlockValidated, BuildBlock, Event
from consensus.messages import Block as CBlock
from consensus.messages import block_hash as consensus_value
from consensus.params import Params
from node.alarms import Alarms
from node.byzantine import ByzantineSwitch
from node.chain import ChainApp, next_block_time
from node.keypacing import KeyPacer, LinkKeys
from node.mempool import Mempool
from node.metrics import NodeMetrics
from node.sigcache import SignatureCache
from qchain import clock
from qchain.config import MempoolSection, TimingConfig
from qchain.errors import InvalidBlock, QChainError
from qchain.types import Transaction

log = logging.getLogger("qchain.node")

INITIAL_PER_TX_S = 0.0005
"""Execution cost per transaction assumed until this node has measured its own."""
BLOCK_TIME_SHARE = 0.25
"""A block holds at most as many transactions as validating it takes this share of the
round timeout, so validation never outlasts the round (see `BlockPacer.block_tx_cap`)."""


class BlockPacer:
    """Block building and validation for one validator."""

    def __init__(
        self,
        timing: TimingConfig,
        limits: MempoolSection,
        params: Params,
        app: ChainApp,
        mempool: Mempool,
        sig_cache: SignatureCache,
        metrics: NodeMetrics,
        alarms: Alarms,
        byzantine: ByzantineSwitch,
        feed: Callable[[Event], None],
        *,
        link_keys: Callable[[], Mapping[int, LinkKeys]] | None = None,
    ) -> None:
        """link_keys: what this node sees of its links' keys, for key-aware pacing (None:
        not paced by keys)."""
        self.timing = timing
        self.limits = limits
        self.params = params
        self.me = byzantine.me
        self.app = app
        self.mempool = mempool
        self.sig_cache = sig_cache
        self.metrics = metrics
        self.alarms = alarms
        self.byzantine = byzantine
        self.feed = feed
        self.pending: BuildBlock | None = None
        """The block the engine asked for and this node has not built yet."""
        self.last_commit_at = clock.monotonic()
        self.per_tx_s = INITIAL_PER_TX_S
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.link_keys = link_keys
        heartbeat_ms = timing.propose_wait_max_ms or timing.base_ms
        self.keys = KeyPacer(max_interval_s=heartbeat_ms / 1000)
        self.last_built_at: float | None = None
        self.refuse: Callable[[Transaction], None] = lambda tx: None
        """The node's rule on what it votes for (`ChainSets.refuse_rotation`): raises for
        a transaction that no block may carry; this node leaves such a transaction out of
        its blocks and votes for no proposal that carries one."""

    def cancel_timers(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None

    def committed(self, now: float) -> float:
        """A block was committed at `now`: the seconds since the one before."""
        interval = now - self.last_commit_at
        self.last_commit_at = now
        return interval

    def request_build(self, a: BuildBlock) -> None:
        """Build now if transactions wait (after propose_wait_min since the last commit),
        or at the heartbeat (propose_wait_max); in idle mode wait for a transaction. In a
        round above 0 build at once."""
        self.pending = a
        t = self.timing
        if self.link_keys is not None:
            self.keys.observe(clock.monotonic(), a.height - 1, self.link_keys())
        if a.round > 0:
            # A round change happened: the round's leader must propose now, even an empty
            # block, or the round times out again.
            self._deadline = clock.monotonic()
        elif t.propose_wait_max_ms is None:
            self._deadline = None
        else:
            self._deadline = self.last_commit_at + t.propose_wait_max_ms / 1000
        self.maybe_build()

    def maybe_build(self) -> None:
        a = self.pending
        if a is None:
            return
        if a.height <= self.app.tip()[0]:
            # Committed meanwhile (another round's block, or caught up) while this build
            # waited for its time: nothing to build, and nothing went wrong.
            self.pending = None
            return
        now = clock.monotonic()
        earliest = self.last_commit_at + self.timing.propose_wait_min_ms / 1000
        if a.round == 0 and self.last_built_at is not None:
            earliest = max(earliest, self.last_built_at + self.keys.min_interval_s())
        due = max(earliest, now) if self.mempool.has_ready() else self._deadline
        if due is None:
            return
        if due > now:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_later(due - now, self.maybe_build)
            return
        self.pending = None
        self.last_built_at = now
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        txs = self.mempool.reap(self.block_tx_cap(a.round), self.limits.max_block_bytes)
        txs = [tx for tx in txs if self._refusal(tx) is None]
        started = clock.perf()
        now_ms = self.byzantine.block_time_ms()
        try:
            prepared = self.app.build(a.height, a.round, a.parent_hash, self.me, txs, now_ms)
        except QChainError as e:
            self.alarms.alert("build-failed", e.message)
            return
        # Peers validating this block check the signatures this node had cached: price
        # them in, or a stable leader sizes blocks by its own cheap builds alone.
        self.observe_execution(clock.perf() - started, len(txs), len(txs) * self.sig_cache.verify_s)
        self.feed(BlockBuilt(a.height, a.round, prepared.cblock))

    def observe_execution(self, seconds: float, txs: int, unchecked_s: float = 0.0) -> None:
        """seconds: what executing a block of txs took here; unchecked_s: what its
        signature checks would have added without this node's cache."""
        self.metrics.execution_block_duration.observe(seconds)
        if txs >= 10:
            # Moving average of the cost per transaction, rising fast and falling slowly
            # so that a slow spell shrinks blocks at once.
            sample = (seconds + unchecked_s) / txs
            weight = 0.5 if sample > self.per_tx_s else 0.1
            self.per_tx_s += weight * (sample - self.per_tx_s)

    def block_tx_cap(self, rnd: int) -> int:
        """How many transactions the next block may hold: the configured maximum, cut so
        that executing the block takes at most BLOCK_TIME_SHARE of the round's timeout.
        Otherwise, on a slow machine, a big block can take longer to validate than any
        round lasts and no round decides."""
        window_s = self.params.timeout_ms(rnd) / 1000
        by_time = int(window_s * BLOCK_TIME_SHARE / max(self.per_tx_s, 1e-6))
        return max(1, min(self.limits.max_block_txs, by_time))

    def validate(self, cblock: CBlock) -> None:
        value = consensus_value(cblock)
        started = clock.perf()
        timely = True
        try:
            prepared = self.app.validate(cblock)
            ok = True
        except (InvalidBlock, QChainError) as e:
            log.info("block %s at height %d is invalid: %s", value.hex()[:12], cblock.height, e)
            ok = False
        if ok:
            refused = next(
                (e for e in map(self._refusal, prepared.block.txs) if e is not None), None
            )
            if refused is not None:
                # Valid by the contracts, refused by the node's rule: no vote, so that a
                # Byzantine leader cannot get it decided (CONSENSUS.md, Revision 1.20).
                self.alarms.alert(
                    "refused-proposal",
                    f"height {cblock.height} round {cblock.round} from {cblock.proposer}: "
                    f"{refused.message}",
                )
                ok = False
        if ok:
            self.observe_execution(clock.perf() - started, len(prepared.block.txs))
            timely = self.timely(prepared.block.header.time, cblock.round)
            if not timely:
                self.alarms.alert(
                    "untimely-proposal",
                    f"height {cblock.height} round {cblock.round} from {cblock.proposer}: "
                    f"time {prepared.block.header.time}, local {int(clock.wall() * 1000)}",
                )
        self.feed(BlockValidated(value, ok, timely))

    def _refusal(self, tx: Transaction) -> QChainError | None:
        try:
            self.refuse(tx)
        except QChainError as e:
            return e
        return None

    def timely(self, block_ms: int, rnd: int) -> bool:
        """Proposer-based timestamps (CONSENSUS.md §3.7): a fresh proposal's time is within
        [local - precision - delay, local + precision], or it is the earliest time the
        parent allows when the parent's time is not behind our clock (a chain whose last
        block is in the future goes on at one millisecond a block)."""
        local = int(clock.wall() * 1000)
        t = self.timing
        if t.timely(block_ms, local, rnd):
            return True
        parent_ms = self.app.tip()[3]
        return parent_ms >= local - t.clock_precision_ms and block_ms == next_block_time(
            parent_ms, parent_ms
        )
