"""voucher: innovation vouchers.

An issuer (a member with the `issuer` role, e.g. a science and technology bureau) creates a
programme with a total budget and an expiry height. It grants vouchers to enterprises
(members with the `partner` role) up to the budget. An enterprise pays registered service
providers (members with the `provider` role) from its balance; a provider redeems what it
earned to the issuer, which settles off chain. Amounts are integers in the smallest unit
(fen).

A programme is live up to and including its expiry height. At the start of the first block
above it, every unspent enterprise balance returns to the programme and grants and payments
stop; providers keep what they earned and may still redeem it.

Invariant, for every programme at every height:
`issued = held + redeemed + returned`, where `held` is the sum of all enterprise balances
and provider earnings of the programme. The programme record keeps the four totals, and the
tests check them against the balances.

State layout (relative to the contract's key space):

| key | value |
|---|---|
| `p` programme id | `Programme` |
| `g` programme id 0x00 address | enterprise balance (integer) |
| `e` programme id 0x00 address | provider earnings not yet redeemed (integer) |
| `x` expiry height (8 bytes) programme id | empty: programmes by expiry |
| `a` address programme id | empty: programmes an address took part in |
| `h` address seq (8 bytes) | `HistoryEntry` |
| `s` address | next history sequence number (integer) |
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Annotated

from contracts import membership
from contracts.runtime import BlockHookContext, CallContext, Contract, QueryContext
from contracts.state import StateReader, StateWriter
from qchain.codec import U64, Len, Range, Struct
from qchain.errors import (
    ArgumentError,
    Duplicate,
    InsufficientBalance,
    NotFound,
    PermissionDenied,
    RuleViolation,
)
from qchain.store.schema import read_u64, u64
from qchain.types import Address

NAME = "voucher"
MAX_AMOUNT = 10**15
MAX_HISTORY_PAGE = 1000
_ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")

ProgrammeId = Annotated[str, Len(1, 64)]
Amount = Annotated[int, Range(1, MAX_AMOUNT)]
Total = Annotated[int, Range(0, MAX_AMOUNT)]
Title = Annotated[str, Len(1, 256)]
Memo = Annotated[str, Len(0, 256)]


@dataclass(frozen=True)
class Programme(Struct):
    id: ProgrammeId
    title: Title
    issuer: Address
    budget: Total
    expiry_height: U64
    """Last height at which grants and payments are accepted."""
    created_height: U64
    issued: Total
    """Granted to enterprises so far."""
    held: Total
    """Enterprise balances plus unredeemed provider earnings."""
    redeemed: Total
    returned: Total
    """Enterprise balances returned at expiry."""
    expired: bool


@dataclass(frozen=True)
class HistoryEntry(Struct):
    """One change to a member's voucher balances."""

    height: U64
    tx_hash: Annotated[bytes, Len(0, 32)]
    """Empty for a return at expiry, which no transaction caused."""
    kind: Annotated[str, Len(1, 16)]
    """`granted`, `paid`, `received`, `redeemed` or `returned`."""
    programme: ProgrammeId
    amount: Total
    counterparty: Annotated[bytes, Len(0, 20)]
    memo: Memo


def programme_key(pid: str) -> bytes:
    return b"p" + pid.encode()


def _balance_prefix(tag: bytes, pid: str) -> bytes:
    return tag + pid.encode() + b"\x00"


def held_key(pid: str, address: bytes) -> bytes:
    return _balance_prefix(b"g", pid) + address


def earned_key(pid: str, address: bytes) -> bytes:
    return _balance_prefix(b"e", pid) + address


def expiry_key(height: int, pid: str) -> bytes:
    return b"x" + u64(height) + pid.encode()


def member_programme_key(address: bytes, pid: str) -> bytes:
    return b"a" + address + pid.encode()


def history_key(address: bytes, seq: int) -> bytes:
    return b"h" + address + u64(seq)


def history_seq_key(address: bytes) -> bytes:
    return b"s" + address


def get_programme(state: StateReader, pid: str) -> Programme | None:
    return state.load(programme_key(pid), Programme)


def _require_programme(state: StateReader, pid: str) -> Programme:
    p = get_programme(state, pid)
    if p is None:
        raise NotFound("programme", pid)
    return p


def _require_live(p: Programme) -> None:
    if p.expired:
        raise RuleViolation(
            "programme-expired", f"programme {p.id} expired after height {p.expiry_height}"
        )


def _require_role(ctx: CallContext, address: bytes, role: str, code: str) -> None:
    """A `RuleViolation` with `code` unless address is an active member with role."""
    if not membership.active_with_role(ctx.read(membership.NAME), address, role):
        raise RuleViolation(code, f"{address.hex()} is not an active {role} member")


def _record(
    state: StateWriter,
    address: bytes,
    pid: str,
    entry: HistoryEntry,
) -> None:
    seq = state.get_int(history_seq_key(address))
    state.save(history_key(address, seq), entry)
    state.put_int(history_seq_key(address), seq + 1)
    state.put(member_programme_key(address, pid), b"")


def _add(state: StateWriter, key: bytes, delta: int) -> int:
    value = state.get_int(key) + delta
    if value:
        state.put_int(key, value)
    else:
        state.delete(key)
    return value


contract = Contract(NAME, "innovation vouchers: programmes, grants, payments, redemption")


@dataclass(frozen=True)
class CreateArgs(Struct):
    id: ProgrammeId
    title: Title
    budget: Amount
    expiry_height: U64


@contract.tx("create", CreateArgs, roles=["issuer"])
def create(ctx: CallContext, a: CreateArgs) -> str:
    """Create a programme owned by the sender. Returns its id."""
    if not _ID_RE.fullmatch(a.id):
        raise ArgumentError(
            "id", "lower-case letters, digits, '.', '_' and '-', starting with a letter or digit"
        )
    if a.expiry_height <= ctx.height:
        raise RuleViolation(
            "expiry-not-in-future",
            f"expiry height {a.expiry_height} is not above height {ctx.height}",
        )
    first = get_programme(ctx.state, a.id)
    if first is not None:
        raise Duplicate(
            "programme", a.id, {"issuer": first.issuer.hex(), "height": first.created_height}
        )
    p = Programme(
        a.id, a.title, ctx.sender, a.budget, a.expiry_height, ctx.height, 0, 0, 0, 0, False
    )
    ctx.state.save(programme_key(a.id), p)
    ctx.state.put(expiry_key(a.expiry_height, a.id), b"")
    ctx.emit("created", [a.id, a.budget, a.expiry_height])
    return a.id


@dataclass(frozen=True)
class GrantArgs(Struct):
    programme: ProgrammeId
    to: Address
    amount: Amount


@contract.tx("grant", GrantArgs, roles=["issuer"])
def grant(ctx: CallContext, a: GrantArgs) -> int:
    """Grant vouchers of the sender's programme to an enterprise. Returns its balance."""
    p = _require_programme(ctx.state, a.programme)
    if p.issuer != ctx.sender:
        raise PermissionDenied(
            "voucher.grant", f"only the programme's issuer {p.issuer.hex()} grants"
        )
    _require_live(p)
    _require_role(ctx, a.to, "partner", "not-an-enterprise")
    if p.issued + a.amount > p.budget:
        raise RuleViolation(
            "budget-exceeded",
            f"granting {a.amount} would exceed the budget: {p.budget - p.issued} left",
        )
    ctx.state.save(
        programme_key(p.id), replace(p, issued=p.issued + a.amount, held=p.held + a.amount)
    )
    balance = _add(ctx.state, held_key(p.id, a.to), a.amount)
    entry = HistoryEntry(ctx.height, ctx.tx_hash, "granted", p.id, a.amount, ctx.sender, "")
    _record(ctx.state, a.to, p.id, entry)
    ctx.emit("granted", [p.id, a.to, a.amount])
    return balance


@dataclass(frozen=True)
class PayArgs(Struct):
    programme: ProgrammeId
    provider: Address
    amount: Amount
    memo: Memo


@contract.tx("pay", PayArgs, roles=["partner"])
def pay(ctx: CallContext, a: PayArgs) -> int:
    """Pay a service provider from the sender's balance. Returns the sender's balance."""
    p = _require_programme(ctx.state, a.programme)
    _require_live(p)
    if a.provider == ctx.sender:
        raise RuleViolation("self-payment", "an enterprise cannot pay itself")
    _require_role(ctx, a.provider, "provider", "not-a-provider")
    available = ctx.state.get_int(held_key(p.id, ctx.sender))
    if available < a.amount:
        raise InsufficientBalance(available, a.amount)
    balance = _add(ctx.state, held_key(p.id, ctx.sender), -a.amount)
    _add(ctx.state, earned_key(p.id, a.provider), a.amount)
    _record(
        ctx.state,
        ctx.sender,
        p.id,
        HistoryEntry(ctx.height, ctx.tx_hash, "paid", p.id, a.amount, a.provider, a.memo),
    )
    _record(
        ctx.state,
        a.provider,
        p.id,
        HistoryEntry(ctx.height, ctx.tx_hash, "received", p.id, a.amount, ctx.sender, a.memo),
    )
    ctx.emit("paid", [p.id, ctx.sender, a.provider, a.amount])
    return balance


@dataclass(frozen=True)
class RedeemArgs(Struct):
    programme: ProgrammeId
    amount: Amount


@contract.tx("redeem", RedeemArgs, roles=["provider"])
def redeem(ctx: CallContext, a: RedeemArgs) -> int:
    """Redeem earnings to the programme's issuer (also after expiry). Returns what is left."""
    p = _require_programme(ctx.state, a.programme)
    available = ctx.state.get_int(earned_key(p.id, ctx.sender))
    if available < a.amount:
        raise InsufficientBalance(available, a.amount)
    left = _add(ctx.state, earned_key(p.id, ctx.sender), -a.amount)
    ctx.state.save(
        programme_key(p.id), replace(p, held=p.held - a.amount, redeemed=p.redeemed + a.amount)
    )
    _record(
        ctx.state,
        ctx.sender,
        p.id,
        HistoryEntry(ctx.height, ctx.tx_hash, "redeemed", p.id, a.amount, p.issuer, ""),
    )
    ctx.emit("redeemed", [p.id, ctx.sender, a.amount])
    return left


@contract.on_begin_block
def expire(ctx: BlockHookContext) -> None:
    """Return the enterprise balances of every programme whose expiry height has passed."""
    due = []
    for key, _ in ctx.state.iterate(b"x"):
        if read_u64(key[1:9]) >= ctx.height:
            break
        due.append((key, key[9:].decode()))
    for key, pid in due:
        p = _require_programme(ctx.state, pid)
        prefix = _balance_prefix(b"g", pid)
        balances = [(k[len(prefix) :], v) for k, v in ctx.state.iterate(prefix)]
        returned = 0
        for holder, _ in balances:
            amount = ctx.state.get_int(held_key(pid, holder))
            ctx.state.delete(held_key(pid, holder))
            _record(
                ctx.state,
                holder,
                pid,
                HistoryEntry(ctx.height, b"", "returned", pid, amount, p.issuer, ""),
            )
            returned += amount
        ctx.state.save(
            programme_key(pid),
            replace(p, held=p.held - returned, returned=p.returned + returned, expired=True),
        )
        ctx.state.delete(key)
        ctx.emit("expired", [pid, returned])


@dataclass(frozen=True)
class ProgrammeArgs(Struct):
    id: ProgrammeId


@contract.query("programme", ProgrammeArgs)
def programme(q: QueryContext, a: ProgrammeArgs) -> Programme:
    """A programme with its totals: budget, issued, held, redeemed, returned."""
    return _require_programme(q.state, a.id)


@dataclass(frozen=True)
class BalanceArgs(Struct):
    programme: ProgrammeId
    address: Address


@contract.query("balance", BalanceArgs)
def balance(q: QueryContext, a: BalanceArgs) -> dict[str, object]:
    """An address's balance in one programme: `held` (enterprise) and `earned` (provider)."""
    _require_programme(q.state, a.programme)
    return {
        "programme": a.programme,
        "held": q.state.get_int(held_key(a.programme, a.address)),
        "earned": q.state.get_int(earned_key(a.programme, a.address)),
    }


@dataclass(frozen=True)
class AddressArgs(Struct):
    address: Address


@contract.query("balances", AddressArgs)
def balances(q: QueryContext, a: AddressArgs) -> list[dict[str, object]]:
    """An address's balances in every programme it took part in, by programme id."""
    prefix = b"a" + a.address
    return [
        {
            "programme": k[len(prefix) :].decode(),
            "held": q.state.get_int(held_key(k[len(prefix) :].decode(), a.address)),
            "earned": q.state.get_int(earned_key(k[len(prefix) :].decode(), a.address)),
        }
        for k, _ in q.state.iterate(prefix)
    ]


@dataclass(frozen=True)
class HistoryArgs(Struct):
    address: Address
    start: U64
    """First sequence number to return."""
    limit: Annotated[int, Range(1, MAX_HISTORY_PAGE)]


@contract.query("history", HistoryArgs)
def history(q: QueryContext, a: HistoryArgs) -> list[HistoryEntry]:
    """A member's voucher history, oldest first, from sequence number `start`."""
    prefix = b"h" + a.address
    out = []
    for _, v in q.state.iterate(prefix, start=history_key(a.address, a.start)):
        out.append(HistoryEntry.decode(v))
        if len(out) >= a.limit:
            break
    return out
