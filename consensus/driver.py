"""The driver plan: in what order a driver carries out the actions of engine steps.

`Engine.step` returns a flat list of actions in the order the engine produced them. The
node and the simulator must carry them out in the same order, or the simulator checks an
ordering the node does not run. `plan(actions)` is that order, computed once, without I/O,
for the actions of one step or of a batch of steps processed together:

1. `Phase.DURABLE`: every `Persist`, `PersistBlock` and `DeleteRecord`, in engine order, as
   ONE atomic synced batch. CONSENSUS.md §2.6 (Persistence, MUST): the state a message
   depends on is durable before the message leaves the node, and a record that names a
   vote or proposal is never durable without its body. A batch written before any send
   satisfies this for every send of the step at once; a node that crashes after it can
   only repeat what it sent (§2.6, restart), never contradict it.
2. `Phase.MESSAGES`: every outgoing message: each `Send`, and the replies `ReplyDone` and
   `ReplySync`, which are messages too (a DONE and a SYNC_RESP leave on the peer's link
   like any other, §3.4) whose content the driver reads from its chain store. They go
   after the durable batch for the same reason as sends, and before the local effects so
   that a reply is not delayed behind a commit or a block build. They are grouped into one
   frame per peer (§2.6: sends to one peer in one step may share a frame; §7 counts frames
   with this coalescing): peers in the order of their first message, messages to one peer
   in engine order.
3. `Phase.LOCAL`: the local effects in engine order: timers, cancels, block building,
   validation, fetching, commits and alerts. A commit is its own synced batch (§3.3) and
   comes after the messages of its step, so a DONE leaves before the commit's batch.

Delaying a message is always allowed; sending one before its durable batch never is. The
simulator's crash points are defined against these phases (`consensus.sim.crash`).

Pipelined heights (§3.3, Revision 1.13): a commit's synced batch may still be in flight when
the next height starts, so the durable batch of a later step can reach the disk before it.
`waits_for_commit` says which batches must not: one that records a decision waits until
the commit in flight is durable (the commit barrier, §2.6). Every other batch (a round
entered, a vote, a proposal, an abort level, a body) may be durable before the block below
it: a restart then finds the decided record of that block and commits it again before it
can use them. (The engine deletes a record only once its block is known durable, §3.6.)
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from consensus.events import (
    Action,
    Alert,
    BuildBlock,
    CancelTimer,
    Commit,
    DeleteRecord,
    FetchBlock,
    Persist,
    PersistBlock,
    ReplyDone,
    ReplySync,
    Send,
    SetTimer,
    ValidateBlock,
)

Durable: TypeAlias = Persist | PersistBlock | DeleteRecord
Outgoing: TypeAlias = Send | ReplyDone | ReplySync
Local: TypeAlias = SetTimer | CancelTimer | BuildBlock | ValidateBlock | FetchBlock | Commit | Alert


class Phase(enum.Enum):
    """The three phases of a plan, in the order a driver carries them out."""

    DURABLE = 1
    MESSAGES = 2
    LOCAL = 3


@dataclass(frozen=True)
class Frame:
    """The messages of a plan to one peer: one frame on the link to `to`."""

    to: int
    messages: tuple[Outgoing, ...]


@dataclass(frozen=True)
class Plan:
    """The actions of one step (or batch of steps), by phase, in execution order."""

    durable: tuple[Durable, ...]
    """One atomic synced batch, written before any message of the plan leaves."""
    frames: tuple[Frame, ...]
    """One frame per peer: peers in order of first message, messages in engine order."""
    local: tuple[Local, ...]

    def messages(self) -> Iterator[Outgoing]:
        """Every outgoing message, frame by frame."""
        for frame in self.frames:
            yield from frame.messages

    def steps(self) -> Iterator[tuple[Phase, Action]]:
        """The whole plan as one flat ordered list: what two drivers must agree on."""
        for d in self.durable:
            yield Phase.DURABLE, d
        for m in self.messages():
            yield Phase.MESSAGES, m
        for a in self.local:
            yield Phase.LOCAL, a


def waits_for_commit(durable: Sequence[Durable]) -> bool:
    """Whether a durable batch must wait for the commit batch in flight (§2.6, the commit
    barrier): it records a decision. With a decision of h+1 durable and block h lost, a
    restart would hold two decided heights above its chain; the barrier keeps at most
    one, the one whose commit was in flight, and commits stay one at a time."""
    return any(isinstance(d, Persist) and d.record.decided is not None for d in durable)


def plan(actions: Sequence[Action]) -> Plan:
    """Order the actions of one step, or of several steps processed together."""
    durable: list[Durable] = []
    frames: dict[int, list[Outgoing]] = {}
    local: list[Local] = []
    for a in actions:
        if isinstance(a, Persist | PersistBlock | DeleteRecord):
            durable.append(a)
        elif isinstance(a, Send | ReplyDone | ReplySync):
            frames.setdefault(a.to, []).append(a)
        else:
            local.append(a)
    return Plan(
        durable=tuple(durable),
        frames=tuple(Frame(to, tuple(msgs)) for to, msgs in frames.items()),
        local=tuple(local),
    )
