"""The state of one height: the persistent record and the volatile per-sender slots (§2.3).

The engine keeps one `Instance` per live height (at most two, §3.6). The `Record` is what
is persisted and survives a restart; everything else is rebuilt from the messages that
arrive after it. Each sender has one slot per vote phase, one REPORT, one ABORT level and
one DONE, so what a sender can make the instance hold is bounded (§3.5).
"""

from __future__ import annotations

from collections import Counter

from consensus.events import Action, TimerKey
from consensus.messages import Block, Record, Report


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
        "onces",
        "proposals",
        "rec",
        "report_slot",
        "terminated",
        "timer_armed",
        "timer_fired",
        "vote_slot",
    )

    def __init__(self, rec: Record, n: int) -> None:
        self.rec = rec
        self.h = rec.height
        self.proposals: dict[int, tuple[int, bytes, Block]] = {}
        """round -> (sender, value, block): the first PROPOSE of that round's leader."""
        self.vote_slot: list[list[tuple[int, bytes] | None]] = [[None] * 4 for _ in range(n)]
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

    def once(self, key: tuple[object, ...], action: Action) -> list[Action]:
        if key in self.onces:
            return []
        self.onces.add(key)
        return [action]

    def reports(self, r: int) -> dict[int, Report]:
        return {j: rep for j, rep in self.report_slot.items() if rep.round == r}

    def values_with_quorum(self, k: int, r: int, q: int) -> list[bytes]:
        return sorted(v for (kk, rr, v), c in self.counts.items() if kk == k and rr == r and c >= q)
