"""State sync: a node's state taken from a certified snapshot instead of replaying blocks.

`StateSync.run` asks its sources (peers serving `node.snapshots`, over the HTTP API or a
test's in-process server) which snapshots they keep (`offered`: with a time limit, those
that answered by then), takes the highest checkpoint height s offered, and checks the
offer of s before it fetches anything else:

1. the header is of this chain and of height s, and s is a checkpoint height of the
   genesis's `state_root_interval`;
2. the commit certificate names that header's hash at s and carries a quorum of valid
   signatures of the validator set of s, and no more signatures than it has members
   (CONSENSUS.md §10.5). On a chain whose genesis sets no `consensus.reconfiguration`
   that is the genesis set. On one that does, it is the set proven from the genesis by a
   set chain of s fetched from the sources that offer s (`set_chain`, the offer's own
   source first, then the others): bounded when decoded, `prove_set` from the genesis
   start, its tail ending at the offered header, and the certificate passing under the
   set it proves, by id; a set chain that fails is counted in `rejected_set_chains` and
   the next source's is tried, and the genesis set is never used for a height above 1;
3. the manifest is the one the header's app hash commits to (`Manifest.check`);
4. the header of s−1 it carries is header s's parent.

The consensus value decided at s, which the next height's consensus block names as its
parent, is not covered by the certificate (it signs the chain header's hash): it is
taken only when `value_quorum` (f+1; on a governed chain f(s)+1 of the proven set)
sources' checked offers name the same one, so at
least one correct validator vouches for it. The offers are asked of every source at once
and the first `value_quorum` that agree decide: a source that has not answered by then is
not waited for, and the rest is asked of the vouching sources first, of the others only
for what none of those served.

The block of s with its receipts (`check_block`: they must match the certified header's
hash, `tx_root` and `receipts_root`), so that the node holds its first block and serves
its receipts, is fetched while the chunks are. Chunks are fetched in parallel, each from
a vouching source, and each checked alone against its hash in the manifest
(`contracts.snapshot.decode_chunk`); a chunk that fails is counted in `rejected`, its
source is not asked for that chunk again, and the chunk is fetched again from another
source. A source that fails an offer or a chunk is skipped, never trusted: whatever a
source sends is either what the certificate commits to or refused. When every chunk is
in, `write` replaces the store's state with the snapshot's and records the block,
receipts and certificate of s, the base height s and the last committed height s, in one
synced batch: a crash before it leaves the store as it was (the sync starts again), after
it the node holds the whole state of s.

Everything a source sends is bounded before it is decoded: an offer by
`MAX_OFFER_BYTES`, a manifest by `MAX_MANIFEST_BYTES`, a chunk by `MAX_CHUNK_BYTES`, and
a block answer by `MAX_BLOCK_ANSWER_BYTES`, and the source itself reads no more than
that from the wire.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from contracts import validators
from contracts.genesis import Genesis
from contracts.setchain import ProvenSet, Start, genesis_start, verify_certificate_by_id
from contracts.snapshot import (
    Entry,
    Manifest,
    decode_chunk,
    decode_manifest,
    is_checkpoint,
)
from node.chainstore import ChainStore
from node.snapshots import (
    BLOCK_ANSWER_LIMITS,
    MAX_BLOCK_ANSWER_BYTES,
    MAX_OFFER_BYTES,
    SnapshotBlock,
    SnapshotOffer,
)
from node.statesync_sets import check_set_chain, governed_anchor
from qchain.clock import wall_ms
from qchain.errors import BadSignature, InvalidSnapshot, QChainError, StorageError
from qchain.merkle import leaf_hash, root_of_leaf_hashes
from qchain.qkd.lease import lease_floor, read_floor
from qchain.store import Batch, schema
from qchain.store.kv import KVStore
from qchain.types import (
    BLOCK_LIMITS,
    Block,
    BlockHeader,
    Receipt,
    ValidatorKey,
    verify_certificate,
)

MAX_LISTED = 64
"""Most snapshot heights read from one source's list."""
FETCH_ERRORS = (QChainError, OSError, asyncio.TimeoutError)
"""What a source's fetch may fail with; the source is then skipped for that item."""


class SnapshotSource(Protocol):
    """A peer that serves snapshots; every answer is hostile input."""

    name: str

    async def snapshot_heights(self) -> list[int]:
        """The heights of the snapshots it offers."""

    async def snapshot_offer(self, height: int) -> bytes:
        """The encoded `SnapshotOffer` of height."""

    async def snapshot_chunk(self, height: int, index: int) -> bytes:
        """Chunk index of the snapshot of height."""

    async def snapshot_block(self, height: int) -> bytes:
        """The encoded `SnapshotBlock` (block and receipts) of the snapshot of height."""

    async def set_chain(self, height: int) -> bytes:
        """The encoded set chain that proves the set of height from genesis (asked only
        on a chain whose genesis sets `consensus.reconfiguration`)."""


@dataclass(frozen=True)
class Trust:
    """What a snapshot is checked against: the chain and the validator set of s, and the
    genesis's consensus parameters that fix the leader anchor of s+1."""

    chain_id: str
    genesis_hash: bytes
    validators: Sequence[ValidatorKey]
    state_root_interval: int
    tenure: int
    first_leader: int
    value_quorum: int
    """Checked offers that must name the same consensus value of s (f+1: one correct
    validator among them); the certificate does not cover that value. On a governed chain
    the larger of this and f(s)+1 of the proven set."""
    start: Start | None = None
    """On a chain whose genesis sets `consensus.reconfiguration`: where set chains are
    proven from (the genesis set); None: the genesis set is the set of every height."""
    delay: int = 0
    """The genesis's `reconfig_delay` D (with `start`)."""

    @classmethod
    def of_genesis(cls, genesis: Genesis) -> Trust:
        n = len(genesis.validators)
        governed = genesis.consensus.reconfiguration
        return cls(
            genesis.chain_id,
            genesis.hash,
            genesis.validator_keys(),
            genesis.state_root_interval,
            genesis.consensus.tenure,
            genesis.consensus.first_leader,
            (n - 1) // 3 + 1,
            genesis_start(
                [
                    validators.Record(v.index, v.public_key, v.sae_id, v.operator)
                    for v in genesis.validators
                ]
            )
            if governed
            else None,
            genesis.consensus.reconfig_delay if governed else 0,
        )

    def next_anchor(self, offer: SnapshotOffer) -> int:
        """anchor(s+1) (CONSENSUS.md §3.2) from the headers of s and s−1."""
        n, s = len(self.validators), offer.header.height
        if (s + 1) % self.tenure != 0:
            return offer.header.proposer % n
        if self.tenure == 1:
            return (self.first_leader + s) % n
        anchor_s = self.first_leader if s == 1 else offer.parent[0].proposer % n
        return (anchor_s + 1) % n


@dataclass
class Synced:
    """What a state sync wrote, and what it refused on the way."""

    height: int
    entries: int
    chunks: int
    rejected_chunks: int = 0
    """Chunks that failed their hash or decoding, each fetched again elsewhere."""
    rejected_offers: int = 0
    rejected_blocks: int = 0
    rejected_set_chains: int = 0
    """Set chains refused (a bound, `prove_set`, or a set under which the offered
    certificate fails), each then asked of another source."""
    set_source: str = ""
    """The source whose set chain proved the set of the height taken (governed chains)."""
    failed_fetches: int = 0
    """Fetches that failed outright (the source down, a problem answer, a timeout)."""
    offer: SnapshotOffer | None = field(default=None, repr=False)


def check_block(raw: bytes, header: BlockHeader) -> SnapshotBlock:
    """The block of a snapshot height from a source's bytes, checked against its certified
    header: the block carries that header and its transactions match the `tx_root`, and
    the receipts (one per transaction, each naming it) make the header's `receipts_root`.
    Raises `InvalidSnapshot` or `CodecError`."""
    if len(raw) > MAX_BLOCK_ANSWER_BYTES:
        raise InvalidSnapshot(f"block answer of {len(raw)} bytes exceeds {MAX_BLOCK_ANSWER_BYTES}")
    answer = SnapshotBlock.decode(raw, BLOCK_ANSWER_LIMITS)
    block = Block.decode(answer.block, BLOCK_LIMITS)
    if block.header != header:
        raise InvalidSnapshot(f"block {header.height} does not carry the certified header")
    block.check_body()
    if len(answer.receipts) != len(block.txs):
        raise InvalidSnapshot("not one receipt per transaction")
    if root_of_leaf_hashes([leaf_hash(r) for r in answer.receipts]) != header.receipts_root:
        raise InvalidSnapshot("receipts do not make the header's receipts root")
    for i, (raw_receipt, tx) in enumerate(zip(answer.receipts, block.txs, strict=True)):
        receipt = Receipt.decode(raw_receipt)
        if (receipt.tx_hash, receipt.height, receipt.index) != (tx.hash, header.height, i):
            raise InvalidSnapshot(f"receipt {i} does not name its transaction")
    return answer


def read_offer(raw: bytes, height: int, trust: Trust) -> tuple[SnapshotOffer, Manifest]:
    """The offer of height from a source's bytes, checked but for its certificate's
    signatures (steps 1, 3 and 4 above, and that the certificate names the header);
    raises `InvalidSnapshot` or `CodecError`."""
    if len(raw) > MAX_OFFER_BYTES:
        raise InvalidSnapshot(f"offer of {len(raw)} bytes exceeds {MAX_OFFER_BYTES}")
    offer = SnapshotOffer.decode(raw)
    header, cert = offer.header, offer.certificate
    if header.chain_id != trust.chain_id or header.height != height:
        raise InvalidSnapshot(f"offer is not a header of this chain at height {height}")
    if not is_checkpoint(height, trust.state_root_interval):
        raise InvalidSnapshot(f"height {height} is not a checkpoint height")
    if cert.height != height or cert.block_hash != header.hash:
        raise InvalidSnapshot("certificate does not name the offered header")
    manifest = decode_manifest(offer.manifest)
    manifest.check(height, header.app_hash)
    want_parent = 0 if height == 1 else 1
    if len(offer.parent) != want_parent or (
        offer.parent
        and (offer.parent[0].hash != header.parent or offer.parent[0].height != height - 1)
    ):
        raise InvalidSnapshot(f"offer does not carry the header of {height - 1}")
    return offer, manifest


def check_certificate(
    offer: SnapshotOffer, trust: Trust, members: Sequence[validators.Record] | None = None
) -> None:
    """Step 2: the offer's certificate under the set of its height: members (proven by a
    set chain) on a governed chain, the genesis set otherwise; raises `InvalidSnapshot`
    or `BadSignature`."""
    cert = offer.certificate
    if members is None:
        if trust.start is not None:
            raise InvalidSnapshot(
                "on a chain whose validator set changes, a certificate is checked under "
                "the set a set chain proves, never the genesis set"
            )
        if len(cert.signatures) > len(trust.validators):
            raise InvalidSnapshot("certificate carries more signatures than there are validators")
        verify_certificate(cert, trust.chain_id, trust.validators)
        return
    if len(cert.signatures) > len(members):
        raise InvalidSnapshot("certificate carries more signatures than its set has members")
    verify_certificate_by_id(cert, trust.chain_id, members)


def check_offer(
    raw: bytes, height: int, trust: Trust, members: Sequence[validators.Record] | None = None
) -> tuple[SnapshotOffer, Manifest]:
    """The offer of height from a source's bytes, checked (steps 1-4 above; members: the
    proven set of height on a governed chain); raises `InvalidSnapshot`, `CodecError` or
    `BadSignature`."""
    offer, manifest = read_offer(raw, height, trust)
    check_certificate(offer, trust, members)
    return offer, manifest


_Offer = tuple[
    SnapshotOffer, Manifest, list[SnapshotSource], "tuple[validators.Record, ...] | None"
]


class StateSync:
    def __init__(
        self,
        trust: Trust,
        sources: Sequence[SnapshotSource],
        parallel: int = 4,
        *,
        now_ms: Callable[[], int] = wall_ms,
    ) -> None:
        """`now_ms` is the wall clock (ms since the Unix epoch) the lease floor is
        computed from."""
        if not sources:
            raise InvalidSnapshot("state sync needs at least one source")
        self.trust = trust
        self.sources = list(sources)
        self.parallel = max(1, parallel)
        self.now_ms = now_ms
        self.result = Synced(0, 0, 0)
        self._sets: dict[tuple[int, int], ProvenSet | None] = {}
        """(height, source) -> the set that source's set chain proved (None: refused)."""

    async def offered(self, timeout_s: float | None = None) -> dict[int, list[SnapshotSource]]:
        """Checkpoint heights offered, with the sources offering each: every source's
        list, or (timeout_s) those that answered within timeout_s, the others counted as
        failed fetches, so that one peer that never answers does not hold the join."""
        out: dict[int, list[SnapshotSource]] = {}
        tasks = [asyncio.ensure_future(s.snapshot_heights()) for s in self.sources]
        _, late = await asyncio.wait(tasks, timeout=timeout_s)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        for source, task in zip(self.sources, tasks, strict=True):
            if task in late:
                self.result.failed_fetches += 1
                continue
            if self._failed(task):
                continue
            for h in task.result()[:MAX_LISTED]:
                if type(h) is int and is_checkpoint(h, self.trust.state_root_interval):
                    out.setdefault(h, []).append(source)
        return out

    def _failed(self, task: asyncio.Future[Any]) -> bool:
        """Whether a finished fetch failed as a peer's fetch may (counted); any other
        error is raised."""
        error = task.exception()
        if error is None:
            return False
        if not isinstance(error, FETCH_ERRORS):
            raise error
        self.result.failed_fetches += 1
        return True

    async def run(
        self, store: KVStore, offered: dict[int, list[SnapshotSource]] | None = None
    ) -> Synced:
        """Fetch, check and write the highest snapshot offered (offered: the sources'
        lists already asked by `offered`, else they are asked here); raises
        `InvalidSnapshot` when no offered snapshot could be fetched whole; before fetching
        anything, `StoreMismatch` for a store of another chain and `StorageError` for one
        that holds blocks, whose lease floor cannot be read or is above the clock's."""
        ChainStore(store).init_meta(self.trust.chain_id, self.trust.genesis_hash)
        _check_empty(store)
        lease_floor([("the store", read_floor(store))], self.now_ms())
        if offered is None:
            offered = await self.offered()
        for height in sorted(offered, reverse=True):
            got = await self._offer(height, offered[height])
            if got is None:
                continue
            offer, manifest, vouching, members = got
            # The chunks and the block are fetched together, from the sources whose
            # offers made the quorum first: both are checked against the offer's
            # certified header, neither needs the other.
            spare = [s for s in offered[height] if s not in vouching]
            chunks, base = await asyncio.gather(
                self._chunks(height, manifest, vouching + spare, len(vouching)),
                self._block(offer.header, vouching + spare),
            )
            if chunks is None or base is None:
                continue
            self.result.height = height
            self.result.offer = offer
            self.result.chunks = len(manifest.chunks)
            anchor = (
                self.trust.next_anchor(offer)
                if members is None
                else governed_anchor(offer, chunks, self.trust.tenure, members)
            )
            self.result.entries = write(store, offer, base, chunks, anchor, self.now_ms())
            return self.result
        raise InvalidSnapshot(f"no snapshot could be fetched whole ({self.result})")

    async def _offer(self, height: int, sources: list[SnapshotSource]) -> _Offer | None:
        """A checked offer of height whose consensus value at least `value_quorum`
        checked offers name (they all carry the same certified header and manifest),
        with the sources of those offers and, on a governed chain, the proven set of
        height; taken as soon as that many agree: a source that has not answered by then
        is not waited for."""
        tasks = {asyncio.ensure_future(s.snapshot_offer(height)): s for s in sources}
        by_value: dict[bytes, list[tuple[SnapshotOffer, Manifest, SnapshotSource]]] = {}
        members: tuple[validators.Record, ...] | None = None
        pending = set(tasks)
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=lambda t: sources.index(tasks[t])):
                    if self._failed(task):
                        continue
                    source = tasks[task]
                    try:
                        offer, manifest = read_offer(task.result(), height, self.trust)
                        if self.trust.start is None:
                            check_certificate(offer, self.trust)
                        else:
                            order = [source] + [x for x in sources if x is not source]
                            members = await self._set_of(offer, order)
                    except QChainError:
                        self.result.rejected_offers += 1
                        continue
                    offers = by_value.setdefault(offer.value, [])
                    offers.append((offer, manifest, source))
                    need = self.trust.value_quorum
                    if members is not None:
                        need = max(need, (len(members) - 1) // 3 + 1)
                    if len(offers) >= need:
                        return offers[0][0], offers[0][1], [o[2] for o in offers], members
            return None
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _set_of(
        self, offer: SnapshotOffer, order: list[SnapshotSource]
    ) -> tuple[validators.Record, ...]:
        """The set of the offer's height, from the first source whose set chain proves a
        set, ends at the offered header and passes the offer's certificate under that set:
        set chains proven already first, then the others fetched in order (the offer's
        own source first); `InvalidSnapshot` if none does (the offer is then refused)."""
        height = offer.header.height
        proven_first = sorted(
            order, key=lambda x: self._sets.get((height, self.sources.index(x))) is None
        )
        for source in proven_first:
            key = (height, self.sources.index(source))
            if key not in self._sets:
                self._sets[key] = await self._fetch_set(source, height)
            proven = self._sets[key]
            if proven is None:
                continue
            try:
                if proven.header is not None and proven.header.hash != offer.header.hash:
                    raise InvalidSnapshot("the set chain's tail ends at another header")
                check_certificate(offer, self.trust, proven.records)
            except (InvalidSnapshot, BadSignature):
                # The set chain proved its set; the offer is what does not match it.
                continue
            self.result.set_source = source.name
            return proven.records
        raise InvalidSnapshot(f"no source's set chain proves a set that certifies {height}")

    async def _fetch_set(self, source: SnapshotSource, height: int) -> ProvenSet | None:
        try:
            raw = await source.set_chain(height)
        except FETCH_ERRORS:
            self.result.failed_fetches += 1
            return None
        assert self.trust.start is not None
        try:
            return check_set_chain(
                raw, height, self.trust.chain_id, self.trust.start, self.trust.delay
            )
        except QChainError:
            self.result.rejected_set_chains += 1
            return None

    async def _block(
        self, header: BlockHeader, sources: list[SnapshotSource]
    ) -> SnapshotBlock | None:
        """The block of header's height with its receipts, from the first source (in
        order) whose answer checks."""
        for source in sources:
            try:
                raw = await source.snapshot_block(header.height)
            except FETCH_ERRORS:
                self.result.failed_fetches += 1
                continue
            try:
                return check_block(raw, header)
            except QChainError:
                self.result.rejected_blocks += 1
        return None

    async def _chunks(
        self, height: int, manifest: Manifest, sources: list[SnapshotSource], preferred: int
    ) -> list[list[Entry]] | None:
        """Every chunk of the manifest, checked, each from one of the first `preferred`
        sources while one of those is left untried for it, else from another."""
        count = len(manifest.chunks)
        got: list[list[Entry] | None] = [None] * count
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(count):
            queue.put_nowait(i)
        tried: dict[int, set[int]] = {}
        failed: list[int] = []

        async def worker(offset: int) -> None:
            while not queue.empty():
                i = queue.get_nowait()
                left = [k for k in range(len(sources)) if k not in tried.get(i, set())]
                if not left:
                    failed.append(i)
                    continue
                first = [k for k in left if k < preferred] or left
                k = first[(i + offset) % len(first)]
                tried.setdefault(i, set()).add(k)
                try:
                    raw = await sources[k].snapshot_chunk(height, i)
                except FETCH_ERRORS:
                    self.result.failed_fetches += 1
                    queue.put_nowait(i)
                    continue
                try:
                    got[i] = decode_chunk(raw, manifest.chunks[i], None)
                except InvalidSnapshot:
                    self.result.rejected_chunks += 1
                    queue.put_nowait(i)

        await asyncio.gather(*(worker(w) for w in range(min(self.parallel, max(1, count)))))
        if failed:
            return None
        chunks = [c for c in got if c is not None]
        last: bytes | None = None
        for c in chunks:
            if last is not None and c[0][0] <= last:
                raise InvalidSnapshot("snapshot chunks are not in key order")
            last = c[-1][0]
        if sum(len(c) for c in chunks) != manifest.entry_count or len(chunks) != count:
            raise InvalidSnapshot("snapshot entries do not add up to the manifest's count")
        return chunks


def _check_empty(store: KVStore) -> None:
    height = ChainStore(store).height()
    if height != 0:
        raise StorageError(f"state sync needs an empty chain, this store is at {height}")


def write(
    store: KVStore,
    offer: SnapshotOffer,
    base: SnapshotBlock,
    chunks: list[list[Entry]],
    next_anchor: int,
    now_ms: int,
) -> int:
    """Replace the store's state with the snapshot's and record the block, receipts,
    certificate and consensus value of its height as the committed tip and base, with the
    anchor of the next height, the amnesia guard's mark and the lease floor computed at
    `now_ms`, in one synced batch; the number of entries written. Refuses (`StorageError`,
    nothing written) a store that has committed blocks, and one whose lease floor cannot
    be read or is above the clock's (`qchain.qkd.lease.lease_floor`)."""
    _check_empty(store)
    floor = lease_floor([("the store", read_floor(store))], now_ms)
    batch = Batch()
    for key, _ in store.iterate(schema.STATE):
        batch.delete(key)
    entries = 0
    for chunk in chunks:
        for key, value in chunk:
            batch.put(key, value)
            entries += 1
    h = offer.header.height
    ChainStore(store).base_batch(base.block, base.receipts, batch)
    batch.put(schema.cert_key(h), offer.certificate.encode())
    batch.put(schema.consensus_value_key(h), offer.value)
    batch.put(schema.block_hash_key(offer.value), schema.u64(h))
    batch.put(schema.meta_key("next-anchor"), schema.u64(next_anchor))
    batch.put(schema.META_BASE_HEIGHT, schema.u64(h))
    batch.put(schema.META_LAST_HEIGHT, schema.u64(h))
    batch.put(schema.meta_key("genesis-applied"), b"\x01")
    # The store may be that of a validator that voted before it lost its records: the
    # amnesia guard (CONSENSUS.md §3.8) keeps it silent until its peers show their heights.
    batch.put(schema.META_AMNESIA, b"")
    # Its links number their frames from the floor up: above every number its lost store
    # drew, which its peers remember (CONSENSUS.md §10.9 (7)). Its own leases stay.
    batch.put(schema.QKD_LEASE_FLOOR, schema.u64(floor))
    store.write(batch, sync=True)
    return entries
