"""The engine driver: the one place where the pure consensus engine meets I/O.

Every event (message, timer, block built, validated or fetched, start) goes through one
queue and one `Engine.step` at a time (`feed`). The actions of a step are carried out by
`_perform`, in the order the engine's contract demands: every `Persist`, `PersistBlock` and
`DeleteRecord` first, as ONE synced LevelDB batch; then the sends (queued per peer, so the
messages of one step to one peer share one frame); then timers, block building,
validation, fetching, commits and replies, each handed to the collaborator in `Handlers`.

`_observe_vote` watches the votes this node sends and receives for equivocation. Both it
and `_perform` are the seams where the shared driver and equivocation detector of
`consensus/` take over.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from consensus.engine import Engine
from consensus.events import (
    DURABLE_ACTIONS,
    Action,
    Alert,
    BuildBlock,
    CancelTimer,
    Commit,
    DeleteRecord,
    Event,
    FetchBlock,
    MessageIn,
    Persist,
    PersistBlock,
    ReplyDone,
    ReplySync,
    Send,
    SetTimer,
    Timeout,
    TimerKey,
    ValidateBlock,
)
from consensus.messages import Block as CBlock
from consensus.messages import BlockReq, BlockResp, Done, Vote, decode_message
from consensus.messages import block_hash as consensus_value
from node.alarms import Alarms
from node.links import Links
from node.metrics import NodeMetrics
from node.wire import CertSig, Envelope, Kind, TxBatch
from qchain.errors import CodecError, StorageCorrupt
from qchain.store import schema
from qchain.store.kv import Batch, KVStore

log = logging.getLogger("qchain.node")

VOTE_WATCH_ROUNDS = 64
"""How far above the current round votes are kept for equivocation detection."""


@dataclass(frozen=True)
class Handlers:
    """Who carries out what the engine asks for, and who takes what peers send besides
    consensus messages."""

    build: Callable[[BuildBlock], None]
    validate: Callable[[CBlock], None]
    fetch: Callable[[bytes], None]
    commit: Callable[[Commit], None]
    reply_sync: Callable[[ReplySync], None]
    serve_blocks: Callable[[int, BlockReq], None]
    blocks: Callable[[BlockResp], None]
    forwarded: Callable[[int, TxBatch], None]
    cert_sig: Callable[[int, CertSig], None]
    leader_changed: Callable[[int], None]
    """Called after the queue drained, when the leader is another than before."""


class Driver:
    """Feeds events to the engine one step at a time and executes its actions."""

    def __init__(
        self,
        engine: Engine,
        store: KVStore,
        links: Links,
        alarms: Alarms,
        metrics: NodeMetrics,
        committed: Callable[[], int],
        committed_value: Callable[[int], bytes | None],
    ) -> None:
        """committed: the last committed height; committed_value: the consensus value
        of a committed height."""
        self.engine = engine
        self.store = store
        self.links = links
        self.me = links.me
        self.alarms = alarms
        self.metrics = metrics
        self.committed = committed
        self.committed_value = committed_value
        self.handlers: Handlers | None = None
        self.stopping = False
        self.timers: dict[TimerKey, asyncio.TimerHandle] = {}
        self.vote_values: dict[tuple[int, int, int], dict[bytes, int]] = {}
        """Votes seen per (height, round, phase): value -> the first voter of it."""
        self._events: deque[Event] = deque()
        self._processing = False
        self._last_leader: int | None = None
        self._last_round: tuple[int, int] = (0, 0)

    def bind(self, handlers: Handlers) -> None:
        self.handlers = handlers

    def _handlers(self) -> Handlers:
        if self.handlers is None:
            raise RuntimeError("the driver has no handlers bound")
        return self.handlers

    def stop(self) -> None:
        """No event reaches the engine after this."""
        self.stopping = True
        self._events.clear()

    def feed(self, ev: Event) -> None:
        if self.stopping:
            return
        self._events.append(ev)
        if self._processing:
            return
        self._processing = True
        try:
            while self._events:
                event = self._events.popleft()
                if self.alarms.fatal is not None:
                    self._events.clear()
                    return
                self._perform(self.engine.step(event))
            self._after_steps()
        finally:
            self._processing = False

    def _perform(self, actions: Sequence[Action]) -> None:
        batch = Batch()
        for d in actions:
            if isinstance(d, Persist):
                batch.put(schema.consensus_key(d.record.height), d.record.encode())
            elif isinstance(d, PersistBlock):
                batch.put(schema.pending_body_key(consensus_value(d.block)), d.block.encode())
            elif isinstance(d, DeleteRecord):
                batch.delete(schema.consensus_key(d.height))
        if len(batch):
            self.store.write(batch, sync=True)
        for s in actions:
            if isinstance(s, Send):
                if isinstance(s.msg, Vote):
                    self._observe_vote(self.me, s.msg)
                self.links.send_consensus(s.to, s.msg)
        for a in actions:
            if not isinstance(a, (*DURABLE_ACTIONS, Send)):
                self._do(a)

    def _do(self, a: Action) -> None:
        h = self._handlers()
        if isinstance(a, SetTimer):
            self._set_timer(a.key, a.duration_ms)
        elif isinstance(a, CancelTimer):
            handle = self.timers.pop(a.key, None)
            if handle is not None:
                handle.cancel()
        elif isinstance(a, BuildBlock):
            h.build(a)
        elif isinstance(a, ValidateBlock):
            h.validate(a.block)
        elif isinstance(a, FetchBlock):
            h.fetch(a.value)
        elif isinstance(a, Commit):
            h.commit(a)
        elif isinstance(a, ReplyDone):
            value = self.committed_value(a.height)
            if value is not None:
                self.links.send_consensus(a.to, Done(self.engine.p.chain_id, a.height, value))
        elif isinstance(a, ReplySync):
            h.reply_sync(a)
        elif isinstance(a, Alert):
            self.alarms.alert(a.kind, a.detail)

    def _set_timer(self, key: TimerKey, ms: int) -> None:
        old = self.timers.pop(key, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self.timers[key] = loop.call_later(ms / 1000, self._fire_timer, key)

    def _fire_timer(self, key: TimerKey) -> None:
        self.timers.pop(key, None)
        self.feed(Timeout(key))

    def cancel_timers(self) -> None:
        for h in self.timers.values():
            h.cancel()
        self.timers.clear()

    def _observe_vote(self, sender: int, vote: Vote) -> None:
        """Correct nodes never vote for two values in one (height, round, phase): phase 1
        follows the one proposal, a later phase needs a quorum and two quorums share a
        correct node. So two values seen there mean a leader sent different proposals to
        different nodes, or a voter sent different votes: raise `equivocation-suspected`.
        With MACs instead of signatures nobody can prove who lied (CONSENSUS.md §1), but
        every honest node that sees both values reports it.

        What is kept is bounded whatever peers send: heights from the one below the last
        committed to two above it, rounds up to VOTE_WATCH_ROUNDS above the current one,
        two values per (height, round, phase); older heights go at each commit."""
        committed = self.committed()
        if not committed - 1 <= vote.height <= committed + 2:
            return
        inst = self.engine.inst.get(self.engine.cur)
        if vote.round > (0 if inst is None else inst.rec.round) + VOTE_WATCH_ROUNDS:
            return
        key = (vote.height, vote.round, vote.phase)
        seen = self.vote_values.setdefault(key, {})
        if vote.value in seen or len(seen) >= 2:
            return
        seen[vote.value] = sender
        if len(seen) == 2:
            first, second = seen.items()
            self.alarms.alert(
                "equivocation-suspected",
                f"height {vote.height} round {vote.round} phase {vote.phase}: "
                f"validator {first[1]} voted {first[0].hex()[:12]}, "
                f"validator {second[1]} voted {second[0].hex()[:12]}",
            )

    def forget_votes(self, committed: int) -> None:
        """Drop the votes kept for heights below the one under `committed`."""
        for k in [k for k in self.vote_values if k[0] < committed - 1]:
            del self.vote_values[k]

    def _after_steps(self) -> None:
        """Bookkeeping after the queue drained: round metrics, and a leader change."""
        leader = self.current_leader()
        inst = self.engine.inst.get(self.engine.cur)
        if inst is not None:
            pos = (inst.h, inst.rec.round)
            if pos != self._last_round:
                changed = pos[0] == self._last_round[0] and pos[1] > self._last_round[1]
                self.metrics.observe_round(inst.rec.round, changed)
                self._last_round = pos
        if leader is not None and leader != self._last_leader:
            self._last_leader = leader
            self._handlers().leader_changed(leader)

    def current_leader(self) -> int | None:
        inst = self.engine.inst.get(self.engine.cur)
        if inst is None:
            return None
        return self.engine.leader(inst, inst.rec.round)

    def on_envelope(self, sender: int, env: Envelope) -> None:
        """One envelope from a peer, by kind."""
        if self.stopping:
            return
        h = self._handlers()
        try:
            if env.kind is Kind.CONSENSUS:
                msg = decode_message(env.payload)
                if isinstance(msg, BlockReq):
                    h.serve_blocks(sender, msg)
                elif isinstance(msg, BlockResp):
                    h.blocks(msg)
                else:
                    if isinstance(msg, Vote):
                        self._observe_vote(sender, msg)
                    self.feed(MessageIn(sender, msg))
            elif env.kind is Kind.TXS:
                h.forwarded(sender, TxBatch.decode(env.payload))
            elif env.kind is Kind.CERT_SIG:
                h.cert_sig(sender, CertSig.decode(env.payload))
        except CodecError as e:
            self.alarms.alert("bad-message", f"from {sender}: {e.message}")
        except StorageCorrupt:
            return  # already reported and halted by Alarms.corrupt
