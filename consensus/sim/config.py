"""The configuration of one simulated run: network, faults, crashes and adversaries.

A `SimConfig` together with its seed fixes a run completely (`consensus.sim.world`). Times
are integer microseconds (`MS` is one millisecond). Crash points name a moment inside one
step of a node, against the phases of the driver plan (`consensus.driver`, see
`consensus.sim.crash`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from consensus.engine import Engine
from consensus.events import Action
from consensus.messages import Block, Message
from consensus.params import Params
from consensus.sim.app import SetChange

if TYPE_CHECKING:
    from consensus.sim.byzantine import Strategy
    from consensus.sim.world import Sim

MS = 1000
FETCH_RETRY_US = 20 * MS
CRASH_POINTS = ("after_persist", "mid_send", "after_send", "before_commit", "before_durable")
"""After the durable batch; after a strict prefix of the frames; after all frames; in the
local phase, just before the first commit; after a commit was executed and the next height
started, before its synced batch is durable (`consensus.sim.crash`)."""


@dataclass(frozen=True)
class Partition:
    """From start to end, nodes in different groups cannot talk (unlisted nodes talk freely)."""

    start_us: int
    end_us: int
    groups: tuple[frozenset[int], ...]

    def cuts(self, a: int, b: int, now: int) -> bool:
        if not self.start_us <= now < self.end_us:
            return False
        ga = next((i for i, g in enumerate(self.groups) if a in g), None)
        gb = next((i for i, g in enumerate(self.groups) if b in g), None)
        return ga is not None and gb is not None and ga != gb


@dataclass(frozen=True)
class CrashSpec:
    """Crash `node` at `at_us` (or at its first step matching `trigger` after that), at
    `point` of that step; restart after `down_us` (None: never). With `up_by_us` the node
    is up again by that time: its restart is brought forward to it, and a crash still
    waiting for its step 1 ms before it is dropped."""

    node: int
    at_us: int = 0
    down_us: int | None = 50 * MS
    point: str = "now"
    trigger: Callable[[list[Action]], bool] | None = None
    dead: bool = False
    """A dead node's durable store no longer counts (it is faulty for invariant 13)."""
    up_by_us: int | None = None


@dataclass(frozen=True)
class RandomCrashes:
    """Before `until_us`, each step of one of `nodes` crashes with `prob` at a random point."""

    nodes: frozenset[int]
    prob: float
    until_us: int
    down_us: tuple[int, int] = (5 * MS, 80 * MS)
    max_down: int = 1


@dataclass(frozen=True)
class Rollback:
    """At `at_us`, `node` crashes and restarts with its durable state of `snapshot_us`."""

    node: int
    snapshot_us: int
    at_us: int
    wipe: bool = False
    amnesic: bool = False
    """The node restarts under the amnesia guard (CONSENSUS.md §3.8), as a restored
    validator does, and is held to every invariant of a correct node."""


@dataclass(frozen=True)
class Reconf:
    """Validator-set changes (CONSENSUS.md §10): the chain starts with ids
    `0..genesis_n-1`; the other ids of the run (up to `SimConfig.n - 1`) join by changes.
    Each change rides a transaction of `SimConfig.txs_us` and activates `delay` heights
    after the block that includes it (`consensus.sim.app.set_history`)."""

    genesis_n: int
    changes: tuple[SetChange, ...]
    delay: int = 2


DropFilter = Callable[["Sim", int, int, Message], bool]
EngineFactory = Callable[[Params, int], Engine]
Validity = Callable[[Block], bool]


@dataclass(frozen=True)
class SimConfig:
    n: int
    """Identities in the run: the genesis set and, with `reconf`, every id that joins."""
    seed: int
    heights: int = 3
    params: Params | None = None
    delay_us: tuple[int, int] = (2 * MS, 10 * MS)
    """Per-frame delay after GST (and before GST, on links that deliver)."""
    pre_delay_us: tuple[int, int] = (2 * MS, 10 * MS)
    loss: float = 0.0
    dup: float = 0.0
    gst_us: int = 0
    partitions: tuple[Partition, ...] = ()
    byzantine: dict[int, Strategy] = field(default_factory=dict)
    declared_faulty: frozenset[int] = frozenset()
    """Identities the invariants treat as faulty besides Byzantine and twins."""
    crashes: tuple[CrashSpec, ...] = ()
    random_crashes: RandomCrashes | None = None
    rollbacks: tuple[Rollback, ...] = ()
    twins: dict[int, tuple[frozenset[int], ...]] = field(default_factory=dict)
    """identity -> one peer set per copy; a copy talks only with the peers in its set."""
    twin_keys_cloned: bool = False
    engines: dict[int, EngineFactory] = field(default_factory=dict)
    validity: dict[int, Validity] = field(default_factory=dict)
    drop: DropFilter | None = None
    link_delay_us: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)
    commit_write_us: tuple[int, int] = (1 * MS, 3 * MS)
    """How long a commit's synced batch is in flight: the next height starts at once, the
    block is durable (and announced) at the end (pipelined heights, §3.3)."""
    commit_barrier: bool = True
    """A batch that records a decision or deletes a record waits for the commit in flight
    (`consensus.driver.waits_for_commit`). False only in the test that shows invariant 14
    catches its absence."""
    build_delay_us: int = 20 * MS
    validate_delay_us: int = 1 * MS
    deadline_us: int | None = None
    expect_live: bool = True
    trace: bool = False
    max_events: int = 2_000_000
    txs_us: tuple[int, ...] = ()
    """Submission time of each transaction (its id is its index). A transaction is forwarded
    to every validator (§4): it reaches each running node's mempool one network delay later.
    In idle mode (`propose_wait_max_ms=None`) the driver tells the engine `MempoolNonEmpty`
    when the mempool becomes non-empty and after every commit, as the node does
    (`node/accounts.py`)."""
    run_to_deadline: bool = False
    """Keep running until the deadline even when the target is met (idle-mode checks)."""
    reconf: Reconf | None = None
    """Validator-set changes; None: the set of genesis for ever (§1–§9)."""
    stable_us: int = 0
    """A lower bound for T of invariant 9, for scripted adversaries (a `drop` filter) that
    keep disrupting the network after `gst_us`."""
