"""The amnesia guard: a node that lost its consensus records votes again only above every
height it may have voted in before (CONSENSUS.md §3.8).

A restore from a backup, a rebuild from peers, or any start whose store no longer holds
the records of §2.3 (a rolled-back disk) leaves the node without the votes it cast. Voting
again in one of those heights could contradict them: to its peers that is equivocation,
a Byzantine fault the node did not mean to commit. The guard keeps the node silent in
those heights:

- While *unsettled*, the node sends no PROPOSE, VOTE, REPORT or ABORT at all. It still
  catches up (SYNC_REQ, DONE, bodies) and commits what others decide.
- Each *live* message a peer sends after the restart (PROPOSE, VOTE, REPORT, ABORT,
  SYNC_REQ) names a height that peer has reached, less one at most (at most two instances
  are live, §3.6). The guard keeps, per peer, the highest such height.
- The guard *settles* once 2f+1 distinct peers have each shown a height within the
  node's window (at most `height_window` above its own height). It then abstains at every
  height up to `A = max + 2`, the max over the peers within the window, and votes as usual
  above A. A is written synced before the first vote above it.

Why A covers every old vote: the old incarnation voted at height h only after deciding
h − 1 (or learning that a correct node had), which took q = n − f phase-4 votes at
h − 1; at least q − f − 1 = n − 2f − 1 of those voters are correct peers other than this
node, and a correct node's height never goes down, so from the restart on each of them is
at h − 1 or above and sends live messages only for heights ≥ h − 2. Any 2f + 1 of the
n − 1 peers include one of them (2f + 1 + n − 2f − 1 > n − 1), so max + 2 ≥ h. A peer
whose shown height is above the window is left out; every set of 2f + 1 peers within the
window still contains one of those correct peers, or no such set exists yet and the node
keeps catching up.

Cost: a Byzantine peer can raise A by at most the window, and while fewer than 2f + 1
peers speak the node stays silent; an amnesic node counts against f until it settles
(with n = 3f + 1 and f Byzantine peers silent, settling waits for them).
"""

from __future__ import annotations

from consensus.messages import Abort, Message, Propose, Report, SyncReq, Vote
from consensus.params import Params

LIVE = (Propose, Vote, Report, Abort, SyncReq)
"""Messages that name a height their sender is at (or one below), not one it finished."""
SPEAKS = (Propose, Vote, Report, Abort)
"""Messages that speak for the sender's voting record: silenced at abstained heights."""
MARGIN = 2
"""A peer at height c may still send for c − 1; the old vote may be one above that."""


class AmnesiaGuard:
    """Silences a node's votes until it knows a height above every vote it may have
    forgotten. `through` is the last abstained height once settled (None: unsettled)."""

    def __init__(self, params: Params, me: int, through: int | None = None) -> None:
        self.p = params
        self.me = me
        self.through = through
        self.shown: dict[int, int] = {}
        """peer -> highest height its live messages named since the restart."""

    @property
    def settled(self) -> bool:
        return self.through is not None

    def observe(self, sender: int, msg: Message, cur: int) -> int | None:
        """Take one message from a peer (`cur`: this node's current height). Returns the
        settled bound A when this message settles the guard, else None; the caller makes
        A durable before it lets any vote above it leave."""
        if self.through is not None or sender == self.me or not 0 <= sender < self.p.n:
            return None
        if not isinstance(msg, LIVE):
            return None
        if msg.height > self.shown.get(sender, -1):
            self.shown[sender] = msg.height
        return self.try_settle(cur)

    def try_settle(self, cur: int) -> int | None:
        """Settle if 2f+1 peers have shown heights within the window of `cur`."""
        if self.through is not None:
            return None
        within = [h for h in self.shown.values() if h <= cur + self.p.height_window]
        if len(within) < 2 * self.p.f + 1:
            return None
        self.through = max(within) + MARGIN
        self.shown.clear()
        return self.through

    def silent_at(self, height: int) -> bool:
        """Must the node stay silent at this height (no PROPOSE, VOTE, REPORT, ABORT)?"""
        return self.through is None or height <= self.through

    def allows(self, msg: Message) -> bool:
        """May this outgoing message leave?"""
        return not isinstance(msg, SPEAKS) or not self.silent_at(msg.height)

    def restarted(self) -> AmnesiaGuard:
        """The guard after a crash: the settled bound is durable, the heights peers
        showed before the crash are not kept."""
        return AmnesiaGuard(self.p, self.me, self.through)
