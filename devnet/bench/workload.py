"""The benchmark's senders and their pre-signed transactions.

A benchmark devnet carries `senders` extra genesis members ("Bench Sender 000" ...), each a
`partner` so that it can both anchor documents and pay vouchers. Their keys derive from the
published dev seed, like every devnet key: INSECURE by construction.

Each sender has its own nonce stream. Transactions are deterministic functions of (scheme,
kind, chain id, sender, nonce), so their signed bytes are cached on disk between runs
(`cache_dir()`); ML-DSA-65 signing costs about a millisecond, and a 30-second run at
1,000 tx/s needs 30,000 of them. Signing fans out over a process pool.

Kinds: `notary` anchors a unique digest, `voucher` pays 1 unit of the `bench` programme to
the dev `provider`, `mix` alternates the two by nonce.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import msgpack

from contracts.genesis import parse_genesis
from devnet.network import NetworkPlan, account_key
from node.genesis_file import load_genesis, save_genesis
from qchain.hashing import Domain, hash_domain
from qchain.keys import DEV_SEED, SigningKey, dev_key
from qchain.types import new_transaction

KINDS = ("notary", "voucher", "mix")
PROGRAMME = "bench"
PROGRAMME_BUDGET = 10**15
GRANT = 10**9


def sender_key(index: int, scheme: str) -> SigningKey:
    """INSECURE dev key of bench sender `index`."""
    return dev_key(DEV_SEED, f"bench-sender-{index}", scheme)


def add_bench_members(directory: Path, plan: NetworkPlan, senders: int) -> None:
    """Rewrite DIR/genesis.json with `senders` extra partner members."""
    path = directory / "genesis.json"
    doc = load_genesis(path).to_json()
    members = doc["members"]
    assert isinstance(members, list)
    for i in range(senders):
        key = sender_key(i, plan.scheme)
        members.append(
            {
                "name": f"Bench Sender {i:03d} (dev)",
                "scheme": key.scheme.value,
                "public_key": key.public_key.hex(),
                "roles": ["partner"],
            }
        )
    save_genesis(parse_genesis(doc), path)


def has_bench_members(directory: Path, plan: NetworkPlan, senders: int) -> bool:
    genesis = load_genesis(directory / "genesis.json")
    addresses = {m.address for m in genesis.members}
    return all(sender_key(i, plan.scheme).address in addresses for i in range(senders))


def tx_hash(raw: bytes) -> bytes:
    return hash_domain(Domain.TX, raw)


def _args(kind: str, address: bytes, nonce: int, provider: bytes) -> tuple[str, str, list[object]]:
    if kind == "mix":
        kind = "notary" if nonce % 2 == 0 else "voucher"
    if kind == "notary":
        digest = hashlib.sha256(address + nonce.to_bytes(8, "big")).digest()
        return "notary", "anchor", [digest, "sha256", f"bench {nonce}", "bench", b""]
    return "voucher", "pay", [PROGRAMME, provider, 1, f"bench {nonce}"]


def sign_range(
    scheme: str, kind: str, chain_id: str, index: int, start: int, stop: int
) -> list[bytes]:
    """Signed transactions of sender `index` with nonces start..stop-1."""
    key = sender_key(index, scheme)
    provider = account_key("provider", scheme).address
    out = []
    for nonce in range(start, stop):
        contract, method, args = _args(kind, key.address, nonce, provider)
        tx = new_transaction(
            key, chain_id=chain_id, nonce=nonce, contract=contract, method=method, args=args
        )
        out.append(tx.encode())
    return out


def cache_dir() -> Path:
    base = os.environ.get("QCHAIN_BENCH_CACHE")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "qchain-bench"


def _cache_file(scheme: str, kind: str, chain_id: str, index: int) -> Path:
    return cache_dir() / f"{scheme}-{kind}-{chain_id}-{index}.msgpack"


def _load_cached(path: Path) -> list[bytes]:
    try:
        data = msgpack.unpackb(path.read_bytes(), raw=False)
    except (OSError, ValueError, msgpack.UnpackException):
        return []
    if not isinstance(data, list) or not all(isinstance(x, bytes) for x in data):
        return []
    return list(data)


def presign(
    scheme: str,
    kind: str,
    chain_id: str,
    senders: int,
    first_nonce: Sequence[int],
    per_sender: int,
    workers: int = 2,
) -> list[list[bytes]]:
    """For each sender, `per_sender` signed transactions from its `first_nonce`.
    Reuses (and extends) the on-disk cache."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    have = [_load_cached(_cache_file(scheme, kind, chain_id, i)) for i in range(senders)]
    need = [first_nonce[i] + per_sender for i in range(senders)]
    jobs = [(i, len(have[i]), need[i]) for i in range(senders) if len(have[i]) < need[i]]
    if jobs:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {
                i: pool.submit(sign_range, scheme, kind, chain_id, i, start, stop)
                for i, start, stop in jobs
            }
            for i, fut in futures.items():
                have[i].extend(fut.result())
        cache_dir().mkdir(parents=True, exist_ok=True)
        for i, _, _ in jobs:
            path = _cache_file(scheme, kind, chain_id, i)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(msgpack.packb(have[i], use_bin_type=True))
            tmp.replace(path)
    return [have[i][first_nonce[i] : need[i]] for i in range(senders)]


def interleave(streams: Sequence[Sequence[bytes]]) -> list[bytes]:
    """One submission order for several senders: round-robin, each sender's nonces in
    order (so one node sees every sender's nonces ascending)."""
    out: list[bytes] = []
    longest = max((len(s) for s in streams), default=0)
    for k in range(longest):
        out.extend(s[k] for s in streams if k < len(s))
    return out
