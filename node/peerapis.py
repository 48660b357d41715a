"""The other validators' public API addresses, for what a node asks of its peers over
HTTP (snapshots for state sync, `node.statesync_run`; commit certificates,
`node.certbackfill`): the members of the latest set the node can read, else the genesis
validators. Addresses add no integrity: every answer is checked as its asker says.
"""

from __future__ import annotations

from collections.abc import Mapping

from contracts import validators
from contracts.genesis import Genesis
from contracts.state import StateReader
from node.chainstore import ChainStore
from qchain.config import NodeConfig
from qchain.errors import NotFound
from qchain.store.kv import KVStore

MAX_SOURCES = 32
"""The most validators asked."""


def _latest_set(genesis: Genesis, store: KVStore) -> dict[int, tuple[str, str]]:
    """The members of the set after the store's tip, by id, with their directory names
    and API addresses; none on a chain without changes or an empty store."""
    if not genesis.consensus.reconfiguration:
        return {}
    tip = ChainStore(store).height()
    if tip == 0:
        return {}
    reader = StateReader(store, validators.NAME)
    try:
        records = validators.set_at(reader, tip + 1).records
    except NotFound:
        return {}
    out = {}
    for r in records[: MAX_SOURCES + 1]:  # this node may be one of them
        d = reader.load(validators.directory_key(r.id), validators.Directory)
        out[r.id] = ("", "") if d is None else (d.name, d.api)
    return out


def source_addresses(
    genesis: Genesis, me: int, store: KVStore, configured: Mapping[int, str]
) -> dict[int, tuple[str, str]]:
    """The validators asked for snapshots, by id, with a name and an API address: the
    members of the latest set the node can read (`_latest_set`; a genesis validator
    removed from it is not asked), else the genesis validators; not this node, none
    without an address, at most `MAX_SOURCES`. The address is the one configured names
    (from the node's config), else the directory record's, else the genesis's hint."""
    hints = {v.index: (v.name, v.api) for v in genesis.validators}
    found = _latest_set(genesis, store) or dict(hints)
    out: dict[int, tuple[str, str]] = {}
    for vid, (name, api) in found.items():
        name = name or hints.get(vid, ("", ""))[0]
        address = configured.get(vid) or api or hints.get(vid, ("", ""))[1]
        if vid != me and address and len(out) < MAX_SOURCES:
            out[vid] = (name or f"validator {vid}", address)
    return out


def configured_apis(cfg: NodeConfig) -> dict[int, str]:
    """The API addresses the node's config names for its peers (`[[p2p.peers]] api`)."""
    return {p.index: p.api for p in cfg.p2p.peers if p.api}
