"""The state of one height: the persistent record and the volatile per-sender slots (§2.3).

The engine keeps one `Instance` per live height (at most two, §3.6, plus one decided
instance per set change whose last old height has not terminated, §10.3). The `Record` is
what is persisted and survives a restart; everything else is rebuilt from the messages that
arrive after it. Each member of the height's set has one slot per vote phase, one REPORT,
one ABORT level and one DONE, so what a sender can make the instance hold is bounded (§3.5).
"""

from __future__ import annotations

from collections import Counter

from consensus.events import Action, TimerKey
from consensus.messages import Block, Record, Report
from consensus.sets import VSet


def round_timer(h: int) -> TimerKey:
    return TimerKey("round", h)


def retx_timer(h: int) -> TimerKey:
    return TimerKey("retx", h)


class Instance:
    """State of one height: the persistent record and the volatile per-sender slots."""

    __slots__ = (
        "abort_of",
        "commit_emitted",
        "counts",
        "done_of",
        "h",
        "member",
        "next_known",
        "next_vs",
        "onces",
        "proposals",
        "rec",
        "report_slot",
        "terminated",
        "timer_armed",
        "timer_fired",
        "vote_slot",
        "vs",
    )

    def __init__(self, rec: Record, vs: VSet, next_vs: VSet, me: int) -> None:
        self.rec = rec
        self.h = rec.height
        self.vs = vs
        """`V(h)`: every count, leader and broadcast of this height is over it (§10.3)."""
        self.next_vs = next_vs
        """`V(h+1)`: the anchor of the next height and the DONEs owed to joiners (§10.4)."""
        self.next_known = True
        """False while `next_vs` is a stand-in (a record restored above the committed
        height + 1, §10.2): the height is not committed until `StartHeight(h)` tells it."""
        self.member = me in vs
        """False: a learner's instance, which only counts DONE claims (§10.3, Learners)."""
        self.proposals: dict[int, tuple[int, bytes, Block]] = {}
        """round -> (sender, value, block): the first PROPOSE of that round's leader."""
        self.vote_slot: dict[int, list[tuple[int, bytes] | None]] = {j: [None] * 4 for j in vs.ids}
        self.counts: Counter[tuple[int, int, bytes]] = Counter()
        """(phase, round, value) -> number of senders whose slot holds it."""
        self.report_slot: dict[int, Report] = {}
        self.abort_of: dict[int, int] = {}
        self.done_of: dict[int, bytes] = {}
        self.onces: set[tuple[object, ...]] = set()
        self.terminated = False
        self.commit_emitted = False
        self.timer_armed = False
        self.timer_fired = 0

    @property
    def changes(self) -> bool:
        """The set changes after this height: `V(h+1) != V(h)` (§10.3, termination)."""
        return self.next_vs != self.vs

    def peers(self, me: int) -> tuple[int, ...]:
        """The other members of `V(h)`: where this height's broadcasts go."""
        return self.vs.others(me)

    def done_peers(self, me: int) -> tuple[int, ...]:
        """Who is owed our DONE of h: the other members of `V(h)`, and the joiners of
        `V(h+1)` (they learn h from it, §10.3 Learners, 10.6 L4)."""
        if not self.changes:
            return self.vs.others(me)
        return tuple(sorted((self.vs.members | self.next_vs.members) - {me}))

    def once(self, key: tuple[object, ...], action: Action) -> list[Action]:
        if key in self.onces:
            return []
        self.onces.add(key)
        return [action]

    def reports(self, r: int) -> dict[int, Report]:
        return {j: rep for j, rep in self.report_slot.items() if rep.round == r}

    def values_with_quorum(self, k: int, r: int, q: int) -> list[bytes]:
        return sorted(v for (kk, rr, v), c in self.counts.items() if kk == k and rr == r and c >= q)
