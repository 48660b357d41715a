"""One simulated network: the validators, their disks and key manager, the simulated
links, the client workload, and what the fault kit's checkers read at the end."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from devnet.faults.history import BlockView, ChainViews, Op, QkdSample, StatusSample
from devnet.faults.history import link_counters_from_qkd as parse_qkd
from devnet.network import NetworkPlan, account_key
from devnet.simnet.disk import SimDisk
from devnet.simnet.forwards import Forwards, Life
from devnet.simnet.loop import OWNER, VirtualLoop
from devnet.simnet.net import LinkFaults, SimNet
from devnet.simnet.schedule import Action
from devnet.simnet.watch import Follows, follow
from devnet.testing import anchor_tx
from node.runtime import Validator
from node.wire import OriginBatch
from qchain.config import NodeConfig
from qchain.errors import MempoolFull, QChainError
from qchain.qkd.clock import SystemClock
from qchain.qkd.keymanager import link_name
from qchain.qkd.simsource import LocalKeySource, full_mesh
from qchain.store import schema
from qchain.types import CommitCertificate, Transaction

log = logging.getLogger("qchain.simnet")

KEY_RATE_BPS = 2_000_000
"""Key generation per link: far above what a few validators spend, so only the schedule's
outages starve a link."""
SAMPLE_EVERY_S = 0.5
RESUBMIT_AFTER_S = 1.0
ACKED_PATIENCE_S = 6.0
"""How long a patient client waits for an acknowledged transaction before it sends it
again, while the node that acknowledged it has not crashed: an acknowledged transaction
is the node's to commit, and the node sends it again to every validator after its
inclusion timeout (5 s in the test profile)."""


@dataclass
class Record:
    """What the checkers read, gathered during the run."""

    ops: list[Op] = field(default_factory=list)
    statuses: list[StatusSample] = field(default_factory=list)
    qkd: list[QkdSample] = field(default_factory=list)
    accepted: set[tuple[int, str, int]] = field(default_factory=set)
    accepted_twice: list[str] = field(default_factory=list)
    alerts: dict[str, dict[str, int]] = field(default_factory=dict)
    carried: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    """node -> peer -> link counters of the node's earlier lives (a restart zeroes them)."""
    errors: list[str] = field(default_factory=list)
    reported: dict[int, int] = field(default_factory=dict)
    """node -> the highest height it reported (its status) in its current life."""
    before_crash: dict[int, int] = field(default_factory=dict)
    """node -> the highest height it reported before its last crash."""
    crashed_at: dict[str, float] = field(default_factory=dict)
    """node name -> the time of its last crash."""
    regressions: list[str] = field(default_factory=list)
    """Restarts below a height the node had reported (the durable-commits check)."""


class World:
    def __init__(
        self,
        loop: VirtualLoop,
        plan: NetworkPlan,
        configs: list[NodeConfig],
        seed: int,
        trace: Callable[..., None],
        disks: list[SimDisk],
        genesis_n: int | None = None,
    ) -> None:
        """genesis_n: the genesis's validators, the first sites of `plan` (default all);
        the others are spare sites, not started until they join (`join`)."""
        self.loop = loop
        self.plan = plan
        self.configs = configs
        self.n = len(configs)
        self.seed = seed
        self.trace = trace
        self.clock = loop.virtual_clock
        self.net = SimNet(loop, self.clock.rng("net"), trace, self.n)
        self.genesis_n = self.n if genesis_n is None else genesis_n
        self.manager = full_mesh(
            [p.sae_id for p in plan.nodes[: self.genesis_n]],
            SystemClock(),
            seed=f"simnet-{seed}".encode(),
            bits_per_second=KEY_RATE_BPS,
            initial_key_count=2000,
        )
        self.disks = disks
        self.nodes: list[Validator | None] = [None] * self.n
        self.rec = Record()
        self.follows = Follows()
        self.forwards = Forwards()
        self.client: Client | None = None
        self.byzantine: set[int] = set()
        """Nodes a schedule made hostile at some point of the run."""
        self.names = [p.name for p in plan.nodes]
        self.absent: set[int] = set(range(self.genesis_n, self.n))
        """Sites not (or no longer) in the network: spares not joined yet, removed
        validators stopped for good. No restart or heal starts them."""
        self.retired: dict[str, tuple[dict[int, BlockView], dict[int, tuple[int, ...]]]] = {}
        """A removed node's blocks and certificate signers as it had them when it stopped."""
        self.sae_to_node = {p.sae_id: p.name for p in plan.nodes}

    # --- nodes ------------------------------------------------------------------------

    async def as_node(self, i: int, work: Callable[[], Awaitable[Any]]) -> Any:
        """Run `work` as node i's code: what it creates belongs to node i."""
        ctx = contextvars.copy_context()
        ctx.run(OWNER.set, i)
        return await self.loop.create_task(_call(work), context=ctx)

    async def start(self, i: int) -> None:
        cfg = self.configs[i]
        v = Validator(
            cfg,
            key_source=LocalKeySource(self.manager, self.plan.nodes[i].sae_id),
            store=self.disks[i],
            net=self.net,
            serve_api=False,
        )
        self._watch_forwards(i, v)
        await self.as_node(i, v.start)
        self._watch_frames(i, v)
        # A partner following the node's events: its task is the node's, so the
        # node's crash ends it.
        ctx = contextvars.copy_context()
        ctx.run(OWNER.set, i)
        self.loop.create_task(follow(self.names[i], v, self.loop, self.follows), context=ctx)
        self.nodes[i] = v
        height = v.chain.height()
        self.trace("start", i, height)
        before = self.rec.before_crash.pop(i, 0)
        if height < before:
            self.rec.regressions.append(
                f"{self.names[i]} restarted at height {height} after reporting {before}"
            )

    def _watch_frames(self, i: int, v: Validator) -> None:
        """Record every frame node i accepts: (receiver, sender, sequence number) must
        never repeat, across restarts too (the no-frame-accepted-twice check)."""
        endpoint = v.links.endpoint
        if endpoint is None:
            return
        receiver = endpoint.receiver
        original = receiver.open
        rec = self.rec

        async def open_(frame: bytes) -> Any:
            opened = await original(frame)
            key = (i, opened.sender, opened.seq)
            if key in rec.accepted:
                rec.accepted_twice.append(f"{self.names[i]} accepted seq {opened.seq} twice")
            rec.accepted.add(key)
            return opened

        receiver.open = open_  # type: ignore[method-assign]

    def _watch_forwards(self, i: int, v: Validator) -> None:
        """Record what node i receives in its honest peers' batches and what its
        admission decides of each (the forwards-taken check, `devnet.simnet.forwards`)."""
        life = self.forwards.start(i, self.names[i])
        handlers = v.driver.handlers
        assert handlers is not None
        on_batch = handlers.batch
        admit = v.admission.admit
        loop = self.loop

        def batch(sender: int, b: OriginBatch) -> None:
            if sender not in self.byzantine and i not in self.byzantine and b.origin == sender:
                life.receive(b.txs, loop.time())
            on_batch(sender, b)

        def admit_(tx: Transaction, *, local: bool = False) -> bool:
            if local:
                return admit(tx, local=True)
            try:
                new = admit(tx)
            except MempoolFull as e:
                life.decide(tx.encoded, loop.time(), e.reason, ready=_ready(v, tx))
                raise
            except QChainError:
                life.decide(tx.encoded, loop.time())
                raise
            life.decide(tx.encoded, loop.time())
            return new

        v.driver.bind(dataclasses.replace(handlers, batch=batch))
        v.admission.admit = admit_  # type: ignore[method-assign]

    def forwards_queued(self) -> dict[str, list[bytes]]:
        """node -> the peers' transactions it received and has not yet admitted."""
        return {
            self.names[i]: [entry[1] for entry in v.forwarder._admit_queue]
            for i, v in enumerate(self.nodes)
            if v is not None
        }

    def live_forwards(self) -> list[Life]:
        return [self.forwards.lives[i] for i, v in enumerate(self.nodes) if v is not None]

    def crash(self, i: int, how: str = "timed") -> None:
        v = self.nodes[i]
        self.disks[i].crash_after = None
        if v is None:
            return
        self._carry_counters(i, v)
        height = v.chain.height()
        self.rec.before_crash[i] = self.rec.reported.pop(i, 0)
        self.rec.crashed_at[self.names[i]] = self.loop.time()
        self.nodes[i] = None
        self.forwards.crashed(i)
        self.net.crash(i)
        self.disks[i], unsynced, kept = self.disks[i].crashed()
        killed = self.loop.kill(i)
        self.trace("crash", i, how, height, killed, unsynced, kept)

    async def join(self, i: int) -> None:
        """A spare site starts (from an empty disk)."""
        self.absent.discard(i)
        await self.start(i)

    def retire(self, i: int) -> None:
        """A removed validator stops for good; what its chain holds is kept."""
        v = self.nodes[i]
        if v is not None:
            self.retired[self.names[i]] = (_blocks(v), _signers(v))
            self.crash(i, "retired")
        self.absent.add(i)

    def _carry_counters(self, i: int, v: Validator) -> None:
        name = self.names[i]
        links = parse_qkd(dict(v.qkd_status()), self.sae_to_node)
        carried = self.rec.carried.setdefault(name, {})
        for peer, lc in links.items():
            c = carried.setdefault(peer, {"send": 0, "recv": 0})
            c["send"] += lc.send_frames
            c["recv"] += lc.receive_frames

    async def stop_all(self) -> None:
        self.follows.stopping = True
        for i, v in enumerate(self.nodes):
            if v is not None:
                await self.as_node(i, v.stop)

    # --- the schedule -------------------------------------------------------------------

    def _node(self, x: int | str) -> int:
        """A node index, or the current leader as the first node up sees it."""
        if isinstance(x, int):
            return x
        for v in self.nodes:
            if v is not None:
                return v.current_leader() or 0
        return 0

    async def apply(self, a: Action) -> None:
        self.trace("action", a.kind, sorted(a.args.items()))
        saes = [p.sae_id for p in self.plan.nodes]
        args = a.args
        if a.kind == "link":
            faults = {k: v for k, v in args.items() if k not in ("src", "dst")}
            self.net.links[(self._node(args["src"]), self._node(args["dst"]))] = LinkFaults(
                **faults
            )
        elif a.kind in ("partition", "unpartition"):
            node = self._node(args["node"])
            for (x, y), f in sorted(self.net.links.items()):
                if node in (x, y):
                    f.partitioned = a.kind == "partition"
        elif a.kind in ("cut", "uncut"):
            self._cut(args, a.kind == "cut")
        elif a.kind == "crash":
            self.crash(self._node(args["node"]))
        elif a.kind == "crash-at-persist":
            node = self._node(args["node"])
            disk = self.disks[node]
            disk.crash_after = args["writes"]
            disk.on_crash = lambda: self.crash(node, "at-persist")
        elif a.kind == "restart":
            node = self._node(args["node"])
            self.disks[node].crash_after = None
            if self.nodes[node] is None and node not in self.absent:
                await self.start(node)
        elif a.kind in ("keys-off", "keys-on"):
            self._outage(saes[args["a"]], saes[args["b"]], a.kind == "keys-off")
        elif a.kind == "byzantine":
            node = self._node(args["node"])
            self.byzantine.add(node)
            v = self.nodes[node]
            if v is not None:
                v.set_byzantine(args["mode"])
        elif a.kind == "burst":
            assert self.client is not None
            self.client.start_burst(args["rate"], args["seconds"], args["txs"])
        elif a.kind == "heal":
            await self.heal()

    def _cut(self, args: dict[str, Any], cut: bool) -> None:
        """Partition `nodes` from `from` (every other node when None), both ways."""
        nodes = {self._node(x) for x in args["nodes"]}
        others = None if args.get("from") is None else {self._node(x) for x in args["from"]}
        for (x, y), f in sorted(self.net.links.items()):
            for a, b in ((x, y), (y, x)):
                if a in nodes and b not in nodes and (others is None or b in others):
                    f.partitioned = cut

    async def heal(self) -> None:
        for i in sorted(self.byzantine):
            v = self.nodes[i]
            if v is not None:
                v.set_byzantine(None)
        for key in sorted(self.net.links):
            self.net.links[key] = LinkFaults()
        for name in self.manager.link_names():
            a, b = name.split("~", 1)
            self._outage(a, b, False)
        for i in range(self.n):
            self.disks[i].crash_after = None
            if self.nodes[i] is None and i not in self.absent:
                await self.start(i)

    def _outage(self, a: str, b: str, active: bool) -> None:
        """Cut or restore the keys of the pair a~b, if the key manager holds it (a
        joiner's pairs exist from its approval, a removed node's until it stops)."""
        if link_name(a, b) in self.manager.link_names():
            self.manager.set_outage(a, b, active)

    # --- observation ------------------------------------------------------------------

    def sample(self) -> None:
        t = round(self.loop.time(), 3)
        for i, v in enumerate(self.nodes):
            name = self.names[i]
            if v is None:
                self.rec.statuses.append(StatusSample(t, name, None))
                continue
            st = v.status()
            alerts = {str(k): int(x) for k, x in (st.get("alerts") or {}).items()}
            seen = self.rec.alerts.setdefault(name, {})
            for k, x in alerts.items():
                seen[k] = max(seen.get(k, 0), x)
            height = v.chain.height()
            self.rec.reported[i] = max(self.rec.reported.get(i, 0), height)
            self.rec.statuses.append(StatusSample(t, name, height, alerts))

    def chains(self, *, retired: bool = False) -> ChainViews:
        """Each node's blocks (a node down: none); with `retired`, a removed node's as it
        had them when it stopped."""
        out: ChainViews = {}
        for i, v in enumerate(self.nodes):
            name = self.names[i]
            if retired and name in self.retired:
                out[name] = self.retired[name][0]
            elif i not in self.absent or v is not None:
                out[name] = {} if v is None else _blocks(v)
        return out

    def signers(self) -> dict[str, dict[int, tuple[int, ...]]]:
        """node -> height -> the ids that signed its certificate of that height."""
        out = {name: signers for name, (_, signers) in self.retired.items()}
        for i, v in enumerate(self.nodes):
            if v is not None:
                out[self.names[i]] = _signers(v)
        return out

    def qkd_now(self) -> list[QkdSample]:
        """Each node's link counters, with its earlier lives' counters added."""
        t = round(self.loop.time(), 3)
        out = []
        for i, v in enumerate(self.nodes):
            if v is None:
                continue
            name = self.names[i]
            links = parse_qkd(dict(v.qkd_status()), self.sae_to_node)
            carried = self.rec.carried.get(name, {})
            for peer, lc in links.items():
                c = carried.get(peer, {"send": 0, "recv": 0})
                links[peer] = type(lc)(
                    **{
                        **lc.__dict__,
                        "send_frames": lc.send_frames + c["send"],
                        "receive_frames": lc.receive_frames + c["recv"],
                    }
                )
            out.append(QkdSample(t, name, links))
        return out

    def kms_now(self) -> dict[str, dict[str, int]]:
        out = {}
        for name in self.manager.link_names():
            a, b = name.split("~")
            report = self.manager.link_report(a, b)
            counters = {k: int(v) for k, v in report["counters"].items()}  # type: ignore[attr-defined]
            counters["stored_key_count"] = int(report["stored_key_count"])  # type: ignore[call-overload]
            out[name] = counters
        return out


def _blocks(v: Validator) -> dict[int, BlockView]:
    blocks: dict[int, BlockView] = {}
    for h in range(1, v.chain.height() + 1):
        b = v.chain.block(h)
        if b is not None:
            blocks[h] = BlockView(
                h, b.hash.hex(), b.header.app_hash.hex(), tuple(tx.hash.hex() for tx in b.txs)
            )
    return blocks


def _signers(v: Validator) -> dict[int, tuple[int, ...]]:
    """The signer ids of each certificate v holds, read from its store as written (not
    through the node's own checks, which judge by the node's sets)."""
    out = {}
    for h in range(1, v.chain.height() + 1):
        raw = v.store.get(schema.cert_key(h))
        if raw is not None:
            out[h] = tuple(s.validator for s in CommitCertificate.decode(raw).signatures)
    return out


def _ready(v: Validator, tx: Transaction) -> bool:
    """Whether a block of v could take tx now: its sender's next nonce after the run v
    holds pending (not waiting behind a nonce gap, `node.mempool`)."""
    account = v.mempool.accounts.account(tx.sender)
    return account is not None and tx.nonce == v.mempool.next_free_nonce(tx.sender, account.nonce)


async def _call(work: Callable[[], Awaitable[Any]]) -> Any:
    return await work()


CLIENT_MODES = ("careful", "eager", "patient")
"""How the client behaves: `careful` holds a sender's later nonces in a burst while one of
its transactions is refused (a well-behaved client under load); `eager` goes on sending
them, so they reach the pools behind the refused one's gap; `patient` is careful, and
trusts an acknowledgement: it sends an acknowledged transaction again only after
`ACKED_PATIENCE_S` (or after `RESUBMIT_AFTER_S` when the node that acknowledged it has
crashed since), so that what the network loses must be found again by the nodes."""


class Client:
    """The seeded workload: notary anchors from the dev partner accounts, each to a node
    that is up; a transaction not committed after `RESUBMIT_AFTER_S` is sent again (the
    same bytes: the hash is the idempotency key) to another node; bursts on demand."""

    def __init__(self, world: World, stop_at: float, mode: str = "careful") -> None:
        self.world = world
        self.mode = mode
        self.rng = world.clock.rng("client")
        self.stop_at = stop_at
        self.keys = [account_key(r, "ed25519") for r in ("partner1", "partner2")]
        self.nonces = [0, 0]
        self.txs: dict[int, Any] = {}
        self.last_sent: dict[int, float] = {}
        self.tasks: list[asyncio.Task[None]] = []
        """Bursts under way."""
        self.refused: list[set[int]] = [set() for _ in self.keys]
        """Per sender, its transactions refused and not yet accepted."""

    def _up(self) -> list[int]:
        return [i for i, v in enumerate(self.world.nodes) if v is not None]

    async def run(self) -> None:
        loop = self.world.loop
        while True:
            await asyncio.sleep(self.rng.uniform(0.05, 0.4))
            if loop.time() < self.stop_at:
                self._new()
            self._poll()

    def start_burst(self, rate: int, seconds: float, peak: int) -> None:
        self.tasks.append(self.world.loop.create_task(self._burst(rate, seconds, peak)))

    async def _burst(self, rate: int, seconds: float, peak: int) -> None:
        """`rate` new transactions a second for `seconds`, then `peak` at once (none
        after the workload's end)."""
        loop = self.world.loop
        end = loop.time() + seconds
        while loop.time() < min(end, self.stop_at):
            self._send_new(max(1, rate // 10))
            await asyncio.sleep(0.1)
        while loop.time() < self.stop_at and peak > 0:
            peak -= self._send_new(peak)
            await asyncio.sleep(0.1)

    def _send_new(self, count: int) -> int:
        """Up to `count` new transactions. A careful client sends as a well-behaved
        client does under load: while one of a sender's transactions is refused (waiting
        to be sent again), its later nonces wait too (they could only queue behind the
        gap). An eager one sends them regardless. Returns how many were sent."""
        sent = 0
        while sent < count:
            k = len(self.world.rec.ops) % len(self.keys)
            if self.mode != "eager" and self.refused[k]:
                k = 1 - k
                if self.refused[k]:
                    break
            self._new(k)
            sent += 1
        return sent

    def _new(self, sender: int | None = None) -> None:
        w = self.world
        k = len(w.rec.ops) % len(self.keys) if sender is None else sender
        nonce = self.nonces[k]
        self.nonces[k] += 1
        digest = hashlib.sha256(f"{w.seed}/{k}/{nonce}".encode()).digest()
        v0 = next(v for v in w.nodes if v is not None)
        tx = anchor_tx(self.keys[k], v0.chain_id, nonce, digest)
        op = Op(len(w.rec.ops), "anchor", f"partner{k + 1}", nonce, tx.hash.hex(), w.loop.time())
        w.rec.ops.append(op)
        self.txs[op.op_id] = tx
        self._send(op)

    def _send(self, op: Op) -> None:
        w = self.world
        up = self._up()
        others = [i for i in up if w.names[i] != op.node]
        if not up:
            return
        # A retry goes to another node when one is up (as a client fails over).
        i = self.rng.choice(others or up)
        v = w.nodes[i]
        assert v is not None
        op.attempts += 1
        op.node = w.names[i]
        self.last_sent[op.op_id] = w.loop.time()
        try:
            v.submit_tx(self.txs[op.op_id])
        except QChainError as e:
            op.error = e.code
            self.refused[self._sender(op)].add(op.op_id)
            w.trace("refused", op.op_id, i, e.code)
            return
        self.refused[self._sender(op)].discard(op.op_id)
        if op.acked_at is None:
            op.acked_at = round(w.loop.time(), 3)
        w.trace("submitted", op.op_id, i)

    def _sender(self, op: Op) -> int:
        return int(op.sender.removeprefix("partner")) - 1

    def _poll(self) -> None:
        w = self.world
        now = w.loop.time()
        for op in w.rec.ops:
            if op.height is not None:
                continue
            for v in w.nodes:
                st = v.tx_status(bytes.fromhex(op.tx_hash)) if v is not None else None
                if st is not None and st.state == "committed":
                    self.refused[self._sender(op)].discard(op.op_id)
                    op.height = st.height
                    op.committed_at = round(now, 3)
                    break
            else:
                if now - self.last_sent.get(op.op_id, 0.0) > self._patience(op):
                    self._send(op)

    def _patience(self, op: Op) -> float:
        """How long after its last sending a transaction not yet committed is sent again:
        `RESUBMIT_AFTER_S`; for a patient client, `ACKED_PATIENCE_S` when a node
        acknowledged that sending and has not crashed since."""
        if self.mode != "patient" or op.op_id in self.refused[self._sender(op)]:
            return RESUBMIT_AFTER_S
        if self.world.rec.crashed_at.get(op.node, -1.0) >= self.last_sent[op.op_id]:
            return RESUBMIT_AFTER_S
        return ACKED_PATIENCE_S
