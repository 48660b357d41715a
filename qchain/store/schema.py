"""The key layout of a qchain store, version 2. Every key is built here and nowhere else.

Each family of keys starts with a one-byte prefix; integers inside keys are 8-byte
big-endian so that byte order is numeric order. The layout version is written under
`meta/schema-version`; a node refuses to open a store written under another version.

| prefix | key | value |
|---|---|---|
| `b` | height | the block: its consensus value (32 bytes), a reference to the pending body
  `p` (height, value) that holds it, or (stores migrated from version 1, `ChainStore`
  used alone) the encoded block itself |
| `H` | height | encoded block header (written with the block; a store from before it
  falls back to the block) |
| `h` | block hash | height |
| `t` | tx hash | (height, index) |
| `r` | height, index | encoded receipt |
| `s` | contract name, 0x00, state key | state value |
| `c` | height | encoded commit certificate |
| `k` | height | consensus record of that height's instance |
| `p` | height, consensus value | an encoded consensus block the engine must keep (proposed
  or voted) above the committed height; at or below it, only the committed block's, which
  its `b` row references (a body is written once) |
| `m` | name | node metadata (schema version, chain id, last committed height, ...) |
| `q` | link name | QKD lease: the end of the block of numbers a counter may use (a
  link's frame numbers under `seq/<me>/<peer>`, a simulated key counter under `sim/...`);
  under `floor`, the lease floor every link's numbers start at or above
  (`QKD_LEASE_FLOOR`, `qchain.qkd.lease`) |
| `v` | height | the consensus value decided at that height |
| `a` | app-defined | auxiliary per-node data (e.g. consensus extras) |
| `n` | height | the manifest of the state snapshot this node keeps for a checkpoint height
  (`contracts.snapshot`) |
| `N` | height, index | chunk `index` of that snapshot |
| `S` | `c`, height | on a chain whose genesis sets `consensus.reconfiguration`: the
  write-set chain value of the block (32 bytes), then at a checkpoint height its state
  root (32 bytes) (`node.setchains`) |
| `S` | `v`, height | the `validators` contract's `set`, `schedule` and `q` after the block,
  at block 1 and at every block that changed one of them |
| `S` | `r`, height | empty: the block is a scheduling block (its execution grew `q`) |

`h` maps both kinds of block hash to a height: the chain block hash (the header's hash)
and the consensus value (the hash of the consensus engine's block); the two use different
hash domains, so they never collide.

Version 1 keyed `p` by consensus value alone and wrote every committed block in full under
`b` as well as under `p` before it committed. `ChainStore.init_meta` migrates a version 1
store on open (`migrate_v1`): each pending body is moved under its height; committed
blocks stay inline (a `b` row of either form is read).
"""

from __future__ import annotations

import struct

from qchain.errors import StorageError

SCHEMA_VERSION = 2
VALUE_LEN = 32
"""Length of a consensus value, the form of a `b` row that references its body."""

BLOCK = b"b"
HEADER = b"H"
BLOCK_HASH = b"h"
TX = b"t"
RECEIPT = b"r"
STATE = b"s"
CERT = b"c"
CONSENSUS = b"k"
PENDING_BODY = b"p"
META = b"m"
QKD_LEASE = b"q"
AUX = b"a"
CONSENSUS_VALUE = b"v"
SNAPSHOT = b"n"
SNAPSHOT_CHUNK = b"N"
SET_STATE = b"S"
SET_STATE_CHAINED = SET_STATE + b"c"
SET_STATE_VALUES = SET_STATE + b"v"
SET_STATE_SCHEDULING = SET_STATE + b"r"

PREFIXES = frozenset(
    {
        BLOCK,
        HEADER,
        BLOCK_HASH,
        TX,
        RECEIPT,
        STATE,
        CERT,
        CONSENSUS,
        PENDING_BODY,
        META,
        QKD_LEASE,
        AUX,
        CONSENSUS_VALUE,
        SNAPSHOT,
        SNAPSHOT_CHUNK,
        SET_STATE,
    }
)
"""Every key family of this version: a key starting with another byte is not ours."""

_U64 = struct.Struct(">Q")
MAX_NAME = 255


def u64(n: int) -> bytes:
    """8-byte big-endian encoding of a non-negative integer."""
    return _U64.pack(n)


def read_u64(b: bytes) -> int:
    if len(b) != 8:
        raise StorageError(f"expected an 8-byte integer, got {len(b)} bytes")
    value: int = _U64.unpack(b)[0]
    return value


def _name(name: str) -> bytes:
    raw = name.encode("utf-8")
    if not raw or len(raw) > MAX_NAME or b"\x00" in raw:
        raise StorageError(f"invalid key name {name!r}")
    return raw


def block_key(height: int) -> bytes:
    return BLOCK + u64(height)


def header_key(height: int) -> bytes:
    return HEADER + u64(height)


def block_hash_key(block_hash: bytes) -> bytes:
    return BLOCK_HASH + block_hash


def tx_key(tx_hash: bytes) -> bytes:
    return TX + tx_hash


def receipt_key(height: int, index: int) -> bytes:
    return RECEIPT + u64(height) + u64(index)


def receipts_prefix(height: int) -> bytes:
    return RECEIPT + u64(height)


def state_prefix(contract: str) -> bytes:
    return STATE + _name(contract) + b"\x00"


def state_key(contract: str, key: bytes) -> bytes:
    return state_prefix(contract) + key


def split_state_key(full: bytes) -> tuple[str, bytes]:
    """(contract, key) of a state key built by `state_key`."""
    if not full.startswith(STATE):
        raise StorageError("not a state key")
    name, sep, key = full[1:].partition(b"\x00")
    if not sep:
        raise StorageError("malformed state key")
    return name.decode("utf-8"), key


def cert_key(height: int) -> bytes:
    return CERT + u64(height)


def consensus_key(height: int) -> bytes:
    return CONSENSUS + u64(height)


def consensus_value_key(height: int) -> bytes:
    return CONSENSUS_VALUE + u64(height)


def pending_body_key(height: int, value: bytes) -> bytes:
    return PENDING_BODY + u64(height) + value


def pending_prefix(height: int) -> bytes:
    """The pending bodies of one height."""
    return PENDING_BODY + u64(height)


def split_pending_key(key: bytes) -> tuple[int, bytes]:
    """(height, consensus value) of a key built by `pending_body_key`."""
    if len(key) != 1 + 8 + VALUE_LEN or not key.startswith(PENDING_BODY):
        raise StorageError("not a pending body key")
    return read_u64(key[1:9]), key[9:]


def v1_pending_body_key(value: bytes) -> bytes:
    """The key of a pending body in a version 1 store (for the migration only)."""
    return PENDING_BODY + value


def snapshot_key(height: int) -> bytes:
    return SNAPSHOT + u64(height)


def snapshot_chunk_key(height: int, index: int) -> bytes:
    return SNAPSHOT_CHUNK + u64(height) + u64(index)


def snapshot_chunks_prefix(height: int) -> bytes:
    return SNAPSHOT_CHUNK + u64(height)


def set_chained_key(height: int) -> bytes:
    return SET_STATE_CHAINED + u64(height)


def set_values_key(height: int) -> bytes:
    return SET_STATE_VALUES + u64(height)


def scheduling_key(height: int) -> bytes:
    return SET_STATE_SCHEDULING + u64(height)


def meta_key(name: str) -> bytes:
    return META + _name(name)


def qkd_lease_key(link: str) -> bytes:
    return QKD_LEASE + _name(link)


def aux_key(name: str) -> bytes:
    return AUX + _name(name)


META_SCHEMA_VERSION = meta_key("schema-version")
META_CHAIN_ID = meta_key("chain-id")
META_LAST_HEIGHT = meta_key("last-height")
META_GENESIS_HASH = meta_key("genesis-hash")
META_BASE_HEIGHT = meta_key("base-height")
"""The snapshot height a state-synced store starts at, its first block: none below it is
held."""
QKD_LEASE_FLOOR = qkd_lease_key("floor")
"""The lease floor (u64, CONSENSUS.md §10.9 (7)): written by every writer of META_AMNESIA;
each link's frame numbers start at max(its lease, the floor). No link lease shares the
name: those are `seq/<me>/<peer>`."""
META_AMNESIA = meta_key("amnesia")
"""Present after a restore, rebuild or state sync (CONSENSUS.md §3.8): empty while the
amnesia guard is unsettled, then the u64 last height at which the node stays silent."""
