"""State sync at startup: `qchain node run --state-sync`, and by default for a node whose
store holds no block while its peers keep a snapshot at least `[node] state_sync_after`
heights up.

The sources are the other validators' public APIs (`source_addresses`): the members of
the latest set the node can read (on a chain whose set changes, its own store's set after
its tip when it holds blocks), else the genesis validators, at most `MAX_SOURCES`; each at
the `api` address its `[[p2p.peers]]` entry names, else its directory record's, else the
genesis's hint. Their answers are checked as `node.statesync` says, so neither the
addresses nor the transport (HTTP or HTTPS) add integrity. The store is opened, synced
and closed before the validator opens it, so the node then starts as after any restart:
from the committed height s, catching up the blocks s+1.. from its peers through
consensus.

On a chain whose genesis sets `consensus.reconfiguration` the snapshot's certificate is
checked under the set a peer's set chain proves from the genesis (`GET /v1/setchain`,
`node.statesync_sets`), and the sync runs only when asked (`--state-sync`): the store it
writes carries the amnesia mark, which the node refuses on such a chain until §10.9's
guard across a change is built (`node.validatorsets.ChainSets.refuse_amnesia`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from contracts.genesis import Genesis
from contracts.snapshot import MAX_CHUNK_BYTES
from node.chainstore import ChainStore
from node.peerapis import configured_apis, source_addresses
from node.snapshots import MAX_BLOCK_ANSWER_BYTES, MAX_OFFER_BYTES
from node.statesync import SnapshotSource, StateSync, Synced, Trust
from qchain.client import AsyncClient
from qchain.clock import wall_ms
from qchain.config import NodeConfig
from qchain.errors import ConfigError, InvalidSnapshot
from qchain.store.kv import KVStore, open_store

log = logging.getLogger("qchain.node")
MAX_LIST_BYTES = 64 * 1024
"""The most read of a peer's snapshot list."""
PROBE_TIMEOUT_S = 5.0
"""How long the peers' snapshot lists are waited for: those that answered by then decide
whether to sync and from which snapshot."""
FETCH_TIMEOUT_S = 60.0


class ApiSource:
    """A peer's public API as a `node.statesync.SnapshotSource`, every answer bounded."""

    def __init__(self, name: str, client: AsyncClient) -> None:
        self.name = name
        self.client = client

    async def snapshot_heights(self) -> list[int]:
        return await self.client.snapshot_heights(MAX_LIST_BYTES)

    async def snapshot_offer(self, height: int) -> bytes:
        return await self.client.snapshot_offer(height, MAX_OFFER_BYTES)

    async def snapshot_chunk(self, height: int, index: int) -> bytes:
        return await self.client.snapshot_chunk(height, index, MAX_CHUNK_BYTES)

    async def snapshot_block(self, height: int) -> bytes:
        return await self.client.snapshot_block(height, MAX_BLOCK_ANSWER_BYTES)

    async def set_chain(self, height: int) -> bytes:
        return await self.client.set_chain_bytes(height)


def peer_sources(
    genesis: Genesis, me: int, store: KVStore, configured: Mapping[int, str]
) -> list[ApiSource]:
    return [
        ApiSource(name, AsyncClient(api, timeout_s=FETCH_TIMEOUT_S))
        for name, api in source_addresses(genesis, me, store, configured).values()
    ]


def _refuse(force: bool, reason: str) -> None:
    if force:
        raise ConfigError("--state-sync", reason)


async def sync_store(
    store: KVStore,
    genesis: Genesis,
    sources: Sequence[SnapshotSource],
    *,
    force: bool,
    after: int,
    probe_timeout_s: float = PROBE_TIMEOUT_S,
) -> Synced | None:
    """Sync store from sources if asked (force) or if it holds no block and a snapshot
    at least `after` heights up is offered (after 0: only when forced); what was synced,
    or None. Forced on a store that cannot be synced raises `ConfigError`."""
    chain = ChainStore(store)
    chain.init_meta(genesis.chain_id, genesis.hash)
    if chain.height() != 0:
        _refuse(
            force,
            f"the store holds blocks up to {chain.height()}; state sync starts "
            "from an empty store (stop the node and move its data directory aside)",
        )
        return None
    if genesis.state_root_interval == 0:
        _refuse(force, "this chain's genesis sets no state_root_interval: no snapshots")
        return None
    if not sources:
        _refuse(
            force, "no other validator has an api address (genesis, directory or [[p2p.peers]] api)"
        )
        return None
    if not force and (after == 0 or genesis.consensus.reconfiguration):
        # On a chain whose set changes a synced store carries the amnesia mark, which
        # the node refuses there (§10.9 is not built): never sync unasked.
        return None
    sync = StateSync(Trust.of_genesis(genesis), sources, now_ms=wall_ms)
    # The peers that answer within the probe's time decide; one that never answers is
    # counted as failed and does not hold the join (nor turn it into a replay).
    offered = await sync.offered(probe_timeout_s)
    top = max(offered, default=0)
    log.info(
        "%d of %d peers answered about snapshots; the highest offered is of height %d",
        len(sources) - sync.result.failed_fetches,
        len(sources),
        top,
    )
    if not force:
        if top < after:
            return None
        log.info("peers keep a snapshot of height %d: syncing the state from it", top)
    try:
        done = await sync.run(store, offered)
    except InvalidSnapshot as e:
        if force:
            raise
        log.warning("state sync failed, replaying the chain instead: %s", e.message)
        return None
    log.info(
        "state synced at height %d: %d entries in %d chunks (%d chunks refused and fetched "
        "again, %d offers refused, %d set chains refused, %d fetches failed)",
        done.height,
        done.entries,
        done.chunks,
        done.rejected_chunks,
        done.rejected_offers,
        done.rejected_set_chains,
        done.failed_fetches,
    )
    if done.set_source:
        log.info(
            "the set of height %d was proven from the genesis by %s's set chain",
            done.height,
            done.set_source,
        )
    return done


async def sync_before_start(cfg: NodeConfig, genesis: Genesis, *, force: bool) -> Synced | None:
    """`sync_store` on the node's own store, opened and closed here."""
    store = open_store(cfg.node.data_dir / "db")
    configured = configured_apis(cfg)
    try:
        sources = peer_sources(genesis, cfg.node.index, store, configured)
    except BaseException:
        store.close()
        raise
    try:
        return await sync_store(
            store, genesis, sources, force=force, after=cfg.node.state_sync_after
        )
    finally:
        store.close()
        for s in sources:
            await s.client.close()
