"""The next-height buffer (CONSENSUS.md §3.5).

Messages for the height after the current one arrive before this node has committed the
current block. They are kept, one slot per (sender, type, phase) and so at most eight per
sender, each slot holding the highest round (or ABORT level) seen, and replayed when the
height starts.
"""

from __future__ import annotations

from collections import Counter

from consensus.messages import Abort, ConsensusMessage, Done, Propose, Report, Vote


class NextBuffer:
    """At most one message per (sender, type, phase) for the next height."""

    def __init__(self) -> None:
        self.slots: dict[tuple[int, int, int], ConsensusMessage] = {}

    def add(self, j: int, m: ConsensusMessage) -> None:
        if isinstance(m, Vote):
            key, rank = (j, 1, m.phase), m.round
        elif isinstance(m, Propose):
            key, rank = (j, 0, 0), m.round
        elif isinstance(m, Report):
            key, rank = (j, 2, 0), m.round
        elif isinstance(m, Abort):
            key, rank = (j, 3, 0), m.level
        else:
            key, rank = (j, 4, 0), 0
        old = self.slots.get(key)
        if old is not None and old.height == m.height and _rank(old) >= rank:
            return
        self.slots[key] = m

    def drain(self, h: int) -> list[tuple[int, ConsensusMessage]]:
        """Empty the buffer; the messages for height `h`, by (sender, type, phase)."""
        buffered = sorted(self.slots.items(), key=lambda kv: kv[0])
        self.slots = {}
        return [(j, m) for (j, _, _), m in buffered if m.height == h]

    def most_per_sender(self) -> int:
        """The most slots one sender holds (§6 invariant 10 bounds it by 8)."""
        if not self.slots:
            return 0
        return max(Counter(j for j, _, _ in self.slots).values())


def _rank(m: ConsensusMessage) -> int:
    if isinstance(m, Abort):
        return m.level
    if isinstance(m, Done):
        return 0
    return m.round
