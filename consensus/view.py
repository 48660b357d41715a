"""What outsiders may read of an engine: a frozen snapshot taken by `Engine.view()`.

The node (status, metrics, leader tracking, equivocation watch) and the simulator (its
checks and scripted adversaries) read the engine only through this snapshot, never its
attributes, so the engine's internals can change without breaking them. Taking a view
does not change the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from consensus.messages import Record, Summary


@dataclass(frozen=True)
class InstanceView:
    """One live height: its persistent record and how much peers made it hold."""

    record: Record
    terminated: bool
    proposals: int
    """PROPOSEs held, for the current and later rounds (§3.5 bounds them by n + 1)."""
    reports: int
    """REPORTs held, one per sender."""
    members: tuple[int, ...] = ()
    """`V(h)`, the ids of the set this instance counts over (§10.3)."""
    member: bool = True
    """False: a learner's instance (this node is not in `V(h)`), which only counts DONEs."""

    @property
    def height(self) -> int:
        return self.record.height

    @property
    def round(self) -> int:
        return self.record.round

    @property
    def abort_level(self) -> int:
        return self.record.abort_level

    @property
    def anchor(self) -> int:
        return self.record.anchor

    @property
    def decided(self) -> bytes | None:
        return self.record.decided

    @property
    def summaries(self) -> tuple[Summary, ...]:
        return self.record.s


@dataclass(frozen=True)
class Footprint:
    """Sizes of the engine-wide tables a peer can grow (§3.5, §3.6; §6 invariant 10)."""

    next_buffer_per_sender: int
    """The most next-height buffer slots one sender holds."""
    claims: int
    """SYNC_RESP claims kept for heights not started."""
    blocks: int
    """Bodies in the engine's cache."""
    verdicts: int
    """Cached validation verdicts."""


@dataclass(frozen=True)
class EngineView:
    """A snapshot of one engine."""

    height: int
    """The current consensus height (the highest started instance)."""
    committed: int
    """The highest height the engine knows committed."""
    round: int | None
    """The round of the current height's instance; None if it has none."""
    leader: int | None
    """The leader of that round; None if there is no current instance."""
    decided: bytes | None
    """The value the current height's instance decided, if it did."""
    idle_mode: bool
    """No heartbeat blocks: the leader waits for transactions (§4)."""
    peer_heights: Mapping[int, int]
    """peer -> height it showed, at most height + `height_window` (§3.5)."""
    instances: tuple[InstanceView, ...]
    """The live instances, by height."""
    footprint: Footprint
    not_member: int = 0
    """Consensus messages dropped because their sender is not in the set of their
    height (§10.3, `not-member`)."""

    def instance(self, h: int) -> InstanceView | None:
        return next((i for i in self.instances if i.height == h), None)
