"""Catching up and serving peers that are behind (CONSENSUS.md §3.4, §3.5).

Two pieces of engine state that are not about any one height's protocol:

- `CatchUp`: what this node knows of peers ahead of it (one noted height per peer, never
  trusted beyond `height_window` above our own), the DONE claims a SYNC_RESP made for
  heights we have not started, and the SYNC_REQ we send and answer (one request burst per
  `sync_interval`, one answer per peer per `sync_interval`).
- `DoneServer`: the DONE replies to messages for heights this node has terminated, at most
  one per peer per retransmit period, for the lowest height that peer asked about.

Both only return actions; the engine decides when to call them. The answers that need the
chain store go out as `ReplySync` and `ReplyDone` for the driver to fill in.
"""

from __future__ import annotations

from collections.abc import Mapping

from consensus.events import Action, ReplyDone, ReplySync, Send, SetTimer, TimerKey
from consensus.instance import Instance
from consensus.messages import ConsensusMessage, Done, SyncReq, SyncResp
from consensus.params import Params
from consensus.sets import VSet

SYNC_TIMER = TimerKey("sync")
SYNC_SERVE_TIMER = TimerKey("sync-serve")
SERVE_TIMER = TimerKey("serve")
LEARN_TIMER = TimerKey("learn")
LEARN_IDLE_FACTOR = 8
"""A learner that is not shown behind asks every 8 sync intervals (§10.3, Learners)."""


class CatchUp:
    """Peer heights, claims from SYNC_RESP, and the SYNC_REQ budget of both directions."""

    def __init__(self, params: Params, peers: tuple[int, ...]) -> None:
        self.p = params
        self.peers = peers
        self.peer_height: dict[int, int] = {}
        """peer -> highest height it showed, at most our height + `height_window` (§3.5)."""
        self.claims: dict[int, dict[int, bytes]] = {}
        """height -> peer -> hash its SYNC_RESP claims, for heights in [cur+1, cur+max]."""
        self.pending = False
        """A SYNC_REQ burst is out and its `sync_interval` has not passed."""
        self.served: set[int] = set()
        """Peers answered in the current `sync_interval`."""
        self.serve_armed = False
        self.learn_armed = False
        self.learn_behind = False
        """A SYNC_RESP since the learner's last request showed heights at or above ours."""

    def arm_learner(self) -> list[Action]:
        """A node outside `V(cur)` follows the chain by catching up (§10.3, Learners)."""
        if self.learn_armed:
            return []
        self.learn_armed = True
        return [SetTimer(LEARN_TIMER, self.p.sync_interval_ms)]

    def on_learn_timer(self, cur: int, committed: int, member: bool) -> list[Action]:
        """A learner asks every `sync_interval` while it is shown behind, and every
        8·`sync_interval` otherwise; a member (again) lets the timer lapse."""
        self.learn_armed = False
        if member:
            return []
        out = [] if self.pending else self.request(cur, committed)
        factor = 1 if self.learn_behind else LEARN_IDLE_FACTOR
        self.learn_behind = False
        self.learn_armed = True
        return [*out, SetTimer(LEARN_TIMER, factor * self.p.sync_interval_ms)]

    def note_height(self, j: int, h: int, cur: int) -> None:
        """A message from `j` for height `h`: a claim that `j` got there (§3.5)."""
        claim = min(h, cur + self.p.height_window)
        if claim > self.peer_height.get(j, 0):
            self.peer_height[j] = claim

    def maybe_request(
        self, cur: int, committed: int, timer_fired: int, members: VSet | None = None
    ) -> list[Action]:
        """`maybe_sync` of §3.4: b peers at cur+2 or above, or the round timer fired twice.

        Noted heights count members of `V(cur)` with `b(cur)` (§10.5, noted heights); a
        removed validator, whatever it claims, moves nothing."""
        if self.pending:
            return []
        vs = members if members is not None else VSet.genesis(self.p.n)
        ahead = sum(1 for j, h in self.peer_height.items() if h >= cur + 2 and j in vs)
        if ahead >= vs.b or timer_fired >= 2:
            return self.request(cur, committed)
        return []

    def request(self, cur: int, committed: int) -> list[Action]:
        """SYNC_REQ to every peer from our current height (unconditional on restart)."""
        self.pending = True
        frm = max(cur, committed + 1)
        m = SyncReq(self.p.chain_id, frm, self.p.sync_max_count)
        out: list[Action] = [Send(j, m) for j in self.peers]
        return [*out, SetTimer(SYNC_TIMER, self.p.sync_interval_ms)]

    def on_timeout(self, key: TimerKey) -> bool:
        """Handle the sync timers; False if `key` is not one of them."""
        if key.kind == "sync":
            self.pending = False
            return True
        if key.kind == "sync-serve":
            self.served.clear()
            self.serve_armed = False
            return True
        return False

    def on_request(self, j: int, m: SyncReq) -> list[Action]:
        """Answer a SYNC_REQ through the driver, once per peer per `sync_interval`."""
        if j in self.served or m.height < 1:
            return []
        self.served.add(j)
        out: list[Action] = [ReplySync(j, m.height, min(m.max_count, self.p.sync_max_count))]
        if not self.serve_armed:
            self.serve_armed = True
            out.append(SetTimer(SYNC_SERVE_TIMER, self.p.sync_interval_ms))
        return out

    def on_response(self, j: int, m: SyncResp, cur: int) -> list[tuple[int, bytes]]:
        """The (height, hash) DONE claims of a SYNC_RESP that answers a request of ours.

        We ask from our current height (or the one after the last commit): an answer from
        higher up is not an answer to us and is dropped whole (§3.4).
        """
        if m.height > cur + 1:
            return []
        top = min(m.height + len(m.hashes) - 1, cur + self.p.height_window)
        if m.hashes and top > self.peer_height.get(j, 0):
            self.peer_height[j] = top
        return [(m.height + i, v) for i, v in enumerate(m.hashes[: self.p.sync_max_count])]

    def claim(self, j: int, h: int, value: bytes, cur: int) -> None:
        """Keep `j`'s claim for a height not started yet, if within [cur+1, cur+max]."""
        if cur < h <= cur + self.p.sync_max_count:
            self.claims.setdefault(h, {}).setdefault(j, value)

    def take_claims(self, h: int) -> dict[int, bytes]:
        """The claims for height `h`, which starts now; claims up to `h` are dropped."""
        got = self.claims.pop(h, {})
        for x in [x for x in self.claims if x <= h]:
            del self.claims[x]
        return got


class DoneServer:
    """DONE replies for terminated heights, rate-limited per peer and serve period (§3.4)."""

    def __init__(self, params: Params) -> None:
        self.p = params
        self.served: set[int] = set()
        """Peers answered in the current serve period."""
        self.pending: dict[int, int] = {}
        """peer -> lowest height it asked about while its budget was spent."""
        self.armed = False
        self.recent: dict[int, set[int]] = {}
        """height -> peers whose DONE was counted (the last two dropped instances)."""
        self.fresh: set[int] = set()
        """Heights decided in the current serve period: our DONE to every peer is in flight."""
        self.fresh_old: set[int] = set()
        """Heights decided in the previous serve period."""
        self.answered: set[tuple[int, int]] = set()
        """(height, peer): our DONE of the last height of a set answered a DONE of that
        peer in the current serve period (§10.3, the DONE rule)."""
        self.answered_old: set[tuple[int, int]] = set()
        """The same, in the previous serve period."""

    def forget(self, h: int, done_of: Mapping[int, bytes]) -> None:
        """Instance `h` is dropped: remember whose DONE it counted."""
        self.recent[h] = set(done_of)
        for old in [x for x in self.recent if x < h - 1]:
            del self.recent[old]

    def on_decided(self, h: int, period_ms: int) -> list[Action]:
        self.fresh.add(h)
        return self.arm(period_ms)

    def serve(
        self,
        j: int,
        h: int,
        m: ConsensusMessage,
        insts: Mapping[int, Instance],
        period_ms: int,
        changes: bool = False,
    ) -> list[Action]:
        """Answer a message from `j` for terminated height `h` with DONE.

        `changes`: h is the last height of a set (`V(h+1) != V(h)`). Its instance ends
        only on q(h) of its own DONEs, so a peer whose DONE we counted may still lack
        ours; a DONE is then answered unless ours answered one of that peer within the
        last serve period (§10.3, the DONE rule: two terminated nodes do not answer each
        other's answers for ever)."""
        if h in self.fresh or h in self.fresh_old:
            return []
        if changes and isinstance(m, Done):
            if (h, j) in self.answered or (h, j) in self.answered_old:
                return []
            if j in self.served:
                return []
            self.answered.add((h, j))
        elif isinstance(m, Done):
            inst = insts.get(h)
            if inst is not None:
                if j in inst.done_of:
                    return []
                inst.done_of[j] = m.value
            else:
                seen = self.recent.setdefault(h, set())
                if j in seen:
                    return []
                seen.add(j)
        if j in self.served:
            pend = self.pending.get(j)
            if pend is None or h < pend:
                self.pending[j] = h
            return []
        self.served.add(j)
        return [self._reply(j, h, insts), *self.arm(period_ms)]

    def arm(self, period_ms: int) -> list[Action]:
        if self.armed:
            return []
        self.armed = True
        return [SetTimer(SERVE_TIMER, period_ms)]

    def on_timer(self, insts: Mapping[int, Instance], period_ms: int) -> list[Action]:
        """A new serve period: answer the peers that asked while their budget was spent."""
        self.armed = False
        self.served.clear()
        self.fresh_old = self.fresh
        self.fresh = set()
        self.answered_old = self.answered
        self.answered = set()
        pending = sorted(self.pending.items())
        self.pending = {}
        out: list[Action] = []
        for j, h in pending:
            self.served.add(j)
            out.append(self._reply(j, h, insts))
        busy = pending or self.fresh_old or self.answered_old
        return out + (self.arm(period_ms) if busy else [])

    def _reply(self, j: int, h: int, insts: Mapping[int, Instance]) -> Action:
        inst = insts.get(h)
        if inst is not None and inst.rec.decided is not None:
            return Send(j, Done(self.p.chain_id, h, inst.rec.decided))
        return ReplyDone(j, h)
