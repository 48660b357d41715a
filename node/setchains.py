"""The node's side of set chains (docs/CONSENSUS.md §10.5): what it keeps at commit time,
and the set chain of a height built from it (`contracts.setchain`).

On a chain whose genesis sets `consensus.reconfiguration`, every commit batch carries,
in the store family `S` (`qchain.store.schema`), what a proof cannot be recomputed from
later:

- `c`, per block: the write-set chain value `chained(h)` (32 bytes), and at a checkpoint
  height the state root (32 bytes more): with the values below, the app hash of h
  (`contracts.setchain`);
- `v`, sparse: the `validators` contract's `set`, `schedule` and `q` after block h, at
  block 1 and at every block whose write set changed one of them; the values after any
  block are those of the last row at or below it;
- `r`, sparse: an index of the scheduling blocks (their write set changed `q`, which only
  grows).

So the proof of the three values at any block is at hand, and that of `q` alone too
(a tail), for 40 to 72 bytes a block and the values where they change. The rows are
written in the block's own commit batch (one atomic, synced write: a restart loses
nothing) and are never trusted when read back: every proof built is opened against the
header it is for (`StateProof.open`), a stored header and certificate are checked by the
chain store, and the index of scheduling blocks is checked against the `q` it proves, so
damage is `StorageCorrupt`, never a chain a verifier would take.

`SetChains.build(h)`: the links of the scheduling blocks r ≤ h − D in order (a block
above h − D schedules changes that activate above h), each certified at c, the first
height from r on whose certificate the store holds (at most `MAX_LINK_HEADERS` headers,
below the first activation its schedule holds); then the tail, header t = max(h − D,
r_k), the proof of `q` there and headers t+1..h (none when t = 0). More scheduling
blocks than `MAX_LINKS` are refused by name (`set-chain-unavailable`, `too-many-changes`):
a chain from a trusted checkpoint is what would carry them, and `qchain receipt verify`
takes none yet.
"""

from __future__ import annotations

from collections.abc import Sequence

from contracts import validators
from contracts.setchain import (
    MAX_LINK_HEADERS,
    MAX_LINKS,
    MAX_SETCHAIN_BYTES,
    SET_STATE_KEYS,
    SetChain,
    SetChainLink,
    SetChainRefused,
    SetChainTail,
    SetState,
    StateProof,
)
from contracts.state import WriteSet
from node.chainstore import ChainStore
from qchain.codec import decode_value, encode_value
from qchain.errors import CodecError, NotFound, NotGoverned, SetChainUnavailable
from qchain.store import schema
from qchain.store.kv import Batch, KVStore
from qchain.types import BlockHeader

_STATE_KEYS = {schema.state_key(validators.NAME, k) for k in SET_STATE_KEYS}
_Q_KEY = schema.state_key(validators.NAME, validators.NEXT_SEQ_KEY)


def add_to_batch(batch: Batch, height: int, state: SetState, write_set: WriteSet) -> None:
    """Add what the set chains need of block `height` to its commit batch."""
    batch.put(schema.set_chained_key(height), state.chained + state.state_root)
    changed = {k for k, _ in write_set} & _STATE_KEYS
    if height == 1 or changed:
        batch.put(schema.set_values_key(height), encode_value(list(state.values)))
    if _Q_KEY in changed:
        batch.put(schema.scheduling_key(height), b"")


class SetChains:
    """Set chains built from the rows `add_to_batch` wrote and the chain store."""

    def __init__(self, store: KVStore, chain: ChainStore, delay: int | None) -> None:
        """delay: the genesis's `reconfig_delay` D, None on a chain whose set never
        changes (then `build` refuses: `not-governed`)."""
        self.store = store
        self.chain = chain
        self.delay = delay

    def build(self, height: int) -> SetChain:
        """The set chain that proves `V(height)` from genesis."""
        if self.delay is None:
            raise NotGoverned()
        top = self.chain.height()
        if not 1 <= height <= top:
            raise NotFound("block", str(height))
        base = self.chain.base_height()
        if base > 0:
            # A state-synced store holds no set-state rows below its base: the index of
            # scheduling blocks would miss every change before it.
            raise SetChainUnavailable(
                height,
                "not-recorded",
                f"this store was state-synced at height {base} and holds no set state below "
                "it; ask another node",
            )
        rs = self.scheduling_blocks(height)
        links = tuple(self._link(height, r, top) for r in rs)
        t = max(height - self.delay, rs[-1] if rs else 0)
        tail = None if t == 0 else self._tail(t, height)
        self._check_q(links, tail)
        chain = SetChain(links, tail)
        size = len(chain.encode())
        if size > MAX_SETCHAIN_BYTES - 64 * 1024:
            raise SetChainUnavailable(
                height,
                "too-large",
                f"its set chain of {size} bytes leaves no room for a receipt within "
                f"{MAX_SETCHAIN_BYTES}",
            )
        return chain

    def scheduling_blocks(self, height: int) -> list[int]:
        """The scheduling blocks r ≤ height − D, ascending; at most `MAX_LINKS`."""
        assert self.delay is not None
        out: list[int] = []
        for key, _ in self.store.iterate(schema.SET_STATE_SCHEDULING):
            r = schema.read_u64(key[len(schema.SET_STATE_SCHEDULING) :])
            if r > height - self.delay:
                break
            out.append(r)
            if len(out) > MAX_LINKS:
                raise SetChainUnavailable(
                    height,
                    "too-many-changes",
                    f"more than {MAX_LINKS} blocks scheduled set changes before it, and a "
                    f"set chain carries at most {MAX_LINKS} links (docs/CONSENSUS.md §10.5); "
                    "a chain from a trusted checkpoint would carry them, which this node "
                    "does not serve",
                )
        return out

    def state(self, height: int) -> SetState:
        """What block `height`'s app hash was built from (unchecked: `proof` opens it)."""
        key = schema.set_chained_key(height)
        raw = self.store.get(key)
        if raw is None:
            raise SetChainUnavailable(
                height,
                "not-recorded",
                f"this store holds no set state of block {height} (it was committed "
                "before the node kept set states); ask another node",
            )
        if len(raw) not in (32, 64):
            raise self.store.corrupt(key, f"set state of block {height} is {len(raw)} bytes")
        return SetState(raw[:32], self._values(height), raw[32:])

    def _values(self, height: int) -> tuple[bytes, bytes, bytes]:
        start = schema.set_values_key(height)
        for key, raw in self.store.iterate(schema.SET_STATE_VALUES, start=start, reverse=True):
            try:
                values = decode_value(raw)
            except CodecError as e:
                raise self.store.corrupt(key, f"set values: {e.message}") from e
            match values:
                case [bytes(a), bytes(b), bytes(c)]:
                    return a, b, c
            raise self.store.corrupt(key, "set values are not three byte strings")
        raise self.store.corrupt(start, f"no set values at or below block {height}")

    def proof(
        self, height: int, keys: Sequence[bytes] = SET_STATE_KEYS
    ) -> tuple[BlockHeader, StateProof, dict[bytes, bytes]]:
        """Header `height`, the proof of keys after it, and the values it proves (opened
        against the header's app hash: a damaged row is `StorageCorrupt`)."""
        header = self._header(height)
        proof = self.state(height).prove(keys)
        try:
            values = proof.open(header.app_hash)
        except SetChainRefused as e:
            raise self.store.corrupt(
                schema.set_chained_key(height), f"set state of block {height}: {e.message}"
            ) from e
        return header, proof, values

    def _header(self, height: int) -> BlockHeader:
        header = self.chain.header(height)
        if header is None:
            raise self.store.corrupt(schema.header_key(height), f"header {height} is missing")
        return header

    def _link(self, height: int, r: int, top: int) -> SetChainLink:
        header, proof, values = self.proof(r)
        try:
            sched = validators.Schedule.decode(values[validators.SCHEDULE_KEY])
        except CodecError as e:
            raise self.store.corrupt(schema.scheduling_key(r), f"schedule: {e.message}") from e
        due = min((e.activation_height for e in sched.entries), default=None)
        if due is None:
            raise self.store.corrupt(
                schema.scheduling_key(r), f"block {r} is indexed as scheduling, none is due"
            )
        last = min(r + MAX_LINK_HEADERS - 1, due - 1, top)
        for c in range(r, last + 1):
            cert = self.chain.certificate(c)
            if cert is not None:
                headers = tuple(self._header(x) for x in range(r + 1, c + 1))
                return SetChainLink(header, headers, cert, proof)
        raise SetChainUnavailable(
            height,
            "no-certificate",
            f"this node holds no commit certificate of heights {r}..{last}, which the link "
            f"of scheduling block {r} needs; ask another node",
        )

    def _tail(self, t: int, height: int) -> SetChainTail:
        header, proof, _ = self.proof(t, [validators.NEXT_SEQ_KEY])
        headers = tuple(self._header(x) for x in range(t + 1, height + 1))
        return SetChainTail(header, proof, headers)

    def _check_q(self, links: Sequence[SetChainLink], tail: SetChainTail | None) -> None:
        """`q` before every link is the last link's, it grows at the link, and the tail's
        is the last link's: else the index of scheduling blocks lost or gained a row."""
        q = 0
        for link in links:
            r = link.header.height
            before = 0 if r == 1 else _q_value(self._values(r - 1)[2])
            if before != q:
                raise self.store.corrupt(
                    schema.scheduling_key(r),
                    f"q before block {r} is {before}, the last indexed scheduling block's "
                    f"{q}: the index misses one",
                )
            got = _q_of(link.proof)
            if got <= q:
                raise self.store.corrupt(
                    schema.scheduling_key(r),
                    f"block {r} is indexed as scheduling, q did not grow",
                )
            q = got
        if tail is not None and _q_of(tail.proof) != q:
            raise self.store.corrupt(
                schema.SET_STATE_SCHEDULING,
                f"q at block {tail.header.height} is not the last indexed scheduling "
                "block's: the index misses one",
            )


def _q_of(proof: StateProof) -> int:
    """The `q` a proof holds (proven against its header), −1 if it is no integer."""
    return _q_value(
        next(leaf.value for leaf in proof.leaves if leaf.key == validators.NEXT_SEQ_KEY)
    )


def _q_value(raw: bytes) -> int:
    try:
        q = decode_value(raw)
    except CodecError:
        return -1
    return q if type(q) is int else -1
