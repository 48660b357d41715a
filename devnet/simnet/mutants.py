"""Bugs the live fault kit found in the first wave, put back on demand (`--mutant NAME`)
to measure what the simulator finds. Each mutant patches the real code (`no-sync`: the
simulated disk) for one run and restores it after; none is reachable outside the
simulator.

- `no-resync`: after a reconnection the sender keeps the keys it had already announced,
  so a restarted receiver (which never fetched them) cannot read the link again
  (fixed in "QKD: after a reconnection the sender drops keys it already announced").
- `no-recover`: a receiver never looks up a key whose announcement was lost with a
  dropped or corrupted frame, so the link stalls on unknown keys (fixed in "receivers
  recover keys whose announcement was lost"). The later reset of a link whose frames
  keep failing on unknown keys also gets the link going again, so this mutant removes
  both, as the code was when the fault kit found the bug.
- `empty-spin`: a leader counts nonce gaps as transactions ready to propose and builds
  empty blocks as fast as it can (fixed in "a leader whose mempool holds only nonce gaps
  waits for the heartbeat").
- `subscriber-drop`: a node's event stream has room for 1,024 queued events, so a
  block of 1,024 or more transactions (its block event and one event per transaction,
  published at once) drops every subscriber that follows the node, however promptly it
  reads (fixed in "event streams ... no longer drop subscribers on blocks over 1,023
  txs": the queue holds a full block's events).
- `forward-drop`: a validator's clients may fill the whole pool, so an overloaded
  leader refuses the transactions other validators forward to it, silently (the
  forwarder has acknowledged them and is not told), and their senders' later nonces
  wait behind the gaps (fixed in "a node's clients may hold at most max_txs / n
  pending transactions, so every node's share fits in the leader's pool"). Since
  dissemination went to batches (`node.batches`) the loss is the same one on the batch
  path: a node keeps a peer's batch, but the batch's transactions that its pool cannot
  hold on arrival are dropped (`node.forwarding.Forwarder.received`), before the pool's
  own rules (room kept for peers' transactions, waiting ones giving way) could take
  them, and the leader proposes only from its pool. Caught by the `forwards-taken`
  check (`devnet.simnet.forwards`): the cost in latency is small while the other
  validators hold what the mutant dropped, but the transactions it drops are never
  decided by its admission.
- `gap-stall`: transactions waiting behind a nonce gap never give way and never
  expire, so when a client goes on sending a sender's later nonces after one was refused,
  they fill every pool and the refused nonce, sent again, finds no room anywhere: the
  sender stalls for good (fixed in "mempool: waiting transactions give way to ready ones
  and to their sender's earlier nonces, and expire after the inclusion timeout"). Found
  with `--client eager`.
- `early-activation`: the node counts a set change one height early: its `V(h)` is the
  chain's `V(h+1)` (`node.validatorsets.ChainSets.members`), so a joiner counts, and a
  removed validator no longer counts, at the height before the change's activation
  height e (the engine simulator's §10.8 M1, in the node). Every node does it alike, so
  they agree with each other; found with `--reconf` by the `sets-followed` check (and by
  `certificates-by-set` where the joiner signed the certificate of e − 1).
- `no-sync`: the disk's sync does nothing (an fsync that returns before the data is
  safe): a crash may lose any suffix of the node's writes, committed blocks included.
  Not a bug the fault kit found: it shows that the disk model bites
  (`devnet.simnet.disk`; caught by the `durable-commits` check).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from devnet.simnet.disk import MemoryDisk
from node.events import EventBus
from node.forwarding import Forwarder
from node.mempool import Mempool, MempoolLimits
from node.transport_limits import DEFAULT_TRANSPORT_LIMITS
from node.validatorsets import ChainSets, Member
from node.wire import OriginBatch
from qchain.config import MempoolSection
from qchain.qkd.frame import LinkSender
from qchain.qkd.pool import ReceiveKeyPool


def _no_resync(self: LinkSender) -> None:
    return None


def _no_recover(self: ReceiveKeyPool, key_id: Any) -> bool:
    return False


def _any_pending(self: Mempool) -> bool:
    return len(self) > 0


_bus_init = EventBus.__init__


def _small_queues(
    self: EventBus, capacity: int = 4096, queue_size: int = 1024, first_id: int = 1
) -> None:
    _bus_init(self, capacity, queue_size, first_id)


def _never_give_way(self: Mempool, tx: Any, sender: Any, ready: bool) -> Iterator[Any]:
    return iter(())


def _never_expire(self: Mempool, admitted_before: float) -> int:
    return 0


_received = Forwarder.received


def _drop_what_the_pool_cannot_hold(self: Forwarder, sender: int, batch: OriginBatch) -> None:
    free = max(0, self.mempool.limits.max_txs - len(self.mempool) - len(self._admit_queue))
    if len(batch.txs) > free:
        self.dropped += len(batch.txs) - free
        batch = OriginBatch(batch.origin, batch.seq, batch.txs[:free])
    _received(self, sender, batch)


_members = ChainSets.members


def _one_height_early(self: ChainSets, h: int) -> tuple[Member, ...]:
    return _members(self, h + 1) if self.enabled and h >= 1 else _members(self, h)


def _whole_pool(cls: type[MempoolLimits], m: MempoolSection, n: int) -> MempoolLimits:
    return cls(m.max_txs, m.max_bytes, m.max_per_sender, max_block_bytes=m.max_block_bytes)


PATCHES: dict[str, tuple[tuple[Any, str, Any], ...]] = {
    "no-resync": ((LinkSender, "resync", _no_resync),),
    "no-recover": (
        (ReceiveKeyPool, "recover", _no_recover),
        (DEFAULT_TRANSPORT_LIMITS, "unknown_key_reset", 1 << 30),
    ),
    "empty-spin": ((Mempool, "has_ready", _any_pending),),
    "subscriber-drop": ((EventBus, "__init__", _small_queues),),
    "forward-drop": (
        (MempoolLimits, "of_validator", classmethod(_whole_pool)),
        (Forwarder, "received", _drop_what_the_pool_cannot_hold),
    ),
    "gap-stall": (
        (Mempool, "_gives_way_to", _never_give_way),
        (Mempool, "drop_waiting", _never_expire),
    ),
    "early-activation": ((ChainSets, "members", _one_height_early),),
    "no-sync": ((MemoryDisk, "syncs", False),),
}
MUTANTS = tuple(PATCHES)


def _set(owner: Any, attr: str, value: Any) -> None:
    if isinstance(owner, type):
        setattr(owner, attr, value)
    else:  # a frozen dataclass instance (the transport's default limits)
        object.__setattr__(owner, attr, value)


@contextlib.contextmanager
def mutant(name: str | None) -> Iterator[None]:
    patches = PATCHES[name] if name is not None else ()
    originals = [(owner, attr, owner.__dict__[attr]) for owner, attr, _ in patches]
    for owner, attr, value in patches:
        _set(owner, attr, value)
    try:
        yield
    finally:
        for owner, attr, value in originals:
            _set(owner, attr, value)
