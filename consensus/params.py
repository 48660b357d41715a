"""Parameters of one validator set: sizes, thresholds and timers (CONSENSUS.md §1, §4).

`n` validators tolerate `f = (n - 1) // 3` Byzantine ones. A *quorum* is `q = n - f`
senders (any two quorums share a correct node) and a *blocking set* is `b = f + 1` senders
(it always contains a correct node). Round timeouts grow exponentially up to a cap, so that
after the network stabilises some round is long enough for a correct leader to finish.

All durations are integer milliseconds; the engine never reads a clock, it only asks the
driver to arm timers of these durations.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from qchain.config import TimingConfig
from qchain.errors import ConfigError
from qchain.limits import MAX_BLOCK_BODY


@dataclass(frozen=True)
class Params:
    """Static configuration shared by every validator of a chain."""

    n: int
    chain_id: str = "qchain-sim"
    first_leader: int = 0
    tenure: int = 64
    """`K` of §3.2: the anchor rotates at every height divisible by K."""
    base_ms: int = 100
    backoff: float = 1.5
    cap_ms: int = 2000
    propose_wait_max_ms: int | None = 20
    """Heartbeat interval; `None` selects the idle mode of §4 (no empty blocks)."""
    propose_wait_min_ms: int = 0
    """How long a leader waits after a commit before it builds (batching); in idle mode
    the round-0 timer covers this wait (§4)."""
    sync_interval_ms: int = 50
    sync_max_count: int = 64
    max_block_bytes: int = MAX_BLOCK_BODY
    """Largest block body a proposal may carry (rule 3 of §3.1); at most the codec's cap."""
    next_buffer_per_sender: int = 8
    height_window: int = 64
    """A message more than this many heights above the current one is not processed; it
    only tells that its sender is ahead (§3.5)."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError("n", "at least one validator is needed")
        if not 0 <= self.first_leader < self.n:
            raise ConfigError("first_leader", f"must be in [0, {self.n})")
        if self.tenure < 1:
            raise ConfigError("tenure", "must be at least 1")
        if self.base_ms < 1 or self.cap_ms < self.base_ms:
            raise ConfigError("cap_ms", "need 1 <= base_ms <= cap_ms")
        if self.backoff < 1.0:
            raise ConfigError("backoff", "must be >= 1")
        if self.sync_max_count < 1:
            raise ConfigError("sync_max_count", "must be >= 1")
        if self.height_window < 2:
            raise ConfigError("height_window", "must be >= 2")
        if not 0 <= self.max_block_bytes <= MAX_BLOCK_BODY:
            raise ConfigError("max_block_bytes", f"must be in [0, {MAX_BLOCK_BODY}]")

    @property
    def f(self) -> int:
        return (self.n - 1) // 3

    @property
    def q(self) -> int:
        return self.n - self.f

    @property
    def b(self) -> int:
        return self.f + 1

    def timeout_ms(self, r: int) -> int:
        """Round timer of round `r` (§4); also the retransmit period."""
        if r == 0:
            wait = self.propose_wait_max_ms
            return (self.propose_wait_min_ms if wait is None else wait) + self.base_ms
        grown = self.base_ms * self.backoff ** min(r, 64)
        return int(min(float(self.cap_ms), grown))

    def with_timing(self, t: TimingConfig) -> Params:
        """These parameters with the round timers and waits of a node's timing config."""
        return replace(
            self,
            base_ms=t.base_ms,
            backoff=t.backoff,
            cap_ms=t.cap_ms,
            propose_wait_max_ms=t.propose_wait_max_ms,
            propose_wait_min_ms=t.propose_wait_min_ms,
            sync_interval_ms=t.sync_interval_ms,
        )

    def leader(self, anchor: int, r: int) -> int:
        """`leader(h, r) = (anchor(h) + r) mod n` (§2.1)."""
        return (anchor + r) % self.n

    def next_anchor(self, height: int, anchor: int, proposer: int) -> int:
        """`anchor(height + 1)` from the anchor of `height` and its decided block (§3.2)."""
        if (height + 1) % self.tenure == 0:
            return (anchor + 1) % self.n
        return proposer % self.n
