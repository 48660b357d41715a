"""The validator runtime: the I/O shell around the pure consensus engine.

`Validator` owns the store, the chain application, the mempool, the QKD endpoint, the
transport, the HTTP and admin APIs, and drives the engine:

- every event (message, timer, block built, validated or fetched, start) goes through
  one queue and one `Engine.step` at a time;
- the actions of a step are carried out in the order the engine's contract demands: every
  `Persist`, `PersistBlock` and `DeleteRecord` first, as ONE synced LevelDB batch; then the
  sends (queued per peer, so the messages of one step to one peer share one frame); then
  timers, block building, validation, fetching, commits and replies;
- a commit writes block, receipts, transaction index, state writes, the consensus value
  index and the anchor of the next height in one synced batch, then starts the next height.

After the decision the validator signs the chain block hash with its ML-DSA-65 key and
sends the signature to every peer in the same step as its DONE (so it rides in the same
frame); n - f valid signatures form the commit certificate stored with the block. A peer
that committed late asks for nothing: when it sends its own signature for a height whose
certificate this node already holds, this node answers once with its own signature.

Transactions admitted locally are forwarded in batches to the current leader (or, in idle
mode, to every validator). When the leader changes, pending transactions go to the new
one. A transaction that stays pending past the inclusion timeout is forwarded to every
validator; one that stays past twice the timeout makes the node fire its round timer early
(CONSENSUS.md R8), so that a quorum of honest validators moves away from a censoring leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import signal
import ssl
import time
from collections import Counter, deque
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from consensus.engine import Engine
from consensus.events import (
    DURABLE_ACTIONS,
    Action,
    Alert,
    BlockBuilt,
    BlockFetched,
    BlockValidated,
    BuildBlock,
    CancelTimer,
    Commit,
    DeleteRecord,
    Event,
    FetchBlock,
    MempoolNonEmpty,
    MessageIn,
    Persist,
    PersistBlock,
    ReplyDone,
    ReplySync,
    Send,
    SetTimer,
    Start,
    StartHeight,
    Timeout,
    TimerKey,
    ValidateBlock,
)
from consensus.messages import Block as CBlock
from consensus.messages import (
    BlockReq,
    BlockResp,
    Done,
    Message,
    Propose,
    Record,
    SyncResp,
    Vote,
    decode_message,
    encode_message,
    load_record,
    stored_block_height,
)
from consensus.messages import block_hash as consensus_value
from consensus.params import Params
from contracts import membership
from contracts.genesis import Genesis, init_state
from contracts.query import query as contract_query
from contracts.state import StateReader
from node import byzantine
from node.budget import BLOCK_LOOKUPS, CERT_SIGS, FORWARDED_TXS, Budgets
from node.chain import ChainApp, Prepared, next_block_time
from node.chainstore import ChainStore
from node.events import EventBus
from node.genesis_file import load_genesis
from node.http.admin import make_admin_app
from node.http.api import make_api_app, make_ssl_context
from node.mempool import Mempool, MempoolLimits, PendingTx
from node.metrics import NodeMetrics, TimedKeySource
from node.service import EventStream, TxStatus
from node.sigcache import SignatureCache
from node.transport import FaultRules, Transport
from node.wire import CertSig, Envelope, Kind, TxBatch, tx_batches
from qchain.config import NodeConfig
from qchain.errors import CodecError, InvalidBlock, QChainError, StorageCorrupt, StorageError
from qchain.hashing import Domain, hash_domain
from qchain.keys import SigningKey, verify
from qchain.limits import BLOCK_RESP_FRAMING, MAX_MESSAGE
from qchain.qkd.endpoint import QKDEndpoint
from qchain.qkd.frame import LinkSender
from qchain.qkd.source import KeySource
from qchain.store import schema
from qchain.store.kv import Batch, KVStore, open_store, scan
from qchain.types import (
    CommitCertificate,
    CommitSignature,
    ReceiptProof,
    Transaction,
    commit_sign_digest,
    decode_transaction,
    verify_certificate,
)

log = logging.getLogger("qchain.node")

FETCH_RETRY_S = 0.5
CERT_BUFFER_HEIGHTS = 4
CERT_LATE_HEIGHTS = 2
FORWARD_BATCH = 2000
FORWARD_QUEUE_MAX = 50_000
MAX_REFORWARD = 4000
"""Most transactions a node resends at once (to a new leader, or to everyone)."""
ADMIT_SLICE = 100
INITIAL_PER_TX_S = 0.0005
"""Execution cost per transaction assumed until this node has measured its own."""
STALL_MIN_S = 15.0
"""A node that should have committed and did not for this long is not ready (at least;
three heartbeat intervals when they are longer)."""
KEY_STARVED_S = 3.0
"""A link whose key pool has failed to get keys for this long does not count toward the
quorum of peers that readiness needs."""
VOTE_WATCH_ROUNDS = 64
"""How far above the current round votes are kept for equivocation detection."""
STARTUP_VERIFY_BLOCKS = 64
"""Committed heights checked against their hashes before a validator serves anything."""
STARTUP_SCAN_S = 2.0
"""Time budget of the startup sweep that reads the whole store (LevelDB checksums)."""
BLOCK_TIME_SHARE = 0.25
"""A block holds at most as many transactions as validating it takes this share of the
round timeout, so validation never outlasts the round (see `_block_tx_cap`)."""


class _Sealer:
    """The sending side of one link, as the transport sees it. In the test-only
    `forge-mac` mode it flips a bit of every tag it produces."""

    def __init__(self, inner: LinkSender) -> None:
        self.inner = inner
        self.forge = False

    async def seal(self, body: bytes) -> bytes:
        frame = await self.inner.seal(body)
        if self.forge:
            frame = frame[:-1] + bytes([frame[-1] ^ 1])
        return frame

    def reconnected(self) -> None:
        self.inner.resync()


class _Opener:
    """The receiving side of one peer's link, checking the frame names that peer."""

    def __init__(self, receiver: Any, sae_id: str) -> None:
        self.receiver = receiver
        self.sae_id = sae_id

    async def open(self, frame: bytes) -> bytes:
        opened = await self.receiver.open(frame)
        if opened.sender != self.sae_id:
            raise CodecError("frame sender does not match the connection's peer")
        body: bytes = opened.body
        return body

    def reconnected(self) -> None:
        return None


def build_key_source(cfg: NodeConfig) -> KeySource:
    """The ETSI GS QKD 014 client for this node's key manager (mutual TLS when the config
    names the files, the dev header otherwise)."""
    from qchain.qkd.client import ETSIClient, TLSConfig

    q = cfg.qkd
    tls = None
    if q.client_cert is not None and q.client_key is not None and q.ca_cert is not None:
        tls = TLSConfig(q.ca_cert, q.client_cert, q.client_key)
    return ETSIClient(q.kme_url, q.sae_id, tls=tls, insecure_sae_header=q.insecure_dev_header)


class Validator:
    """One validator process. Implements `node.service.NodeService` for the API."""

    def __init__(
        self,
        cfg: NodeConfig,
        *,
        key_source: KeySource | None = None,
        store: KVStore | None = None,
    ) -> None:
        self.cfg = cfg
        self.genesis: Genesis = load_genesis(cfg.node.genesis)
        self.me = cfg.node.index
        n = len(self.genesis.validators)
        if not 0 <= self.me < n:
            raise StorageError(f"node.index {self.me} is not a validator of this genesis")
        self.signing_key = SigningKey.load(cfg.node.signing_key)
        if self.signing_key.public_key != self.genesis.validators[self.me].public_key:
            raise StorageError("node.signing_key does not match this validator's genesis key")
        self.validator_keys = self.genesis.validator_keys()
        t = cfg.timing
        self.params = Params(
            n=n,
            chain_id=self.genesis.chain_id,
            first_leader=self.genesis.consensus.first_leader,
            tenure=self.genesis.consensus.tenure,
            base_ms=t.base_ms,
            backoff=t.backoff,
            cap_ms=t.cap_ms,
            propose_wait_max_ms=t.propose_wait_max_ms,
            sync_interval_ms=t.sync_interval_ms,
        )
        self.store = store if store is not None else open_store(cfg.node.data_dir / "db")
        self.chain = ChainStore(self.store, self._check_certificate)
        self.chain.init_meta(self.genesis.chain_id, self.genesis.hash)
        gstate = init_state(self.store, self.genesis)
        if self.chain.height() == 0 and self.store.get(schema.meta_key("genesis-applied")) is None:
            batch = Batch()
            for key, value in gstate.write_set:
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
            batch.put(schema.meta_key("genesis-applied"), b"\x01")
            self.store.write(batch, sync=True)
        self.sig_cache = SignatureCache()
        self.app = ChainApp(
            self.store,
            self.chain,
            self.genesis.chain_id,
            self.genesis.hash,
            gstate.app_hash,
            self.sig_cache,
        )
        self.engine = Engine(self.params, self.me)
        self._accounts = _Accounts(self.store)
        self.mempool = Mempool(
            self.genesis.chain_id,
            MempoolLimits(
                cfg.mempool.max_txs,
                cfg.mempool.max_bytes,
                cfg.mempool.max_per_sender,
                max_local=max(1, cfg.mempool.max_txs // n),
                max_block_bytes=cfg.mempool.max_block_bytes,
            ),
            self._accounts,
            self.sig_cache,
        )
        self.metrics = NodeMetrics(cfg.node.name)
        # Event ids must not repeat across restarts (SSE Last-Event-ID): start at the
        # wall clock in milliseconds, which is above any id an earlier run handed out.
        self.bus = EventBus(first_id=int(time.time() * 1000))
        self._key_source = key_source
        self._owns_key_source = key_source is None
        self.endpoint: QKDEndpoint | None = None
        self.transport: Transport | None = None
        self._sealers: dict[int, _Sealer] = {}
        self._sae = {v.index: v.sae_id for v in self.genesis.validators}
        self._index_of_sae = {s: i for i, s in self._sae.items()}
        self._events: deque[Event] = deque()
        self._processing = False
        self._timers: dict[TimerKey, asyncio.TimerHandle] = {}
        self._pending_build: BuildBlock | None = None
        self._build_deadline: float | None = None
        self._build_timer: asyncio.TimerHandle | None = None
        self._last_commit_at = time.monotonic()
        self._fetching: dict[bytes, int] = {}
        self._fetch_timer: asyncio.TimerHandle | None = None
        self._cert_sigs: dict[int, dict[int, bytes]] = {}
        self._cert_replied: dict[int, set[int]] = {}
        self._own_sig: dict[int, CertSig] = {}
        self._waiters: dict[bytes, list[asyncio.Future[TxStatus]]] = {}
        self._forward_queue: list[bytes] = []
        self._admit_queue: deque[tuple[int, bytes]] = deque()
        self._admit_queued: Counter[int] = Counter()
        """Forwarded transactions waiting for admission, by the peer that sent them."""
        self.budgets = Budgets()
        self._admit_task: asyncio.Task[None] | None = None
        self._forward_dropped = 0
        self._ready_signalled = False
        """Idle mode: whether the engine was told the mempool has an includable tx."""
        self._recent_blocks: deque[tuple[float, int]] = deque(maxlen=256)
        self._per_tx_s = INITIAL_PER_TX_S
        self._forward_scheduled = False
        self._last_leader: int | None = None
        self._last_round: tuple[int, int] = (0, 0)
        self._last_suspect = 0.0
        self._alerts: dict[str, int] = {}
        self._vote_values: dict[tuple[int, int, int], dict[bytes, int]] = {}
        self._metric_marks: dict[tuple[int, tuple[str, ...]], float] = {}
        self._fatal: str | None = None
        self.store_corrupt: str | None = None
        """The first damage found in the store: the node then neither votes nor serves
        what does not verify, and waits to be rebuilt (`qchain node rebuild`)."""
        self.store.on_corrupt = self._on_store_corrupt
        self._stopping = False
        self.byzantine_mode: str | None = None
        self._hostile = byzantine.Hostile(self)
        self._rng = random.Random()
        self._runners: list[web.AppRunner] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()
        self.started_at = time.time()

    # ---------------------------------------------------------------------------------
    # lifecycle
    # ---------------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.cfg
        if self._key_source is None:
            self._key_source = build_key_source(cfg)
        peers = {p.index: p.address for p in cfg.p2p.peers}
        for i in peers:
            if i not in self._sae:
                raise StorageError(f"p2p peer {i} is not a validator of this genesis")
        my_sae = self._sae[self.me]
        from qchain.qkd.pool import PoolConfig

        batch = min(128, cfg.qkd.batch_keys)
        self.endpoint = QKDEndpoint(
            self.genesis.chain_id,
            my_sae,
            [self._sae[i] for i in peers],
            TimedKeySource(self._key_source, self.metrics.qkd_key_manager_latency),
            config=PoolConfig(batch_size=batch, low_water=min(cfg.qkd.low_water, batch)),
            store=self.store,
        )
        self._sealers = {i: _Sealer(self.endpoint.sender(self._sae[i])) for i in peers}
        openers = {i: _Opener(self.endpoint.receiver, self._sae[i]) for i in peers}
        self.transport = Transport(
            self.me,
            cfg.p2p.listen,
            peers,
            self._sealers,
            openers,
            self._on_envelope,
            max_frame_bytes=cfg.p2p.max_frame_bytes,
            queue_limit=cfg.p2p.queue_frames,
        )
        self.endpoint.start()
        # The engine starts from its records before any peer message can reach it.
        self._boot_engine()
        await self.transport.start()
        await self._start_http()
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="housekeeping"))
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
            self,
            max_body_bytes=cfg.api.max_body_bytes,
            rate_limit_per_s=cfg.api.rate_limit_per_s,
            metrics=self.metrics,
        )
        ssl_ctx: ssl.SSLContext | None = None
        if cfg.api.tls_cert is not None and cfg.api.tls_key is not None:
            ssl_ctx = make_ssl_context(cfg.api.tls_cert, cfg.api.tls_key)
        await self._serve(api, cfg.api.listen, ssl_ctx)
        token = self._admin_token()
        await self._serve(make_admin_app(self, token), cfg.admin.listen, None)

    def _admin_token(self) -> str:
        path = self.cfg.admin.token_file
        if path is None:
            return secrets.token_hex(16)
        if path.exists():
            return path.read_text().strip()
        token = secrets.token_hex(16)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        return token

    async def _serve(
        self, app: web.Application, listen: str, ssl_ctx: ssl.SSLContext | None
    ) -> None:
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        host, _, port = listen.rpartition(":")
        site = web.TCPSite(runner, host, int(port), ssl_context=ssl_ctx, reuse_address=True)
        await site.start()
        self._runners.append(runner)

    def _boot_engine(self) -> None:
        if not self._store_intact():
            return
        records = [load_record(v) for _, v in self.store.iterate(schema.CONSENSUS)]
        bodies = [CBlock.decode(v) for _, v in self.store.iterate(schema.PENDING_BODY)]
        committed = self.chain.height()
        self.feed(Start(tuple(records), tuple(bodies), committed))
        if not any(r.height == committed + 1 for r in records):
            self._start_next_height(committed)

    def _start_next_height(self, committed: int) -> None:
        parent = self.app.committed_value(committed)
        if parent is None:
            raise StorageError(f"consensus value of height {committed} is missing")
        if committed == 0:
            anchor = self.params.first_leader
        else:
            raw = self.store.get(schema.meta_key("next-anchor"))
            if raw is None:
                raise StorageError("the anchor of the next height is missing")
            anchor = schema.read_u64(raw)
        self.feed(StartHeight(committed + 1, parent, anchor))

    async def stop(self) -> None:
        """Stop everything, in an order that never writes to a closed store: first no
        more events reach the engine, then the listeners and links close (each step
        bounded in time), last the store."""
        self._stopping = True
        self._events.clear()
        await self._hostile.stop()
        if self._admit_task is not None:
            self._tasks.append(self._admit_task)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._cancel_timers()
        self.bus.close()
        for runner in self._runners:
            await _bounded(runner.cleanup(), "HTTP listener")
        if self.transport is not None:
            await _bounded(self.transport.stop(), "transport")
        if self.endpoint is not None:
            await _bounded(self.endpoint.close(), "key pools")
        if self._owns_key_source and self._key_source is not None:
            await _bounded(self._key_source.close(), "key manager client")
        for futs in self._waiters.values():
            for fut in futs:
                fut.cancel()
        self._cancel_timers()
        self.store.close()
        self._stopped.set()

    def _cancel_timers(self) -> None:
        for h in self._timers.values():
            h.cancel()
        self._timers.clear()
        for handle in (self._build_timer, self._fetch_timer):
            if handle is not None:
                handle.cancel()
        self._build_timer = self._fetch_timer = None

    # ---------------------------------------------------------------------------------
    # the event loop of the engine
    # ---------------------------------------------------------------------------------

    def feed(self, ev: Event) -> None:
        if self._stopping:
            return
        self._events.append(ev)
        if self._processing:
            return
        self._processing = True
        try:
            while self._events:
                event = self._events.popleft()
                if self._fatal is not None:
                    self._events.clear()
                    return
                self._perform(self.engine.step(event))
            self._after_steps()
        finally:
            self._processing = False

    def _perform(self, actions: Sequence[Action]) -> None:
        batch = Batch()
        for d in actions:
            if isinstance(d, Persist):
                batch.put(schema.consensus_key(d.record.height), d.record.encode())
            elif isinstance(d, PersistBlock):
                batch.put(schema.pending_body_key(consensus_value(d.block)), d.block.encode())
            elif isinstance(d, DeleteRecord):
                batch.delete(schema.consensus_key(d.height))
        if len(batch):
            self.store.write(batch, sync=True)
        for s in actions:
            if isinstance(s, Send):
                if isinstance(s.msg, Vote):
                    self._observe_vote(self.me, s.msg)
                self._send_consensus(s.to, s.msg)
        for a in actions:
            if not isinstance(a, (*DURABLE_ACTIONS, Send)):
                self._do(a)

    def _do(self, a: Action) -> None:
        if isinstance(a, SetTimer):
            self._set_timer(a.key, a.duration_ms)
        elif isinstance(a, CancelTimer):
            handle = self._timers.pop(a.key, None)
            if handle is not None:
                handle.cancel()
        elif isinstance(a, BuildBlock):
            self._request_build(a)
        elif isinstance(a, ValidateBlock):
            self._validate(a.block)
        elif isinstance(a, FetchBlock):
            self._fetch(a.value)
        elif isinstance(a, Commit):
            self._commit(a)
        elif isinstance(a, ReplyDone):
            value = self.app.committed_value(a.height)
            if value is not None:
                self._send_consensus(a.to, Done(self.params.chain_id, a.height, value))
        elif isinstance(a, ReplySync):
            self._reply_sync(a)
        elif isinstance(a, Alert):
            self._alert(a.kind, a.detail)

    def _set_timer(self, key: TimerKey, ms: int) -> None:
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(ms / 1000, self._fire_timer, key)

    def _fire_timer(self, key: TimerKey) -> None:
        self._timers.pop(key, None)
        self.feed(Timeout(key))

    def _observe_vote(self, sender: int, vote: Vote) -> None:
        """Correct nodes never vote for two values in one (height, round, phase): phase 1
        follows the one proposal, a later phase needs a quorum and two quorums share a
        correct node. So two values seen there mean a leader sent different proposals to
        different nodes, or a voter sent different votes: raise `equivocation-suspected`.
        With MACs instead of signatures nobody can prove who lied (CONSENSUS.md §1), but
        every honest node that sees both values reports it.

        What is kept is bounded whatever peers send: heights from the one below the last
        committed to two above it, rounds up to VOTE_WATCH_ROUNDS above the current one,
        two values per (height, round, phase); older heights go at each commit."""
        committed = self.chain.height()
        if not committed - 1 <= vote.height <= committed + 2:
            return
        inst = self.engine.inst.get(self.engine.cur)
        if vote.round > (0 if inst is None else inst.rec.round) + VOTE_WATCH_ROUNDS:
            return
        key = (vote.height, vote.round, vote.phase)
        seen = self._vote_values.setdefault(key, {})
        if vote.value in seen or len(seen) >= 2:
            return
        seen[vote.value] = sender
        if len(seen) == 2:
            first, second = seen.items()
            self._alert(
                "equivocation-suspected",
                f"height {vote.height} round {vote.round} phase {vote.phase}: "
                f"validator {first[1]} voted {first[0].hex()[:12]}, "
                f"validator {second[1]} voted {second[0].hex()[:12]}",
            )

    def _alert(self, kind: str, detail: str) -> None:
        self._alerts[kind] = self._alerts.get(kind, 0) + 1
        log.warning("consensus alert %s: %s", kind, detail)

    def _check_certificate(self, cert: CommitCertificate) -> None:
        verify_certificate(cert, self.params.chain_id, self.validator_keys)

    def _store_intact(self) -> bool:
        """Startup check before anything is served: the last committed heights against
        their hashes, then one checksummed read of the whole store (bounded in time)."""
        started = time.monotonic()
        try:
            low = self.app.verify_recent(STARTUP_VERIFY_BLOCKS)
            swept = scan(self.store, STARTUP_SCAN_S)
        except StorageCorrupt:
            return False
        log.info(
            "store checked in %.2fs: %d heights against their hashes, %d keys read%s",
            time.monotonic() - started,
            self.chain.height() - low + 1,
            swept.keys,
            "" if swept.complete else " (time budget reached before the last key)",
        )
        return True

    def _on_store_corrupt(self, e: StorageCorrupt) -> None:
        """The first damaged read halts consensus, like `_fail`, and is reported once."""
        if self.store_corrupt is not None:
            return
        self.store_corrupt = e.message
        self._fatal = f"store corrupt: {e.message}"
        log.critical(
            "%s; consensus stopped and unverifiable data is not served; "
            "rebuild this node from its peers: qchain node rebuild --config FILE",
            self._fatal,
        )

    def _fail(self, reason: str) -> None:
        """A fatal inconsistency (non-determinism or more than f faults): stop deciding."""
        self._fatal = reason
        self._alert("fatal", reason)
        log.critical("stopping consensus: %s", reason)

    def _after_steps(self) -> None:
        """Bookkeeping after the queue drained: leader changes move pending transactions."""
        leader = self.current_leader()
        inst = self.engine.inst.get(self.engine.cur)
        if inst is not None:
            pos = (inst.h, inst.rec.round)
            if pos != self._last_round:
                changed = pos[0] == self._last_round[0] and pos[1] > self._last_round[1]
                self.metrics.observe_round(inst.rec.round, changed)
                self._last_round = pos
        if leader is not None and leader != self._last_leader:
            self._last_leader = leader
            if leader != self.me and len(self.mempool):
                # Only this node's own clients' transactions: every node moves its own, so
                # a leader change never makes every node resend the whole pool.
                mine = [p.tx.encoded for p in self.mempool.pending() if p.local]
                self._forward(mine[:MAX_REFORWARD], [leader])

    def current_leader(self) -> int | None:
        inst = self.engine.inst.get(self.engine.cur)
        if inst is None:
            return None
        return self.engine.leader(inst, inst.rec.round)

    # ---------------------------------------------------------------------------------
    # sending and receiving
    # ---------------------------------------------------------------------------------

    def _send_consensus(self, to: int, msg: Message) -> None:
        if self.transport is None:
            return
        mode = self.byzantine_mode
        if mode is not None and isinstance(msg, Propose | Vote | Done):
            msg_or_none = self._byzantine(to, msg, mode)
            if msg_or_none is None:
                return
            msg = msg_or_none
        self.transport.send(to, Envelope(Kind.CONSENSUS, encode_message(msg)))

    def _byzantine(self, to: int, msg: Message, mode: str) -> Message | None:
        """Test-only misbehaviour toward half of the peers (devnet flag required)."""
        odd = to % 2 == 1
        if mode == "silent":
            return None
        if mode == "withhold":
            return msg if to == min(j for j in range(self.params.n) if j != self.me) else None
        if mode == "double-vote" and isinstance(msg, Vote) and odd:
            fake = hash_domain(Domain.HEADER, msg.value)
            return Vote(msg.chain_id, msg.height, msg.round, msg.phase, fake)
        if mode == "equivocate" and isinstance(msg, Propose) and odd:
            try:
                twin = self.app.build(
                    msg.height,
                    msg.round,
                    msg.block.parent,
                    self.me,
                    [],
                    now_ms=int(time.time() * 1000) + 1 + to,
                )
            except QChainError:
                return msg
            return Propose(msg.chain_id, msg.height, msg.round, twin.cblock)
        return msg

    def _on_envelope(self, sender: int, env: Envelope) -> None:
        if self._stopping:
            return
        try:
            if env.kind is Kind.CONSENSUS:
                msg = decode_message(env.payload)
                if isinstance(msg, BlockReq):
                    self._serve_blocks(sender, msg)
                elif isinstance(msg, BlockResp):
                    self._on_blocks(msg)
                else:
                    if isinstance(msg, Vote):
                        self._observe_vote(sender, msg)
                    self.feed(MessageIn(sender, msg))
            elif env.kind is Kind.TXS:
                self._on_forwarded(sender, TxBatch.decode(env.payload))
            elif env.kind is Kind.CERT_SIG:
                self._on_cert_sig(sender, CertSig.decode(env.payload))
        except CodecError as e:
            self._alert("bad-message", f"from {sender}: {e.message}")
        except StorageCorrupt:
            return  # already reported and halted by _on_store_corrupt

    # ---------------------------------------------------------------------------------
    # building, validating, fetching, committing
    # ---------------------------------------------------------------------------------

    def _request_build(self, a: BuildBlock) -> None:
        """Build now if transactions wait (after propose_wait_min since the last commit),
        or at the heartbeat (propose_wait_max); in idle mode wait for a transaction. In a
        round above 0 build at once."""
        self._pending_build = a
        t = self.cfg.timing
        if a.round > 0:
            # A round change happened: the round's leader must propose now, even an empty
            # block, or the round times out again.
            self._build_deadline = time.monotonic()
        elif t.propose_wait_max_ms is None:
            self._build_deadline = None
        else:
            self._build_deadline = self._last_commit_at + t.propose_wait_max_ms / 1000
        self._maybe_build()

    def _maybe_build(self) -> None:
        a = self._pending_build
        if a is None:
            return
        now = time.monotonic()
        earliest = self._last_commit_at + self.cfg.timing.propose_wait_min_ms / 1000
        due = max(earliest, now) if self.mempool.has_ready() else self._build_deadline
        if due is None:
            return
        if due > now:
            if self._build_timer is not None:
                self._build_timer.cancel()
            self._build_timer = asyncio.get_running_loop().call_later(due - now, self._maybe_build)
            return
        self._pending_build = None
        if self._build_timer is not None:
            self._build_timer.cancel()
            self._build_timer = None
        txs = self.mempool.reap(self._block_tx_cap(a.round), self.cfg.mempool.max_block_bytes)
        started = time.perf_counter()
        now_ms = byzantine.block_time_ms(self.byzantine_mode)
        try:
            prepared = self.app.build(a.height, a.round, a.parent_hash, self.me, txs, now_ms)
        except QChainError as e:
            self._alert("build-failed", e.message)
            return
        # Peers validating this block check the signatures this node had cached: price
        # them in, or a stable leader sizes blocks by its own cheap builds alone.
        self._observe_execution(
            time.perf_counter() - started, len(txs), len(txs) * self.sig_cache.verify_s
        )
        self.feed(BlockBuilt(a.height, a.round, prepared.cblock))

    def _observe_execution(self, seconds: float, txs: int, unchecked_s: float = 0.0) -> None:
        """seconds: what executing a block of txs took here; unchecked_s: what its
        signature checks would have added without this node's cache."""
        self.metrics.execution_block_duration.observe(seconds)
        if txs >= 10:
            # Moving average of the cost per transaction, rising fast and falling slowly
            # so that a slow spell shrinks blocks at once.
            sample = (seconds + unchecked_s) / txs
            weight = 0.5 if sample > self._per_tx_s else 0.1
            self._per_tx_s += weight * (sample - self._per_tx_s)

    def _block_tx_cap(self, rnd: int) -> int:
        """How many transactions the next block may hold: the configured maximum, cut so
        that executing the block takes at most BLOCK_TIME_SHARE of the round's timeout.
        Otherwise, on a slow machine, a big block can take longer to validate than any
        round lasts and no round decides."""
        window_s = self.params.timeout_ms(rnd) / 1000
        by_time = int(window_s * BLOCK_TIME_SHARE / max(self._per_tx_s, 1e-6))
        return max(1, min(self.cfg.mempool.max_block_txs, by_time))

    def _validate(self, cblock: CBlock) -> None:
        value = consensus_value(cblock)
        started = time.perf_counter()
        timely = True
        try:
            prepared = self.app.validate(cblock)
            ok = True
        except (InvalidBlock, QChainError) as e:
            log.info("block %s at height %d is invalid: %s", value.hex()[:12], cblock.height, e)
            ok = False
        if ok:
            self._observe_execution(time.perf_counter() - started, len(prepared.block.txs))
            timely = self._timely(prepared.block.header.time, cblock.round)
            if not timely:
                self._alert(
                    "untimely-proposal",
                    f"height {cblock.height} round {cblock.round} from {cblock.proposer}: "
                    f"time {prepared.block.header.time}, local {int(time.time() * 1000)}",
                )
        self.feed(BlockValidated(value, ok, timely))

    def _timely(self, block_ms: int, rnd: int) -> bool:
        """Proposer-based timestamps (CONSENSUS.md §3.7): a fresh proposal's time is within
        [local - precision - delay, local + precision], or it is the earliest time the
        parent allows when the parent's time is not behind our clock (a chain whose last
        block is in the future goes on at one millisecond a block)."""
        local = int(time.time() * 1000)
        t = self.cfg.timing
        if t.timely(block_ms, local, rnd):
            return True
        parent_ms = self.app.tip()[3]
        return parent_ms >= local - t.clock_precision_ms and block_ms == next_block_time(
            parent_ms, parent_ms
        )

    def _local_body(self, value: bytes) -> CBlock | None:
        raw = self.store.get(schema.pending_body_key(value))
        if raw is not None:
            return CBlock.decode(raw)
        return self.app.committed_cblock(value)

    def _fetch(self, value: bytes) -> None:
        body = self._local_body(value)
        if body is not None:
            self.feed(BlockFetched(body))
            return
        if value not in self._fetching:
            self._fetching[value] = self._rng.randrange(self.params.n)
        self._send_fetches()

    def _send_fetches(self) -> None:
        if not self._fetching:
            return
        peers = [j for j in range(self.params.n) if j != self.me]
        for value, attempt in list(self._fetching.items()):
            peer = peers[attempt % len(peers)]
            self._fetching[value] = attempt + 1
            self._send_consensus(peer, BlockReq(self.params.chain_id, (value,)))
        if self._fetch_timer is None:
            self._fetch_timer = asyncio.get_running_loop().call_later(
                FETCH_RETRY_S, self._retry_fetches
            )

    def _retry_fetches(self) -> None:
        self._fetch_timer = None
        self._send_fetches()

    def _serve_blocks(self, sender: int, req: BlockReq) -> None:
        if self.store_corrupt is not None:
            return
        blocks = []
        size = BLOCK_RESP_FRAMING
        granted = self.budgets.take(sender, BLOCK_LOOKUPS, len(req.hashes))
        for value in req.hashes[:granted]:
            body = self._local_body(value)
            if body is None:
                continue
            size += len(body.encode())
            if size > MAX_MESSAGE:
                break
            blocks.append(body)
        if blocks:
            self._send_consensus(sender, BlockResp(self.params.chain_id, tuple(blocks)))

    def _on_blocks(self, resp: BlockResp) -> None:
        for body in resp.blocks:
            value = consensus_value(body)
            if self._fetching.pop(value, None) is not None:
                self.feed(BlockFetched(body))

    def _commit(self, a: Commit) -> None:
        value = consensus_value(a.block)
        height = self.chain.height()
        if a.height <= height:
            if self.app.committed_value(a.height) != value:
                self._fail(f"decided value of height {a.height} differs from the committed one")
            return
        if a.height != height + 1:
            self._fail(f"commit of height {a.height} on top of {height}")
            return
        try:
            prepared = self.app.validate(a.block)
        except QChainError as e:
            self._fail(f"decided block {a.height} does not execute: {e.message}")
            return
        batch = self.app.commit_batch(prepared)
        batch.put(schema.meta_key("next-anchor"), schema.u64(a.next_anchor))
        for key, raw in self.store.iterate(schema.PENDING_BODY):
            # Only the height is needed: reading it does not decode megabytes of body.
            if stored_block_height(raw) <= a.height:
                batch.delete(key)
        self.store.write(batch, sync=True)
        self.app.forget(value)
        now = time.monotonic()
        interval = now - self._last_commit_at
        self._last_commit_at = now
        block = prepared.block
        self._accounts.invalidate()
        self._recent_blocks.append((now, len(block.txs)))
        self.mempool.on_commit(block.txs, a.height)
        self.metrics.observe_commit(a.height, len(block.txs), interval)
        self.metrics.observe_mempool(len(self.mempool), self.mempool.size_bytes)
        self.bus.publish_commit(block, prepared.result.receipts)
        self._sign_commit(prepared)
        self._notify_waiters(prepared)
        self._fetching.pop(value, None)
        for k in [k for k in self._vote_values if k[0] < a.height - 1]:
            del self._vote_values[k]
        self.feed(StartHeight(a.height + 1, value, a.next_anchor))
        if self.engine.idle_mode:
            self._ready_signalled = self.mempool.has_ready()
            self.feed(MempoolNonEmpty(self._ready_signalled))
        if self._pending_build is not None:
            self._maybe_build()

    def _notify_waiters(self, p: Prepared) -> None:
        for i, (tx, receipt) in enumerate(zip(p.block.txs, p.result.receipts, strict=True)):
            futs = self._waiters.pop(tx.hash, None)
            if not futs:
                continue
            status = TxStatus(tx.hash, "committed", p.block.height, i, receipt)
            for fut in futs:
                if not fut.done():
                    fut.set_result(status)

    def _reply_sync(self, a: ReplySync) -> None:
        top = self.chain.height()
        hashes = []
        for h in range(a.from_height, min(top, a.from_height + a.max_count - 1) + 1):
            v = self.app.committed_value(h)
            if v is None:
                break
            hashes.append(v)
        self._send_consensus(a.to, SyncResp(self.params.chain_id, a.from_height, tuple(hashes)))

    # ---------------------------------------------------------------------------------
    # commit certificates
    # ---------------------------------------------------------------------------------

    def _sign_commit(self, p: Prepared) -> None:
        h = p.block.height
        digest = commit_sign_digest(self.params.chain_id, h, p.block.hash)
        sig = CertSig(h, p.block.hash, self.signing_key.sign(digest))
        self._own_sig[h] = sig
        for old in [x for x in self._own_sig if x < h - 64]:
            del self._own_sig[old]
        self._cert_sigs.setdefault(h, {})[self.me] = sig.signature
        env = Envelope(Kind.CERT_SIG, sig.encode())
        if self.transport is not None:
            for j in range(self.params.n):
                if j != self.me:
                    self.transport.send(j, env)
        # Signatures that arrived before this node committed are checked now.
        pending = self._cert_sigs.get(h, {})
        for j, s in list(pending.items()):
            if j != self.me and not self._cert_sig_ok(j, h, p.block.hash, s):
                del pending[j]
        self._try_certificate(h, p.block.hash)

    def _cert_sig_ok(self, j: int, h: int, block_hash: bytes, sig: bytes) -> bool:
        if not 0 <= j < len(self.validator_keys):
            return False
        key = self.validator_keys[j]
        try:
            verify(
                key.scheme,
                key.public_key,
                commit_sign_digest(self.params.chain_id, h, block_hash),
                sig,
            )
        except QChainError:
            return False
        return True

    def _on_cert_sig(self, sender: int, sig: CertSig) -> None:
        if not self.budgets.take(sender, CERT_SIGS):
            return
        h = sig.height
        committed = self.chain.height()
        if h > committed:
            if h <= committed + CERT_BUFFER_HEIGHTS:
                self._cert_sigs.setdefault(h, {})[sender] = sig.signature
            return
        block_hash = self.chain.block_hash(h)
        if block_hash is None or block_hash != sig.block_hash:
            self._alert("cert-mismatch", f"validator {sender} signed another block at {h}")
            return
        if self.chain.certificate(h) is None:
            if self._cert_sig_ok(sender, h, block_hash, sig.signature):
                self._cert_sigs.setdefault(h, {})[sender] = sig.signature
                self._try_certificate(h, block_hash)
            return
        # A peer that signs a height this node has long passed committed it late and
        # missed the signatures sent at the time: answer it once with ours.
        if h + CERT_LATE_HEIGHTS > committed:
            return
        replied = self._cert_replied.setdefault(h, set())
        if sender not in replied:
            replied.add(sender)
            own = self._own_sig.get(h)
            if own is None:
                cert = self.chain.certificate(h)
                mine = (
                    None
                    if cert is None
                    else next((s for s in cert.signatures if s.validator == self.me), None)
                )
                if mine is None:
                    return
                own = CertSig(h, block_hash, mine.signature)
            if self.transport is not None:
                self.transport.send(sender, Envelope(Kind.CERT_SIG, own.encode()))

    def _try_certificate(self, h: int, block_hash: bytes) -> None:
        sigs = self._cert_sigs.get(h, {})
        if len(sigs) < self.params.q or self.chain.certificate(h) is not None:
            return
        cert = CommitCertificate(
            h, block_hash, tuple(CommitSignature(j, s) for j, s in sorted(sigs.items()))
        )
        self.chain.put_certificate(cert)
        del self._cert_sigs[h]
        for old in [x for x in self._cert_sigs if x < h - 64]:
            del self._cert_sigs[old]
        for old in [x for x in self._cert_replied if x < h - 64]:
            del self._cert_replied[old]

    # ---------------------------------------------------------------------------------
    # transactions
    # ---------------------------------------------------------------------------------

    def _admit(self, tx: Transaction, *, local: bool = False) -> bool:
        new = self.mempool.add(tx, height=self.chain.height(), now=time.monotonic(), local=local)
        if new:
            self.metrics.observe_mempool(len(self.mempool), self.mempool.size_bytes)
            if self.engine.idle_mode and not self._ready_signalled and self.mempool.has_ready():
                self._ready_signalled = True
                self.feed(MempoolNonEmpty(True))
            if self._pending_build is not None:
                self._maybe_build()
        return new

    def _forward(self, raw_txs: list[bytes], to: Sequence[int]) -> None:
        if self.transport is None or not raw_txs:
            return
        for batch in tx_batches(raw_txs, FORWARD_BATCH):
            env = Envelope(Kind.TXS, batch.encode())
            for j in to:
                if j != self.me:
                    self.transport.send(j, env)

    def _queue_forward(self, raw: bytes) -> None:
        self._forward_queue.append(raw)
        if not self._forward_scheduled:
            self._forward_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_forward)

    def _flush_forward(self) -> None:
        self._forward_scheduled = False
        batch, self._forward_queue = self._forward_queue, []
        leader = self.current_leader()
        if self.engine.idle_mode or leader is None:
            targets = [j for j in range(self.params.n) if j != self.me]
        elif leader == self.me:
            return
        else:
            targets = [leader]
        self._forward(batch, targets)

    def _on_forwarded(self, sender: int, batch: TxBatch) -> None:
        """Queue forwarded transactions; a task admits them in slices so that checking
        thousands of signatures never holds up consensus messages behind it. Each peer
        may fill at most its share of the queue, at most at its budget's rate, so one
        Byzantine peer's junk never crowds out the others' transactions."""
        share = FORWARD_QUEUE_MAX // max(1, self.params.n - 1)
        room = max(
            0, min(FORWARD_QUEUE_MAX - len(self._admit_queue), share - self._admit_queued[sender])
        )
        take = self.budgets.take(sender, FORWARDED_TXS, min(room, len(batch.txs)))
        self._admit_queue.extend((sender, raw) for raw in batch.txs[:take])
        self._admit_queued[sender] += take
        self._forward_dropped += len(batch.txs) - take
        if self._admit_task is None or self._admit_task.done():
            self._admit_task = asyncio.create_task(self._admit_forwarded(), name="admit")

    async def _admit_forwarded(self) -> None:
        while self._admit_queue and not self._stopping:
            for _ in range(min(ADMIT_SLICE, len(self._admit_queue))):
                sender, raw = self._admit_queue.popleft()
                self._admit_queued[sender] -= 1
                try:
                    self._admit(decode_transaction(raw))
                except QChainError:
                    continue
            await asyncio.sleep(0)

    async def _housekeeping(self) -> None:
        """Inclusion timer, metrics of the key layer, periodic bookkeeping."""
        timeout = self.cfg.timing.inclusion_timeout_ms / 1000
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            now = time.monotonic()
            late = [p for p in self.mempool.pending() if p.local and now - p.seen_at > timeout]
            fresh = [p for p in late if not p.forwarded_to_all][:MAX_REFORWARD]
            if fresh:
                for p in fresh:
                    p.forwarded_to_all = True
                self._forward([p.tx.encoded for p in fresh], range(self.params.n))
            stuck = [p for p in late if now - p.seen_at > 2 * timeout]
            if stuck and now - self._last_suspect > timeout and self._leader_had_room(stuck, now):
                self._last_suspect = now
                inst = self.engine.inst.get(self.engine.cur)
                if inst is not None and inst.rec.decided is None:
                    log.info("transactions not included for %.1fs: suspecting the leader", timeout)
                    self.feed(Timeout(TimerKey("round", inst.h)))
            self._sync_metrics()

    def _leader_had_room(self, stuck: Sequence[PendingTx], now: float) -> bool:
        """Whether the blocks of the last inclusion period left out our stuck transactions
        although they had room for them: each of those blocks held fewer transactions
        than we have stuck (up to a slice). Full blocks mean load, not censorship, and
        suspecting then would only add round changes to an overloaded chain. A leader
        that fills every block with others' transactions is not caught by this test."""
        period = self.cfg.timing.inclusion_timeout_ms / 1000
        recent = [n for t, n in self._recent_blocks if now - t <= period]
        return bool(recent) and max(recent) < min(len(stuck), ADMIT_SLICE)

    def _inc_to(self, counter: Any, labels: tuple[str, ...], total: float) -> None:
        """Advance a Prometheus counter to a running total kept elsewhere."""
        key = (id(counter), labels)
        delta = total - self._metric_marks.get(key, 0.0)
        if delta > 0:
            counter.labels(*labels).inc(delta)
            self._metric_marks[key] = total

    def _sync_metrics(self) -> None:
        """Bring the counters kept by the transport, key pools and mempool into the
        Prometheus registry (done on scrape and periodically, never per frame)."""
        m = self.metrics
        for reason, count in self.mempool.rejections.items():
            self._inc_to(m.mempool_rejections, (reason,), count)
        m.observe_mempool(len(self.mempool), self.mempool.size_bytes)
        if self.transport is not None:
            for j, st in self.transport.stats.items():
                peer = self._sae[j]
                self._inc_to(m.transport_frames, (peer, "out"), st.frames_sent)
                self._inc_to(m.transport_frames, (peer, "in"), st.frames_received)
                self._inc_to(m.transport_bytes, (peer, "out"), st.bytes_sent)
                self._inc_to(m.transport_bytes, (peer, "in"), st.bytes_received)
                for reason, count in st.rejected.items():
                    self._inc_to(m.transport_rejections, (peer, reason), count)
            for reason, count in self.transport.refused.items():
                self._inc_to(m.transport_rejections, ("unknown", reason), count)
        if self.endpoint is None:
            return
        me = self._sae[self.me]
        for peer, link_stats in self.endpoint.stats().items():
            send = link_stats["send"]
            if not isinstance(send, dict):
                continue
            link = f"{me}->{peer}"
            m.qkd_pool_keys.labels(link).set(float(send.get("level", 0)))
            self._inc_to(m.qkd_keys_consumed, (link,), float(send.get("keys_consumed", 0)))
            self._inc_to(m.qkd_waits, (link,), float(send.get("waits", 0)))

    # ---------------------------------------------------------------------------------
    # NodeService
    # ---------------------------------------------------------------------------------

    @property
    def chain_id(self) -> str:
        return self.params.chain_id

    @property
    def node_name(self) -> str:
        return self.cfg.node.name

    def submit(self, raw: bytes) -> tuple[TxStatus, bool]:
        return self.submit_tx(decode_transaction(raw))

    def submit_tx(self, tx: Transaction) -> tuple[TxStatus, bool]:
        status = self.tx_status(tx.hash)
        if status is not None:
            return status, False
        self._admit(tx, local=True)
        self._queue_forward(tx.encoded)
        return TxStatus(tx.hash, "pending"), True

    def tx_status(self, tx_hash: bytes) -> TxStatus | None:
        loc = self.chain.tx_location(tx_hash)
        if loc is not None:
            return TxStatus(
                tx_hash, "committed", loc.height, loc.index, self.chain.receipt(tx_hash)
            )
        if tx_hash in self.mempool:
            return TxStatus(tx_hash, "pending")
        return None

    def transaction(self, tx_hash: bytes) -> Transaction | None:
        p = self.mempool.get(tx_hash)
        if p is not None:
            return p.tx
        return self.chain.transaction(tx_hash)

    async def wait_committed(self, tx_hash: bytes, timeout_s: float) -> TxStatus | None:
        status = self.tx_status(tx_hash)
        if status is not None and status.state == "committed":
            return status
        fut: asyncio.Future[TxStatus] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(tx_hash, []).append(fut)
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            return None
        finally:
            futs = self._waiters.get(tx_hash)
            if futs is not None and fut in futs:
                futs.remove(fut)
                if not futs:
                    del self._waiters[tx_hash]

    def receipt_proof(self, tx_hash: bytes) -> ReceiptProof | None:
        return self.chain.receipt_proof(tx_hash)

    def account(self, address: bytes) -> Mapping[str, Any] | None:
        state = StateReader(self.store, membership.NAME)
        member = membership.get_member(state, address)
        if member is None:
            return None
        return {
            "address": address.hex(),
            "nonce": membership.get_nonce(state, address),
            "pending_nonce": self.mempool.next_free_nonce(
                address, membership.get_nonce(state, address)
            ),
            "name": member.name,
            "roles": list(member.roles),
            "active": member.active,
            "scheme": member.scheme,
            "public_key": member.public_key.hex(),
        }

    def query(self, contract: str, method: str, args: Mapping[str, Any]) -> object:
        return contract_query(self.store, contract, method, dict(args))

    def status(self) -> Mapping[str, Any]:
        inst = self.engine.inst.get(self.engine.cur)
        peers = self.transport.connected_peers() if self.transport is not None else []
        behind = self._quorum_ahead() > self.chain.height() + 2
        return {
            "node": self.cfg.node.name,
            "index": self.me,
            "chain_id": self.params.chain_id,
            "height": self.chain.height(),
            "consensus_height": self.engine.cur,
            "round": None if inst is None else inst.rec.round,
            "leader": self.current_leader(),
            "validators": self.params.n,
            "peers": sorted(peers),
            "syncing": behind,
            "mempool": {"txs": len(self.mempool), "bytes": self.mempool.size_bytes},
            "alerts": dict(self._alerts),
            "halted": self._fatal,
            "store_corrupt": self.store_corrupt,
            "byzantine": self.byzantine_mode,
            "uptime_s": round(time.time() - self.started_at, 3),
        }

    def qkd_status(self) -> Mapping[str, Any]:
        links: dict[str, Any] = {}
        if self.endpoint is not None:
            for peer_sae, st in self.endpoint.stats().items():
                j = self._index_of_sae.get(peer_sae)
                tstats = self.transport.stats.get(j) if self.transport and j is not None else None
                links[peer_sae] = {
                    "peer": j,
                    **st,
                    "transport": None
                    if tstats is None
                    else {
                        "frames_sent": tstats.frames_sent,
                        "frames_received": tstats.frames_received,
                        "bytes_sent": tstats.bytes_sent,
                        "bytes_received": tstats.bytes_received,
                        "queue_dropped": tstats.queue_dropped,
                        "fault_dropped": tstats.fault_dropped,
                        "handshakes": tstats.handshakes,
                        "keepalives": tstats.keepalives,
                        "rejected": dict(tstats.rejected),
                    },
                }
        refused = {} if self.transport is None else dict(self.transport.refused)
        return {"sae_id": self._sae[self.me], "links": links, "transport_refused": refused}

    def events(self, last_event_id: int | None) -> EventStream:
        return self.bus.subscribe(last_event_id)

    def health(self) -> tuple[bool, Sequence[str]]:
        reasons: list[str] = []
        if self.store_corrupt is not None:
            reasons.append(f"store-corrupt: {self.store_corrupt}")
        if self._fatal is not None:
            reasons.append(f"consensus halted: {self._fatal}")
        peers = self.transport.connected_peers() if self.transport is not None else []
        if len(peers) + 1 < self.params.q:
            reasons.append(f"connected to {len(peers)} peers, a quorum needs {self.params.q - 1}")
        ahead = self._quorum_ahead()
        if ahead > self.chain.height() + 2:
            reasons.append(f"catching up: at height {self.chain.height()}, peers at {ahead}")
        wait = self.cfg.timing.propose_wait_max_ms
        if wait is not None and self.chain.height() == 0:
            reasons.append("no block decided yet")
        stalled = self._stalled_for()
        if stalled is not None:
            reasons.append(f"no block committed for {stalled:.0f}s")
        starved = self._starved_links()
        if len([j for j in peers if j not in starved]) + 1 < self.params.q:
            reasons.append("no keys from the key manager: " + "; ".join(starved.values()))
        return not reasons, reasons

    def _starved_links(self) -> dict[int, str]:
        """Peers (index -> why) whose link, either direction, has had no keys for
        KEY_STARVED_S: frames to or from them wait, so they do not count toward a quorum
        (a peer both disconnected and starved is one peer short, not two)."""
        if self.endpoint is None:
            return {}
        out: dict[int, str] = {}
        ep = self.endpoint
        for peer in ep.send_pools:
            for pool in (ep.send_pools[peer], ep.receive_pools[peer]):
                h = pool.health
                if h.state != "ok" and h.since is not None:
                    idle = pool.clock.now() - h.since
                    if idle > KEY_STARVED_S:
                        out[self._index_of_sae[peer]] = (
                            f"{peer} {h.state} for {idle:.0f}s ({h.message})"
                        )
                        break
        return out

    def _quorum_ahead(self) -> int:
        """The highest height that f + 1 peers claim to have reached: at least one of them
        is honest, so one Byzantine peer's claim alone never makes this node look behind."""
        heights = sorted(self.engine.peer_height.values(), reverse=True)
        b = self.params.b
        return heights[b - 1] if len(heights) >= b else 0

    def _stalled_for(self) -> float | None:
        """Seconds since the last commit, if the chain should have committed in that time:
        with heartbeat blocks always, in idle mode when a transaction was ready to include
        all along. None if not stalled."""
        if self.chain.height() == 0:
            return None
        t = self.cfg.timing
        limit = max(STALL_MIN_S, 3 * (t.propose_wait_max_ms or 0) / 1000)
        now = time.monotonic()
        idle = now - self._last_commit_at
        if idle <= limit:
            return None
        if t.propose_wait_max_ms is None:
            oldest = min((p.seen_at for p in self.mempool.pending()), default=now)
            if now - oldest <= limit or not self.mempool.has_ready():
                return None
        return idle

    def metrics_text(self) -> bytes:
        self._sync_metrics()
        return self.metrics.exposition()

    # ---------------------------------------------------------------------------------
    # AdminTarget
    # ---------------------------------------------------------------------------------

    def get_faults(self) -> tuple[FaultRules, FaultRules]:
        if self.transport is None:
            return FaultRules(), FaultRules()
        return self.transport.out_rules, self.transport.in_rules

    def set_faults(self, out_rules: FaultRules, in_rules: FaultRules) -> None:
        if self.transport is not None:
            self.transport.out_rules = out_rules
            self.transport.in_rules = in_rules

    def dump(self) -> Mapping[str, Any]:
        instances = {}
        for h, inst in self.engine.inst.items():
            rec: Record = inst.rec
            instances[str(h)] = {
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
            "peer_heights": {str(k): v for k, v in self.engine.peer_height.items()},
            "timers": sorted(f"{k.kind}:{k.height}" for k in self._timers),
            "fetching": [v.hex() for v in self._fetching],
            "pending_build": self._pending_build is not None,
        }

    @property
    def byzantine_allowed(self) -> bool:
        return self.cfg.admin.byzantine

    def set_byzantine(self, mode: str | None) -> None:
        if not self.cfg.admin.byzantine:
            return
        self.byzantine_mode = mode
        for sealer in self._sealers.values():
            sealer.forge = mode == "forge-mac"
        self._hostile.set_mode(mode)
        log.warning("byzantine mode set to %s", mode)


STOP_STEP_TIMEOUT_S = 5.0


async def _bounded(step: Awaitable[None], what: str) -> None:
    """Await one shutdown step, giving up (with a log line) after a few seconds."""
    try:
        await asyncio.wait_for(step, STOP_STEP_TIMEOUT_S)
    except TimeoutError:
        log.warning("closing the %s took over %.0fs; going on", what, STOP_STEP_TIMEOUT_S)


class _Accounts:
    """Committed account facts for mempool admission, read from the store and cached
    until the next commit (`invalidate`)."""

    def __init__(self, store: KVStore) -> None:
        self.state = StateReader(store, membership.NAME)
        self._members: dict[bytes, membership.Member | None] = {}
        self._nonces: dict[bytes, int] = {}

    def invalidate(self) -> None:
        self._members.clear()
        self._nonces.clear()

    def _member(self, address: bytes) -> membership.Member | None:
        if address not in self._members:
            if len(self._members) > 100_000:
                self._members.clear()
            self._members[address] = membership.get_member(self.state, address)
        return self._members[address]

    def next_nonce(self, address: bytes) -> int:
        nonce = self._nonces.get(address)
        if nonce is None:
            if len(self._nonces) > 100_000:
                self._nonces.clear()
            nonce = self._nonces[address] = membership.get_nonce(self.state, address)
        return nonce

    def signing_key(self, address: bytes) -> tuple[str, bytes] | None:
        m = self._member(address)
        if m is None or not m.active:
            return None
        return m.scheme, m.public_key

    def member_status(self, address: bytes) -> str | None:
        m = self._member(address)
        if m is None:
            return None
        return "active" if m.active else "suspended"


def setup_logging(cfg: NodeConfig) -> None:
    """Readable lines on a terminal, JSON lines in containers; every line names the node."""
    from node.logs import configure

    configure(cfg.node.name, cfg.node.log_format)


async def run_validator(cfg: NodeConfig, ready_file: Path | None = None) -> int:
    """Run until SIGTERM or SIGINT; close everything cleanly (LevelDB included)."""
    validator = Validator(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await validator.start()
    if ready_file is not None:
        ready_file.write_text(str(os.getpid()))
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        with contextlib.suppress(Exception):
            await validator.stop()
    return 0
