"""A validator's start from its store: the startup check of the store, then the events
that hand the engine its state (`node.runtime.Validator` calls `boot` once, before the
listeners serve).

The check reads the last `STARTUP_VERIFY_BLOCKS` committed heights against their hashes
and then the whole store once (LevelDB checksums), bounded by `STARTUP_SCAN_S`; a store
that fails it is marked corrupt (`ChainApp.verify_recent`) and the engine is not started.
Otherwise the engine gets `Start` with the consensus records and the pending bodies above
the committed height, and, unless a record of the next height is there already, the
`StartHeight` of the next height with its sets (`node.validatorsets.ChainSets`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from consensus.events import Event, Start
from consensus.messages import Block as CBlock
from consensus.messages import load_record
from node.chain import ChainApp
from node.chainstore import ChainStore
from node.validatorsets import ChainSets
from qchain import clock
from qchain.errors import StorageCorrupt, StorageError
from qchain.store import schema
from qchain.store.kv import KVStore, scan

log = logging.getLogger("qchain.node")

STARTUP_VERIFY_BLOCKS = 64
"""Committed heights checked against their hashes before a validator serves anything."""
STARTUP_SCAN_S = 2.0
"""Time budget of the startup sweep that reads the whole store (LevelDB checksums)."""


def boot(
    store: KVStore,
    app: ChainApp,
    chain: ChainStore,
    sets: ChainSets,
    first_leader: int,
    feed: Callable[[Event], None],
) -> None:
    """Check the store, then feed the engine its start; nothing if the check fails."""
    if not store_intact(store, app, chain):
        return
    records = [load_record(v) for _, v in store.iterate(schema.CONSENSUS)]
    committed = chain.height()
    # Bodies at or below the committed height are committed blocks' (or leftovers).
    above = schema.pending_prefix(committed + 1)
    pending = store.iterate(schema.PENDING_BODY, start=above)
    bodies = [CBlock.decode(v) for _, v in pending]
    feed(Start(tuple(records), tuple(bodies), committed, sets.history(committed)))
    if not any(r.height == committed + 1 for r in records):
        feed(_next_height(store, app, sets, first_leader, committed))


def _next_height(
    store: KVStore, app: ChainApp, sets: ChainSets, first_leader: int, committed: int
) -> Event:
    parent = app.committed_value(committed)
    if parent is None:
        raise StorageError(f"consensus value of height {committed} is missing")
    if committed == 0:
        anchor = first_leader
    else:
        raw = store.get(schema.meta_key("next-anchor"))
        if raw is None:
            raise StorageError("the anchor of the next height is missing")
        anchor = schema.read_u64(raw)
    return sets.start_height(committed + 1, parent, anchor)


def store_intact(store: KVStore, app: ChainApp, chain: ChainStore) -> bool:
    """Startup check before anything is served: the last committed heights against
    their hashes, then one checksummed read of the whole store (bounded in time)."""
    started = clock.monotonic()
    try:
        low = app.verify_recent(STARTUP_VERIFY_BLOCKS)
        swept = scan(store, STARTUP_SCAN_S)
    except StorageCorrupt:
        return False
    log.info(
        "store checked in %.2fs: %d heights against their hashes, %d keys read%s",
        clock.monotonic() - started,
        chain.height() - low + 1,
        swept.keys,
        "" if swept.complete else " (time budget reached before the last key)",
    )
    return True
