"""Domain-separated SHA-256.

Every hash in qchain names its purpose: `H(domain, data) = SHA-256(len(domain) || domain ||
data)` with a one-byte length prefix, so no two purposes can ever produce the same preimage.
The domains in use are listed in `Domain`; a new purpose gets a new domain.
"""

from __future__ import annotations

import hashlib
from enum import Enum

HASH_LEN = 32


class Domain(bytes, Enum):
    TX = b"qchain/tx"
    TX_SIGN = b"qchain/tx-sign"
    HEADER = b"qchain/header"
    RECEIPT = b"qchain/receipt"
    MERKLE_LEAF = b"qchain/merkle/leaf"
    MERKLE_NODE = b"qchain/merkle/node"
    MERKLE_EMPTY = b"qchain/merkle/empty"
    ADDRESS = b"qchain/address"
    APP_STATE = b"qchain/app-state"
    COMMIT_SIGN = b"qchain/commit-sign"
    DEV_KEY = b"qchain/dev-key"
    GENESIS = b"qchain/genesis"
    QKD_SIM_KEY = b"qchain/qkd/sim-key"
    QKD_SIM_KEY_ID = b"qchain/qkd/sim-key-id"
    CONSENSUS_BLOCK = b"qchain/consensus/block"
    BATCH = b"qchain/batch"
    APP_CHECKPOINT = b"qchain/app-checkpoint"
    STATE_CHUNK = b"qchain/state/chunk"
    STATE_ROOT = b"qchain/state/root"
    SET_STATE = b"qchain/set-state"


def hash_domain(domain: Domain, data: bytes) -> bytes:
    """SHA-256 of `data` under `domain`."""
    tag = domain.value
    h = hashlib.sha256(bytes((len(tag),)))
    h.update(tag)
    h.update(data)
    return h.digest()
