"""The engine driver: the one place where the pure consensus engine meets I/O.

Every event (message, timer, block built, validated or fetched, start) goes through one
queue and one `Engine.step` at a time (`feed`). The actions of a step are carried out in
the order of `consensus.driver.plan`, the same order the simulator runs (`carry_out`):
every `Persist`, `PersistBlock` and `DeleteRecord` first, as ONE synced LevelDB batch (after
the commit batch in flight, if the batch records a decision or deletes a record:
`consensus.driver.waits_for_commit`); then
every outgoing message, sends and the replies `ReplyDone`/`ReplySync` alike (queued per
peer, so the messages of one step to one peer share one frame); then timers, block
building, validation, fetching, commits and alerts, each handed to the collaborator in
`Handlers`.

Every vote this node sends or receives is shown to `consensus.equivocation`'s detector,
which raises `equivocation-suspected` when one (height, round, phase) carries two values.
The node reads the engine only through `Engine.view()` (`consensus.view`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from consensus.amnesia import AmnesiaGuard
from consensus.driver import Durable, Local, Outgoing, Plan, plan, waits_for_commit
from consensus.engine import Engine
from consensus.equivocation import EquivocationDetector
from consensus.events import (
    Action,
    Alert,
    BuildBlock,
    CancelTimer,
    Commit,
    Event,
    FetchBlock,
    MessageIn,
    Persist,
    PersistBlock,
    ReplyDone,
    ReplySync,
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
from node.wire import BatchReq, BatchResp, CertSig, Envelope, Kind, OriginBatch, ProposeRefs
from qchain.errors import CodecError, StorageCorrupt
from qchain.store import schema
from qchain.store.kv import Batch, KVStore

log = logging.getLogger("qchain.node")


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
    batch: Callable[[int, OriginBatch], None]
    batch_req: Callable[[int, BatchReq], None]
    batch_resp: Callable[[int, BatchResp], None]
    propose_refs: Callable[[int, ProposeRefs], None]
    cert_sig: Callable[[int, CertSig], None]
    leader_changed: Callable[[int], None]
    """Called after the queue drained, when the leader is another than before."""
    commit_barrier: Callable[[], None] = lambda: None
    """Returns once the commit batch in flight, if any, is durable (§2.6, the commit
    barrier; `node.commitwriter`)."""


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
        """committed: the last executed height (its commit may be in flight), for the
        equivocation watch; committed_value: the consensus value of a durably committed
        height."""
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
        self.equivocation = EquivocationDetector()
        self.view = engine.view()
        """The engine as of the last drained queue (`_after_steps`)."""
        self._events: deque[Event] = deque()
        self._processing = False
        self._last_leader: int | None = None
        self._last_round: tuple[int, int] = (0, 0)
        self._amnesia_written: int | None = None

    def arm_amnesia(self) -> None:
        """After a restore or rebuild (`schema.META_AMNESIA`), put the engine under the
        amnesia guard (CONSENSUS.md §3.8), settled or not as the store says; a guard
        whose bound the chain has passed is removed."""
        raw = self.store.get(schema.META_AMNESIA)
        if raw is None:
            return
        through = schema.read_u64(raw) if raw else None
        if through is not None and self.committed() > through:
            self.store.delete(schema.META_AMNESIA, sync=True)
            return
        self._amnesia_written = through
        self.engine.amnesia = AmnesiaGuard(self.engine.p, self.me, through)
        if through is None:
            log.warning("amnesia guard: silent until 2f+1 peers show their heights")
        else:
            log.warning("amnesia guard: silent at heights up to %d", through)

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
        self.carry_out(plan(actions))

    def carry_out(self, todo: Plan) -> None:
        """One plan, phase by phase (`consensus.driver`)."""
        self._write(todo.durable)
        for frame in todo.frames:
            for m in frame.messages:
                self._send(m)
        for a in todo.local:
            self._do(a)

    def _write(self, durable: Sequence[Durable]) -> None:
        batch = Batch()
        for d in durable:
            if isinstance(d, Persist):
                batch.put(schema.consensus_key(d.record.height), d.record.encode())
            elif isinstance(d, PersistBlock):
                key = schema.pending_body_key(d.block.height, consensus_value(d.block))
                batch.put(key, d.block.encode())
            else:
                batch.delete(schema.consensus_key(d.height))
        guard = self.engine.amnesia
        settled = None if guard is None else guard.through
        if settled is not None and settled != self._amnesia_written:
            # Settled in this step: durable before any vote above it leaves (§3.8).
            batch.put(schema.META_AMNESIA, schema.u64(settled))
            self._amnesia_written = settled
            log.warning("amnesia guard settled: silent at heights up to %d", settled)
        if len(batch):
            if waits_for_commit(durable) and self.handlers is not None:
                # A decision is never durable before the block below it (pipelined
                # heights, CONSENSUS.md §2.6).
                self.handlers.commit_barrier()
            self.store.write(batch, sync=True)

    def _send(self, m: Outgoing) -> None:
        if isinstance(m, ReplyDone):
            value = self.committed_value(m.height)
            if value is not None:
                self.links.send_consensus(m.to, Done(self.engine.p.chain_id, m.height, value))
        elif isinstance(m, ReplySync):
            self._handlers().reply_sync(m)
        else:
            if isinstance(m.msg, Vote):
                self._observe_vote(self.me, m.msg)
            self.links.send_consensus(m.to, m.msg)

    def _do(self, a: Local) -> None:
        h = self._handlers()
        if isinstance(a, SetTimer):
            self._set_timer(a.key, a.duration_ms)
        elif isinstance(a, CancelTimer):
            self._cancel_timer(a.key)
        elif isinstance(a, BuildBlock):
            h.build(a)
        elif isinstance(a, ValidateBlock):
            h.validate(a.block)
        elif isinstance(a, FetchBlock):
            h.fetch(a.value)
        elif isinstance(a, Commit):
            h.commit(a)
        elif isinstance(a, Alert):
            self.alarms.alert(a.kind, a.detail)

    def _set_timer(self, key: TimerKey, ms: int) -> None:
        old = self.timers.pop(key, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self.timers[key] = loop.call_later(ms / 1000, self._fire_timer, key)

    def _cancel_timer(self, key: TimerKey) -> None:
        handle = self.timers.pop(key, None)
        if handle is not None:
            handle.cancel()

    def _fire_timer(self, key: TimerKey) -> None:
        self.timers.pop(key, None)
        self.feed(Timeout(key))

    def cancel_timers(self) -> None:
        for h in self.timers.values():
            h.cancel()
        self.timers.clear()

    def _observe_vote(self, sender: int, vote: Vote) -> None:
        """Show a vote to the equivocation detector (bounded whatever peers send) and
        raise what it finds."""
        found = self.equivocation.observe(sender, vote, self.committed(), self.view.round or 0)
        for a in found:
            self.alarms.alert(a.kind, a.detail)

    def forget_votes(self, committed: int) -> None:
        """Drop the votes kept for heights below the one under `committed`."""
        self.equivocation.on_commit(committed)

    def _after_steps(self) -> None:
        """Bookkeeping after the queue drained: a fresh view, round metrics, and a leader
        change."""
        view = self.view = self.engine.view()
        if view.round is not None:
            pos = (view.height, view.round)
            if pos != self._last_round:
                changed = pos[0] == self._last_round[0] and pos[1] > self._last_round[1]
                self.metrics.observe_round(view.round, changed)
                self._last_round = pos
        if view.leader is not None and view.leader != self._last_leader:
            self._last_leader = view.leader
            self._handlers().leader_changed(view.leader)

    def current_leader(self) -> int | None:
        return self.engine.view().leader

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
            elif env.kind is Kind.BATCH:
                h.batch(sender, OriginBatch.decode(env.payload))
            elif env.kind is Kind.PROPOSE_REFS:
                h.propose_refs(sender, ProposeRefs.decode(env.payload))
            elif env.kind is Kind.BATCH_REQ:
                h.batch_req(sender, BatchReq.decode(env.payload))
            elif env.kind is Kind.BATCH_RESP:
                h.batch_resp(sender, BatchResp.decode(env.payload))
            elif env.kind is Kind.CERT_SIG:
                h.cert_sig(sender, CertSig.decode(env.payload))
        except CodecError as e:
            self.alarms.alert("bad-message", f"from {sender}: {e.message}")
        except StorageCorrupt:
            return  # already reported and halted by Alarms.corrupt
