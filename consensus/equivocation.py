"""Equivocation watch: two values voted in one (height, round, phase) (CONSENSUS.md §1, §6).

Correct nodes never vote for two values in one (height, round, phase): phase 1 follows the
one proposal, a later phase needs a quorum and two quorums share a correct node. So two
values seen there mean a leader sent different proposals to different nodes, or a voter
sent different votes. With MACs instead of signatures nobody can prove who lied (§1), but
every honest node that sees both values reports it, as the alert `equivocation-suspected`.

The detector is pure: the driver shows it every vote it sends or receives, with the height
it has committed and its current round, and performs the alerts it returns. What it keeps
is bounded whatever peers send: heights from the one below the last committed to two above
it, rounds up to `VOTE_WATCH_ROUNDS` above the current one, two values per
(height, round, phase); heights below the committed one go at each commit.
"""

from __future__ import annotations

from consensus.events import Alert
from consensus.messages import Vote

VOTE_WATCH_ROUNDS = 64
"""Votes more than this many rounds above the current one are not watched."""

EQUIVOCATION_SUSPECTED = "equivocation-suspected"


class EquivocationDetector:
    """Remembers up to two voted values per (height, round, phase) in a bounded window."""

    def __init__(self, watch_rounds: int = VOTE_WATCH_ROUNDS) -> None:
        self.watch_rounds = watch_rounds
        self._values: dict[tuple[int, int, int], dict[bytes, int]] = {}
        """(height, round, phase) -> value -> the first validator seen voting it."""

    def observe(self, sender: int, vote: Vote, committed: int, current_round: int) -> list[Alert]:
        """A vote from `sender` (this node's own included); the alerts it raises."""
        if not committed - 1 <= vote.height <= committed + 2:
            return []
        if vote.round > current_round + self.watch_rounds:
            return []
        key = (vote.height, vote.round, vote.phase)
        seen = self._values.setdefault(key, {})
        if vote.value in seen or len(seen) >= 2:
            return []
        seen[vote.value] = sender
        if len(seen) < 2:
            return []
        first, second = seen.items()
        return [
            Alert(
                EQUIVOCATION_SUSPECTED,
                f"height {vote.height} round {vote.round} phase {vote.phase}: "
                f"validator {first[1]} voted {first[0].hex()[:12]}, "
                f"validator {second[1]} voted {second[0].hex()[:12]}",
            )
        ]

    def on_commit(self, height: int) -> None:
        """Block `height` is committed: forget the heights below `height - 1`."""
        for k in [k for k in self._values if k[0] < height - 1]:
            del self._values[k]

    def size(self) -> int:
        """Values held (for tests of the bound)."""
        return sum(len(v) for v in self._values.values())
