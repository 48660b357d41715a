"""A chain with validator governance for the `validators` contract's tests: operators
`op0..` (ed25519 members), an `outsider` member that operates nothing, and a pool of
ML-DSA-65 keys for added and rotated validators."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import cast

from contracts import validators
from contracts.genesis import parse_genesis
from contracts.testing import DevChain, dev_genesis
from qchain.keys import Scheme, SigningKey, dev_key
from qchain.store import MemoryStore
from qchain.types import Receipt

SEED = "qchain-validators-test"


@cache
def new_key(i: int) -> SigningKey:
    """The i-th ML-DSA-65 key of the pool (deterministic, cached)."""
    return dev_key(SEED, f"new-{i}", Scheme.ML_DSA_65)


def governed_chain(
    n: int = 4,
    *,
    operators: Sequence[int] | None = None,
    enabled: bool = True,
    delay: int = 2,
    proposal_ttl: int = 100,
    ready_ttl: int = 50,
    ready_ttl_ms: int = 0,
    state_root_interval: int = 0,
) -> DevChain:
    """A chain of n validators; validator i is operated by `op{operators[i]}` (default:
    `op{i}`)."""
    ops = list(operators) if operators is not None else list(range(n))
    members = {"admin": ("admin",), "outsider": ("partner",)}
    members.update({f"op{i}": ("partner",) for i in range(max(n, max(ops) + 1))})
    genesis, keys = dev_genesis(members, validators=n, seed=SEED)
    doc = genesis.to_json()
    vals = cast(list[dict[str, object]], doc["validators"])
    for i, v in enumerate(vals):
        v["operator"] = keys[f"op{ops[i]}"].address.hex()
    consensus = cast(dict[str, object], doc["consensus"])
    consensus.update(
        reconfiguration=enabled,
        reconfig_delay=delay,
        proposal_ttl=proposal_ttl,
        ready_ttl=ready_ttl_ms,
        ready_ttl_heights=ready_ttl,
    )
    if state_root_interval:
        doc["state_root_interval"] = state_root_interval
    return DevChain(MemoryStore(), parse_genesis(doc), keys)


def add_args(key: int, operator: bytes, sae: str | None = None, name: str = "new") -> list[object]:
    k = new_key(key).public_key
    return ["add", None, k, sae or f"sae-new-{key}", operator, name, "", ""]


def remove_args(vid: int) -> list[object]:
    return ["remove", vid, b"", "", b"", "", "", ""]


def rotate_args(vid: int, key: int, sae: str | None = None) -> list[object]:
    return ["rotate", vid, new_key(key).public_key, sae or f"sae-new-{key}", b"", "", "", ""]


def send(chain: DevChain, label: str, method: str, args: Sequence[object]) -> Receipt:
    return chain.run(chain.tx(label, validators.NAME, method, args))


def ready_signature(
    chain: DevChain, cid: bytes, key: int, checked: tuple[bytes, ...] = ()
) -> bytes:
    return new_key(key).sign(validators.ready_message(chain.genesis.chain_id, cid, checked))


def status(chain: DevChain, cid: bytes) -> validators.ChangeStatus:
    s = chain.query(validators.NAME, "change", [cid])
    assert isinstance(s, validators.ChangeStatus)
    return s


def set_ids(chain: DevChain, height: int) -> list[int]:
    s = chain.query(validators.NAME, "set", [height])
    assert isinstance(s, dict)
    return [r.id for r in cast(list[validators.Record], s["records"])]
