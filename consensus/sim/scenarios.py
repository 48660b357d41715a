"""The adversarial scenarios S1-S22 of CONSENSUS.md §8 as simulator configurations.

`build(name, n, seed, heights)` returns the `SimConfig` of one run; every random choice of
the scenario (which variant, which node, which times) comes from the seed. S3 and S17 are
scripted message-level attacks defined for n = 4 (`consensus.sim.attacks`); they run at
n = 4 whatever n is asked.
A faulty budget of f is respected everywhere liveness is expected: Byzantine identities,
twins, rolled-back nodes and permanently crashed nodes all count against f.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

from consensus.events import Action, BuildBlock, Send
from consensus.messages import (
    Block,
    Done,
    Message,
    Propose,
    Vote,
    block_hash,
)
from consensus.params import Params
from consensus.sim.app import INVALID, app_valid
from consensus.sim.attacks import (
    TRANSFER_DELAYS,
    ClaimCheckAttacker,
    ForgeProposer,
    ProposeToFew,
    TransferAttacker,
    claim_check_drop,
    transfer_drop,
)
from consensus.sim.byzantine import (
    Censor,
    Chaos,
    EquivocatingLeader,
    Flooder,
    Strategy,
    Withholding,
    WrongSync,
)
from consensus.sim.config import (
    MS,
    CrashSpec,
    EngineFactory,
    Partition,
    RandomCrashes,
    Rollback,
    SimConfig,
)
from consensus.sim.reconf import RECONF_SCENARIOS
from consensus.sim.world import Sim

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


def s3(n: int, seed: int, heights: int) -> SimConfig:
    """Claim-check attack, scripted at n = 4 (see `ClaimCheckAttacker`)."""
    params = Params(n=4)
    return SimConfig(
        n=4,
        seed=seed,
        heights=max(heights, 1),
        params=params,
        byzantine={3: ClaimCheckAttacker(params.chain_id)},
        drop=claim_check_drop,
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


def s21(n: int, seed: int, heights: int) -> SimConfig:
    """S9 for a restored validator: disk rollback or state loss of one node that restarts
    under the amnesia guard (§3.8) and is held to every invariant of a correct node; with
    n >= 4 another node is an equivocating leader (the f-th fault)."""
    cfg = s9(n, seed, heights)
    rb = replace(cfg.rollbacks[0], amnesic=True)
    byz: dict[int, Strategy] = {}
    if _f(n) >= 1:
        byz[random.Random(seed).choice([i for i in range(n) if i != rb.node])] = (
            EquivocatingLeader()
        )
    return replace(cfg, rollbacks=(rb,), declared_faulty=frozenset(), byzantine=byz)


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


def s17(n: int, seed: int, heights: int) -> SimConfig:
    """Transfer attack, scripted at n = 4 (§8); the script only touches rounds 0-2."""
    params = Params(n=4)
    return SimConfig(
        n=4,
        seed=seed,
        heights=max(heights, 1),
        params=params,
        byzantine={1: TransferAttacker(params.chain_id)},
        drop=transfer_drop,
        link_delay_us=TRANSFER_DELAYS,
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


def _rides(acts: list[Action]) -> bool:
    """The step sends a DONE together with a message of a later height (R7, §7)."""
    sends = [a.msg for a in acts if isinstance(a, Send)]
    dones = [m.height for m in sends if isinstance(m, Done)]
    return bool(dones) and any(
        not isinstance(m, Done) and m.height > min(dones) for m in sends if hasattr(m, "height")
    )


def s20(n: int, seed: int, heights: int) -> SimConfig:
    """Crash around a commit: between deciding a height and committing it, or at the step
    whose frames carry the height's DONE riding with the next height's first message (the
    leader's proposal, or a follower's VOTE1); the node restarts from its durable state."""
    rng = random.Random(seed)
    variant = seed % 3
    at = rng.randint(0, 60) * MS
    down = rng.randint(5, 80) * MS
    if variant == 0:
        spec = CrashSpec(rng.randrange(n), at_us=at, down_us=down, point="before_commit")
    else:
        node = 0 if variant == 1 else rng.randrange(1, n)
        point = rng.choice(("after_persist", "mid_send", "after_send"))
        spec = CrashSpec(node, at_us=at, down_us=down, point=point, trigger=_rides)
    return SimConfig(n=n, seed=seed, heights=max(heights, 4), crashes=(spec,))


def s22(n: int, seed: int, heights: int) -> SimConfig:
    """Crash while a commit is pipelined (§3.3, Revision 1.13): between deciding a height and
    executing it; after executing it, with the next height started (and possibly voted,
    built or proposed) but before its synced batch is durable; or every node at once
    before its batch is durable (a power cut). The batch is slow here (5-60 ms), so the
    next height often runs ahead of it; a restarted node commits the height again from
    its decided record and re-sends, unchanged, what it sent of the next height."""
    rng = random.Random(seed)
    variant = seed % 3
    at = rng.randint(0, 60) * MS
    down = rng.randint(5, 80) * MS
    crashes: tuple[CrashSpec, ...]
    if variant == 0:
        crashes = (CrashSpec(rng.randrange(n), at_us=at, down_us=down, point="before_commit"),)
    elif variant == 1:
        crashes = (CrashSpec(rng.randrange(n), at_us=at, down_us=down, point="before_durable"),)
    else:
        crashes = tuple(
            CrashSpec(i, at_us=at, down_us=down, point="before_durable") for i in range(n)
        )
    return SimConfig(
        n=n,
        seed=seed,
        heights=max(heights, 4),
        crashes=crashes,
        commit_write_us=(5 * MS, 60 * MS),
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


def s21_unguarded(n: int, seed: int, heights: int) -> SimConfig:
    """Test power (§3.8): S21 without the amnesia guard; the restored node, held to the
    invariants of a correct node, must be caught contradicting what it sent before."""
    cfg = s21(n, seed, heights)
    return replace(cfg, rollbacks=(replace(cfg.rollbacks[0], amnesic=False),), expect_live=False)


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
    "S21-unguarded": s21_unguarded,
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
    "S20": s20,
    "S21": s21,
    "S22": s22,
}


def build(
    name: str, n: int, seed: int, heights: int, engine: EngineFactory | None = None
) -> SimConfig:
    cfg = (SCENARIOS | IDLE_SCENARIOS | POWER_SCENARIOS | RECONF_SCENARIOS)[name](n, seed, heights)
    if engine is not None:
        cfg = replace(cfg, engines={i: engine for i in range(cfg.n)})
    return cfg


__all__ = [
    "IDLE_SCENARIOS",
    "INVALID",
    "POWER_SCENARIOS",
    "RECONF_SCENARIOS",
    "SCENARIOS",
    "BuildBlock",
    "build",
]
