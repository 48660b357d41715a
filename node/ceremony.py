"""The genesis ceremony: the coordinator builds the genesis from the sites' join files and
the members' public keys; every site checks the file against the hash it was told out of
band.

- A join file (`join.json`, written by `qchain validator init`) holds a validator's name,
  ML-DSA-65 public key, advertised `p2p` and `api` and its SAE id (and the API's
  certificate); `load_join` reads it as hostile input.
- `members.toml` lists the initial organisations, each key made by `qchain keys new` on
  the partner's own machine:

      accepted_schemes = ["sm2", "ml-dsa-65"]   # optional: the genesis's; default all

      [[members]]
      name = "Qingdao Port Group"
      scheme = "ml-dsa-65"          # or "ed25519" or "sm2"
      public_key = "<hex>"
      roles = ["admin"]             # admin, auditor, issuer, partner, provider

      [[voucher_issuers]]           # optional: a member who runs voucher programmes
      name = "Innovation Voucher Office"

  A member with the `issuer` role is a voucher issuer too; at least one member is an
  admin.
- `build_genesis` orders the validators by name (Unicode code points), so the same join
  files give the same indices whoever runs it; names, keys, SAE ids and endpoints must be
  distinct, n = 3f+1, and the chain id must not be a devnet's (`qchain.keys.
  DEVNET_CHAIN_PREFIX`). No key derived from the published dev seed is accepted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from contracts.genesis import TIMING_PROFILES, Genesis, parse_genesis
from node.site import check_url, split_host_port
from qchain.config import load_toml
from qchain.errors import ConfigError, GenesisError
from qchain.hashing import Domain, hash_domain
from qchain.keys import (
    DEVNET_CHAIN_PREFIX,
    PUBLIC_KEY_LEN,
    Scheme,
    dev_seed_label,
    is_devnet_chain,
)

MAX_JOIN_BYTES = 64 * 1024
JOIN_FIELDS = ("name", "public_key", "p2p", "api", "sae_id", "api_cert")


@dataclass(frozen=True)
class Join:
    """One validator's join file."""

    source: str
    name: str
    public_key: bytes
    p2p: str
    api: str
    sae_id: str
    api_cert: str


def load_join(path: Path) -> Join:
    """A join file, every field checked; `ConfigError` naming the file and field."""
    src = str(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(src, f"cannot read: {e.strerror}") from None
    if len(raw) > MAX_JOIN_BYTES:
        raise ConfigError(src, f"larger than {MAX_JOIN_BYTES} bytes: not a join file")
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise ConfigError(src, f"not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(src, "a join file holds a JSON object")
    for key in doc:
        if key not in JOIN_FIELDS:
            raise ConfigError(f"{src}: {key}", "unknown field (a join file holds no other)")
    for key in JOIN_FIELDS:
        if not isinstance(doc.get(key), str):
            raise ConfigError(f"{src}: {key}", "missing or not a string")
    name, sae_id = doc["name"], doc["sae_id"]
    if not 1 <= len(name.encode()) <= 64 or not name.isprintable():
        raise ConfigError(f"{src}: name", "must be 1 to 64 bytes of printable text")
    if not 1 <= len(sae_id.encode()) <= 128 or not sae_id.isprintable():
        raise ConfigError(f"{src}: sae_id", "must be 1 to 128 bytes of printable text")
    try:
        key = bytes.fromhex(doc["public_key"])
    except ValueError:
        raise ConfigError(f"{src}: public_key", "not a hex string") from None
    if len(key) != PUBLIC_KEY_LEN[Scheme.ML_DSA_65]:
        raise ConfigError(
            f"{src}: public_key",
            f"an ML-DSA-65 public key is {PUBLIC_KEY_LEN[Scheme.ML_DSA_65]} bytes, got {len(key)}",
        )
    split_host_port(doc["p2p"], f"{src}: p2p")
    check_url(doc["api"], f"{src}: api", ("https",))
    try:
        x509.load_pem_x509_certificate(doc["api_cert"].encode())
    except ValueError as e:
        raise ConfigError(f"{src}: api_cert", f"not a PEM certificate: {e}") from None
    return Join(src, name, key, doc["p2p"], doc["api"], sae_id, doc["api_cert"])


@dataclass(frozen=True)
class Members:
    """members.toml: the genesis `members` documents and the voucher issuers' names."""

    source: str
    members: tuple[dict[str, Any], ...]
    issuers: tuple[str, ...]
    accepted_schemes: object = None
    """The genesis's `accepted_schemes` as written (checked by `parse_genesis`), or None."""


def load_members(path: Path) -> Members:
    src = str(path)
    doc = load_toml(path)
    for key in doc:
        if key not in ("members", "voucher_issuers", "accepted_schemes"):
            raise ConfigError(
                f"{src}: {key}", "unknown table (members, voucher_issuers, accepted_schemes)"
            )
    members = doc.get("members")
    if not isinstance(members, list) or not members:
        raise ConfigError(f"{src}: members", "at least one [[members]] table is needed")
    out: list[dict[str, Any]] = []
    for i, m in enumerate(members):
        where = f"{src}: members[{i}]"
        if not isinstance(m, dict):
            raise ConfigError(where, "must be a table")
        for key in m:
            if key not in ("name", "scheme", "public_key", "roles", "address"):
                raise ConfigError(f"{where}.{key}", "unknown field")
        out.append(dict(m))
    names = [m.get("name") for m in out]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise ConfigError(f"{src}: members[{i}].name", f"{n!r} is listed twice")
    issuers = doc.get("voucher_issuers", [])
    if not isinstance(issuers, list):
        raise ConfigError(f"{src}: voucher_issuers", "must be [[voucher_issuers]] tables")
    issuer_names: list[str] = []
    for i, t in enumerate(issuers):
        if not isinstance(t, dict) or set(t) != {"name"} or t["name"] not in names:
            raise ConfigError(
                f"{src}: voucher_issuers[{i}]", "must be a table with the name of a member"
            )
        issuer_names.append(str(t["name"]))
    return Members(src, tuple(out), tuple(issuer_names), doc.get("accepted_schemes"))


def _distinct(joins: list[Join], what: str, value: Any) -> None:
    seen: dict[Any, str] = {}
    for j in joins:
        v = value(j)
        if v in seen:
            raise ConfigError(f"{j.source}: {what}", f"same {what} as {seen[v]}")
        seen[v] = j.source


def _check_validators(joins: list[Join]) -> None:
    n = len(joins)
    if n == 0 or n % 3 != 1:
        f = max(0, (n - 1) // 3)
        raise ConfigError(
            "--validators",
            f"n = 3f+1 validators are needed (1, 4, 7, 10, ...), got {n} join files; "
            f"{n} validators tolerate no more faults than {3 * f + 1}",
        )
    _distinct(joins, "name", lambda j: j.name)
    _distinct(joins, "public_key", lambda j: j.public_key)
    _distinct(joins, "sae_id", lambda j: j.sae_id)
    _distinct(joins, "p2p", lambda j: j.p2p.lower())
    _distinct(joins, "api", lambda j: j.api.lower().rstrip("/"))
    for j in joins:
        label = dev_seed_label(Scheme.ML_DSA_65, j.public_key, n)
        if label is not None:
            raise ConfigError(
                f"{j.source}: public_key",
                f"is the published dev seed's {label!r} key; run `qchain validator init` "
                "at the site for a key of its own",
            )


def build_genesis(
    chain_id: str,
    joins: list[Join],
    members: Members,
    *,
    timing: str = "default",
    genesis_time_ms: int = 0,
    state_root_interval: int = 0,
) -> Genesis:
    """The genesis of a new chain; validators are indexed in the order of their names.
    state_root_interval > 0 makes every multiple of it a checkpoint height whose state
    snapshot nodes can sync from (CONSENSUS.md Revision 1.11)."""
    if is_devnet_chain(chain_id):
        raise ConfigError(
            "--chain-id",
            f"{chain_id!r}: chain ids starting with {DEVNET_CHAIN_PREFIX!r} are reserved for "
            "devnets, whose keys are public",
        )
    if timing not in TIMING_PROFILES:
        raise ConfigError("--timing", f"must be one of {', '.join(TIMING_PROFILES)}")
    ordered = sorted(joins, key=lambda j: j.name)
    _check_validators(ordered)
    issuers = set(members.issuers)
    issuer_addresses: list[str] = []
    doc: dict[str, Any] = {
        "chain_id": chain_id,
        "genesis_time": genesis_time_ms,
        "consensus": {"timing": timing},
        "validators": [
            {
                "index": i,
                "name": j.name,
                "public_key": j.public_key.hex(),
                "sae_id": j.sae_id,
                "p2p": j.p2p,
                "api": j.api,
            }
            for i, j in enumerate(ordered)
        ],
        "members": list(members.members),
        "voucher_issuers": issuer_addresses,
    }
    if members.accepted_schemes is not None:
        doc["accepted_schemes"] = members.accepted_schemes
    if state_root_interval:
        doc["state_root_interval"] = state_root_interval
    try:
        genesis = parse_genesis(doc)
        if issuers:
            doc["voucher_issuers"] = [m.address.hex() for m in genesis.members if m.name in issuers]
            genesis = parse_genesis(doc)
    except GenesisError as e:
        ours = e.field.startswith(("members", "voucher", "accepted_schemes"))
        where = members.source if ours else "genesis"
        raise ConfigError(f"{where}: {e.field}", e.reason) from None
    for i, m in enumerate(genesis.members):
        label = dev_seed_label(m.scheme, m.public_key, len(ordered))
        if label is not None:
            raise ConfigError(
                f"{members.source}: members[{i}].public_key",
                f"is the published dev seed's {label!r} key; the member makes a key of its "
                "own with `qchain keys new`",
            )
    return genesis


def fingerprint(public_key: bytes) -> str:
    """A short, readable digest of a public key for comparing over the phone."""
    return hash_domain(Domain.ADDRESS, b"fingerprint\x00" + public_key)[:8].hex()


def describe(genesis: Genesis) -> list[str]:
    """The lines an operator compares with the coordinator's announcement."""
    lines = [
        f"chain id:      {genesis.chain_id}",
        f"timing:        {genesis.consensus.timing}",
        f"genesis time:  {genesis.genesis_time}",
        f"validators:    {len(genesis.validators)}",
    ]
    if genesis.state_root_interval:
        lines.insert(3, f"state root:    every {genesis.state_root_interval} heights")
    for v in genesis.validators:
        lines.append(
            f"  [{v.index}] {v.name}  key {fingerprint(v.public_key)}  sae {v.sae_id}  "
            f"p2p {v.p2p or '-'}  api {v.api or '-'}"
        )
    lines.append(f"members:       {len(genesis.members)}")
    for m in genesis.members:
        lines.append(f"  {m.name}  {m.scheme}  {m.address.hex()}  roles {','.join(m.roles)}")
    lines.append(f"genesis hash:  {genesis.hash.hex()}")
    return lines


def check_hash(genesis: Genesis, expected: str) -> str | None:
    """None if the genesis has the expected hash (hex); else what differs."""
    want = expected.strip().lower().removeprefix("0x")
    if len(want) != 64 or any(c not in "0123456789abcdef" for c in want):
        raise ConfigError("--expect-hash", "must be the 64 hex digits of a genesis hash")
    got = genesis.hash.hex()
    if got == want:
        return None
    return (
        f"the genesis hash is {got}, not {want}: this file is not the genesis that was "
        "announced; compare the chain id, timing, genesis time, validators (keys, SAE ids) "
        "and members above with the coordinator's and do not start the node"
    )
