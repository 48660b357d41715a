"""The validator runtime: wiring and lifecycle of one validator process.

`Validator` opens the store and the chain application, builds the parts of the node and
connects them, starts the links to its peers (QKD endpoint and transport) and the HTTP
and admin listeners, and stops everything again in an order that never writes to a closed
store. The parts, each in its own module:

- `node.driver`: the engine's event queue, and the actions of each step in order;
- `node.pacing`: when a leader builds, how big its block may be, validating proposals;
- `node.fetcher`: missing block bodies, and serving peers' block and sync requests;
- `node.commit`, `node.certificates`, `node.certbackfill`: commits and their certificates;
- `node.accounts`, `node.forwarding` and `node.batches`: admitting transactions, sending
  them to every peer in batches, proposals that name batches, suspecting a leader that
  leaves transactions out;
- `node.boot`: the startup check of the store, and the engine's start from it;
- `node.health`, `node.facade`: readiness, and what the HTTP and admin APIs see;
- `node.byzantine`: the test-only hostile modes, off unless a devnet enables them.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

from consensus.engine import Engine
from consensus.events import Event
from consensus.params import Params
from contracts.genesis import Genesis, init_state
from contracts.setchain import SetChain
from node import byzantine
from node.accounts import Accounts, Admission
from node.alarms import Alarms
from node.backlog import Backlog
from node.batches import Dissemination
from node.boot import boot
from node.budget import Budgets
from node.chain import ChainApp, HeadState
from node.chainstore import ChainStore
from node.commit import CertificateExchange, CommitParts, Committer, Waiters
from node.driver import Driver, Handlers
from node.events import EventBus
from node.facade import AdminFacade, ServiceFacade, ServiceParts
from node.fetcher import BlockFetcher
from node.forwarding import Coalescing, Forwarder
from node.genesis_file import load_genesis
from node.health import Health
from node.http.admin import make_admin_app
from node.http.api import make_api_app, make_ssl_context
from node.links import Links, Opener, build_key_source
from node.listeners import Listeners, admin_token, bounded
from node.mempool import Mempool, MempoolLimits
from node.metrics import MetricsSync, NodeMetrics, TimedKeySource
from node.pacing import BlockPacer
from node.peerapis import configured_apis, source_addresses
from node.service import EventStream, TxStatus
from node.setlinks import SetLinks
from node.sigcache import SignatureCache
from node.transport import TCP, FaultRules, StreamNet, Transport
from node.validatorsets import ChainSets
from node.verifypool import VerifyPool, verify_workers
from qchain import clock
from qchain.config import NodeConfig
from qchain.errors import ConfigError, Overloaded
from qchain.qkd.endpoint import QKDEndpoint
from qchain.qkd.source import KeySource
from qchain.store import schema
from qchain.store.kv import Batch, KVStore, open_store
from qchain.store.memory import MemoryStore
from qchain.types import ReceiptProof, Transaction

log = logging.getLogger("qchain.node")


class Validator:
    """One validator process. Implements `node.service.NodeService` for the API and
    `node.http.admin.AdminTarget` for the admin API, through `ServiceFacade` and
    `AdminFacade`."""

    def __init__(
        self,
        cfg: NodeConfig,
        *,
        key_source: KeySource | None = None,
        store: KVStore | None = None,
        net: StreamNet = TCP,
        serve_api: bool = True,
    ) -> None:
        """Production passes only `cfg`; tests and the simulator inject the rest. Time
        and random choices come from the running event loop (`qchain.clock`)."""
        self.cfg = cfg
        self._net = net
        self._serve_api = serve_api
        self.genesis: Genesis = load_genesis(cfg.node.genesis)
        self.me = cfg.node.index
        self.sets = ChainSets(self.genesis)
        self.signing_key = self.sets.signing_key(self.me, cfg.node.signing_key)
        self.validator_keys = self.genesis.validator_keys()
        self.params = _params(self.genesis, cfg)
        self.store = store if store is not None else open_store(cfg.node.data_dir / "db")
        self.chain = ChainStore(
            self.store, self.sets.certificate_check(self.genesis.chain_id, self.validator_keys)
        )
        self.sig_cache = SignatureCache()
        self.app = self._open_app()
        self.sets.bind(self.app.state, self.app.head_height)
        self.set_links: SetLinks | None = None
        self.engine = Engine(self.params, self.me)
        self.metrics = NodeMetrics(cfg.node.name)
        # Event ids must not repeat across restarts (SSE Last-Event-ID): start at the
        # wall clock in milliseconds, which is above any id an earlier run handed out.
        self.bus = EventBus(first_id=int(clock.wall() * 1000))
        self.budgets = Budgets()
        self.alarms = Alarms()
        self.store.on_corrupt = self.alarms.corrupt
        self.sets.halt = self.alarms.fail
        self._key_source = key_source
        self._owns_key_source = key_source is None
        hostile = byzantine.Hostile(self)
        self.byzantine = byzantine.ByzantineSwitch(
            cfg.admin.byzantine, self.me, self.params.n, self.app, hostile
        )
        self.links = Links(
            self.me, {v.index: v.sae_id for v in self.genesis.validators}, self.byzantine
        )
        self.sets.refuse_amnesia(self.store)
        self.driver = Driver(
            self.engine,
            self.store,
            self.links,
            self.alarms,
            self.metrics,
            self.app.head_height,
            self.app.committed_value,
        )
        self.driver.arm_amnesia()
        self._build_parts()
        self._listeners = Listeners()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()
        self.started_at = clock.wall()
        self.service = self._build_service()
        self.admin = AdminFacade(
            self.links,
            self.byzantine,
            self.engine,
            self.driver,
            self.fetcher,
            self.pacer,
            self.service.status,
            self.store,
        )

    def _peer_apis(self) -> dict[int, tuple[str, str]]:
        """The other validators' names and API addresses (`node.peerapis`), the
        `[[p2p.peers]] api` setting first."""
        return source_addresses(self.genesis, self.me, self.store, configured_apis(self.cfg))

    def _pooled(self, tx_hash: bytes) -> Transaction | None:
        """The pool's decoded transaction of that hash (`Dissemination`'s `known_tx`)."""
        p = self.mempool.get(tx_hash)
        return None if p is None else p.tx

    def _open_app(self) -> ChainApp:
        """Check the store belongs to this chain, apply genesis to a new one, and open the
        chain application over it."""
        self.chain.init_meta(self.genesis.chain_id, self.genesis.hash)
        # Over an empty source, not the store: on a store where genesis is applied
        # already (a restart before block 1 committed, a joiner restarted before it
        # replayed block 1) the write set over the store is empty, and so block 1's
        # parent app hash came out wrong and the node could never execute block 1.
        gstate = init_state(MemoryStore(), self.genesis)
        if self.chain.height() == 0 and self.store.get(schema.meta_key("genesis-applied")) is None:
            batch = Batch()
            for key, value in gstate.write_set:
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
            batch.put(schema.meta_key("genesis-applied"), b"\x01")
            self.store.write(batch, sync=True)
        return ChainApp(
            self.store,
            self.chain,
            self.genesis.chain_id,
            self.genesis.hash,
            gstate.app_hash,
            self.sig_cache,
            self.genesis.state_root_interval,
            self.cfg.node.snapshot_keep,
        )

    def _build_parts(self) -> None:
        """The collaborators that carry out the engine's actions, bound to the driver."""
        cfg, feed = self.cfg, self.driver.feed
        self.accounts = Accounts(HeadState(self.app))
        self.mempool = Mempool(
            self.genesis.chain_id,
            MempoolLimits.of_validator(cfg.mempool, self.params.n),
            self.accounts,
            self.sig_cache,
        )
        self.sets.sized = self.mempool.share_among
        self.pacer = BlockPacer(
            cfg.timing,
            cfg.mempool,
            self.params,
            self.app,
            self.mempool,
            self.sig_cache,
            self.metrics,
            self.alarms,
            self.byzantine,
            feed,
            link_keys=self.links.keys,
        )
        self.admission = Admission(
            self.mempool,
            self.accounts,
            self.app.head_height,
            self.params.propose_wait_max_ms is None,
            self.pacer,
            self.metrics,
            feed,
            Backlog(cfg.node.admission_bound_ms, self.params.n),
        )
        self.fetcher = BlockFetcher(
            self.params.chain_id, self.store, self.app, self.links, self.budgets, self.alarms, feed
        )
        self.batches = Dissemination(
            self.params, self.links, self.budgets, self.alarms, feed, self.app, self._pooled
        )
        self.forwarder = Forwarder(
            self.links,
            self.mempool,
            self.admission,
            self.budgets,
            self.params.propose_wait_max_ms is None,
            self.engine.view,
            cfg.timing.inclusion_timeout_ms / 1000,
            feed,
            VerifyPool(verify_workers(cfg.node), self.sig_cache, self.accounts),
            self.batches,
            Coalescing.of(cfg),
        )
        self.admission.queued = self.forwarder.queued
        self.admission.refuse = self.pacer.refuse = self.sets.refuse_rotation
        self._build_commit()
        self.driver.bind(
            Handlers(
                build=self.pacer.request_build,
                validate=self.pacer.validate,
                fetch=self.fetcher.fetch,
                commit=self.committer.commit,
                reply_sync=self.fetcher.reply_sync,
                serve_blocks=self.fetcher.serve,
                blocks=self.fetcher.received,
                batch=self.forwarder.received,
                batch_req=self.batches.serve,
                batch_resp=self.batches.answered,
                propose_refs=self.batches.proposal,
                cert_sig=self.certificates.received,
                leader_changed=self.forwarder.leader_changed,
                commit_barrier=self.committer.barrier,
            )
        )

    def _build_commit(self) -> None:
        self.waiters = Waiters()
        self.certificates = CertificateExchange(
            self.params.chain_id,
            self.signing_key,
            self.validator_keys,
            self.params.q,
            self.chain,
            self.links,
            self.budgets,
            self.alarms,
            ride_s=self.params.timeout_ms(0) / 1000,
            sets=self.sets,
            member=self.sets.own(self.me, self.signing_key.public_key, self.cfg.qkd.sae_id),
            apis=self._peer_apis if self._serve_api else None,
        )
        parts = CommitParts(
            alarms=self.alarms,
            pacer=self.pacer,
            admission=self.admission,
            forwarder=self.forwarder,
            metrics=self.metrics,
            bus=self.bus,
            certificates=self.certificates,
            waiters=self.waiters,
            fetcher=self.fetcher,
            forget_votes=self.driver.forget_votes,
            start_height=self.sets.start_height,
        )
        self.committer = Committer(self.store, self.chain, self.app, parts, self.driver.feed)

    def _build_service(self) -> ServiceFacade:
        self.metrics_sync = MetricsSync(
            self.metrics, self.mempool, self.links, self.forwarder, self.certificates.backfill
        )
        self.health_checks = Health(
            self.params,
            self.cfg.timing,
            self.chain,
            self.engine.view,
            self.links,
            self.mempool,
            self.pacer,
            self.alarms,
        )
        return ServiceFacade(
            ServiceParts(
                name=self.cfg.node.name,
                params=self.params,
                chain=self.chain,
                store=self.store,
                engine=self.engine,
                links=self.links,
                alarms=self.alarms,
                byzantine=self.byzantine,
                bus=self.bus,
                waiters=self.waiters,
                metrics=self.metrics,
                metrics_sync=self.metrics_sync,
                health=self.health_checks,
                admission=self.admission,
                forwarder=self.forwarder,
                leader=self.driver.current_leader,
                started_at=self.started_at,
                reconfig_delay=self.genesis.consensus.reconfig_delay if self.sets.enabled else None,
                in_flight=self.app.in_flight,
            )
        )

    # ---------------------------------------------------------------------------------
    # lifecycle
    # ---------------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.cfg
        if self._key_source is None:
            self._key_source = build_key_source(cfg)
        peers = {p.index: p.address for p in cfg.p2p.peers}
        if self.sets.enabled:
            self.set_links = SetLinks(self.sets, self.links, self.alarms, peers, self.byzantine)
            peers = self.set_links.start_peers(cfg.qkd.sae_id, self.app.head_height() + 1)
        sae = self.links.sae
        for i in peers:
            if i not in sae:
                raise ConfigError("p2p.peers", f"peer {i} is not a validator of this genesis")
        from qchain.qkd.pool import PoolConfig

        batch = min(128, cfg.qkd.batch_keys)
        endpoint = self.links.endpoint = QKDEndpoint(
            self.genesis.chain_id,
            sae[self.me],
            [sae[i] for i in peers],
            TimedKeySource(self._key_source, self.metrics.qkd_key_manager_latency),
            config=PoolConfig(batch_size=batch, low_water=min(cfg.qkd.low_water, batch)),
            store=self.store,
        )
        sealers = {i: byzantine.Sealer(endpoint.sender(sae[i])) for i in peers}
        self.byzantine.sealers = sealers
        openers = {i: Opener(endpoint.receiver, sae[i]) for i in peers}
        self.links.transport = Transport(
            self.me,
            cfg.p2p.listen,
            peers,
            sealers,
            openers,
            self.driver.on_envelope,
            max_frame_bytes=cfg.p2p.max_frame_bytes,
            queue_limit=cfg.p2p.queue_frames,
            net=self._net,
        )
        endpoint.start()
        # The engine starts from its records before any peer message can reach it.
        self._boot_engine()
        await self.links.transport.start()
        if self._serve_api:
            await self._start_http()
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="housekeeping"))
        self._tasks.append(asyncio.create_task(self.certificates.backfill.run(), name="backfill"))
        if self.set_links is not None:
            follow = self.set_links.run(lambda: self.engine.cur)
            self._tasks.append(asyncio.create_task(follow, name="set-links"))
        log.info(
            "validator %s started: height %d, p2p %s, api %s",
            cfg.node.name,
            self.chain.height(),
            cfg.p2p.listen,
            cfg.api.listen,
        )

    async def _start_http(self) -> None:
        cfg = self.cfg
        api = make_api_app(
            self.service,
            max_body_bytes=cfg.api.max_body_bytes,
            rate_limit_per_s=cfg.api.rate_limit_per_s,
            metrics=self.metrics,
        )
        ssl_ctx: ssl.SSLContext | None = None
        if cfg.api.tls_cert is not None and cfg.api.tls_key is not None:
            ssl_ctx = make_ssl_context(cfg.api.tls_cert, cfg.api.tls_key)
        await self._listeners.serve(api, cfg.api.listen, ssl_ctx)
        token = admin_token(cfg.admin.token_file)
        admin = make_admin_app(self.admin, token, backup=self.admin.backup)
        await self._listeners.serve(admin, cfg.admin.listen, None)

    def _boot_engine(self) -> None:
        boot(self.store, self.app, self.chain, self.sets, self.params.first_leader, self.feed)

    async def stop(self) -> None:
        """Stop everything, in an order that never writes to a closed store: first no
        more events reach the engine, then the listeners and links close (each step
        bounded in time), last the store."""
        self.driver.stop()
        await self.byzantine.hostile.stop()
        admit_task = self.forwarder.stop()
        if admit_task is not None:
            self._tasks.append(admit_task)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.forwarder.verify_pool.close()
        self._cancel_timers()
        self.bus.close()
        for runner in self._listeners.runners:
            await bounded(runner.cleanup(), "HTTP listener")
        if self.links.transport is not None:
            await bounded(self.links.transport.stop(), "transport")
        if self.links.endpoint is not None:
            await bounded(self.links.endpoint.close(), "key pools")
        if self._owns_key_source and self._key_source is not None:
            await bounded(self._key_source.close(), "key manager client")
        self.waiters.cancel()
        self._cancel_timers()
        self.committer.writer.close()
        self.store.close()
        self._stopped.set()

    def _cancel_timers(self) -> None:
        self.driver.cancel_timers()
        self.pacer.cancel_timers()
        self.fetcher.cancel_timers()
        self.batches.cancel_timers()
        self.links.cancel_timers()

    async def _housekeeping(self) -> None:
        """Inclusion timer, metrics of the key layer, periodic bookkeeping."""
        timeout = self.cfg.timing.inclusion_timeout_ms / 1000
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            self.forwarder.check_inclusion(clock.monotonic())
            self.metrics_sync.sync()

    # ---------------------------------------------------------------------------------
    # the engine, the links and the node's condition
    # ---------------------------------------------------------------------------------

    def feed(self, ev: Event) -> None:
        self.driver.feed(ev)

    def current_leader(self) -> int | None:
        return self.driver.current_leader()

    @property
    def transport(self) -> Transport | None:
        return self.links.transport

    @property
    def endpoint(self) -> QKDEndpoint | None:
        return self.links.endpoint

    @property
    def store_corrupt(self) -> str | None:
        """The first damage found in the store: the node then neither votes nor serves
        what does not verify, and waits to be rebuilt (`qchain node rebuild`)."""
        return self.alarms.store_corrupt

    # ---------------------------------------------------------------------------------
    # NodeService and AdminTarget, through the facades
    # ---------------------------------------------------------------------------------

    @property
    def chain_id(self) -> str:
        return self.params.chain_id

    @property
    def node_name(self) -> str:
        return self.cfg.node.name

    def submit(self, raw: bytes) -> tuple[TxStatus, bool]:
        return self.service.submit(raw)

    def submit_tx(self, tx: Transaction) -> tuple[TxStatus, bool]:
        return self.service.submit_tx(tx)

    async def preverify(self, txs: Sequence[Transaction]) -> None:
        await self.service.preverify(txs)

    def admission_room(self) -> int:
        return self.service.admission_room()

    def overloaded(self) -> Overloaded:
        return self.service.overloaded()

    def tx_status(self, tx_hash: bytes) -> TxStatus | None:
        return self.service.tx_status(tx_hash)

    def transaction(self, tx_hash: bytes) -> Transaction | None:
        return self.service.transaction(tx_hash)

    async def wait_committed(self, tx_hash: bytes, timeout_s: float) -> TxStatus | None:
        return await self.service.wait_committed(tx_hash, timeout_s)

    def receipt_proof(self, tx_hash: bytes) -> ReceiptProof | None:
        return self.service.receipt_proof(tx_hash)

    def set_chain(self, height: int) -> SetChain:
        return self.service.set_chain(height)

    def account(self, address: bytes) -> Mapping[str, Any] | None:
        return self.service.account(address)

    def query(self, contract: str, method: str, args: Mapping[str, Any]) -> object:
        return self.service.query(contract, method, args)

    def status(self) -> Mapping[str, Any]:
        return self.service.status()

    def qkd_status(self) -> Mapping[str, Any]:
        return self.service.qkd_status()

    def events(self, last_event_id: int | None) -> EventStream:
        return self.service.events(last_event_id)

    def health(self) -> tuple[bool, Sequence[str]]:
        return self.service.health()

    def metrics_text(self) -> bytes:
        return self.service.metrics_text()

    def get_faults(self) -> tuple[FaultRules, FaultRules]:
        return self.admin.get_faults()

    def set_faults(self, out_rules: FaultRules, in_rules: FaultRules) -> None:
        self.admin.set_faults(out_rules, in_rules)

    def dump(self) -> Mapping[str, Any]:
        return self.admin.dump()

    @property
    def byzantine_allowed(self) -> bool:
        return self.admin.byzantine_allowed

    @property
    def byzantine_mode(self) -> str | None:
        return self.admin.byzantine_mode

    def set_byzantine(self, mode: str | None) -> None:
        self.admin.set_byzantine(mode)


def _params(genesis: Genesis, cfg: NodeConfig) -> Params:
    return Params(
        n=len(genesis.validators),
        chain_id=genesis.chain_id,
        first_leader=genesis.consensus.first_leader,
        tenure=genesis.consensus.tenure,
    ).with_timing(cfg.timing)
