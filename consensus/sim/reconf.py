"""Validator-set changes in the simulator (CONSENSUS.md §10.8, the engine's slice of §10).

Every scenario runs at n = 4 (4 -> 5 -> 4) and at n = 7 (7 -> 8 -> 7): genesis ids 0..n-1,
and id n joins. A change rides a transaction submitted at a fixed time; it activates D = 2
heights after the block that includes it (`consensus.sim.app.set_history`). The f budget
of each height's set is respected wherever liveness is expected. Not part of
`--scenario all`: `qchain sim run --scenario reconf` runs them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

from consensus.events import Action, Send
from consensus.messages import Message, Propose
from consensus.sets import VSet
from consensus.sim.app import SetChange
from consensus.sim.byzantine import Chaos, Flooder, Strategy, WrongSync
from consensus.sim.config import MS, CrashSpec, Partition, Reconf, SimConfig

Builder = Callable[[int, int, int], SimConfig]


def _f(n: int) -> int:
    return VSet.genesis(n).f


def _byz_ids(rng: random.Random, n: int, k: int) -> list[int]:
    return sorted(rng.sample(range(n), k))


def _sends(pred: Callable[[Message], bool]) -> Callable[[list[Action]], bool]:
    return lambda acts: any(isinstance(a, Send) and pred(a.msg) for a in acts)


ADD_US = 100 * MS
"""When the add of id n is submitted."""
REMOVE_US = 450 * MS
"""When the second change (a remove) is submitted."""
RECONF_HEIGHTS = 16


def _reconf(
    n: int, seed: int, heights: int, changes: list[tuple[int, SetChange]], **kw: object
) -> SimConfig:
    """A run whose genesis set is 0..n-1; `changes` are (submission time, change), the
    change's `tx` being its index here."""
    txs = tuple(t for t, _ in changes)
    rc = Reconf(genesis_n=n, changes=tuple(c for _, c in changes))
    cfg = SimConfig(
        n=n + 1,
        seed=seed,
        heights=max(heights, RECONF_HEIGHTS),
        txs_us=txs,
        reconf=rc,
    )
    return replace(cfg, **kw)  # type: ignore[arg-type]


def c1(n: int, seed: int, heights: int) -> SimConfig:
    """C1: add id n (n -> n+1), then remove one (n+1 -> n), while the stable leader (0)
    crashes around the add's activation: it restarts; or it dies and is the one removed;
    or it crashes mid-broadcast of a proposal and restarts. The leader crashes after the
    add reached every node and, if it restarts, is up again before the remove is
    submitted (a transaction forwarded to a node that is down is lost for it, and a
    stable leader without it would never include it): `up_by_us`, since a crash waiting
    for a proposal's send can fire later than `at` (seed 1802 at n = 7 crashed at 345 ms
    and was down when the remove arrived)."""
    rng = random.Random(seed)
    variant = seed % 3
    at = ADD_US + rng.randint(20, 200) * MS  # every node holds the add by then
    if variant == 0:
        crash_spec = CrashSpec(0, at_us=at, down_us=rng.randint(50, 140) * MS, up_by_us=REMOVE_US)
        gone = rng.randrange(1, n)
    elif variant == 1:
        crash_spec = CrashSpec(0, at_us=at, down_us=None, dead=True)
        gone = 0
    else:
        crash_spec = CrashSpec(
            0,
            at_us=at,
            down_us=rng.randint(50, 140) * MS,
            point="mid_send",
            trigger=_sends(lambda m: isinstance(m, Propose)),
            up_by_us=REMOVE_US,
        )
        gone = rng.randrange(1, n)
    changes = [(ADD_US, SetChange(0, add=(n,))), (REMOVE_US, SetChange(1, remove=(gone,)))]
    return _reconf(n, seed, heights, changes, crashes=(crash_spec,))


def c2(n: int, seed: int, heights: int) -> SimConfig:
    """C2: add id n, then remove the stable leader (0) while another member is down
    (within f); the anchor moves to the next unchanged member (§10.4)."""
    rng = random.Random(seed)
    down = rng.randrange(1, n)
    at = REMOVE_US + rng.randint(-100, 150) * MS
    crash_spec = CrashSpec(down, at_us=at, down_us=rng.randint(100, 400) * MS)
    changes = [(ADD_US, SetChange(0, add=(n,))), (REMOVE_US, SetChange(1, remove=(0,)))]
    return _reconf(n, seed, heights, changes, crashes=(crash_spec,))


def c3(n: int, seed: int, heights: int) -> SimConfig:
    """C3: a partition across the activation height: the old members split in two halves
    (neither a quorum of V(h) before or after), the joiner on one side; it heals at GST."""
    rng = random.Random(seed)
    old = list(range(n))
    rng.shuffle(old)
    half = n // 2
    side_a = frozenset(old[:half]) | {n}
    side_b = frozenset(old[half:])
    start = ADD_US + rng.randint(0, 150) * MS
    end = start + rng.randint(200, 600) * MS
    part = Partition(start, end, (side_a, side_b))
    changes = [(ADD_US, SetChange(0, add=(n,))), (REMOVE_US, SetChange(1, remove=(old[0],)))]
    return _reconf(n, seed, heights, changes, partitions=(part,), gst_us=end)


def c4(n: int, seed: int, heights: int) -> SimConfig:
    """C4: a Byzantine member of the old set (a flooder of wrong DONEs, huge ABORT levels
    and far heights, or an equivocating voter) is removed and keeps sending messages for
    heights after its removal; they are dropped as `not-member`."""
    rng = random.Random(seed)
    byz_id = rng.randrange(n)
    strategy: Strategy = Flooder(seed) if seed % 2 == 0 else Chaos(p=0.6, seed=seed)
    changes = [(ADD_US, SetChange(0, add=(n,))), (REMOVE_US, SetChange(1, remove=(byz_id,)))]
    return _reconf(n, seed, heights, changes, byzantine={byz_id: strategy})


def c5(n: int, seed: int, heights: int) -> SimConfig:
    """C5: rotation of a validator's key onto a fresh machine, modelled as a new identity
    (§10.1: the old machine is not a member from the activation height, the new one not
    before it): id k leaves and id n joins at one activation. In a variant the old
    machine of k is switched off for good once the rotation is through."""
    rng = random.Random(seed)
    k = rng.randrange(n)
    crashes: tuple[CrashSpec, ...] = ()
    if seed % 2 == 1:
        crashes = (CrashSpec(k, at_us=REMOVE_US, down_us=None),)
    changes = [(ADD_US, SetChange(0, remove=(k,), add=(n,)))]
    return _reconf(n, seed, heights, changes, crashes=crashes)


def c6(n: int, seed: int, heights: int) -> SimConfig:
    """C6 without certificates (§10.5's catch-up by claims): one member is cut off from
    the start while id n joins and another member leaves, then catches up across both
    activations from SYNC_RESP claims, each counted only from members of its height's
    set, while f Byzantine members answer its SYNC requests with invented hashes."""
    rng = random.Random(seed)
    lag = n - 1
    byz = {i: WrongSync(seed + i) for i in _byz_ids(rng, n - 1, _f(n))}
    gone = rng.choice([i for i in range(n - 1) if i not in byz])
    until = REMOVE_US + rng.randint(150, 500) * MS
    part = Partition(0, until, (frozenset({lag}), frozenset(range(n + 1)) - {lag}))
    changes = [(ADD_US, SetChange(0, add=(n,))), (REMOVE_US, SetChange(1, remove=(gone,)))]
    cfg = _reconf(n, seed, heights, changes, byzantine=dict(byz), partitions=(part,))
    return replace(cfg, gst_us=until)


def c7_base(n: int, seed: int, heights: int) -> SimConfig:
    """The shape of §10.8's C7 (one member removed and id n added at one activation
    height) with f members faulty: one Byzantine voter and, at n = 7, one crashed for
    good; not C7's scripted cut-off of a third correct member (that needs 10.5's
    certificates, which the engine does not implement yet)."""
    rng = random.Random(seed)
    ids = _byz_ids(rng, n, _f(n))
    byz: dict[int, Strategy] = {ids[0]: Chaos(p=rng.choice((0.3, 0.6)), seed=seed)}
    crashes = tuple(CrashSpec(i, at_us=rng.randint(0, 400) * MS, down_us=None) for i in ids[1:])
    gone = rng.choice([i for i in range(n) if i not in ids])
    changes = [(ADD_US, SetChange(0, remove=(gone,), add=(n,)))]
    return _reconf(n, seed, heights, changes, byzantine=byz, crashes=crashes)


def c8_pipelined(n: int, seed: int, heights: int) -> SimConfig:
    """A crash while a commit is pipelined around an activation (§3.3 with §10.2): the
    node restarts with a record of a height x above its durable chain + 1, whose next
    set `V(x+1)` depends on a block it holds only as a decided record; it learns that
    set when the block is executed again. Every node crashes at `before_durable` in one
    variant (a power cut), one node in the other."""
    rng = random.Random(seed)
    at = ADD_US + rng.randint(20, 200) * MS  # every node holds the add by then
    down = rng.randint(5, 80) * MS
    who = range(n + 1) if seed % 2 == 0 else (rng.randrange(n + 1),)
    crashes = tuple(CrashSpec(i, at_us=at, down_us=down, point="before_durable") for i in who)
    # the remove is submitted once every node is up again (a transaction forwarded to a
    # node that is down is lost for it, and a stable leader without it never includes it)
    changes = [(ADD_US, SetChange(0, add=(n,))), (800 * MS, SetChange(1, remove=(0,)))]
    cfg = _reconf(n, seed, heights, changes, crashes=crashes, commit_write_us=(5 * MS, 60 * MS))
    return replace(cfg, heights=max(cfg.heights, 24))


RECONF_SCENARIOS: dict[str, Builder] = {
    "C1": c1,
    "C2": c2,
    "C3": c3,
    "C4": c4,
    "C5": c5,
    "C6-claims": c6,
    "C7-base": c7_base,
    "C8-pipelined": c8_pipelined,
}
"""Validator-set changes (§10.8); not part of `--scenario all`."""

__all__ = ["RECONF_SCENARIOS"]
