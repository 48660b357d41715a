"""The validator set of every height, read from the chain (CONSENSUS.md §10.2).

On a chain whose genesis sets `consensus.reconfiguration`, the `validators` contract's
executed state holds the set of the current height, the schedule of changes with their
activation heights, and the set of every activation height (`contracts.validators`).
Once block h−1 is executed the node knows `V(h)` and `V(h+1)` from that state alone
(every change for h+1 was scheduled in a block ≤ h−1, D ≥ 2), and `ChainSets` reads them
there: for the engine's `StartHeight` and `Start`, for the keys that sign a height's
certificate, and for the links of the node (`node.setlinks`).

On any other chain every height has the genesis set, and nothing here reads the state:
`start_height` then passes no set, and the engine keeps the one it was built with.

Rotation (a `rotate` change: one id's key or SAE id replaced) is not built: one id on
two machines needs §10.6's per-end link ranges. `refuse_rotation` is the node's rule
against it (CONSENSUS.md, Revision 1.20): a transaction that proposes a rotate, or
approves one the state holds, is refused at admission (`rotation-not-supported`), left
out of the blocks the node builds, and a proposal that carries one gets no vote. A
rotate that is approved all the same (a chain that took one before this rule) stops the
node at the first height it starts afterwards (`start_height`), before it can activate.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from consensus.events import StartHeight
from consensus.sets import VSet
from contracts import validators
from contracts.genesis import Genesis
from contracts.runtime import parse_args
from contracts.setchain import verify_certificate_by_id
from contracts.state import StateReader, StateSource
from qchain.errors import ArgumentError, ConfigError, NotFound, RotationNotSupported, StorageError
from qchain.keys import SigningKey
from qchain.store import schema
from qchain.store.kv import KVStore
from qchain.types import (
    CommitCertificate,
    Transaction,
    ValidatorKey,
    quorum_size,
    verify_certificate,
)

CACHED_HEIGHTS = 256
"""Sets of this many recent heights are kept in memory (certificates are checked for
recent heights, `node.certificates.KEEP_HEIGHTS`)."""


@dataclass(frozen=True)
class Member:
    """What the node needs of one validator of a set: its consensus record (§10.1) and
    where to dial it (directory data, not part of the set)."""

    id: int
    public_key: bytes
    sae_id: str
    p2p: str


class ChainSets:
    """`V(h)` for the heights the node runs, from the `validators` contract's state."""

    def __init__(
        self,
        genesis: Genesis,
        state: Callable[[], StateSource] | None = None,
        head: Callable[[], int] | None = None,
    ) -> None:
        """state: the executed state (`ChainApp.state`); head: its height
        (`ChainApp.head_height`). Both are needed only when the genesis enables changes."""
        self.enabled = genesis.consensus.reconfiguration
        self.genesis_members = tuple(
            Member(v.index, v.public_key, v.sae_id, v.p2p) for v in genesis.validators
        )
        self._state = state
        self._head = head
        self._cache: OrderedDict[int, tuple[Member, ...]] = OrderedDict()
        """Sets of heights at most head + D (exact, never to change)."""
        self.halt: Callable[[str], None] | None = None
        """Stops deciding (`Alarms.fail`): called when a `rotate` is approved."""
        self.sized: Callable[[int], None] | None = None
        """Told the larger of |V(h)| and |V(h+1)| at each height started (the mempool's
        share of local transactions follows the set, `Mempool.share_among`)."""

    def bind(self, state: Callable[[], StateSource], head: Callable[[], int]) -> None:
        self._state, self._head = state, head

    def members(self, h: int) -> tuple[Member, ...]:
        """`V(h)` with its records, ordered by id, as the executed state shows it (exact
        for h ≤ executed height + 2, D ≥ 2). The genesis set on a chain without changes."""
        if not self.enabled or h < 1:
            return self.genesis_members
        got = self._cache.get(h)
        if got is not None:
            return got
        if self._state is None or self._head is None:
            raise StorageError("the validator sets are read before the state is open")
        reader = StateReader(self._state(), validators.NAME)
        try:
            entry = validators.set_at(reader, h)
        except NotFound as e:
            raise StorageError(f"the set of height {h} is missing from the state: {e}") from e
        got = tuple(
            Member(r.id, r.public_key, r.sae_id, self._p2p(reader, r.id)) for r in entry.records
        )
        if h <= self._head() + 2:
            self._cache[h] = got
            while len(self._cache) > CACHED_HEIGHTS:
                self._cache.popitem(last=False)
        return got

    @staticmethod
    def _p2p(reader: StateReader, vid: int) -> str:
        d = reader.load(validators.directory_key(vid), validators.Directory)
        return "" if d is None else d.p2p

    def vset(self, h: int) -> VSet:
        return VSet(tuple(m.id for m in self.members(h)))

    def start_height(self, h: int, parent: bytes, anchor: int) -> StartHeight:
        """The engine's `StartHeight(h)` with `V(h)` and `V(h+1)`: block h−1 is executed
        and `state` is the state after it."""
        if not self.enabled:
            return StartHeight(h, parent, anchor)
        rotated = self.rotations()
        if rotated and self.halt is not None:
            # Approved, so active at least D ≥ 2 heights after this one's parent: the
            # node stops before any height where one id could be two machines.
            self.halt(
                f"a rotation of validator {rotated[0]} is approved: this node does not build "
                "rotation (docs/CONSENSUS.md §10.6's per-end link ranges); it stops deciding"
            )
        now, after = self.vset(h), self.vset(h + 1)
        if self.sized is not None:
            self.sized(max(len(now.ids), len(after.ids)))
        return StartHeight(h, parent, anchor, now, after)

    def history(self, committed: int) -> tuple[tuple[int, VSet], ...]:
        """The set history for the engine's `Start` (§10.2): `(1, V(1))` and `(e, V(e))`
        for every activation height e through committed + 2. Empty on a chain without
        changes (the engine then keeps its genesis set)."""
        if not self.enabled:
            return ()
        if self._state is None:
            raise StorageError("the validator sets are read before the state is open")
        reader = StateReader(self._state(), validators.NAME)
        out: list[tuple[int, VSet]] = []
        for _, raw in reader.iterate(b"h"):
            entry = validators.SetEntry.decode(raw)
            if entry.height > committed + 2:
                break
            out.append((entry.height, VSet(tuple(r.id for r in entry.records))))
        for e in sorted({x.activation_height for x in validators.get_schedule(reader).entries}):
            if e <= committed + 2:
                out.append((e, self.vset(e)))
        if not out:
            raise StorageError("the validators contract holds no set of height 1")
        return tuple(out)

    def _in_flight(self) -> list[validators.Change]:
        """The approved changes not active yet (approved or scheduled)."""
        if not self.enabled or self._state is None:
            return []
        reader = StateReader(self._state(), validators.NAME)
        out = []
        for key, _ in reader.iterate(b"f"):
            ch = validators.get_change(reader, key[1:])
            if ch is not None:
                out.append(ch)
        return out

    def refuse_rotation(self, tx: Transaction) -> None:
        """Raise `RotationNotSupported` if tx, on a chain whose set changes, proposes a
        `rotate` or approves a change that the state the next block executes on holds as
        a rotate. A function of tx and that state only: every honest node judges a
        proposal alike. Arguments that do not parse are the contract's to refuse."""
        if not self.enabled or tx.contract != validators.NAME:
            return
        try:
            if tx.method == "propose":
                a = parse_args(validators.ProposeArgs, tx.args)
                if a.kind == "rotate":
                    raise RotationNotSupported(tx.method, a.id)
            elif tx.method == "approve":
                cid = parse_args(validators.ChangeArgs, tx.args).change_id
                if self._state is None:
                    raise StorageError("the validator sets are read before the state is open")
                ch = validators.get_change(StateReader(self._state(), validators.NAME), cid)
                if ch is not None and ch.kind == "rotate":
                    raise RotationNotSupported(tx.method, ch.id)
        except ArgumentError:
            return

    def joiners(self) -> tuple[Member, ...]:
        """The new records of the approved adds in flight, with the ids they were given:
        linked from approval (§10.6), so that the joiner catches up before it counts."""
        return tuple(
            Member(ch.id, ch.public_key, ch.sae_id, ch.p2p)
            for ch in self._in_flight()
            if ch.kind == "add" and ch.id is not None
        )

    def rotations(self) -> list[int]:
        """Ids whose `rotate` is approved and not active: the node does not build it."""
        return sorted(
            ch.id for ch in self._in_flight() if ch.kind == "rotate" and ch.id is not None
        )

    def signing_key(self, me: int, path: Path) -> SigningKey:
        """This validator's certificate key: the genesis's key of id `me`, or, on a
        chain whose set changes, any key for an id the genesis does not hold (an added
        validator: whether it is a member is judged from the chain, `member_of`)."""
        key = SigningKey.load(path)
        if self.may_join(me):
            return key
        if not 0 <= me < len(self.genesis_members):
            raise ConfigError("node.index", f"{me} is not a validator of this genesis")
        if key.public_key != self.genesis_members[me].public_key:
            raise ConfigError("node.signing_key", "does not match this validator's genesis key")
        return key

    def may_join(self, me: int) -> bool:
        """Whether id `me`, which the genesis does not hold, may run here: on a chain
        whose set changes, an added validator's id (given at its add's approval)."""
        return self.enabled and len(self.genesis_members) <= me <= validators.MAX_ID

    def refuse_amnesia(self, store: KVStore) -> None:
        """On a chain whose set changes, refuse a store that carries the amnesia mark
        (restored, rebuilt or state-synced): §10.9's guard across a change is not built,
        and §3.8's counts the genesis set."""
        if self.enabled and store.get(schema.META_AMNESIA) is not None:
            raise ConfigError(
                "consensus.reconfiguration",
                "this store was restored, rebuilt or state-synced (it carries the amnesia "
                "mark), and on a chain whose validator set changes the amnesia guard across "
                "a change (docs/CONSENSUS.md §10.9) is not built: the node would count the "
                "genesis set's heights. Move its data directory aside and start it from an "
                "empty one without --state-sync (it catches up by replaying the blocks from "
                "its peers)",
            )

    def own(self, me: int, public_key: bytes, sae_id: str) -> Callable[[int], bool]:
        """Whether this machine is a member of `V(h)`, as a function of h (always on a
        chain without changes)."""
        if not self.enabled:
            return lambda h: True
        return lambda h: self.member_of(h, me, public_key, sae_id)

    def member_of(self, h: int, me: int, public_key: bytes, sae_id: str) -> bool:
        """Whether this machine (id, key, SAE id) is a member of `V(h)` (§10.1: by id,
        with the key and SAE id it holds)."""
        return any(
            m.id == me and m.public_key == public_key and m.sae_id == sae_id
            for m in self.members(h)
        )

    def quorum(self, h: int) -> int:
        return quorum_size(len(self.members(h)))

    def key_of(self, h: int, vid: int) -> bytes | None:
        """The certificate key of id `vid` at height h, None if it is not a member."""
        return next((m.public_key for m in self.members(h) if m.id == vid), None)

    def certificate_check(
        self, chain_id: str, genesis_keys: Sequence[ValidatorKey]
    ) -> Callable[[CommitCertificate], None]:
        """The chain store's check of a certificate: by the set of its height on a chain
        whose set changes, by the genesis keys on any other."""
        if not self.enabled:
            return lambda cert: verify_certificate(cert, chain_id, genesis_keys)
        return lambda cert: self.check_certificate(cert, chain_id)

    def check_certificate(self, cert: CommitCertificate, chain_id: str) -> None:
        """Raise `BadSignature` unless q(h) members of `V(h)` signed it, by id (§10.5)."""
        records = [
            validators.Record(m.id, m.public_key, m.sae_id, b"\x00" * 20)
            for m in self.members(cert.height)
        ]
        verify_certificate_by_id(cert, chain_id, records)
