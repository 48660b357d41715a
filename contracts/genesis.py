"""Genesis: the file every node of a chain starts from, and the state it creates.

The file is JSON (see `contracts/README.md` for an example):

- `chain_id` (text, 1–64 bytes); `genesis_time` (ms since the Unix epoch, default 0);
- `consensus`: `tenure` (the tenure bound K, default 64), `first_leader` (default 0) and
  `timing`, the chain's timing profile (`default`, `lan` or `test`, default `default`;
  CONSENSUS.md §4): every node of the chain runs it, so it is part of the genesis hash;
  and the parameters of validator-set changes (CONSENSUS.md §10.2, `contracts.validators`):
  `reconfig_delay` (D ≥ 2, default 2), `proposal_ttl` (heights, default 10 000),
  `ready_ttl` (block time in ms, default 86 400 000: 24 hours), `ready_ttl_heights`
  (default 1 000) and `reconfiguration` (default false: the `validators` contract refuses
  every change; true: the node follows the set of each height from the contract, as far
  as docs/CONSENSUS.md's last revision on §10 says);
- `validators`: n = 3f+1 entries, each with `index` (0..n−1, in order), `name`,
  `public_key` (hex ML-DSA-65 key that signs commit certificates), `sae_id` (its QKD SAE
  id, unique), optional `p2p` and `api` address hints, and `operator` (hex address of the
  member that votes for it in governance): every validator has one or none does, and
  without operators the genesis has no governance (the `validators` contract holds no
  state);
- `members`: the initial organisations, each with `name`, `scheme` (`ml-dsa-65`,
  `ed25519` or `sm2`), `public_key` (hex), `roles`, and optionally `address` (hex, checked
  against the key); at least one must be an admin;
- `voucher_issuers`: addresses of members who run voucher programmes; they get the
  `issuer` role;
- `accepted_schemes` (optional): the member signature schemes the chain accepts, e.g.
  `["sm2", "ml-dsa-65"]`; absent, every scheme qchain knows. Members, onboarded keys,
  rotated keys and transactions of another scheme are refused (`scheme-not-accepted`);
- `state_root_interval` (optional, default 0): K, the distance between checkpoint heights,
  whose app hash commits to the whole state so that a node can start from a snapshot
  (`contracts.snapshot`, CONSENSUS.md Revision 1.11); 0 has no checkpoints.

`parse_genesis` checks everything and raises `GenesisError` naming the field and the reason;
`Genesis.to_json` gives the document back. Reading and writing the file is the node's
(`node.genesis_file`).
The genesis hash covers the canonical encoding of everything except the address hints, so a
validator may move without changing the chain's identity; a genesis without
`accepted_schemes` hashes as it did before the field existed (the field is left out of the
encoding when empty), and so does one without operators and with the default
reconfiguration parameters (a validator's `operator` is left out when absent, the five
reconfiguration parameters when all are at their defaults), and one without
`state_root_interval` (left out when 0). `init_state` writes the initial members (and,
with operators, the `validators` contract's initial state) and returns the write set and
the genesis app hash, which chains from the genesis hash.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated

from contracts import membership
from contracts import validators as validators_contract
from contracts.execution import app_hash
from contracts.state import Overlay, StateSource, StateWriter, WriteSet
from qchain.codec import U16, U32, U64, Len, Struct, encode_value
from qchain.errors import ArgumentError, GenesisError
from qchain.hashing import Domain, hash_domain
from qchain.keys import PUBLIC_KEY_LEN, Scheme, address_of
from qchain.types import Address, ChainId, ValidatorKey

DEFAULT_TENURE = 64
DEFAULT_RECONFIG_DELAY = 2
DEFAULT_PROPOSAL_TTL = 10_000
DEFAULT_READY_TTL = 86_400_000
"""24 hours of block time, in milliseconds."""
DEFAULT_READY_TTL_HEIGHTS = 1_000
MAX_RECONFIG_DELAY = 16
"""CONSENSUS.md §10.2: 2 ≤ D ≤ 16 (review 6's bounds: the links a change opens at approval
and the heights a learner must hold stay short)."""
TIMING_PROFILES = ("default", "lan", "test")
"""The names of `qchain.config.PROFILES` (a test keeps them equal)."""
VALIDATOR_SCHEME = Scheme.ML_DSA_65
Hint = Annotated[str, Len(0, 256)]


@dataclass(frozen=True)
class ConsensusParams(Struct):
    tenure: U32
    """K: the anchor moves to the next validator at every height that is a multiple of K."""
    first_leader: U16
    timing: Annotated[str, Len(1, 16)]
    """The chain's timing profile, one of `TIMING_PROFILES`."""
    reconfig_delay: U32 = DEFAULT_RECONFIG_DELAY
    """D: a change that is approved and ready in block r activates at r + D (D ≥ 2)."""
    proposal_ttl: U32 = DEFAULT_PROPOSAL_TTL
    ready_ttl: U64 = DEFAULT_READY_TTL
    """Block time (ms) after its approval block's within which an approved change must be
    ready; it is dropped once this and `ready_ttl_heights` have both passed."""
    ready_ttl_heights: U32 = DEFAULT_READY_TTL_HEIGHTS
    reconfiguration: bool = False
    """Whether the `validators` contract accepts changes (CONSENSUS.md §10)."""

    @property
    def reconfiguration_default(self) -> bool:
        """All five reconfiguration parameters at their defaults (left out of the hash)."""
        return (
            self.reconfig_delay,
            self.proposal_ttl,
            self.ready_ttl,
            self.ready_ttl_heights,
            self.reconfiguration,
        ) == (
            DEFAULT_RECONFIG_DELAY,
            DEFAULT_PROPOSAL_TTL,
            DEFAULT_READY_TTL,
            DEFAULT_READY_TTL_HEIGHTS,
            False,
        )


@dataclass(frozen=True)
class ValidatorInfo(Struct):
    index: U16
    name: Annotated[str, Len(1, 64)]
    public_key: Annotated[bytes, Len(1952, 1952)]
    """ML-DSA-65 key that signs commit certificates."""
    sae_id: Annotated[str, Len(1, 128)]
    """The validator's SAE id at the QKD key manager."""
    p2p: Hint
    api: Hint
    operator: Annotated[bytes, Len(0, 20)] = b""
    """Address of the member that votes for this validator in governance; empty: none."""

    @property
    def key(self) -> ValidatorKey:
        return ValidatorKey(VALIDATOR_SCHEME.value, self.public_key)


@dataclass(frozen=True)
class GenesisMember(Struct):
    name: membership.OrgName
    scheme: membership.SchemeName
    public_key: membership.PublicKey
    roles: membership.Roles

    @property
    def address(self) -> bytes:
        return address_of(self.scheme, self.public_key)


@dataclass(frozen=True)
class Genesis(Struct):
    chain_id: ChainId
    genesis_time: U64
    consensus: ConsensusParams
    validators: Annotated[tuple[ValidatorInfo, ...], Len(1, 1024)]
    members: Annotated[tuple[GenesisMember, ...], Len(1, 10_000)]
    voucher_issuers: Annotated[tuple[Address, ...], Len(0, 10_000)]
    accepted_schemes: Annotated[tuple[membership.SchemeName, ...], Len(0, 16)] = ()
    """Empty: every scheme qchain knows."""
    state_root_interval: U32 = 0
    """K: the app hash of every height that is a multiple of K commits to the whole state
    (`contracts.snapshot`), which state sync checks snapshots against; 0 never."""

    @cached_property
    def hash(self) -> bytes:
        validators = tuple(dataclasses.replace(v, p2p="", api="") for v in self.validators)
        core = dataclasses.replace(self, validators=validators)
        wire = core.to_wire()
        if self.consensus.reconfiguration_default:
            wire[2] = self.consensus.to_wire()[:3]
        wire[3] = [v.to_wire() if v.operator else v.to_wire()[:6] for v in validators]
        if not self.state_root_interval:
            wire = wire[:-1]
            if not self.accepted_schemes:
                wire = wire[:-1]
        return hash_domain(Domain.GENESIS, encode_value(wire))

    @property
    def has_governance(self) -> bool:
        """Whether validators have operators (the `validators` contract has state)."""
        return any(v.operator for v in self.validators)

    def validator_keys(self) -> list[ValidatorKey]:
        """Certificate-signing keys by validator index (for `verify_certificate`)."""
        return [v.key for v in self.validators]

    def to_json(self) -> dict[str, object]:
        return {
            "chain_id": self.chain_id,
            "genesis_time": self.genesis_time,
            "consensus": {
                "tenure": self.consensus.tenure,
                "first_leader": self.consensus.first_leader,
                "timing": self.consensus.timing,
                **(
                    {}
                    if self.consensus.reconfiguration_default
                    else {
                        "reconfig_delay": self.consensus.reconfig_delay,
                        "proposal_ttl": self.consensus.proposal_ttl,
                        "ready_ttl": self.consensus.ready_ttl,
                        "ready_ttl_heights": self.consensus.ready_ttl_heights,
                        "reconfiguration": self.consensus.reconfiguration,
                    }
                ),
            },
            "validators": [
                {
                    "index": v.index,
                    "name": v.name,
                    "public_key": v.public_key.hex(),
                    "sae_id": v.sae_id,
                    **({"p2p": v.p2p} if v.p2p else {}),
                    **({"api": v.api} if v.api else {}),
                    **({"operator": v.operator.hex()} if v.operator else {}),
                }
                for v in self.validators
            ],
            "members": [
                {
                    "name": m.name,
                    "address": m.address.hex(),
                    "scheme": m.scheme,
                    "public_key": m.public_key.hex(),
                    "roles": list(m.roles),
                }
                for m in self.members
            ],
            "voucher_issuers": [a.hex() for a in self.voucher_issuers],
            **({"accepted_schemes": list(self.accepted_schemes)} if self.accepted_schemes else {}),
            **(
                {"state_root_interval": self.state_root_interval}
                if self.state_root_interval
                else {}
            ),
        }


# --- loading -----------------------------------------------------------------------------


def _fields(
    doc: object, path: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, object]:
    if not isinstance(doc, dict):
        raise GenesisError(path or "genesis", "expected an object")
    for key in doc:
        if key not in required and key not in optional:
            raise GenesisError(_join(path, str(key)), "unknown field")
    for key in required:
        if key not in doc:
            raise GenesisError(_join(path, key), "missing")
    return doc


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _text(v: object, path: str, lo: int, hi: int) -> str:
    if not isinstance(v, str):
        raise GenesisError(path, "expected text")
    if not lo <= len(v.encode()) <= hi:
        raise GenesisError(path, f"length must be {lo} to {hi} bytes")
    return v


def _int(v: object, path: str, lo: int, hi: int) -> int:
    if type(v) is not int:
        raise GenesisError(path, "expected an integer")
    if not lo <= v <= hi:
        raise GenesisError(path, f"must be between {lo} and {hi}")
    return v


def _hex(v: object, path: str, length: int | None = None) -> bytes:
    if not isinstance(v, str):
        raise GenesisError(path, "expected a hex string")
    try:
        raw = bytes.fromhex(v.removeprefix("0x"))
    except ValueError:
        raise GenesisError(path, "not a hex string") from None
    if length is not None and len(raw) != length:
        raise GenesisError(path, f"expected {length} bytes, got {len(raw)}")
    return raw


def _list(v: object, path: str) -> list[object]:
    if not isinstance(v, list):
        raise GenesisError(path, "expected an array")
    return v


def _validator(doc: object, path: str, i: int) -> ValidatorInfo:
    d = _fields(
        doc, path, ("index", "name", "public_key", "sae_id"), ("scheme", "p2p", "api", "operator")
    )
    if d.get("scheme", VALIDATOR_SCHEME.value) != VALIDATOR_SCHEME.value:
        raise GenesisError(f"{path}.scheme", f"validators sign with {VALIDATOR_SCHEME.value}")
    index = _int(d["index"], f"{path}.index", 0, 1023)
    if index != i:
        raise GenesisError(f"{path}.index", f"expected {i}: validators are listed by index")
    return ValidatorInfo(
        index,
        _text(d["name"], f"{path}.name", 1, 64),
        _hex(d["public_key"], f"{path}.public_key", PUBLIC_KEY_LEN[VALIDATOR_SCHEME]),
        _text(d["sae_id"], f"{path}.sae_id", 1, 128),
        _text(d.get("p2p", ""), f"{path}.p2p", 0, 256),
        _text(d.get("api", ""), f"{path}.api", 0, 256),
        _hex(d["operator"], f"{path}.operator", 20) if "operator" in d else b"",
    )


def _member(doc: object, path: str, issuers: set[bytes]) -> GenesisMember:
    d = _fields(doc, path, ("name", "scheme", "public_key", "roles"), ("address",))
    roles_doc = _list(d["roles"], f"{path}.roles")
    roles = tuple(_text(r, f"{path}.roles[{j}]", 1, 16) for j, r in enumerate(roles_doc))
    name = _text(d["name"], f"{path}.name", 1, 128)
    scheme = _text(d["scheme"], f"{path}.scheme", 1, 16)
    key = _hex(d["public_key"], f"{path}.public_key")
    try:
        m = membership.new_member(name, scheme, key, roles, 0)
    except ArgumentError as e:
        raise GenesisError(f"{path}.{e.field}", e.reason) from None
    if "address" in d and _hex(d["address"], f"{path}.address", 20) != m.address:
        raise GenesisError(f"{path}.address", f"does not match the key (derived {m.address.hex()})")
    if m.address in issuers and "issuer" not in m.roles:
        m = dataclasses.replace(m, roles=tuple(sorted((*m.roles, "issuer"))))
    if not m.roles:
        raise GenesisError(f"{path}.roles", "at least one role is needed")
    return GenesisMember(m.name, m.scheme, m.public_key, m.roles)


def parse_genesis(doc: object) -> Genesis:
    """A validated `Genesis` from a parsed JSON document."""
    d = _fields(
        doc,
        "",
        ("chain_id", "validators", "members"),
        (
            "genesis_time",
            "consensus",
            "voucher_issuers",
            "accepted_schemes",
            "state_root_interval",
        ),
    )
    chain_id = _text(d["chain_id"], "chain_id", 1, 64)
    genesis_time = _int(d.get("genesis_time", 0), "genesis_time", 0, 2**64 - 1)
    c = _fields(
        d.get("consensus", {}),
        "consensus",
        (),
        (
            "tenure",
            "first_leader",
            "timing",
            "reconfig_delay",
            "proposal_ttl",
            "ready_ttl",
            "ready_ttl_heights",
            "reconfiguration",
        ),
    )
    tenure = _int(c.get("tenure", DEFAULT_TENURE), "consensus.tenure", 1, 2**32 - 1)
    timing = c.get("timing", "default")
    if timing not in TIMING_PROFILES:
        raise GenesisError("consensus.timing", f"must be one of {', '.join(TIMING_PROFILES)}")
    vals_doc = _list(d["validators"], "validators")
    n = len(vals_doc)
    if n == 0 or n % 3 != 1 or n > 1021:
        raise GenesisError("validators", f"n = 3f+1 validators are needed (1, 4, 7, ...), got {n}")
    validators = tuple(_validator(v, f"validators[{i}]", i) for i, v in enumerate(vals_doc))
    first_leader = _int(c.get("first_leader", 0), "consensus.first_leader", 0, n - 1)
    for field, seen_name in (("public_key", "key"), ("sae_id", "SAE id")):
        seen: dict[object, int] = {}
        for v in validators:
            value = getattr(v, field)
            if value in seen:
                raise GenesisError(
                    f"validators[{v.index}].{field}",
                    f"same {seen_name} as validators[{seen[value]}]",
                )
            seen[value] = v.index
    issuers_doc = _list(d.get("voucher_issuers", []), "voucher_issuers")
    issuers = [_hex(a, f"voucher_issuers[{i}]", 20) for i, a in enumerate(issuers_doc)]
    accepted = _accepted_schemes(d.get("accepted_schemes"))
    members_doc = _list(d["members"], "members")
    members = tuple(_member(m, f"members[{i}]", set(issuers)) for i, m in enumerate(members_doc))
    for i, m in enumerate(members):
        if accepted and m.scheme not in accepted:
            raise GenesisError(f"members[{i}].scheme", f"{m.scheme} is not in accepted_schemes")
    by_address: dict[bytes, int] = {}
    for i, m in enumerate(members):
        if m.address in by_address:
            raise GenesisError(f"members[{i}]", f"same key as members[{by_address[m.address]}]")
        by_address[m.address] = i
    _check_operators(validators, set(by_address), c.get("reconfiguration", False))
    if not any("admin" in m.roles for m in members):
        raise GenesisError("members", "at least one member must have the admin role")
    for i, a in enumerate(issuers):
        if a not in by_address:
            raise GenesisError(f"voucher_issuers[{i}]", f"{a.hex()} is not one of the members")
    if len(set(issuers)) != len(issuers):
        raise GenesisError("voucher_issuers", "an address is listed twice")
    return Genesis(
        chain_id,
        genesis_time,
        ConsensusParams(
            tenure,
            first_leader,
            str(timing),
            _int(
                c.get("reconfig_delay", DEFAULT_RECONFIG_DELAY),
                "consensus.reconfig_delay",
                2,
                MAX_RECONFIG_DELAY,
            ),
            _int(
                c.get("proposal_ttl", DEFAULT_PROPOSAL_TTL), "consensus.proposal_ttl", 1, 2**32 - 1
            ),
            _int(c.get("ready_ttl", DEFAULT_READY_TTL), "consensus.ready_ttl", 0, 2**63 - 1),
            _int(
                c.get("ready_ttl_heights", DEFAULT_READY_TTL_HEIGHTS),
                "consensus.ready_ttl_heights",
                1,
                2**32 - 1,
            ),
            bool(c.get("reconfiguration", False)),
        ),
        validators,
        members,
        tuple(issuers),
        accepted,
        _int(d.get("state_root_interval", 0), "state_root_interval", 0, 2**32 - 1),
    )


def _check_operators(
    validators: tuple[ValidatorInfo, ...], members: set[bytes], reconfiguration: object
) -> None:
    """Every validator has an operator, a member's address, or none has; changes need them."""
    if type(reconfiguration) is not bool:
        raise GenesisError("consensus.reconfiguration", "expected true or false")
    with_operator = [v for v in validators if v.operator]
    if with_operator and len(with_operator) != len(validators):
        missing = next(v for v in validators if not v.operator)
        raise GenesisError(
            f"validators[{missing.index}].operator",
            "missing: every validator has an operator, or none has",
        )
    for v in with_operator:
        if v.operator not in members:
            raise GenesisError(
                f"validators[{v.index}].operator", f"{v.operator.hex()} is not one of the members"
            )
    if reconfiguration and not with_operator:
        raise GenesisError(
            "consensus.reconfiguration", "validator-set changes need every validator's operator"
        )
    if with_operator and len(validators) > validators_contract.MAX_SET:
        raise GenesisError(
            "validators",
            f"a chain whose validators name operators has at most {validators_contract.MAX_SET}"
            " validators (CONSENSUS.md §10.2)",
        )
    if reconfiguration:
        records = [
            validators_contract.Record(v.index, v.public_key, v.sae_id, v.operator)
            for v in validators
        ]
        size = validators_contract.state_bytes(records, [], 0)
        if size > validators_contract.MAX_STATE_BYTES:
            raise GenesisError(
                "validators",
                f"the set takes {size} bytes; a chain with validator-set changes holds at "
                f"most {validators_contract.MAX_STATE_BYTES} in set, schedule and q "
                "(CONSENSUS.md §10.2)",
            )


def _accepted_schemes(doc: object) -> tuple[str, ...]:
    """The genesis's `accepted_schemes`, in the order of `Scheme`; () when absent."""
    if doc is None:
        return ()
    names = _list(doc, "accepted_schemes")
    known = [s.value for s in Scheme]
    for i, name in enumerate(names):
        if name not in known:
            raise GenesisError(
                f"accepted_schemes[{i}]", f"unknown scheme {name!r} (schemes: {', '.join(known)})"
            )
    if not names:
        raise GenesisError("accepted_schemes", "name at least one scheme, or leave it out")
    if len(set(names)) != len(names):
        raise GenesisError("accepted_schemes", "a scheme is listed twice")
    return tuple(s for s in known if s in names)


@dataclass(frozen=True)
class GenesisState:
    write_set: WriteSet
    app_hash: bytes
    """The app hash block 1 chains from."""


def init_state(source: StateSource, genesis: Genesis) -> GenesisState:
    """The initial state of the chain as a write set over an empty source."""
    overlay = Overlay(source)
    state = StateWriter(overlay, membership.NAME)
    if genesis.accepted_schemes:
        state.save(
            membership.ACCEPTED_SCHEMES_KEY, membership.AcceptedSchemes(genesis.accepted_schemes)
        )
    for m in genesis.members:
        membership.put_member(
            state, None, membership.new_member(m.name, m.scheme, m.public_key, m.roles, 0)
        )
    if genesis.has_governance:
        c = genesis.consensus
        validators_contract.init_genesis(
            StateWriter(overlay, validators_contract.NAME),
            validators_contract.Config(
                c.reconfiguration,
                c.reconfig_delay,
                c.proposal_ttl,
                c.ready_ttl,
                c.ready_ttl_heights,
            ),
            [
                validators_contract.GenesisValidator(
                    v.index, v.name, v.public_key, v.sae_id, v.operator
                )
                for v in genesis.validators
            ],
        )
    write_set = overlay.changes()
    return GenesisState(write_set, app_hash(genesis.hash, write_set))
