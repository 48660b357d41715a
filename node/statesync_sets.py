"""State sync on a chain whose validator set changes (CONSENSUS.md §10.5, Revision 1.22):
the set that checks a snapshot's certificate, and the leader anchor the synced node
starts the next height with.

- `check_set_chain`: the set of the snapshot height s proven from the genesis by a set
  chain a source sends (hostile: bounded before it is decoded, then `prove_set` from the
  genesis start). `node.statesync` then checks that its tail ends at the offered header
  and the offer's certificate under the proven set, by id; the genesis set is never used.
- `governed_anchor`: A(s+1) by §10.4, from the certified header of s and the sets of s and
  s+1 that the snapshot's state holds (the state is covered by the certified app hash).
"""

from __future__ import annotations

from collections.abc import Sequence

from consensus.sets import VSet, next_anchor
from contracts import validators
from contracts.setchain import MAX_SETCHAIN_BYTES, ProvenSet, Start, decode_set_chain, prove_set
from contracts.snapshot import Entry
from contracts.state import StateReader
from node.snapshots import SnapshotOffer
from qchain.errors import InvalidSnapshot, NotFound, QChainError
from qchain.store import Batch, schema
from qchain.store.memory import MemoryStore


def check_set_chain(raw: bytes, height: int, chain_id: str, start: Start, delay: int) -> ProvenSet:
    """The set of height proven from start by a source's set chain bytes. The caller
    checks that its header is the offered one and the certificate under its set. Raises
    `InvalidSnapshot`, `CodecError` or `BadSignature` (`SetChainRefused`, `SetUnproven`)."""
    if len(raw) > MAX_SETCHAIN_BYTES:
        raise InvalidSnapshot(f"set chain of {len(raw)} bytes exceeds {MAX_SETCHAIN_BYTES}")
    return prove_set(
        decode_set_chain(raw), chain_id=chain_id, start=start, delay=delay, height=height
    )


def governed_anchor(
    offer: SnapshotOffer,
    chunks: Sequence[Sequence[Entry]],
    tenure: int,
    members: Sequence[validators.Record],
) -> int:
    """The anchor id A(s+1) (§10.4), from the certified header of s and the sets of s and
    s+1 the snapshot's state holds (exact: D ≥ 2): the decided block's proposer is
    `leader(s, round)`, so A(s) is the member `round` positions before it in `V(s)`.
    Raises `InvalidSnapshot` if the state's `V(s)` is not the proven set (members) or the
    header's proposer is no member of it."""
    prefix = schema.state_prefix(validators.NAME)
    own = MemoryStore()
    batch = Batch()
    for chunk in chunks:
        for key, value in chunk:
            if key.startswith(prefix):
                batch.put(key, value)
    own.write(batch, sync=False)
    reader = StateReader(own, validators.NAME)
    header = offer.header
    s = header.height
    try:
        cur = VSet(tuple(r.id for r in validators.set_at(reader, s).records))
        nxt = VSet(tuple(r.id for r in validators.set_at(reader, s + 1).records))
    except (NotFound, QChainError) as e:
        raise InvalidSnapshot(f"the snapshot's state holds no set of {s}: {e}") from e
    if cur.ids != tuple(sorted(r.id for r in members)):
        raise InvalidSnapshot(f"the snapshot's set of {s} is not the one its set chain proves")
    if header.proposer not in cur:
        raise InvalidSnapshot(f"the proposer of block {s} is not a member of its set")
    anchor = cur.ids[(cur.pos(header.proposer) - header.round) % cur.n]
    return next_anchor(s, tenure, anchor, header.proposer, cur, nxt)
