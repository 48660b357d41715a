"""validators: validator-set changes on a running chain, the application side of
docs/CONSENSUS.md §10.1–§10.2.

Status: every transaction method refuses with `reconfiguration-disabled` ("validator-set
changes are not enabled on this chain"; the receipt's wording, part of the chain's
history, is unchanged since the node did not follow changes) unless the genesis sets
`consensus.reconfiguration`. On such a chain the node follows the set of each height from
this contract's state (`node/validatorsets.py`); what it builds of §10.3–§10.9 and what it
refuses instead is the last revision of docs/CONSENSUS.md. The queries work on any genesis
with operators.

A validator is named by its id (genesis: 0..n₀−1, then `next_id` at each approved add; an
id is never given twice). Its consensus record is `(id, public_key, sae_id, operator)`;
`name`, `p2p` and `api` are directory data that its operator changes with
`update_endpoint`. No public key or SAE id is ever used twice: every one named by the
genesis or by an approved change (dropped ones included) stays used.

A change is `add` (a join request's content: key, SAE id, operator, directory data),
`remove(id)` or `rotate(id, public_key, sae_id)`; its id is the hash of the proposing
transaction. The operator of a member of the current set proposes it and operators of
members approve it. It is approved in the block a where the members of `V(a)` whose
operator has approved it are more than `2·n(a)/3` (an operator of several members counts
for each) and the limits hold: at most `f(a)` changes in flight (approved, not yet active,
this one included), `n ≥ 4` after the in-flight removes, no other in-flight change on the
same id, the id of a remove or rotate is a member, the key and SAE id are unused. If a
limit fails the approval is recorded, the change stays proposed and its status names the
rule; the next approval re-evaluates it. An add gets its id at approval. A remove is ready
at approval; an add or rotate when `ready`, sent after its approval (refused before),
carries the new key's ML-DSA-65 signature of `encode_value(["qchain-ready", chain_id,
change_id, checked])`, where `checked` is the ascending list of change ids the machine
checked its links to: it must name every other add or rotate in flight that is ready
when the transaction executes (CONSENSUS.md §10.2, review 6 N4 and N5). The block r
in which a change is both approved and ready schedules it for `e = r + D` with the next
sequence number (consecutive from 0, in the order changes enter the schedule: by block, then
by transaction; in-flight changes never touch one id, so the order of changes with one
activation height never changes the set it gives). A proposed change expires at the
start of block `proposed + proposal_ttl`; an approved change not ready is dropped at the
first block at least `ready_ttl_heights` above its approval block whose time is more than
`ready_ttl` (ms) after the approval block's, or when its cancel is approved by the same
threshold. At the start of block h the changes scheduled for h are applied, in sequence
order, so during block h the current set is `V(h)`.

Two further limits of §10.2 (review 8): the canonical encodings of `set`, `schedule` and
`q` stay within `MAX_STATE_BYTES` (245 760) in every state the changes in flight can lead
to (`worst_state_bytes`; a genesis that enables changes is held to it too), and
`accept_missing(change_id, ids)`, approved like a change while the add or rotate is
approved and not ready, lets its new record skip readiness's working-link clause for the
members `ids` names (at most f(a) ids over the changes in flight; `link_exempt` decides
it, by id); it goes with the change when the change is dropped or activated.

State layout (relative to the contract's key space):

| key | value |
|---|---|
| `c` | `Config` |
| `set` | `ValidatorSet`: the current set's records, ordered by id (CONSENSUS.md §10.5 proves it) |
| `schedule` | `Schedule`: the scheduled changes not yet active, in sequence order (proved too) |
| `h` height (8 bytes) | `SetEntry`: `V(1)` and the set of every activation height |
| `n` | next validator id (integer) |
| `q` | next sequence number (integer) |
| `d` id (8 bytes) | `Directory` of a member or of an approved add |
| `k` SHA-256 of a public key | empty: used keys |
| `u` SAE id | empty: used SAE ids |
| `p` change id | `Change` |
| `a` change id, operator | empty: approvals |
| `x` change id, operator | empty: cancel approvals |
| `o` proposer, change id | empty: open proposals per proposer |
| `e` height (8 bytes), change id | empty: proposed changes by expiry height |
| `r` height (8 bytes), change id | empty: approved, not ready, by `approved + ready_ttl_heights` |
| `f` change id | empty: changes in flight |
| `m` accept id | `MissingAccept` |
| `w` accept id, operator | empty: approvals of an `accept_missing` |
| `g` change id, accept id | empty: the `accept_missing`s of a change |
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Annotated

from contracts import membership
from contracts.runtime import BlockHookContext, CallContext, Contract, NoArgs, QueryContext
from contracts.state import StateReader, StateWriter
from qchain.codec import U32, U64, Hash32, Len, Range, Struct, encode_value
from qchain.errors import (
    ArgumentError,
    BadSignature,
    NotFound,
    PermissionDenied,
    RuleViolation,
)
from qchain.keys import Scheme, verify
from qchain.store.schema import read_u64, u64
from qchain.types import Address

NAME = "validators"
DISABLED = "validator-set changes are not enabled on this chain"
READY_TAG = "qchain-ready"
MIN_SET = 4
MAX_SET = 90
"""CONSENSUS.md §10.2: n ≤ 90, so that a set-chain proof of the set and its pending
entries always fits SETCHAIN's 256 KB (review 7, P3)."""
MAX_CHECKED = (MAX_SET - 1) // 3
"""At most f changes are in flight, so a `checked` list names at most f of them."""
MAX_STATE_BYTES = 245_760
"""CONSENSUS.md §10.2 (review 8, ambiguity 6): the canonical encodings of `set`, `schedule`
and `q` total at most this many bytes, so that with the Merkle paths of the three keys a
set-chain proof stays within SETCHAIN's 256 KB (10.5)."""
MAX_MISSING = MAX_CHECKED
"""An `accept_missing` names at most f(a) ≤ 29 ids (§10.2)."""
MAX_ACCEPTS_PER_CHANGE = 4
"""`accept_missing` proposals one change may have at once (proposed or approved)."""
MAX_ID = 2**16 - 1
MAX_PROPOSED = 64
"""Changes in the `proposed` state at once, over all proposers."""
MAX_PROPOSED_PER_PROPOSER = 4
MAX_HISTORY_PAGE = 64
MAX_APPROVERS = 4096
"""Approvers listed in a status (each was an operator of a member when it approved)."""
KINDS = ("add", "remove", "rotate")

PROPOSED = "proposed"
APPROVED = "approved"
SCHEDULED = "scheduled"
ACTIVE = "active"
EXPIRED = "expired"
DROPPED = "dropped"

ValidatorId = Annotated[int, Range(0, MAX_ID)]
PublicKey = Annotated[bytes, Len(1952, 1952)]
SaeId = Annotated[str, Len(1, 128)]
Name = Annotated[str, Len(1, 64)]
Hint = Annotated[str, Len(0, 256)]
ChangeId = Annotated[bytes, Len(32, 32)]
Signature = Annotated[bytes, Len(1, 4096)]


@dataclass(frozen=True)
class Config(Struct):
    enabled: bool
    """The genesis's `consensus.reconfiguration`."""
    reconfig_delay: U32
    proposal_ttl: U32
    ready_ttl: U64
    """Block time, ms."""
    ready_ttl_heights: U32


@dataclass(frozen=True)
class Record(Struct):
    """A validator's consensus record."""

    id: ValidatorId
    public_key: PublicKey
    sae_id: SaeId
    operator: Address


@dataclass(frozen=True)
class SetEntry(Struct):
    """`V(height)`, the set from an activation height on (height 1: the genesis set)."""

    height: U64
    records: Annotated[tuple[Record, ...], Len(1, MAX_SET)]
    """Ordered by id."""
    sequences: Annotated[tuple[U64, ...], Len(0, MAX_SET)]
    """Sequence numbers of the changes applied at this height, in order."""


@dataclass(frozen=True)
class ValidatorSet(Struct):
    """The value of the state key `set`: the current set's records, ordered by id."""

    records: Annotated[tuple[Record, ...], Len(1, MAX_SET)]


@dataclass(frozen=True)
class ScheduleEntry(Struct):
    """A scheduled change, with what applying it needs."""

    sequence: U64
    activation_height: U64
    change_id: ChangeId
    kind: Annotated[str, Len(1, 8)]
    id: ValidatorId
    public_key: Annotated[bytes, Len(0, 1952)]
    sae_id: Annotated[str, Len(0, 128)]
    operator: Annotated[bytes, Len(0, 20)]


@dataclass(frozen=True)
class Schedule(Struct):
    """The value of the state key `schedule`: the changes scheduled and not yet active, in
    sequence order (which is also activation order)."""

    entries: Annotated[tuple[ScheduleEntry, ...], Len(0, MAX_SET)]


@dataclass(frozen=True)
class Directory(Struct):
    id: ValidatorId
    operator: Address
    name: Name
    p2p: Hint
    api: Hint


@dataclass(frozen=True)
class Change(Struct):
    change_id: ChangeId
    kind: Annotated[str, Len(1, 8)]
    id: ValidatorId | None
    """The validator removed or rotated; for an add, the id given at approval."""
    public_key: Annotated[bytes, Len(0, 1952)]
    sae_id: Annotated[str, Len(0, 128)]
    operator: Annotated[bytes, Len(0, 20)]
    name: Annotated[str, Len(0, 64)]
    p2p: Hint
    api: Hint
    proposer: Address
    proposed_height: U64
    status: Annotated[str, Len(1, 16)]
    approved_height: U64
    """0: not approved."""
    approved_time: U64
    """The approval block's time (ms)."""
    ready_height: U64
    """0: not ready (a remove is ready at approval)."""
    activation_height: U64
    """e = r + D once scheduled; 0 before."""
    sequence: U64 | None
    rule: Annotated[str, Len(0, 32)]
    """The limit that held the change back, or why it was dropped; empty if none."""
    reason: Annotated[str, Len(0, 512)]


@dataclass(frozen=True)
class MissingAccept(Struct):
    """`accept_missing(change_id, ids)`: once approved, the node software of the change's
    new record skips readiness's working-link clause for the members `ids` names
    (CONSENSUS.md §10.2, review 8 Q7). Void, and deleted, when the change is dropped or
    activated."""

    accept_id: ChangeId
    """The hash of the proposing transaction."""
    change_id: ChangeId
    ids: Annotated[tuple[ValidatorId, ...], Len(1, MAX_MISSING)]
    """Ascending."""
    proposer: Address
    proposed_height: U64
    status: Annotated[str, Len(1, 16)]
    """`proposed` or `approved`."""
    approved_height: U64
    """0: not approved."""
    records: Annotated[tuple[Hash32, ...], Len(0, MAX_MISSING)]
    """Once approved: SHA-256 of each named member's record in `V(a)`, in the order of
    `ids` (what `link_exempt` would compare if the exemption were by record)."""
    rule: Annotated[str, Len(0, 32)]
    """The limit that held it back at its threshold; empty if none."""
    reason: Annotated[str, Len(0, 512)]


@dataclass(frozen=True)
class ChangeStatus(Struct):
    """A change and its approvals, counted over the current set."""

    change: Change
    n: U32
    needed: U32
    """Members whose operators must approve: the least count above 2·n/3."""
    approvals: U32
    """Members of the current set whose operator approved."""
    approvers: Annotated[tuple[Address, ...], Len(0, MAX_APPROVERS)]
    cancel_approvals: U32
    cancel_approvers: Annotated[tuple[Address, ...], Len(0, MAX_APPROVERS)]
    missing: Annotated[tuple[ValidatorId, ...], Len(0, MAX_MISSING * MAX_ACCEPTS_PER_CHANGE)]
    """The ids named by the change's approved `accept_missing`s, ascending, while the change
    is in flight (empty otherwise)."""


@dataclass(frozen=True)
class GenesisValidator:
    index: int
    name: str
    public_key: bytes
    sae_id: str
    operator: bytes


# --- keys ------------------------------------------------------------------------------------

CONFIG_KEY = b"c"
SET_KEY = b"set"
SCHEDULE_KEY = b"schedule"
NEXT_ID_KEY = b"n"
NEXT_SEQ_KEY = b"q"


def set_key(height: int) -> bytes:
    return b"h" + u64(height)


def directory_key(vid: int) -> bytes:
    return b"d" + u64(vid)


def used_key_key(public_key: bytes) -> bytes:
    return b"k" + hashlib.sha256(public_key).digest()


def used_sae_key(sae_id: str) -> bytes:
    return b"u" + sae_id.encode()


def change_key(cid: bytes) -> bytes:
    return b"p" + cid


def approval_key(cid: bytes, operator: bytes) -> bytes:
    return b"a" + cid + operator


def cancel_key(cid: bytes, operator: bytes) -> bytes:
    return b"x" + cid + operator


def open_key(proposer: bytes, cid: bytes) -> bytes:
    return b"o" + proposer + cid


def expiry_key(height: int, cid: bytes) -> bytes:
    return b"e" + u64(height) + cid


def ready_deadline_key(height: int, cid: bytes) -> bytes:
    return b"r" + u64(height) + cid


def in_flight_key(cid: bytes) -> bytes:
    return b"f" + cid


def accept_key(aid: bytes) -> bytes:
    return b"m" + aid


def accept_approval_key(aid: bytes, operator: bytes) -> bytes:
    return b"w" + aid + operator


def accepts_of_key(cid: bytes, aid: bytes) -> bytes:
    return b"g" + cid + aid


def ready_message(chain_id: str, change_id: bytes, checked: Sequence[bytes] = ()) -> bytes:
    """The bytes the new key signs: the canonical encoding of
    `["qchain-ready", chain_id, change_id, checked]` (`checked`: ascending change ids)."""
    return encode_value([READY_TAG, chain_id, change_id, list(checked)])


# --- reads -----------------------------------------------------------------------------------


def get_config(state: StateReader) -> Config | None:
    return state.load(CONFIG_KEY, Config)


def current_set(state: StateReader) -> ValidatorSet:
    """The set after the last applied activation (during block h: `V(h)`)."""
    vset = state.load(SET_KEY, ValidatorSet)
    if vset is None:
        raise NotFound("validator set", "(this genesis has no validator operators)")
    return vset


def get_schedule(state: StateReader) -> Schedule:
    return state.load(SCHEDULE_KEY, Schedule) or Schedule(())


def set_at(state: StateReader, height: int) -> SetEntry:
    """`V(height)` as far as the executed schedule shows (exact up to the last executed
    height + D)."""
    base: SetEntry | None = None
    for _, raw in state.iterate(b"h", start=set_key(height), reverse=True):
        base = SetEntry.decode(raw)
        break
    if base is None:
        raise NotFound("validator set", "(this genesis has no validator operators)")
    records = {r.id: r for r in base.records}
    for entry in get_schedule(state).entries:
        if entry.activation_height <= height:
            _apply(records, entry)
    return SetEntry(base.height, tuple(records[i] for i in sorted(records)), base.sequences)


def state_bytes(
    records: Sequence[Record], entries: Sequence[ScheduleEntry], next_sequence: int
) -> int:
    """The bytes §10.2's bound counts: the canonical encodings of the values of `set`,
    `schedule` and `q` holding these."""
    return (
        len(ValidatorSet(tuple(records)).encode())
        + len(Schedule(tuple(entries)).encode())
        + len(encode_value(next_sequence))
    )


def get_accept(state: StateReader, aid: bytes) -> MissingAccept | None:
    return state.load(accept_key(aid), MissingAccept)


def accepts_of(state: StateReader, cid: bytes) -> list[MissingAccept]:
    """The `accept_missing`s of a change (proposed or approved), by accept id."""
    out = []
    for aid in _ids(state, b"g" + cid):
        acc = get_accept(state, aid)
        if acc is None:
            raise NotFound("accept_missing", aid.hex())
        out.append(acc)
    return out


def accepted_missing(state: StateReader, cid: bytes) -> tuple[int, ...]:
    """The ids named by the approved `accept_missing`s of change cid, ascending."""
    return tuple(
        sorted({i for acc in accepts_of(state, cid) if acc.status == APPROVED for i in acc.ids})
    )


def record_digest(record: Record) -> bytes:
    return hashlib.sha256(record.encode()).digest()


def link_exempt(accepts: Sequence[MissingAccept], member: Record) -> bool:
    """Whether the node software of a change's new record skips readiness's working-link
    clause for `member` (a member of `V(cur)`), given the change's `accept_missing`s.

    §10.2 as written: the exemption is **by id**: it follows the id through a later
    rotation of it. (Keyed on the record instead, the test would be
    `record_digest(member) in acc.records`.)"""
    return any(acc.status == APPROVED and member.id in acc.ids for acc in accepts)


def readiness_links(state: StateReader, cid: bytes) -> tuple[list[Record], list[bytes]]:
    """What readiness (§10.2) asks of the machine of change cid's new record now: the
    members of the current set it must have working links to (every one, less the rotated
    id and the ids `link_exempt` names), and the other adds and rotates in flight that are
    ready, whose new records it must also have working links to and which its `checked`
    must name."""
    ch = _require_change(state, cid)
    accepts = accepts_of(state, cid)
    members = [
        r
        for r in current_set(state).records
        if not (ch.kind == "rotate" and r.id == ch.id) and not link_exempt(accepts, r)
    ]
    return members, _ready_others(state, ch)


def faults(n: int) -> int:
    return (n - 1) // 3


def threshold(n: int) -> int:
    """The least count c with c > 2·n/3."""
    return 2 * n // 3 + 1


def get_change(state: StateReader, cid: bytes) -> Change | None:
    return state.load(change_key(cid), Change)


def _require_change(state: StateReader, cid: bytes) -> Change:
    ch = get_change(state, cid)
    if ch is None:
        raise NotFound("change", cid.hex())
    return ch


def _ids(state: StateReader, prefix: bytes) -> list[bytes]:
    return [k[len(prefix) :] for k, _ in state.iterate(prefix)]


def _in_flight(state: StateReader) -> list[Change]:
    return [_require_change(state, cid) for cid in _ids(state, b"f")]


def _counted(state: StateReader, prefix: bytes, vset: ValidatorSet) -> tuple[int, list[bytes]]:
    """(members of vset whose operator is among the approvals under prefix, approvers)."""
    approvers = _ids(state, prefix)
    chosen = set(approvers)
    return sum(1 for r in vset.records if r.operator in chosen), approvers


def _apply(records: dict[int, Record], ch: ScheduleEntry) -> None:
    if ch.kind == "remove":
        records.pop(ch.id, None)
    elif ch.kind == "rotate":
        old = records[ch.id]
        records[ch.id] = replace(old, public_key=ch.public_key, sae_id=ch.sae_id)
    else:
        records[ch.id] = Record(ch.id, ch.public_key, ch.sae_id, ch.operator)


# --- genesis ---------------------------------------------------------------------------------


def init_genesis(state: StateWriter, config: Config, vals: Iterable[GenesisValidator]) -> None:
    """The contract's initial state: `V(1)`, used keys and SAE ids, directory names (the
    address hints are not in the genesis hash, so they are not in the state either)."""
    state.save(CONFIG_KEY, config)
    records = []
    for v in vals:
        records.append(Record(v.index, v.public_key, v.sae_id, v.operator))
        state.put(used_key_key(v.public_key), b"")
        state.put(used_sae_key(v.sae_id), b"")
        state.save(directory_key(v.index), Directory(v.index, v.operator, v.name, "", ""))
    state.save(set_key(1), SetEntry(1, tuple(records), ()))
    state.save(SET_KEY, ValidatorSet(tuple(records)))
    state.save(SCHEDULE_KEY, Schedule(()))
    state.put_int(NEXT_ID_KEY, len(records))
    state.put_int(NEXT_SEQ_KEY, 0)


# --- checks ----------------------------------------------------------------------------------


def _require_enabled(state: StateReader) -> Config:
    cfg = get_config(state)
    if cfg is None or not cfg.enabled:
        raise RuleViolation(
            "reconfiguration-disabled",
            f"{DISABLED}: the consensus engine does not follow set changes yet "
            "(docs/CONSENSUS.md §10 is not implemented)",
        )
    return cfg


def _require_operator(ctx: CallContext, vset: ValidatorSet, action: str) -> None:
    if not any(r.operator == ctx.sender for r in vset.records):
        raise PermissionDenied(
            f"validators.{action}", "only the operator of a member of the current set may"
        )


def _fresh(state: StateReader, public_key: bytes, sae_id: str) -> tuple[str, str] | None:
    if state.has(used_key_key(public_key)):
        return "key-used", "the public key was used by a validator or an approved change"
    if state.has(used_sae_key(sae_id)):
        return "sae-id-used", f"SAE id {sae_id!r} was used by a validator or an approved change"
    return None


def _target(vset: ValidatorSet, flight: list[Change], ch: Change) -> tuple[str, str] | None:
    if ch.kind == "add":
        return None
    if not any(r.id == ch.id for r in vset.records):
        return "not-a-validator", f"validator {ch.id} is not a member of the current set"
    if any(c.id == ch.id and c.kind != "add" for c in flight):
        return "id-in-flight", f"a change in flight already removes or rotates validator {ch.id}"
    return None


def _limits(state: StateReader, vset: ValidatorSet, ch: Change) -> tuple[str, str] | None:
    """The first limit of §10.2 that approving ch now would break, or None."""
    flight = _in_flight(state)
    failed = _target(vset, flight, ch)
    if failed is None and ch.kind != "remove":
        failed = _fresh(state, ch.public_key, ch.sae_id)
    if failed is not None:
        return failed
    n = len(vset.records)
    if len(flight) + 1 > faults(n):
        return "too-many-in-flight", f"{len(flight)} changes in flight; f = {faults(n)}"
    removes = sum(1 for c in (*flight, ch) if c.kind == "remove")
    if n - removes < MIN_SET:
        return "set-too-small", f"{n} members less {removes} in-flight removes is below {MIN_SET}"
    adds = sum(1 for c in (*flight, ch) if c.kind == "add")
    if n + adds > MAX_SET:
        return "set-too-large", f"{n} members and {adds} in-flight adds exceed {MAX_SET}"
    if ch.kind == "add" and state.get_int(NEXT_ID_KEY) > MAX_ID:
        return "ids-exhausted", f"every validator id up to {MAX_ID} was given"
    size = worst_state_bytes(state, vset, [*flight, ch])
    if size > MAX_STATE_BYTES:
        return (
            "set-too-large",
            f"set, schedule and q would take up to {size} bytes; at most {MAX_STATE_BYTES}",
        )
    return None


def worst_state_bytes(state: StateReader, vset: ValidatorSet, flight: Sequence[Change]) -> int:
    """§10.2's byte bound for the changes in flight, counted so that it bounds every state
    the chain can reach before they all activate, whatever their order: the set holding
    every current member (no remove applied), every in-flight add, and each rotated id at
    the larger of its two records; the schedule holding an entry for every in-flight
    change (one not scheduled yet with its sequence number and activation height at their
    largest encoding); and `q` once all of them are scheduled."""
    records = {r.id: r for r in vset.records}
    entries = list(get_schedule(state).entries)
    scheduled = {x.change_id for x in entries}
    next_id = state.get_int(NEXT_ID_KEY)
    next_seq = state.get_int(NEXT_SEQ_KEY)
    for c in flight:
        vid = c.id
        if vid is None:
            vid, next_id = next_id, next_id + 1
        if c.kind == "add":
            records[vid] = Record(vid, c.public_key, c.sae_id, c.operator)
        elif c.kind == "rotate" and vid in records:
            new = replace(records[vid], public_key=c.public_key, sae_id=c.sae_id)
            if len(new.encode()) > len(records[vid].encode()):
                records[vid] = new
        if c.change_id not in scheduled:
            top = 2**64 - 1
            entries.append(
                ScheduleEntry(
                    top, top, c.change_id, c.kind, vid, c.public_key, c.sae_id, c.operator
                )
            )
            next_seq += 1
    return state_bytes([records[i] for i in sorted(records)], entries, next_seq)


# --- state changes ---------------------------------------------------------------------------


def _save(state: StateWriter, ch: Change) -> None:
    state.save(change_key(ch.change_id), ch)


def _schedule(state: StateWriter, cfg: Config, ch: Change, r: int) -> Change:
    seq = state.get_int(NEXT_SEQ_KEY)
    state.put_int(NEXT_SEQ_KEY, seq + 1)
    e = r + cfg.reconfig_delay
    if ch.id is None:
        raise RuleViolation("broken-change", f"change {ch.change_id.hex()} has no id")
    entry = ScheduleEntry(
        seq, e, ch.change_id, ch.kind, ch.id, ch.public_key, ch.sae_id, ch.operator
    )
    state.save(SCHEDULE_KEY, Schedule((*get_schedule(state).entries, entry)))
    state.delete(ready_deadline_key(ch.approved_height + cfg.ready_ttl_heights, ch.change_id))
    return replace(ch, status=SCHEDULED, activation_height=e, sequence=seq)


def _approve(ctx: CallContext, cfg: Config, ch: Change) -> Change:
    state = ctx.state
    state.delete(expiry_key(ch.proposed_height + cfg.proposal_ttl, ch.change_id))
    state.delete(open_key(ch.proposer, ch.change_id))
    state.put(in_flight_key(ch.change_id), b"")
    ch = replace(
        ch,
        status=APPROVED,
        approved_height=ctx.height,
        approved_time=ctx.time,
        rule="",
        reason="",
    )
    if ch.kind == "add":
        vid = state.get_int(NEXT_ID_KEY)
        state.put_int(NEXT_ID_KEY, vid + 1)
        ch = replace(ch, id=vid)
        state.save(directory_key(vid), Directory(vid, ch.operator, ch.name, ch.p2p, ch.api))
    if ch.kind != "remove":
        state.put(used_key_key(ch.public_key), b"")
        state.put(used_sae_key(ch.sae_id), b"")
    if ch.kind == "remove":
        ch = replace(ch, ready_height=ctx.height)
    if ch.ready_height:
        ch = _schedule(state, cfg, ch, ctx.height)
    else:
        state.put(ready_deadline_key(ctx.height + cfg.ready_ttl_heights, ch.change_id), b"")
    ctx.emit("approved", [ch.change_id, ch.status])
    return ch


def _void_accepts(state: StateWriter, cid: bytes) -> None:
    """A change left flight (dropped or activated): its `accept_missing`s go with it."""
    for aid in _ids(state, b"g" + cid):
        for op in _ids(state, b"w" + aid):
            state.delete(accept_approval_key(aid, op))
        state.delete(accept_key(aid))
        state.delete(accepts_of_key(cid, aid))


def _drop(state: StateWriter, cfg: Config, ch: Change, rule: str, reason: str) -> Change:
    state.delete(in_flight_key(ch.change_id))
    _void_accepts(state, ch.change_id)
    state.delete(ready_deadline_key(ch.approved_height + cfg.ready_ttl_heights, ch.change_id))
    if ch.kind == "add" and ch.id is not None:
        state.delete(directory_key(ch.id))
    ch = replace(ch, status=DROPPED, rule=rule, reason=reason)
    _save(state, ch)
    return ch


def _status(state: StateReader, ch: Change) -> ChangeStatus:
    vset = current_set(state)
    approvals, approvers = _counted(state, b"a" + ch.change_id, vset)
    cancels, cancellers = _counted(state, b"x" + ch.change_id, vset)
    n = len(vset.records)
    return ChangeStatus(
        ch,
        n,
        threshold(n),
        approvals,
        tuple(approvers[:MAX_APPROVERS]),
        cancels,
        tuple(cancellers[:MAX_APPROVERS]),
        accepted_missing(state, ch.change_id),
    )


# --- the contract ----------------------------------------------------------------------------

contract = Contract(NAME, "validator-set changes (CONSENSUS.md §10.2); not enabled yet")


@dataclass(frozen=True)
class ProposeArgs(Struct):
    kind: Annotated[str, Len(1, 8)]
    """`add`, `remove` or `rotate`."""
    id: ValidatorId | None
    """The validator removed or rotated; nil for an add."""
    public_key: Annotated[bytes, Len(0, 1952)]
    """The new ML-DSA-65 key (add, rotate); empty for a remove."""
    sae_id: Annotated[str, Len(0, 128)]
    """The new SAE id (add, rotate); empty for a remove."""
    operator: Annotated[bytes, Len(0, 20)]
    """The new validator's operator, a member's address (add); empty otherwise."""
    name: Annotated[str, Len(0, 64)]
    p2p: Hint
    api: Hint
    """Directory data of an added validator; empty otherwise."""


def _check_shape(a: ProposeArgs) -> None:
    if a.kind not in KINDS:
        raise ArgumentError("kind", f"expected one of {', '.join(KINDS)}")
    needs = {
        "add": {"public_key", "sae_id", "operator", "name"},
        "remove": {"id"},
        "rotate": {"id", "public_key", "sae_id"},
    }[a.kind]
    allowed = needs | ({"p2p", "api"} if a.kind == "add" else set())
    for field in ("id", "public_key", "sae_id", "operator", "name", "p2p", "api"):
        value = getattr(a, field)
        given = value is not None and value not in (b"", "")
        if field in needs and not given:
            raise ArgumentError(field, f"required for {a.kind}")
        if field not in allowed and given:
            raise ArgumentError(field, f"not allowed for {a.kind}")
    if "public_key" in needs and len(a.public_key) != 1952:
        raise ArgumentError("public_key", "an ML-DSA-65 public key is 1952 bytes")
    if a.kind == "add" and len(a.operator) != 20:
        raise ArgumentError("operator", "an address is 20 bytes")


@contract.tx("propose", ProposeArgs)
def propose(ctx: CallContext, a: ProposeArgs) -> bytes:
    """Propose a change (`add` from a join request's content, `remove(id)`,
    `rotate(id, public_key, sae_id)`); sender: an operator of a member. Returns the change
    id (the transaction hash)."""
    cfg = _require_enabled(ctx.state)
    _check_shape(a)
    vset = current_set(ctx.state)
    _require_operator(ctx, vset, "propose")
    if len(_ids(ctx.state, b"e")) >= MAX_PROPOSED:
        raise RuleViolation("too-many-proposals", f"{MAX_PROPOSED} changes are proposed already")
    if len(_ids(ctx.state, b"o" + ctx.sender)) >= MAX_PROPOSED_PER_PROPOSER:
        raise RuleViolation(
            "too-many-proposals",
            f"the sender has {MAX_PROPOSED_PER_PROPOSER} proposed changes already",
        )
    if a.kind == "add" and membership.get_member(ctx.read(membership.NAME), a.operator) is None:
        raise RuleViolation("operator-not-a-member", f"{a.operator.hex()} is not a member")
    ch = Change(
        ctx.tx_hash,
        a.kind,
        a.id,
        a.public_key,
        a.sae_id,
        a.operator,
        a.name,
        a.p2p,
        a.api,
        ctx.sender,
        ctx.height,
        PROPOSED,
        0,
        0,
        0,
        0,
        None,
        "",
        "",
    )
    failed = _target(vset, _in_flight(ctx.state), ch)
    if failed is None and a.kind != "remove":
        failed = _fresh(ctx.state, a.public_key, a.sae_id)
    if failed is not None:
        raise RuleViolation(*failed)
    _save(ctx.state, ch)
    ctx.state.put(expiry_key(ctx.height + cfg.proposal_ttl, ch.change_id), b"")
    ctx.state.put(open_key(ctx.sender, ch.change_id), b"")
    ctx.emit("proposed", [ch.change_id, a.kind])
    return ch.change_id


@dataclass(frozen=True)
class ChangeArgs(Struct):
    change_id: ChangeId


@contract.tx("approve", ChangeArgs)
def approve(ctx: CallContext, a: ChangeArgs) -> ChangeStatus:
    """Approve a proposed change (sender: an operator of a member; again to re-evaluate).
    Returns its status: approved when more than 2·n/3 members' operators approved and
    every limit holds, else the limit that failed."""
    cfg = _require_enabled(ctx.state)
    ch = _require_change(ctx.state, a.change_id)
    if ch.status != PROPOSED:
        raise RuleViolation("not-proposed", f"change {a.change_id.hex()} is {ch.status}")
    vset = current_set(ctx.state)
    _require_operator(ctx, vset, "approve")
    ctx.state.put(approval_key(ch.change_id, ctx.sender), b"")
    count, _ = _counted(ctx.state, b"a" + ch.change_id, vset)
    if count >= threshold(len(vset.records)):
        failed = _limits(ctx.state, vset, ch)
        if failed is None:
            ch = _approve(ctx, cfg, ch)
        else:
            ch = replace(ch, rule=failed[0], reason=failed[1])
    else:
        ch = replace(ch, rule="", reason="")
    _save(ctx.state, ch)
    return _status(ctx.state, ch)


@contract.tx("approve_cancel", ChangeArgs)
def approve_cancel(ctx: CallContext, a: ChangeArgs) -> ChangeStatus:
    """Approve cancelling an approved change that is not ready yet (sender: an operator of
    a member). With more than 2·n/3 members' operators it is dropped. Returns its status."""
    cfg = _require_enabled(ctx.state)
    ch = _require_change(ctx.state, a.change_id)
    if ch.status != APPROVED:
        raise RuleViolation(
            "not-cancellable",
            f"change {a.change_id.hex()} is {ch.status}: only an approved change that is "
            "not ready can be cancelled",
        )
    vset = current_set(ctx.state)
    _require_operator(ctx, vset, "approve_cancel")
    ctx.state.put(cancel_key(ch.change_id, ctx.sender), b"")
    count, _ = _counted(ctx.state, b"x" + ch.change_id, vset)
    if count >= threshold(len(vset.records)):
        ch = _drop(ctx.state, cfg, ch, "cancelled", "its cancel was approved")
        ctx.emit("dropped", [ch.change_id, ch.rule])
    return _status(ctx.state, ch)


@dataclass(frozen=True)
class AcceptMissingArgs(Struct):
    change_id: ChangeId
    ids: Annotated[tuple[ValidatorId, ...], Len(1, MAX_MISSING)]
    """Members of the current set, ascending, once each (for a rotate of j, not j)."""


def _missing_targets(vset: ValidatorSet, ch: Change, ids: Sequence[int]) -> tuple[str, str] | None:
    members = {r.id for r in vset.records}
    for i in ids:
        if i not in members:
            return "not-a-validator", f"validator {i} is not a member of the current set"
        if ch.kind == "rotate" and i == ch.id:
            return "rotated-id", f"validator {i} is the one the change rotates"
    return None


def _require_pending_for_accept(ch: Change) -> None:
    if ch.kind == "remove":
        raise RuleViolation("no-new-key", "a remove is ready at approval: it has no links to judge")
    if ch.status != APPROVED:
        raise RuleViolation(
            "not-pending",
            f"change {ch.change_id.hex()} is {ch.status}: accept_missing is for an approved "
            "add or rotate that is not ready",
        )


@contract.tx("accept_missing", AcceptMissingArgs)
def accept_missing(ctx: CallContext, a: AcceptMissingArgs) -> bytes:
    """Propose that the new record of an approved add or rotate that is not ready may
    become ready without working links to the members `ids` (§10.2, review 8 Q7); sender:
    an operator of a member. Returns its accept id (the transaction hash)."""
    _require_enabled(ctx.state)
    if any(x >= y for x, y in pairwise(a.ids)):
        raise ArgumentError("ids", "expected validator ids ascending, once each")
    ch = _require_change(ctx.state, a.change_id)
    _require_pending_for_accept(ch)
    vset = current_set(ctx.state)
    _require_operator(ctx, vset, "accept_missing")
    failed = _missing_targets(vset, ch, a.ids)
    if failed is not None:
        raise RuleViolation(*failed)
    if len(_ids(ctx.state, b"g" + ch.change_id)) >= MAX_ACCEPTS_PER_CHANGE:
        raise RuleViolation(
            "too-many-proposals",
            f"change {ch.change_id.hex()} has {MAX_ACCEPTS_PER_CHANGE} accept_missing already",
        )
    acc = MissingAccept(
        ctx.tx_hash, ch.change_id, a.ids, ctx.sender, ctx.height, PROPOSED, 0, (), "", ""
    )
    ctx.state.save(accept_key(acc.accept_id), acc)
    ctx.state.put(accepts_of_key(ch.change_id, acc.accept_id), b"")
    ctx.emit("accept-missing-proposed", [acc.accept_id, ch.change_id, list(a.ids)])
    return acc.accept_id


def _missing_in_flight(state: StateReader, but: bytes) -> set[int]:
    """The distinct ids named by the approved `accept_missing`s of every change in flight,
    except accept `but`; ids no longer members included (Revision 1.15, review 9 S4)."""
    return {
        i
        for cid in _ids(state, b"f")
        for acc in accepts_of(state, cid)
        if acc.status == APPROVED and acc.accept_id != but
        for i in acc.ids
    }


@dataclass(frozen=True)
class AcceptArgs(Struct):
    accept_id: ChangeId


@contract.tx("approve_missing", AcceptArgs)
def approve_missing(ctx: CallContext, a: AcceptArgs) -> ChangeStatus:
    """Approve an `accept_missing` (sender: an operator of a member; again to re-evaluate).
    It is approved when more than 2·n/3 members' operators approved it, its ids are still
    members, and the ids named by the approved `accept_missing`s of the changes in flight,
    its own included, are at most f; else its `rule` names what failed. Returns the
    change's status (`missing` lists the accepted ids)."""
    _require_enabled(ctx.state)
    acc = get_accept(ctx.state, a.accept_id)
    if acc is None:
        raise NotFound("accept_missing", a.accept_id.hex())
    if acc.status != PROPOSED:
        raise RuleViolation("not-proposed", f"accept_missing {a.accept_id.hex()} is {acc.status}")
    ch = _require_change(ctx.state, acc.change_id)
    _require_pending_for_accept(ch)
    vset = current_set(ctx.state)
    _require_operator(ctx, vset, "approve_missing")
    ctx.state.put(accept_approval_key(acc.accept_id, ctx.sender), b"")
    count, _ = _counted(ctx.state, b"w" + acc.accept_id, vset)
    n = len(vset.records)
    if count >= threshold(n):
        failed = _missing_targets(vset, ch, acc.ids)
        named = len(_missing_in_flight(ctx.state, acc.accept_id) | set(acc.ids))
        if failed is None and named > faults(n):
            failed = (
                "too-many-missing",
                f"{named} distinct ids named by accept_missing over the changes in flight; "
                f"f = {faults(n)}",
            )
        if failed is None:
            by_id = {r.id: r for r in vset.records}
            acc = replace(
                acc,
                status=APPROVED,
                approved_height=ctx.height,
                records=tuple(record_digest(by_id[i]) for i in acc.ids),
                rule="",
                reason="",
            )
            ctx.emit("accept-missing-approved", [acc.accept_id, ch.change_id, list(acc.ids)])
        else:
            acc = replace(acc, rule=failed[0], reason=failed[1])
    ctx.state.save(accept_key(acc.accept_id), acc)
    return _status(ctx.state, ch)


@dataclass(frozen=True)
class ReadyArgs(Struct):
    change_id: ChangeId
    signature: Signature
    """ML-DSA-65 signature by the change's new key of `ready_message(chain_id, change_id,
    checked)`."""
    checked: Annotated[tuple[ChangeId, ...], Len(0, MAX_CHECKED)]
    """The other in-flight adds and rotates whose new records the machine checked its
    links to, ascending (§10.2)."""


def _ready_others(state: StateReader, ch: Change) -> list[bytes]:
    """The other adds and rotates in flight that are ready (scheduled, not yet active),
    ascending: a `ready` for ch must name each in `checked`. An `accept_missing` never
    exempts these (it names members of the current set only)."""
    return sorted(
        o.change_id
        for o in _in_flight(state)
        if o.change_id != ch.change_id and o.kind != "remove" and o.ready_height
    )


def _check_checked(state: StateReader, ch: Change, checked: tuple[bytes, ...]) -> None:
    """Refuse a `checked` list out of order, or one that misses another add or rotate in
    flight that is ready (scheduled, not yet active)."""
    if any(a >= b for a, b in pairwise(checked)):
        raise RuleViolation("checked-order", "checked must list change ids ascending, once each")
    missing = [cid for cid in _ready_others(state, ch) if cid not in checked]
    if missing:
        raise RuleViolation(
            "checked-incomplete",
            f"the machine did not check its links to the ready change {missing[0].hex()}",
        )


@contract.tx("ready", ReadyArgs)
def ready(ctx: CallContext, a: ReadyArgs) -> ChangeStatus:
    """Mark an add or rotate ready: the new key signs `["qchain-ready", chain_id,
    change_id]` once its machine is synced (any member may send it). Returns the status."""
    cfg = _require_enabled(ctx.state)
    ch = _require_change(ctx.state, a.change_id)
    if ch.kind == "remove":
        raise RuleViolation("no-new-key", "a remove is ready at approval")
    if ch.status == PROPOSED:
        raise RuleViolation("not-approved", f"change {a.change_id.hex()} is not approved yet")
    if ch.status != APPROVED:
        raise RuleViolation("not-pending", f"change {a.change_id.hex()} is {ch.status}")
    _check_checked(ctx.state, ch, a.checked)
    message = ready_message(ctx.chain_id, ch.change_id, a.checked)
    try:
        verify(Scheme.ML_DSA_65, ch.public_key, message, a.signature)
    except BadSignature as e:
        raise RuleViolation("bad-ready-signature", f"ready signature: {e.message}") from None
    ch = replace(ch, ready_height=ctx.height)
    if ch.status == APPROVED:
        ch = _schedule(ctx.state, cfg, ch, ctx.height)
    _save(ctx.state, ch)
    ctx.emit("ready", [ch.change_id, ch.status])
    return _status(ctx.state, ch)


@dataclass(frozen=True)
class EndpointArgs(Struct):
    id: ValidatorId
    name: Name
    p2p: Hint
    api: Hint


@contract.tx("update_endpoint", EndpointArgs)
def update_endpoint(ctx: CallContext, a: EndpointArgs) -> None:
    """Replace a validator's directory data (name, p2p, api); sender: its operator."""
    _require_enabled(ctx.state)
    d = ctx.state.load(directory_key(a.id), Directory)
    if d is None:
        raise NotFound("validator", str(a.id))
    if d.operator != ctx.sender:
        raise PermissionDenied("validators.update_endpoint", f"only validator {a.id}'s operator")
    ctx.state.save(directory_key(a.id), replace(d, name=a.name, p2p=a.p2p, api=a.api))
    ctx.emit("endpoint-updated", [a.id])


@contract.on_begin_block
def begin_block(ctx: BlockHookContext) -> None:
    """Apply the changes scheduled for this height, then expire and drop what is due."""
    cfg = get_config(ctx.state)
    if cfg is None:
        return
    _activate(ctx)
    for key, _ in list(ctx.state.iterate(b"e")):
        if read_u64(key[1:9]) > ctx.height:
            break
        ctx.state.delete(key)
        ch = _require_change(ctx.state, key[9:])
        ctx.state.delete(open_key(ch.proposer, ch.change_id))
        _save(ctx.state, replace(ch, status=EXPIRED, rule="proposal-ttl", reason="not approved"))
        ctx.emit("expired", [ch.change_id])
    for key, _ in list(ctx.state.iterate(b"r")):
        if read_u64(key[1:9]) > ctx.height:
            break
        ch = _require_change(ctx.state, key[9:])
        if ctx.time - ch.approved_time <= cfg.ready_ttl:
            continue  # the heights have passed, the block time not yet
        _drop(ctx.state, cfg, ch, "ready-ttl", "not ready within ready_ttl of its approval")
        ctx.emit("dropped", [ch.change_id, "ready-ttl"])


def _activate(ctx: BlockHookContext) -> None:
    entries = get_schedule(ctx.state).entries
    due = [x for x in entries if x.activation_height <= ctx.height]
    if not due:
        return
    records = {r.id: r for r in current_set(ctx.state).records}
    for x in due:
        _apply(records, x)
        if x.kind == "remove":
            ctx.state.delete(directory_key(x.id))
        _save(ctx.state, replace(_require_change(ctx.state, x.change_id), status=ACTIVE))
        ctx.state.delete(in_flight_key(x.change_id))
        _void_accepts(ctx.state, x.change_id)
        ctx.emit("activated", [x.change_id, x.sequence])
    ordered = tuple(records[i] for i in sorted(records))
    ctx.state.save(SET_KEY, ValidatorSet(ordered))
    ctx.state.save(SCHEDULE_KEY, Schedule(entries[len(due) :]))
    history = SetEntry(ctx.height, ordered, tuple(x.sequence for x in due))
    ctx.state.save(set_key(ctx.height), history)


# --- queries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeightArgs(Struct):
    height: Annotated[int, Range(1, 2**64 - 1)]


@contract.query("set", HeightArgs)
def set_(q: QueryContext, a: HeightArgs) -> dict[str, object]:
    """`V(height)`: the consensus records ordered by id, with n and f (exact up to the last
    executed height + D; beyond it, as scheduled so far)."""
    entry = set_at(q.state, a.height)
    n = len(entry.records)
    return {"height": a.height, "n": n, "f": faults(n), "records": list(entry.records)}


@contract.query("schedule", NoArgs)
def schedule(q: QueryContext, a: NoArgs) -> list[dict[str, object]]:
    """The changes scheduled and not yet active, by activation height and sequence."""
    return [
        {
            "sequence": x.sequence,
            "activation_height": x.activation_height,
            "change_id": x.change_id,
            "kind": x.kind,
            "id": x.id,
        }
        for x in get_schedule(q.state).entries
    ]


@contract.query("change", ChangeArgs)
def change(q: QueryContext, a: ChangeArgs) -> ChangeStatus:
    """A change with its status, the limit that holds it back (`rule`, `reason`), and its
    approvals counted over the current set."""
    return _status(q.state, _require_change(q.state, a.change_id))


@contract.query("accepts", ChangeArgs)
def accepts(q: QueryContext, a: ChangeArgs) -> list[MissingAccept]:
    """The `accept_missing`s of a change (proposed or approved; none once it left flight)."""
    _require_change(q.state, a.change_id)
    return accepts_of(q.state, a.change_id)


@contract.query("readiness", ChangeArgs)
def readiness(q: QueryContext, a: ChangeArgs) -> dict[str, object]:
    """What readiness asks of the change's new record now (§10.2): `links`, the ids of the
    members of the current set it needs working links to (the rotated id and the ids of
    approved `accept_missing`s left out), and `checked`, the ready adds and rotates in
    flight whose new records it needs working links to and that its `ready` must name."""
    members, checked = readiness_links(q.state, a.change_id)
    return {"links": [r.id for r in members], "checked": checked}


@dataclass(frozen=True)
class HistoryArgs(Struct):
    start: U64
    """First activation height to return."""
    limit: Annotated[int, Range(1, MAX_HISTORY_PAGE)]


@contract.query("history", HistoryArgs)
def history(q: QueryContext, a: HistoryArgs) -> list[SetEntry]:
    """The set history: `V(1)` and `(e, V(e))` for every activation height e, from start."""
    out = []
    for _, raw in q.state.iterate(b"h", start=set_key(a.start)):
        out.append(SetEntry.decode(raw))
        if len(out) >= a.limit:
            break
    return out


@dataclass(frozen=True)
class IdArgs(Struct):
    id: ValidatorId


@contract.query("directory", IdArgs)
def directory(q: QueryContext, a: IdArgs) -> Directory:
    """A validator's directory data (a member's, or an approved add's)."""
    d = q.state.load(directory_key(a.id), Directory)
    if d is None:
        raise NotFound("validator", str(a.id))
    return d
