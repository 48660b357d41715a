"""What a validator shows its clients: the service behind the HTTP API
(`node.service.NodeService`) and the admin interface behind the admin API
(`node.http.admin.AdminTarget`).

Both read the node's parts and change nothing but through them: a submitted transaction
goes through `Admission` and is queued for forwarding; faults and the test-only Byzantine
mode are set on the links and the `ByzantineSwitch`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from consensus.amnesia import AmnesiaGuard
from consensus.engine import Engine
from consensus.messages import Record
from consensus.params import Params
from contracts import membership
from contracts.query import query as contract_query
from contracts.setchain import SetChain
from contracts.state import StateReader
from node.accounts import Admission
from node.alarms import Alarms
from node.backup import store_chunks
from node.byzantine import ByzantineSwitch
from node.chainstore import ChainStore
from node.commit import Waiters
from node.driver import Driver
from node.events import EventBus
from node.fetcher import BlockFetcher
from node.forwarding import Forwarder
from node.health import Health
from node.links import Links
from node.metrics import MetricsSync, NodeMetrics
from node.pacing import BlockPacer
from node.service import EventStream, TxStatus
from node.setchains import SetChains
from node.transport import FaultRules, PeerStats
from qchain import clock
from qchain.errors import NotReady, Overloaded
from qchain.store.kv import KVStore
from qchain.types import ReceiptProof, Transaction, decode_transaction


@dataclass(frozen=True)
class ServiceParts:
    """The parts of a validator its service reads."""

    name: str
    params: Params
    chain: ChainStore
    store: KVStore
    engine: Engine
    links: Links
    alarms: Alarms
    byzantine: ByzantineSwitch
    bus: EventBus
    waiters: Waiters
    metrics: NodeMetrics
    metrics_sync: MetricsSync
    health: Health
    admission: Admission
    forwarder: Forwarder
    leader: Callable[[], int | None]
    started_at: float
    reconfig_delay: int | None
    """The genesis's D on a chain whose set changes (set chains are served), else None."""
    in_flight: Callable[[bytes], bool]
    """Whether a transaction is in the executed block whose commit is being written
    (`node.chain.ChainApp.in_flight`)."""


class ServiceFacade:
    """`node.service.NodeService` over a validator's parts."""

    def __init__(self, parts: ServiceParts) -> None:
        self.p = parts
        self.chain = parts.chain
        self.set_chains = SetChains(parts.store, parts.chain, parts.reconfig_delay)

    @property
    def chain_id(self) -> str:
        return self.p.params.chain_id

    @property
    def node_name(self) -> str:
        return self.p.name

    def submit(self, raw: bytes) -> tuple[TxStatus, bool]:
        return self.submit_tx(decode_transaction(raw))

    def submit_tx(self, tx: Transaction) -> tuple[TxStatus, bool]:
        status = self.tx_status(tx.hash)
        if status is not None:
            if status.state == "pending":
                self.p.forwarder.resubmitted(tx.hash, clock.monotonic())
            return status, False
        self.p.admission.admit(tx, local=True)
        self.p.forwarder.queue(tx)
        # It may have filled a nonce gap: what waited behind it goes to the leader too.
        self.p.forwarder.send_became_ready()
        return TxStatus(tx.hash, "pending"), True

    async def preverify(self, txs: Sequence[Transaction]) -> None:
        await self.p.forwarder.verify_pool.prefetch(txs)

    def admission_room(self) -> int:
        return self.p.admission.room()

    def overloaded(self) -> Overloaded:
        return self.p.admission.overloaded()

    def tx_status(self, tx_hash: bytes) -> TxStatus | None:
        loc = self.chain.tx_location(tx_hash)
        if loc is not None:
            return TxStatus(
                tx_hash, "committed", loc.height, loc.index, self.chain.receipt(tx_hash)
            )
        if tx_hash in self.p.admission.mempool or self.p.in_flight(tx_hash):
            # In flight: committed once its batch is durable, which notifies the waiters;
            # until then its nonce is spent, so it must not be admitted again.
            return TxStatus(tx_hash, "pending")
        return None

    def transaction(self, tx_hash: bytes) -> Transaction | None:
        p = self.p.admission.mempool.get(tx_hash)
        if p is not None:
            return p.tx
        return self.chain.transaction(tx_hash)

    async def wait_committed(self, tx_hash: bytes, timeout_s: float) -> TxStatus | None:
        status = self.tx_status(tx_hash)
        if status is not None and status.state == "committed":
            return status
        return await self.p.waiters.wait(tx_hash, timeout_s)

    def receipt_proof(self, tx_hash: bytes) -> ReceiptProof | None:
        return self.chain.receipt_proof(tx_hash)

    def set_chain(self, height: int) -> SetChain:
        return self.set_chains.build(height)

    def account(self, address: bytes) -> Mapping[str, Any] | None:
        state = StateReader(self.p.store, membership.NAME)
        member = membership.get_member(state, address)
        if member is None:
            return None
        return {
            "address": address.hex(),
            "nonce": membership.get_nonce(state, address),
            "pending_nonce": self.p.admission.mempool.next_free_nonce(
                address, membership.get_nonce(state, address)
            ),
            "name": member.name,
            "roles": list(member.roles),
            "active": member.active,
            "scheme": member.scheme,
            "public_key": member.public_key.hex(),
        }

    def query(self, contract: str, method: str, args: Mapping[str, Any]) -> object:
        return contract_query(self.p.store, contract, method, dict(args))

    def status(self) -> Mapping[str, Any]:
        p = self.p
        view = p.engine.view()
        mempool = p.admission.mempool
        return {
            "node": p.name,
            "index": p.links.me,
            "chain_id": p.params.chain_id,
            "height": self.chain.height(),
            "base_height": self.chain.base_height(),
            "consensus_height": view.height,
            "round": view.round,
            "leader": p.leader(),
            "validators": next(
                (len(i.members) for i in view.instances if i.height == view.height and i.members),
                p.params.n,
            ),
            "member": all(i.member for i in view.instances if i.height == view.height),
            "not_member": view.not_member,
            "peers": sorted(p.links.connected_peers()),
            "syncing": p.health.quorum_ahead() > self.chain.height() + 2,
            "mempool": {"txs": len(mempool), "bytes": mempool.size_bytes},
            "alerts": dict(p.alarms.counts),
            "halted": p.alarms.fatal,
            "store_corrupt": p.alarms.store_corrupt,
            "amnesia": _amnesia(p.engine.amnesia),
            "byzantine": p.byzantine.mode,
            "uptime_s": round(clock.wall() - p.started_at, 3),
        }

    def qkd_status(self) -> Mapping[str, Any]:
        links = self.p.links
        out: dict[str, Any] = {}
        if links.endpoint is not None:
            for peer_sae, st in links.endpoint.stats().items():
                j = links.index_of_sae.get(peer_sae)
                transport = links.transport
                tstats = transport.stats.get(j) if transport and j is not None else None
                out[peer_sae] = {
                    "peer": j,
                    **st,
                    "transport": None if tstats is None else _transport_stats(tstats),
                }
        refused = {} if links.transport is None else dict(links.transport.refused)
        return {"sae_id": links.sae[links.me], "links": out, "transport_refused": refused}

    def events(self, last_event_id: int | None) -> EventStream:
        return self.p.bus.subscribe(last_event_id)

    def health(self) -> tuple[bool, Sequence[str]]:
        return self.p.health.check()

    def metrics_text(self) -> bytes:
        self.p.metrics_sync.sync()
        return self.p.metrics.exposition()


def _transport_stats(t: PeerStats) -> dict[str, Any]:
    return {
        "frames_sent": t.frames_sent,
        "frames_received": t.frames_received,
        "bytes_sent": t.bytes_sent,
        "bytes_received": t.bytes_received,
        "queue_dropped": t.queue_dropped,
        "fault_dropped": t.fault_dropped,
        "handshakes": t.handshakes,
        "keepalives": t.keepalives,
        "rejected": dict(t.rejected),
    }


class AdminFacade:
    """`node.http.admin.AdminTarget` over a validator's parts: faults, state dump, the
    test-only Byzantine mode; and the store's backup (`backup`)."""

    def __init__(
        self,
        links: Links,
        byzantine: ByzantineSwitch,
        engine: Engine,
        driver: Driver,
        fetcher: BlockFetcher,
        pacer: BlockPacer,
        status: Callable[[], Mapping[str, Any]],
        store: KVStore | None = None,
    ) -> None:
        self.links = links
        self.store = store
        self.byzantine = byzantine
        self.engine = engine
        self.driver = driver
        self.fetcher = fetcher
        self.pacer = pacer
        self.status = status

    def get_faults(self) -> tuple[FaultRules, FaultRules]:
        transport = self.links.transport
        if transport is None:
            return FaultRules(), FaultRules()
        return transport.out_rules, transport.in_rules

    def set_faults(self, out_rules: FaultRules, in_rules: FaultRules) -> None:
        transport = self.links.transport
        if transport is not None:
            transport.out_rules = out_rules
            transport.in_rules = in_rules

    @property
    def byzantine_allowed(self) -> bool:
        return self.byzantine.allowed

    @property
    def byzantine_mode(self) -> str | None:
        return self.byzantine.mode

    def set_byzantine(self, mode: str | None) -> None:
        self.byzantine.set(mode)

    def backup(self) -> Iterator[bytes]:
        """The store's backup file (`node.backup`), from a snapshot taken now. Refused
        while the store is known to be damaged: a backup of it would be worthless."""
        corrupt = self.status().get("store_corrupt")
        if corrupt:
            raise NotReady([f"store-corrupt: {corrupt}"])
        if self.store is None:
            raise NotReady(["no store to back up"])
        return store_chunks(self.store, int(clock.wall()))

    def dump(self) -> Mapping[str, Any]:
        view = self.engine.view()
        instances = {}
        for inst in view.instances:
            rec: Record = inst.record
            instances[str(inst.height)] = {
                "round": rec.round,
                "abort_level": rec.abort_level,
                "decided": None if rec.decided is None else rec.decided.hex(),
                "anchor": rec.anchor,
                "terminated": inst.terminated,
                "summaries": [
                    {
                        "last_round": s.last_round,
                        "last_value": None if s.last_value is None else s.last_value.hex(),
                        "prev_round": s.prev_round,
                    }
                    for s in rec.s
                ],
            }
        return {
            "status": dict(self.status()),
            "instances": instances,
            "peer_heights": {str(k): v for k, v in view.peer_heights.items()},
            "timers": sorted(f"{k.kind}:{k.height}" for k in self.driver.timers),
            "fetching": [v.hex() for v in self.fetcher.fetching],
            "pending_build": self.pacer.pending is not None,
            "key_pacing": asdict(self.pacer.keys.budget),
        }


def _amnesia(guard: AmnesiaGuard | None) -> Mapping[str, Any] | None:
    """The amnesia guard after a restore or rebuild (CONSENSUS.md §3.8), or None."""
    if guard is None:
        return None
    return {"settled": guard.settled, "silent_through": guard.through}
