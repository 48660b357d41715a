"""membership: the organisations of the platform, their signing keys, roles and nonces.

A member is an account: a 20-byte address (derived from its first key), an organisation
name, one current signing key (scheme and public key), a set of roles and a status. Only
active members may send transactions; every transaction's signature is checked against
the sender's current key, and its nonce must equal the number of transactions the sender
has had included so far.

Roles: `admin` (manages members), `partner` (an enterprise: receives and spends vouchers),
`auditor` (reads), `issuer` (runs voucher programmes), `provider` (a service provider paid
with vouchers). Admins onboard, suspend and reinstate members and change their roles; a
member rotates its own key. The chain always keeps at least one active admin: a call that
would leave none (suspending or demoting the last admin, the last admin demoting itself)
is a `last-admin` rule violation.

State layout (relative to the contract's key space):

| key | value |
|---|---|
| `m` address | `Member` |
| `n` address | next nonce (integer) |
| `r` role 0x00 address | empty: index of members by role |
| `s` | `AcceptedSchemes`: the genesis's `accepted_schemes` (absent: every scheme) |

Keys are checked when they are registered (genesis, `onboard`, `rotate_key`): a known
scheme the chain accepts, a key of that scheme's length and, for SM2, a point of the curve.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated

from contracts.runtime import CallContext, Contract, QueryContext
from contracts.state import StateReader, StateWriter
from qchain import sm2
from qchain.codec import U64, Len, Struct
from qchain.errors import (
    ArgumentError,
    Duplicate,
    NotFound,
    RuleViolation,
    SchemeNotAccepted,
    UnknownScheme,
)
from qchain.keys import PUBLIC_KEY_LEN, Scheme, address_of, parse_scheme
from qchain.types import Address

NAME = "membership"
ROLES = ("admin", "auditor", "issuer", "partner", "provider")
ACTIVE = "active"
SUSPENDED = "suspended"

OrgName = Annotated[str, Len(1, 128)]
Role = Annotated[str, Len(1, 16)]
Roles = Annotated[tuple[Role, ...], Len(1, len(ROLES))]
SchemeName = Annotated[str, Len(1, 16)]
PublicKey = Annotated[bytes, Len(1, 4096)]
Reason = Annotated[str, Len(0, 256)]


@dataclass(frozen=True)
class Member(Struct):
    address: Address
    name: OrgName
    scheme: SchemeName
    public_key: PublicKey
    roles: Roles
    """Sorted, without repeats."""
    status: Annotated[str, Len(1, 16)]
    """`active` or `suspended`."""
    reason: Reason
    """Why the member was suspended (empty when active)."""
    joined_height: U64
    key_height: U64
    """Height at which the current key was registered (0 = genesis)."""

    @property
    def active(self) -> bool:
        return self.status == ACTIVE


@dataclass(frozen=True)
class AcceptedSchemes(Struct):
    schemes: Annotated[tuple[SchemeName, ...], Len(1, 16)]


ACCEPTED_SCHEMES_KEY = b"s"


def member_key(address: bytes) -> bytes:
    return b"m" + address


def nonce_key(address: bytes) -> bytes:
    return b"n" + address


def role_prefix(role: str) -> bytes:
    return b"r" + role.encode() + b"\x00"


def role_key(role: str, address: bytes) -> bytes:
    return role_prefix(role) + address


# --- reads used by the executor and other contracts ----------------------------------------


def get_member(state: StateReader, address: bytes) -> Member | None:
    raw = state.get(member_key(address))
    if raw is None:
        return None
    # Every transaction looks its sender up twice; a member record decodes to the same
    # immutable value every time, so decodings are memoised by the stored bytes.
    m = _DECODED.get(raw)
    if m is None:
        if len(_DECODED) >= _DECODED_MAX:
            _DECODED.clear()
        m = _DECODED[raw] = Member.decode(raw)
    return m


_DECODED: dict[bytes, Member] = {}
_DECODED_MAX = 4096


def get_nonce(state: StateReader, address: bytes) -> int:
    return state.get_int(nonce_key(address))


def active_with_role(state: StateReader, address: bytes, role: str) -> bool:
    m = get_member(state, address)
    return m is not None and m.active and role in m.roles


def members_with_role(state: StateReader, role: str) -> list[bytes]:
    prefix = role_prefix(role)
    return [k[len(prefix) :] for k, _ in state.iterate(prefix)]


# --- writes ---------------------------------------------------------------------------------


def check_roles(roles: tuple[str, ...], field: str = "roles") -> tuple[str, ...]:
    for r in roles:
        if r not in ROLES:
            raise ArgumentError(field, f"unknown role {r!r} (roles: {', '.join(ROLES)})")
    if len(set(roles)) != len(roles):
        raise ArgumentError(field, "a role is listed twice")
    return tuple(sorted(roles))


def accepted_schemes(state: StateReader) -> tuple[str, ...]:
    """The schemes this chain accepts (the genesis's `accepted_schemes`, default all)."""
    stored = state.load(ACCEPTED_SCHEMES_KEY, AcceptedSchemes)
    return stored.schemes if stored is not None else tuple(s.value for s in Scheme)


def check_accepted(state: StateReader, scheme: str) -> None:
    """A key being registered must be of a scheme the chain accepts (`ArgumentError`, so
    the call fails with a receipt)."""
    accepted = accepted_schemes(state)
    if scheme not in accepted:
        raise ArgumentError("scheme", SchemeNotAccepted(scheme, accepted).message)


def check_transaction_scheme(state: StateReader, scheme: str) -> None:
    """A transaction signed under a scheme the chain does not accept: `SchemeNotAccepted`."""
    accepted = accepted_schemes(state)
    if scheme not in accepted:
        raise SchemeNotAccepted(scheme, accepted)


def check_key(scheme: str, public_key: bytes) -> str:
    try:
        s = parse_scheme(scheme)
    except UnknownScheme:
        raise ArgumentError("scheme", f"unknown signature scheme {scheme!r}") from None
    if len(public_key) != PUBLIC_KEY_LEN[s]:
        raise ArgumentError("public_key", f"a {s} public key is {PUBLIC_KEY_LEN[s]} bytes")
    if s is Scheme.SM2:
        try:
            sm2.parse_public_key(public_key)
        except sm2.SM2Error as e:
            raise ArgumentError("public_key", str(e)) from None
    return s.value


def put_member(state: StateWriter, old: Member | None, new: Member) -> None:
    """Store a member record and keep the role index in step."""
    old_roles = set(old.roles) if old else set()
    for r in old_roles - set(new.roles):
        state.delete(role_key(r, new.address))
    for r in set(new.roles) - old_roles:
        state.put(role_key(r, new.address), b"")
    state.save(member_key(new.address), new)


def increment_nonce(state: StateWriter, address: bytes) -> None:
    state.put_int(nonce_key(address), get_nonce(state, address) + 1)


def new_member(
    name: str, scheme: str, public_key: bytes, roles: tuple[str, ...], height: int
) -> Member:
    s = check_key(scheme, public_key)
    return Member(
        address_of(s, public_key),
        name,
        s,
        public_key,
        check_roles(roles),
        ACTIVE,
        "",
        height,
        height,
    )


def _require(state: StateReader, address: bytes) -> Member:
    m = get_member(state, address)
    if m is None:
        raise NotFound("member", address.hex())
    return m


def _active_admins(state: StateReader) -> int:
    n = 0
    for addr in members_with_role(state, "admin"):
        m = get_member(state, addr)
        if m is not None and m.active:
            n += 1
    return n


def _keep_an_admin(state: StateReader, target: Member) -> None:
    if target.active and "admin" in target.roles and _active_admins(state) <= 1:
        raise RuleViolation("last-admin", "the chain must keep at least one active admin")


# --- the contract ----------------------------------------------------------------------------

contract = Contract(NAME, "organisations, keys, roles and nonces")


@dataclass(frozen=True)
class OnboardArgs(Struct):
    name: OrgName
    scheme: SchemeName
    public_key: PublicKey
    roles: Roles


@contract.tx("onboard", OnboardArgs, roles=["admin"])
def onboard(ctx: CallContext, a: OnboardArgs) -> bytes:
    """Register a new organisation; its address is derived from its key. Returns it."""
    m = new_member(a.name, a.scheme, a.public_key, a.roles, ctx.height)
    check_accepted(ctx.state, m.scheme)
    existing = get_member(ctx.state, m.address)
    if existing is not None:
        raise Duplicate(
            "member", m.address.hex(), {"name": existing.name, "joined": existing.joined_height}
        )
    put_member(ctx.state, None, m)
    ctx.emit("onboarded", [m.address, list(m.roles)])
    return m.address


@dataclass(frozen=True)
class SuspendArgs(Struct):
    address: Address
    reason: Reason


@contract.tx("suspend", SuspendArgs, roles=["admin"])
def suspend(ctx: CallContext, a: SuspendArgs) -> None:
    """Suspend a member: it can no longer send transactions."""
    m = _require(ctx.state, a.address)
    if not m.active:
        raise RuleViolation("already-suspended", f"member {a.address.hex()} is already suspended")
    _keep_an_admin(ctx.state, m)
    put_member(ctx.state, m, replace(m, status=SUSPENDED, reason=a.reason))
    ctx.emit("suspended", [a.address, a.reason])


@dataclass(frozen=True)
class AddressArgs(Struct):
    address: Address


@contract.tx("reinstate", AddressArgs, roles=["admin"])
def reinstate(ctx: CallContext, a: AddressArgs) -> None:
    """Make a suspended member active again."""
    m = _require(ctx.state, a.address)
    if m.active:
        raise RuleViolation("not-suspended", f"member {a.address.hex()} is not suspended")
    put_member(ctx.state, m, replace(m, status=ACTIVE, reason=""))
    ctx.emit("reinstated", [a.address])


@dataclass(frozen=True)
class SetRolesArgs(Struct):
    address: Address
    roles: Roles


@contract.tx("set_roles", SetRolesArgs, roles=["admin"])
def set_roles(ctx: CallContext, a: SetRolesArgs) -> None:
    """Replace a member's roles."""
    m = _require(ctx.state, a.address)
    roles = check_roles(a.roles)
    if "admin" not in roles:
        _keep_an_admin(ctx.state, m)
    put_member(ctx.state, m, replace(m, roles=roles))
    ctx.emit("roles-changed", [a.address, list(roles)])


@dataclass(frozen=True)
class RotateKeyArgs(Struct):
    scheme: SchemeName
    public_key: PublicKey


@contract.tx("rotate_key", RotateKeyArgs)
def rotate_key(ctx: CallContext, a: RotateKeyArgs) -> None:
    """Replace the sender's own signing key; its address does not change. The transaction
    is signed with the old key; the next one must be signed with the new key."""
    m = _require(ctx.state, ctx.sender)
    scheme = check_key(a.scheme, a.public_key)
    check_accepted(ctx.state, scheme)
    if scheme == m.scheme and a.public_key == m.public_key:
        raise RuleViolation("same-key", "the new key is the current key")
    put_member(
        ctx.state, m, replace(m, scheme=scheme, public_key=a.public_key, key_height=ctx.height)
    )
    ctx.emit("key-rotated", [ctx.sender, scheme])


@contract.query("member", AddressArgs)
def member(q: QueryContext, a: AddressArgs) -> Member:
    """The member at an address."""
    return _require(q.state, a.address)


@dataclass(frozen=True)
class RoleArgs(Struct):
    role: Role


@contract.query("members_by_role", RoleArgs)
def members_by_role(q: QueryContext, a: RoleArgs) -> list[Member]:
    """Every member holding a role (active or not), in address order."""
    check_roles((a.role,), "role")
    out = []
    for addr in members_with_role(q.state, a.role):
        m = get_member(q.state, addr)
        if m is not None:
            out.append(m)
    return out


@contract.query("account", AddressArgs)
def account(q: QueryContext, a: AddressArgs) -> dict[str, object]:
    """Nonce, roles and status of an address (what a client needs to send a transaction)."""
    m = _require(q.state, a.address)
    return {
        "address": m.address,
        "nonce": get_nonce(q.state, m.address),
        "roles": list(m.roles),
        "status": m.status,
        "scheme": m.scheme,
    }
