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
from typing import TYPE_CHECKING, Any

from devnet.faults.history import BlockView, ChainViews, Op, QkdSample, StatusSample
from devnet.faults.history import link_counters_from_qkd as parse_qkd
from devnet.faults.load import Accounts
from devnet.faults.scenario import REFILL_KEYS
from devnet.network import NetworkPlan
from devnet.simnet import outside
from devnet.simnet.disk import SimDisk
from devnet.simnet.forwards import Forwards, Life
from devnet.simnet.loop import OWNER, VirtualLoop
from devnet.simnet.net import LinkFaults, SimNet
from devnet.simnet.schedule import Action
from devnet.simnet.watch import Follows, follow
from node.runtime import Validator
from node.wire import OriginBatch
from qchain.config import NodeConfig
from qchain.errors import MempoolFull, QChainError
from qchain.qkd.clock import SystemClock
from qchain.qkd.keymanager import link_name
from qchain.qkd.kms import set_stored
from qchain.qkd.simsource import LocalKeySource, full_mesh
from qchain.store import schema
from qchain.types import CommitCertificate, Transaction

if TYPE_CHECKING:
    from devnet.simnet.client import Client

log = logging.getLogger("qchain.simnet")

KEY_RATE_BPS = 2_000_000
"""Key generation per link: far above what a few validators spend, so only the schedule's
outages starve a link."""
TWIN_OWNER = 1000
"""A twin's owner number (its tasks, timers and connections) is its site's plus this,
and so is its listening port (on its site's host)."""
SAMPLE_EVERY_S = 0.5


@dataclass
class Record:
    """What the checkers read, gathered during the run."""

    ops: list[Op] = field(default_factory=list)
    statuses: list[StatusSample] = field(default_factory=list)
    qkd: list[QkdSample] = field(default_factory=list)
    accepted: set[tuple[object, ...]] = field(default_factory=set)
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
        self.followers: dict[int, asyncio.Task[None]] = {}
        """node -> the task of the partner following its events in its current life."""
        self.flood_accounts: Accounts | None = None
        """The flooding account's keys and next nonce (`devnet.simnet.outside.flood`)."""
        self.attacks: list[asyncio.Task[None]] = []
        """The outside attacks of the run (`devnet.simnet.outside.attack`)."""
        self.drained: set[str] = set()
        """Key-manager links a `drain` emptied and no `refill` restored yet."""
        self.twinned: set[str] = set()
        """The SAE ids of nodes that have had a twin in this run."""
        self.twins: dict[int, tuple[Validator, SimDisk]] = {}
        """node -> its running twin and the twin's disk (`twin`)."""

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
        self.followers[i] = self.loop.create_task(
            follow(self.names[i], v, self.loop, self.follows), context=ctx
        )
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
        never repeat, across restarts too (the no-frame-accepted-twice check). From a
        sender that has had a twin, two processes drew numbers from one lease (copied
        with the store), so one number may carry two different frames: for such a
        sender the frame's bytes are part of the record, and only the same frame
        accepted twice (a replay) counts."""
        endpoint = v.links.endpoint
        if endpoint is None:
            return
        receiver = endpoint.receiver
        original = receiver.open
        rec = self.rec

        async def open_(frame: bytes) -> Any:
            opened = await original(frame)
            key: tuple[object, ...] = (i, opened.sender, opened.seq)
            if opened.sender in self.twinned:
                key += (hashlib.sha256(frame).digest(),)
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
        height = self._down(i, v)
        self.net.crash(i)
        self.disks[i], unsynced, kept = self.disks[i].crashed()
        killed = self.loop.kill(i)
        self.trace("crash", i, how, height, killed, unsynced, kept)

    def _down(self, i: int, v: Validator) -> int:
        """What the world notes of node i going down (a crash or a stop); its height."""
        self._carry_counters(i, v)
        self.rec.before_crash[i] = self.rec.reported.pop(i, 0)
        self.rec.crashed_at[self.names[i]] = self.loop.time()
        self.nodes[i] = None
        self.forwards.crashed(i)
        return v.chain.height()

    # --- twins ------------------------------------------------------------------------

    async def twin(self, i: int) -> None:
        """The fault kit's `byzantine NODE twin` (`devnet.faults.twins`): node i is
        stopped cleanly (its own stop; its disk keeps every batch it took), its disk is
        copied, it is started again, and the copy runs as a second validator with i's
        configuration, key, SAE identity and sequence-number lease, listening on a port
        of its own. Peers dial the genesis address, so only the original receives their
        frames; the twin dials every peer under the same hello and takes its keys from
        the same key manager. A node down at the time stays down (its disk is copied
        as it is). A site not in the network (a spare not yet joined, a removed
        validator) gets no twin: the kit twins a node from its directory."""
        if i in self.absent:
            self.trace("no-twin", i)
            return
        await self.untwin(i)
        self.byzantine.add(i)
        self.twinned.add(self.plan.nodes[i].sae_id)
        v = self.nodes[i]
        disk = self.disks[i]
        armed = disk.crash_after, disk.on_crash
        if v is not None:
            height = self._down(i, v)  # no more client requests: the API goes first
            # Its follower goes with the API: a stream that a stopping node ends is not
            # a drop (`devnet.simnet.watch`).
            self.followers[i].cancel()
            await self.as_node(i, v.stop)
            self.net.crash(i)
            self.trace("stop", i, height, self.loop.kill(i))
        self.disks[i], copy = disk.stopped()
        self.disks[i].crash_after, self.disks[i].on_crash = armed
        if v is not None:
            await self.start(i)
        owner = TWIN_OWNER + i
        self.net.sites[owner] = i
        cfg = self.configs[i]
        host, port = cfg.p2p.listen.rsplit(":", 1)
        listen = f"{host}:{int(port) + TWIN_OWNER}"
        twin = Validator(
            dataclasses.replace(cfg, p2p=dataclasses.replace(cfg.p2p, listen=listen)),
            key_source=LocalKeySource(self.manager, self.plan.nodes[i].sae_id),
            store=copy,
            net=self.net,
            serve_api=False,
        )
        await self.as_node(owner, twin.start)
        self.twins[i] = (twin, copy)
        self.trace("twin", i, twin.chain.height())

    async def untwin(self, i: int) -> None:
        """Stop node i's twin (its own stop), if one runs; its disk goes."""
        entry = self.twins.pop(i, None)
        if entry is None:
            return
        twin, disk = entry
        owner = TWIN_OWNER + i
        height = twin.chain.height()
        await self.as_node(owner, twin.stop)
        self.net.crash(owner)
        self.trace("untwin", i, height, self.loop.kill(owner))
        disk.release()

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
        for task in self.attacks:
            task.cancel()
        await asyncio.gather(*self.attacks, return_exceptions=True)
        for i in sorted(self.twins):
            await self.untwin(i)
        for i, v in enumerate(self.nodes):
            if v is not None:
                await self.as_node(i, v.stop)

    # --- the schedule -------------------------------------------------------------------

    def resolve(self, x: int | str) -> int:
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
            self.net.links[(self.resolve(args["src"]), self.resolve(args["dst"]))] = LinkFaults(
                **faults
            )
        elif a.kind in ("partition", "unpartition"):
            node = self.resolve(args["node"])
            for (x, y), f in sorted(self.net.links.items()):
                if node in (x, y):
                    f.partitioned = a.kind == "partition"
        elif a.kind in ("cut", "uncut"):
            self._cut(args, a.kind == "cut")
        elif a.kind == "crash":
            self.crash(self.resolve(args["node"]))
        elif a.kind == "crash-at-persist":
            node = self.resolve(args["node"])
            disk = self.disks[node]
            disk.crash_after = args["writes"]
            disk.on_crash = lambda: self.crash(node, "at-persist")
        elif a.kind == "restart":
            node = self.resolve(args["node"])
            self.disks[node].crash_after = None
            if self.nodes[node] is None and node not in self.absent:
                await self.start(node)
        elif a.kind in ("keys-off", "keys-on"):
            self._outage(saes[args["a"]], saes[args["b"]], a.kind == "keys-off")
        elif a.kind == "byzantine":
            node = self.resolve(args["node"])
            self.byzantine.add(node)
            v = self.nodes[node]
            if v is not None:
                v.set_byzantine(args["mode"])
        elif a.kind == "twin":
            await self.twin(self.resolve(args["node"]))
        elif a.kind == "untwin":
            await self.untwin(self.resolve(args["node"]))
        elif a.kind == "attack":
            outside.attack(self, args)
        elif a.kind == "flood":
            outside.flood(self, args["count"])
        elif a.kind in ("drain", "refill"):
            rate, stored = (args["rate"], 0) if a.kind == "drain" else (None, args["count"])
            for x, y in args["pairs"]:
                self._drain(saes[x], saes[y], rate, stored)
        elif a.kind == "burst":
            assert self.client is not None
            self.client.start_burst(args["rate"], args["seconds"], args["txs"])
        elif a.kind == "heal":
            await self.heal()

    def _cut(self, args: dict[str, Any], cut: bool) -> None:
        """Partition `nodes` from `from` (every other node when None), both ways."""
        nodes = {self.resolve(x) for x in args["nodes"]}
        others = None if args.get("from") is None else {self.resolve(x) for x in args["from"]}
        for (x, y), f in sorted(self.net.links.items()):
            for a, b in ((x, y), (y, x)):
                if a in nodes and b not in nodes and (others is None or b in others):
                    f.partitioned = cut

    async def heal(self) -> None:
        for i in sorted(self.twins):
            await self.untwin(i)
        for i in sorted(self.byzantine):
            v = self.nodes[i]
            if v is not None:
                v.set_byzantine(None)
        for key in sorted(self.net.links):
            self.net.links[key] = LinkFaults()
        for name in self.manager.link_names():
            a, b = name.split("~", 1)
            self._outage(a, b, False)
            if name in self.drained:
                self._drain(a, b, None, REFILL_KEYS)
        for i in range(self.n):
            self.disks[i].crash_after = None
            if self.nodes[i] is None and i not in self.absent:
                await self.start(i)

    def _drain(self, a: str, b: str, rate: int | None, stored: int) -> None:
        """Set the keys stored on the pair a~b and its rate (None: the run's own); the
        pair is refilled at the heal if it is still drained then."""
        if link_name(a, b) not in self.manager.link_names():
            return
        self.manager.set_rate(a, b, KEY_RATE_BPS if rate is None else rate)
        set_stored(self.manager, a, b, stored)
        if rate is None:
            self.drained.discard(link_name(a, b))
        else:
            self.drained.add(link_name(a, b))

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
