"""The adversarial scenarios S1-S19 of CONSENSUS.md §8 as simulator configurations.

`build(name, n, seed, heights)` returns the `SimConfig` of one run; every random choice of
the scenario (which variant, which node, which times) comes from the seed. S3 and S17 are
scripted message-level attacks defined for n = 4; they run at n = 4 whatever n is asked.
A faulty budget of f is respected everywhere liveness is expected: Byzantine identities,
twins, rolled-back nodes and permanently crashed nodes all count against f.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import replace

from consensus.events import Action, BuildBlock, Send
from consensus.messages import (
    Block,
    BlockResp,
    Done,
    Message,
    Propose,
    Report,
    Summary,
    Vote,
    block_hash,
)
from consensus.params import Params
from consensus.sim.app import GENESIS_HASH, INVALID, app_valid
from consensus.sim.byzantine import (
    Censor,
    Chaos,
    EquivocatingLeader,
    Flooder,
    Strategy,
    WithholdBodies,
    Withholding,
    WrongSync,
)
from consensus.sim.world import (
    MS,
    CrashSpec,
    EngineFactory,
    Partition,
    RandomCrashes,
    Rollback,
    Sim,
    SimConfig,
    SimNode,
)

Builder = Callable[[int, int, int], SimConfig]


def _f(n: int) -> int:
    return (n - 1) // 3


def _sends(pred: Callable[[Message], bool]) -> Callable[[list[Action]], bool]:
    return lambda acts: any(isinstance(a, Send) and pred(a.msg) for a in acts)


def s1(n: int, seed: int, heights: int) -> SimConfig:
    """Stable leader crashes: before proposing, mid-broadcast, or after voting 4."""
    rng = random.Random(seed)
    variant = seed % 3
    if variant == 0:
        spec = CrashSpec(0, at_us=0, down_us=None, dead=True)
    elif variant == 1:
        spec = CrashSpec(
            0,
            at_us=0,
            down_us=None,
            point="mid_send",
            trigger=_sends(lambda m: isinstance(m, Propose)),
            dead=True,
        )
    else:
        spec = CrashSpec(
            0,
            at_us=0,
            down_us=None,
            point="mid_send",
            trigger=_sends(lambda m: isinstance(m, Vote) and m.phase == 4),
            dead=True,
        )
    crashes = [spec]
    if _f(n) >= 2:
        crashes.append(
            CrashSpec(rng.randrange(1, n), at_us=rng.randrange(0, 200) * MS, down_us=None)
        )
    return SimConfig(n=n, seed=seed, heights=heights, crashes=tuple(crashes))


def s2(n: int, seed: int, heights: int) -> SimConfig:
    """Equivocating leader in round 0, or in round 1 after an isolated round-0 leader."""
    if seed % 2 == 0:
        return SimConfig(n=n, seed=seed, heights=heights, byzantine={0: EquivocatingLeader()})
    part = Partition(0, 300 * MS, (frozenset({0}), frozenset(range(1, n))))
    return SimConfig(
        n=n,
        seed=seed,
        heights=heights,
        byzantine={1: EquivocatingLeader()},
        partitions=(part,),
        gst_us=300 * MS,
    )


class ClaimCheckAttacker(Strategy):
    """S3's Byzantine node 3: helps decide A at node 0 only in round 0, then as leader of
    round 3 proposes a new block B and reports a phase-1 vote for B at round 1."""

    tick_us = 1000

    def __init__(self, chain_id: str) -> None:
        self.b_block = Block(1, GENESIS_HASH, 3, 3, b"forged-B")
        self.b = block_hash(self.b_block)
        self.cid = chain_id
        self.sent = False

    def outgoing(self, sim: Sim, nd: SimNode, to: int, m: Message) -> list[Message]:
        if getattr(m, "height", 0) != 1:
            return [m]
        if isinstance(m, Vote):
            if m.round == 0 and m.phase == 4:
                return [m] if to == 0 else []
            return [m] if m.round < 3 else []
        if isinstance(m, Done | Propose):
            return []
        if isinstance(m, Report) and m.round == 3:
            return []
        return [m]

    def tick(self, sim: Sim, nd: SimNode) -> list[tuple[int, Message]]:
        inst = nd.engine.inst.get(1)
        if self.sent or inst is None or inst.rec.round != 3:
            return []
        self.sent = True
        s = (Summary(1, self.b, None), Summary(), Summary(), Summary())
        rep = Report(self.cid, 1, 3, s)
        prop = Propose(self.cid, 1, 3, self.b_block)
        out: list[tuple[int, Message]] = []
        for to in range(3):
            out += [(to, rep), (to, prop), (to, Vote(self.cid, 1, 3, 1, self.b))]
        return out


def _s3_drop(sim: Sim, src: int, to: int, m: Message) -> bool:
    if getattr(m, "height", 0) != 1:
        return False
    if isinstance(m, Vote) and m.round == 0 and m.phase == 4 and src != 3:
        return to != 0
    if isinstance(m, Done):
        return True
    if isinstance(m, Propose) and m.round == 1:
        return to != 1
    return isinstance(m, Propose) and m.round == 2


def s3(n: int, seed: int, heights: int) -> SimConfig:
    """Claim-check attack, scripted at n = 4 (see `ClaimCheckAttacker`)."""
    params = Params(n=4)
    return SimConfig(
        n=4,
        seed=seed,
        heights=max(heights, 1),
        params=params,
        byzantine={3: ClaimCheckAttacker(params.chain_id)},
        drop=_s3_drop,
        deadline_us=6000 * MS,
        stable_us=sum(params.timeout_ms(r) for r in range(3)) * MS,
    )


def _byz_ids(rng: random.Random, n: int, k: int) -> list[int]:
    return sorted(rng.sample(range(n), k))


def s4(n: int, seed: int, heights: int) -> SimConfig:
    """Byzantine voters split VOTEs, REPORTs and DONEs and fake their summaries."""
    rng = random.Random(seed)
    byz = {i: Chaos(p=rng.choice((0.3, 0.6, 1.0)), seed=seed + i) for i in _byz_ids(rng, n, _f(n))}
    gst = rng.choice((0, 200 * MS))
    return SimConfig(n=n, seed=seed, heights=heights, byzantine=dict(byz), gst_us=gst, loss=0.1)


def s5(n: int, seed: int, heights: int) -> SimConfig:
    """Withholding: Byzantine VOTE4s and DONEs reach one correct node only."""
    rng = random.Random(seed)
    ids = _byz_ids(rng, n, _f(n))
    target = rng.choice([i for i in range(n) if i not in ids])
    byz: dict[int, Strategy] = {i: Withholding(frozenset({target})) for i in ids}
    return SimConfig(n=n, seed=seed, heights=heights, byzantine=byz)


def s6(n: int, seed: int, heights: int) -> SimConfig:
    """Before GST: random delay, reordering, duplication and loss on every link."""
    rng = random.Random(seed)
    return SimConfig(
        n=n,
        seed=seed,
        heights=heights,
        pre_delay_us=(1 * MS, rng.choice((30, 80, 150)) * MS),
        loss=rng.choice((0.05, 0.2, 0.4)),
        dup=0.1,
        gst_us=rng.randint(200, 800) * MS,
    )


def s7(n: int, seed: int, heights: int) -> SimConfig:
    """Partitions that heal: halves, isolated leader, cut-off minority, flapping links."""
    rng = random.Random(seed)
    variant = seed % 4
    nodes = list(range(n))
    parts: list[Partition] = []
    if variant == 0:
        half = n // 2
        parts.append(Partition(0, 400 * MS, (frozenset(nodes[:half]), frozenset(nodes[half:]))))
        gst = 400 * MS
    elif variant == 1:
        parts.append(Partition(0, 400 * MS, (frozenset({0}), frozenset(nodes[1:]))))
        gst = 400 * MS
    elif variant == 2:
        minority = frozenset(rng.sample(nodes, _f(n)))
        rest = frozenset(nodes) - minority
        parts.append(Partition(0, 1200 * MS, (minority, rest)))
        gst = 1200 * MS
    else:
        t = 0
        while t < 600 * MS:
            cut = frozenset(rng.sample(nodes, rng.randint(1, n // 2)))
            dur = rng.randint(20, 80) * MS
            parts.append(Partition(t, t + dur, (cut, frozenset(nodes) - cut)))
            t += dur
        gst = t
    return SimConfig(n=n, seed=seed, heights=heights, partitions=tuple(parts), gst_us=gst)


def s8(n: int, seed: int, heights: int) -> SimConfig:
    """Crash and restart at every crash point, repeatedly, from durable state only."""
    rng = random.Random(seed)
    until = rng.randint(200, 800) * MS
    rc = RandomCrashes(
        frozenset(range(n)), prob=rng.choice((0.01, 0.03, 0.08)), until_us=until, max_down=_f(n)
    )
    return SimConfig(n=n, seed=seed, heights=heights, random_crashes=rc, gst_us=until)


def s9(n: int, seed: int, heights: int) -> SimConfig:
    """Disk rollback or state loss of one node, declared faulty."""
    rng = random.Random(seed)
    node = rng.randrange(n)
    snap = rng.randint(0, 60) * MS
    at = snap + rng.randint(10, 120) * MS
    rb = Rollback(node, snap, at, wipe=seed % 2 == 0)
    return SimConfig(
        n=n, seed=seed, heights=heights, rollbacks=(rb,), declared_faulty=frozenset({node})
    )


def s10(n: int, seed: int, heights: int) -> SimConfig:
    """Twins: two copies of one identity, as leader or voter, in overlapping partitions."""
    rng = random.Random(seed)
    ident = 0 if seed % 2 == 0 else rng.randrange(1, n)
    others = [i for i in range(n) if i != ident]
    rng.shuffle(others)
    cut = rng.randint(1, len(others) - 1)
    a = frozenset(others[:cut]) | {ident}
    b = frozenset(others[cut - (seed % 3 == 0) :]) | {ident}
    return SimConfig(
        n=n, seed=seed, heights=heights, twins={ident: (a, b)}, twin_keys_cloned=seed % 4 == 1
    )


def s11(n: int, seed: int, heights: int) -> SimConfig:
    """A lagging node far behind, with Byzantine peers answering SYNC with wrong hashes."""
    rng = random.Random(seed)
    lag = n - 1
    byz = {i: WrongSync(seed + i) for i in _byz_ids(rng, n - 1, _f(n))}
    target = max(heights, 12)
    until = 60 * target * MS // 2
    part = Partition(0, until, (frozenset({lag}), frozenset(range(n - 1))))
    return SimConfig(
        n=n, seed=seed, heights=target, byzantine=dict(byz), partitions=(part,), gst_us=until
    )


def s12(n: int, seed: int, heights: int) -> SimConfig:
    """DONE floods for wrong values, huge ABORT levels and future-height floods."""
    rng = random.Random(seed)
    byz = {i: Flooder(seed + i) for i in _byz_ids(rng, n, _f(n))}
    return SimConfig(n=n, seed=seed, heights=heights, byzantine=dict(byz))


class ProposeToFew(Strategy):
    """The round-0 leader of height 1 sends PROPOSE, VOTE1 and VOTE2 only to `targets`,
    then nothing; it also never serves a body."""

    def __init__(self, targets: frozenset[int]) -> None:
        self.targets = targets

    def outgoing(self, sim: Sim, nd: SimNode, to: int, m: Message) -> list[Message]:
        if getattr(m, "height", 0) != 1 or to not in self.targets:
            return []
        if isinstance(m, Propose) and m.round == 0:
            return [m]
        if isinstance(m, Vote) and m.round == 0 and m.phase <= 2:
            return [m]
        return []

    def serve_blocks(
        self, sim: Sim, nd: SimNode, to: int, hashes: Sequence[bytes]
    ) -> BlockResp | None:
        return WithholdBodies().serve_blocks(sim, nd, to, hashes)


def s13(n: int, seed: int, heights: int) -> SimConfig:
    """Body withheld: the leader's block reaches f+1 nodes only; the next leader fetches it."""
    targets = frozenset(range(2, 2 + _f(n) + 1))
    byz: dict[int, Strategy] = {0: ProposeToFew(targets)}
    return SimConfig(n=n, seed=seed, heights=heights, byzantine=byz)


def s14(n: int, seed: int, heights: int) -> SimConfig:
    """Slow leader just under / just over timeout(0), and a WAN latency matrix."""
    rng = random.Random(seed)
    variant = seed % 3
    if variant == 0:
        return SimConfig(n=n, seed=seed, heights=heights, build_delay_us=60 * MS)
    if variant == 1:
        return SimConfig(n=n, seed=seed, heights=heights, build_delay_us=150 * MS)
    wan = {
        (i, j): (lo, lo + 5 * MS)
        for i in range(n)
        for j in range(n)
        if i != j
        for lo in (rng.randint(5, 40) * MS,)
    }
    return SimConfig(n=n, seed=seed, heights=heights, link_delay_us=wan)


def s15(n: int, seed: int, heights: int) -> SimConfig:
    """QKD key pool of one link exhausted (forever), or a node's key manager down a while."""
    rng = random.Random(seed)
    a, b = rng.sample(range(n), 2)
    if seed % 2 == 0:

        def drop(sim: Sim, src: int, to: int, m: Message) -> bool:
            return {src, to} == {a, b}

        return SimConfig(n=n, seed=seed, heights=heights, drop=drop)
    until = rng.randint(100, 500) * MS
    part = Partition(0, until, (frozenset({a}), frozenset(range(n)) - {a}))
    return SimConfig(n=n, seed=seed, heights=heights, partitions=(part,), gst_us=until)


def s16(n: int, seed: int, heights: int) -> SimConfig:
    """Non-deterministic validity: one correct node rejects half of the valid blocks."""
    rng = random.Random(seed)
    node = rng.randrange(n)

    def picky(blk: Block) -> bool:
        return app_valid(blk) and block_hash(blk)[0] % 2 == 0

    return SimConfig(n=n, seed=seed, heights=heights, validity={node: picky})


class TransferAttacker(Strategy):
    """S17's Byzantine node D = 1 (leader of round 1), scripted per CONSENSUS.md §8.

    Round 0: VOTE1 and VOTE2 for w to all, VOTE3 to A only. Round 1: proposes x to A and B,
    sends VOTE1 x to A only, and reports an empty summary. Round 2: VOTE1 w to A only, empty
    summary. From round 3: every node gets the same REPORT with s2 = (r-1, y, prev 1) and
    s4 = (r-1, junk); no other message.

    Timing matters. The attack needs each correct leader of round r >= 3 to hold D's REPORT
    of round r when it has q REPORTs: with the three correct ones alone it can only justify
    w (at r2 = 0), which every correct voter accepts, rule or no rule; with D's REPORT it
    justifies a fresh value through the two ANY_VALUE claims at r2 = 1 (A's honest s2 with
    prev_round 1 and D's fake one), which voters accept only through the two-values rule.
    Sending REPORT(r) when D enters round r loses that race about half of the time (the
    correct REPORTs are sent at the same moment), which is why seeds used to pass clean
    under the mutant. So D sends REPORT(r + 1) halfway through round r (a Byzantine node
    may send any message at any time; the round-r leader has proposed by then, so the early
    REPORT no longer matters for round r), and every correct node holds it on entering r+1.
    """

    tick_us = 1000

    def __init__(self, chain_id: str) -> None:
        self.cid = chain_id
        self.x_block = Block(1, GENESIS_HASH, 1, 1, b"x")
        self.x = block_hash(self.x_block)
        self.junk = b"\x77" * 32
        self.y = b"\x55" * 32
        self.reported: set[int] = set()
        self.sent_x = False
        self.entered: dict[int, int] = {}

    def outgoing(self, sim: Sim, nd: SimNode, to: int, m: Message) -> list[Message]:
        if getattr(m, "height", 0) != 1:
            return [m]
        if isinstance(m, Vote):
            if m.round == 0 and m.phase <= 2:
                return [m]
            if (m.round == 0 and m.phase == 3) or (m.round == 2 and m.phase == 1):
                return [m] if to == 0 else []
            return []
        if isinstance(m, Report) and m.round in (1, 2):
            return [Report(m.chain_id, 1, m.round, (Summary(),) * 4)]
        if isinstance(m, Report | Propose | Done):
            return []
        return [m]

    def _report(self, r: int) -> list[tuple[int, Message]]:
        self.reported.add(r)
        s = (Summary(), Summary(r - 1, self.y, 1), Summary(), Summary(r - 1, self.junk))
        rep = Report(self.cid, 1, r, s)
        return [(to, rep) for to in (0, 2, 3)]

    def tick(self, sim: Sim, nd: SimNode) -> list[tuple[int, Message]]:
        inst = nd.engine.inst.get(1)
        if inst is None:
            return []
        r = inst.rec.round
        entered = self.entered.setdefault(r, sim.now)
        out: list[tuple[int, Message]] = []
        if r == 1 and not self.sent_x:
            self.sent_x = True
            out += [(to, Propose(self.cid, 1, 1, self.x_block)) for to in (0, 3)]
            out.append((0, Vote(self.cid, 1, 1, 1, self.x)))
        if r >= 3 and r not in self.reported:
            out += self._report(r)
        half = sim.params.timeout_ms(r) * MS // 2
        if r >= 2 and r + 1 not in self.reported and sim.now >= entered + half:
            out += self._report(r + 1)
        return out


def _s17_drop(sim: Sim, src: int, to: int, m: Message) -> bool:
    """Nodes: A = 0, D = 1 (Byzantine), C = 2, B = 3; leader(r) = r mod 4."""
    if getattr(m, "height", 0) != 1:
        return False
    if isinstance(m, Propose | Vote) and m.round == 0:
        return to == 2
    return isinstance(m, Propose) and m.round == 2 and to == 3


_S17_DELAYS: dict[tuple[int, int], tuple[int, int]] = {
    **{(0, j): (2 * MS, 2 * MS) for j in (1, 2, 3)},
    (2, 3): (10 * MS, 10 * MS),
    (3, 2): (10 * MS, 10 * MS),
}
"""Adversarial but within the post-GST bound [2, 10] ms: A's frames are fast, B <-> C slow,
so a correct leader B or C holds A's REPORT (and D's early one) before the other correct
REPORT. The first quorum of REPORTs the leader sees then contains A's and D's ANY_VALUE
claims and justifies a fresh value; with A, B and C only it would justify w, which voters
accept without the two-values rule, and the mutant would decide."""


def s17(n: int, seed: int, heights: int) -> SimConfig:
    """Transfer attack, scripted at n = 4 (§8); the script only touches rounds 0-2."""
    params = Params(n=4)
    return SimConfig(
        n=4,
        seed=seed,
        heights=max(heights, 1),
        params=params,
        byzantine={1: TransferAttacker(params.chain_id)},
        drop=_s17_drop,
        link_delay_us=_S17_DELAYS,
        deadline_us=8000 * MS,
    )


def s18(n: int, seed: int, heights: int) -> SimConfig:
    """Power cut: the leader proposes and dies; the others decide and crash together before
    their commit batch, then restart and commit from their own durable bodies."""
    crashes = [
        CrashSpec(
            0,
            down_us=None,
            point="after_send",
            trigger=_sends(lambda m: isinstance(m, Propose)),
            dead=True,
        )
    ]
    crashes += [CrashSpec(i, down_us=30 * MS, point="before_commit") for i in range(1, n)]
    return SimConfig(n=n, seed=seed, heights=heights, crashes=tuple(crashes))


class ForgeProposer(Strategy):
    """Leads rounds >= 1 with blocks whose header names the crashed node as proposer."""

    def __init__(self, victim: int) -> None:
        self.victim = victim
        self.forged: dict[bytes, Block] = {}

    def _forge(self, sim: Sim, nd: SimNode, b: Block) -> Block:
        inst = nd.engine.inst.get(b.height)
        if inst is None or b.round == 0:
            return b
        n = sim.params.n
        r2 = (self.victim - inst.rec.anchor) % n
        if r2 > b.round:
            return b
        return Block(b.height, b.parent, r2, self.victim, b.body)

    def outgoing(self, sim: Sim, nd: SimNode, to: int, m: Message) -> list[Message]:
        if isinstance(m, Propose) and m.block.proposer == nd.ident:
            real = block_hash(m.block)
            forged = self.forged.get(real)
            if forged is None:
                forged = self._forge(sim, nd, m.block)
                self.forged[real] = forged
            return [Propose(m.chain_id, m.height, m.round, forged)]
        if isinstance(m, Vote) and m.value in self.forged:
            return [replace(m, value=block_hash(self.forged[m.value]))]
        return [m]


def s19(n: int, seed: int, heights: int) -> SimConfig:
    """Anchor capture: crashed node 0 precedes Byzantine node 1 in the rotation."""
    tenure = 4
    params = Params(n=n, tenure=tenure)
    return SimConfig(
        n=n,
        seed=seed,
        heights=max(heights, 2 * tenure),
        params=params,
        byzantine={1: ForgeProposer(0)},
        crashes=(CrashSpec(0, at_us=0, down_us=None, dead=True),),
    )


def _idle_params(n: int) -> Params:
    return Params(n=n, propose_wait_max_ms=None)


def idle_quiet(n: int, seed: int, heights: int) -> SimConfig:
    """Idle mode, no transaction for 10 s: no block, no frame at all."""
    return SimConfig(
        n=n,
        seed=seed,
        heights=0,
        params=_idle_params(n),
        deadline_us=10_000 * MS,
        run_to_deadline=True,
    )


def _tx_times(rng: random.Random, count: int) -> tuple[int, ...]:
    """Transactions alone, in bursts, and spread out, over the first 3 s."""
    times: list[int] = []
    for _ in range(count):
        t = rng.randint(0, 3000) * MS
        times.append(t)
        if rng.random() < 0.3:
            times.append(t + rng.randint(0, 5) * MS)
    return tuple(sorted(times))


def idle_txs(n: int, seed: int, heights: int) -> SimConfig:
    """Idle mode: transactions at random times, some before GST with loss, a crash-restart
    or a Byzantine voter; every transaction gets a block, and the chain then goes quiet."""
    rng = random.Random(seed)
    variant = seed % 3
    cfg = SimConfig(
        n=n,
        seed=seed,
        heights=0,
        params=_idle_params(n),
        txs_us=_tx_times(rng, max(heights, 1)),
    )
    if variant == 1:
        return replace(cfg, loss=0.2, dup=0.1, gst_us=rng.randint(100, 1500) * MS)
    if variant == 2:
        byz = {i: Chaos(p=0.5, seed=seed + i) for i in _byz_ids(rng, n, _f(n))}
        return replace(cfg, byzantine=dict(byz))
    return cfg


def idle_censor(n: int, seed: int, heights: int) -> SimConfig:
    """Idle mode: the stable leader (node 0) ignores transactions; the other nodes, which
    hold them too (forwarded to every validator), suspect it and a later round's leader
    includes them; the anchor then moves to that leader."""
    rng = random.Random(seed)
    return SimConfig(
        n=n,
        seed=seed,
        heights=0,
        params=_idle_params(n),
        txs_us=_tx_times(rng, max(heights, 1)),
        byzantine={0: Censor()},
    )


def s9_counted_correct(n: int, seed: int, heights: int) -> SimConfig:
    """Test power (§8 S9): the rolled-back node is NOT declared faulty, so the checker holds
    it to the invariants; it must be caught contradicting what it sent before."""
    return replace(s9(n, seed, heights), declared_faulty=frozenset(), expect_live=False)


def s10_too_many_twins(n: int, seed: int, heights: int) -> SimConfig:
    """Test power (§8 S10): f+1 twinned identities (one more than tolerated), their copies
    split between two halves of the correct nodes; the checker must find a violation."""
    rng = random.Random(seed)
    twins = set(rng.sample(range(1, n), _f(n)))
    twins.add(0 if seed % 2 == 0 else rng.choice([i for i in range(1, n) if i not in twins]))
    others = [i for i in range(n) if i not in twins]
    rng.shuffle(others)
    cut = len(others) // 2
    a = frozenset(others[:cut]) | frozenset(twins)
    b = frozenset(others[cut:]) | frozenset(twins)
    return SimConfig(
        n=n,
        seed=seed,
        heights=heights,
        twins={i: (a, b) for i in sorted(twins)},
        twin_keys_cloned=seed % 4 == 1,
        expect_live=False,
    )


POWER_SCENARIOS: dict[str, Builder] = {
    "S9-counted-correct": s9_counted_correct,
    "S10-f+1-twins": s10_too_many_twins,
}
"""Sanity checks of test power (§8 S9, S10): these MUST report violations."""

IDLE_SCENARIOS: dict[str, Builder] = {
    "idle-quiet": idle_quiet,
    "idle-txs": idle_txs,
    "idle-censor": idle_censor,
}
"""Idle mode (`propose_wait_max_ms=None`, §4); not part of `--scenario all`."""

SCENARIOS: dict[str, Builder] = {
    "S1": s1,
    "S2": s2,
    "S3": s3,
    "S4": s4,
    "S5": s5,
    "S6": s6,
    "S7": s7,
    "S8": s8,
    "S9": s9,
    "S10": s10,
    "S11": s11,
    "S12": s12,
    "S13": s13,
    "S14": s14,
    "S15": s15,
    "S16": s16,
    "S17": s17,
    "S18": s18,
    "S19": s19,
}


def build(
    name: str, n: int, seed: int, heights: int, engine: EngineFactory | None = None
) -> SimConfig:
    cfg = (SCENARIOS | IDLE_SCENARIOS | POWER_SCENARIOS)[name](n, seed, heights)
    if engine is not None:
        cfg = replace(cfg, engines={i: engine for i in range(cfg.n)})
    return cfg


__all__ = ["IDLE_SCENARIOS", "INVALID", "POWER_SCENARIOS", "SCENARIOS", "BuildBlock", "build"]
