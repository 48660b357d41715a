"""The engine's interface: events in, actions out (CONSENSUS.md §5).

The engine is a pure state machine. A driver (the node, or the simulator) feeds it one
`Event` at a time through `Engine.step` and carries out the returned `Action`s:

1. all `Persist`, `PersistBlock` and `DeleteRecord` actions of the step, as ONE atomic synced
   batch (a record that names a vote or proposal is never durable without its body);
2. then every message: each `Send` and the replies `ReplyDone` and `ReplySync` (messages to
   one peer within one step may share one frame);
3. then the rest: timers, block building, validation, fetching, commits and alerts.

`consensus.driver.plan` computes this order; drivers execute its plan.

Delaying a send is always allowed; sending before the step's batch is durable never is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from consensus.messages import Block, Message, Record
from consensus.sets import VSet


@dataclass(frozen=True)
class TimerKey:
    """Names a timer: kind is "round", "retx" (per height), "sync" or "serve" (engine-wide)."""

    kind: str
    height: int = 0


# --- events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """Boot: the stored records, the bodies they name, and the highest committed height."""

    records: tuple[Record, ...]
    blocks: tuple[Block, ...]
    committed_height: int
    sets: tuple[tuple[int, VSet], ...] = ()
    """The set history (§10.2): `(e, V(e))` for the first height and every activation
    height, through `V(x + 1)` of every record x and of the height after the committed
    one. Empty: the set of genesis, `0..n-1`, for every height."""


@dataclass(frozen=True)
class StartHeight:
    """Height `height` may start: block height-1 (hash `parent_hash`) is committed."""

    height: int
    parent_hash: bytes
    anchor: int
    """The anchor id `A(height)` (§10.4); from `Commit.next_anchor` or the genesis
    `first_leader`."""
    members: VSet | None = None
    """`V(height)`; None: the set of genesis (a chain whose set never changes)."""
    next_members: VSet | None = None
    """`V(height + 1)`, known once block height-1 is executed (§10.2); None: `members`."""


@dataclass(frozen=True)
class MessageIn:
    """A message that arrived on the authenticated link from `sender`."""

    sender: int
    msg: Message


@dataclass(frozen=True)
class Timeout:
    key: TimerKey


@dataclass(frozen=True)
class BlockBuilt:
    height: int
    round: int
    block: Block


@dataclass(frozen=True)
class BlockValidated:
    """Result of `ValidateBlock`: the application's deterministic verdict on a value, and
    whether the block's time was timely by the driver's clock when it was validated
    (CONSENSUS.md §3.7; the engine requires it only to vote for a fresh proposal)."""

    value: bytes
    ok: bool
    timely: bool = True


@dataclass(frozen=True)
class BlockFetched:
    """A body the driver found locally or fetched from a peer (hash already checked)."""

    block: Block


@dataclass(frozen=True)
class MempoolNonEmpty:
    """Idle mode only (§4): whether the mempool holds a transaction."""

    nonempty: bool


Event: TypeAlias = (
    Start
    | StartHeight
    | MessageIn
    | Timeout
    | BlockBuilt
    | BlockValidated
    | BlockFetched
    | MempoolNonEmpty
)

# --- actions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Persist:
    """Store `record` as `cons/<record.height>` (replacing the previous one)."""

    record: Record


@dataclass(frozen=True)
class PersistBlock:
    """Store the body in the block store until its height is committed."""

    block: Block


@dataclass(frozen=True)
class DeleteRecord:
    """Height `height` is committed and its instance terminated: drop `cons/<height>`."""

    height: int


@dataclass(frozen=True)
class Send:
    to: int
    msg: Message


@dataclass(frozen=True)
class SetTimer:
    """Arm (or re-arm, replacing) the timer `key` to fire after `duration_ms`."""

    key: TimerKey
    duration_ms: int


@dataclass(frozen=True)
class CancelTimer:
    key: TimerKey


@dataclass(frozen=True)
class BuildBlock:
    """Build a block with this height, parent, round and `proposer = me`; answer BlockBuilt."""

    height: int
    round: int
    parent_hash: bytes


@dataclass(frozen=True)
class ValidateBlock:
    """Run the deterministic application check; answer BlockValidated."""

    block: Block


@dataclass(frozen=True)
class FetchBlock:
    """Find the body of `value` (local store first, then peers); answer BlockFetched."""

    value: bytes


@dataclass(frozen=True)
class Commit:
    """Execute and commit `block` at `height` in one synced batch, then call
    `StartHeight(height + 1, block_hash(block), next_anchor)`."""

    height: int
    block: Block
    next_anchor: int


@dataclass(frozen=True)
class ReplyDone:
    """Send `Done(height, committed hash)` to `to` (a message for an old height arrived)."""

    to: int
    height: int


@dataclass(frozen=True)
class ReplySync:
    """Send `SyncResp` with up to `max_count` committed hashes from `from_height` to `to`."""

    to: int
    from_height: int
    max_count: int


@dataclass(frozen=True)
class Alert:
    """Misbehaviour observed or a fatal inconsistency; `kind` is a stable slug."""

    kind: str
    detail: str


Action: TypeAlias = (
    Persist
    | PersistBlock
    | DeleteRecord
    | Send
    | SetTimer
    | CancelTimer
    | BuildBlock
    | ValidateBlock
    | FetchBlock
    | Commit
    | ReplyDone
    | ReplySync
    | Alert
)
