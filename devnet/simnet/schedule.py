"""The fault schedule of one simulated run: a list of timed actions, drawn from the seed.

Faults happen in the first `FAULT_SHARE` of the run (ending at least `RECOVERY_S` before
its end); at that moment everything heals
(links clean, partitions gone, crashed nodes restarted, key links refilled), and the rest
of the run shows whether the network recovers (the liveness check).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from node.http import admin

FAULT_SHARE = 0.6
RECOVERY_S = 3.0
"""At least this long between the heal and the end (a short run has a shorter fault
window rather than an unfair liveness deadline)."""


@dataclass(frozen=True)
class Action:
    t: float
    kind: str
    """link, partition, unpartition, crash, crash-at-persist, restart, keys-off, keys-on,
    byzantine, twin, untwin, burst, heal (and cut, uncut from fault-kit scenarios)."""
    args: dict[str, Any] = field(default_factory=dict)


BURST_MIN_S = 10.0
"""A run this long or longer may have a burst episode (a shorter one has no time to
commit it before its end)."""
BURST_RATE = (200, 300)
"""Transactions a second while a burst builds up: enough for blocks of 10 or more at
the rate blocks come under load, so the leaders' block caps (priced by measured
execution, `node.pacing`) open up."""
BURST_RAMP_S = (4.0, 5.5)
BURST_TXS = (1100, 1500)
"""The burst's peak, sent at once at the end of the ramp: more transactions than one
block's events fit in a queue of 1,024, and at times more than the simulated pool holds
(`devnet.simnet.run.SIM_POOL_TXS`)."""


def heal_time(seconds: float) -> float:
    return round(max(min(seconds * FAULT_SHARE, seconds - RECOVERY_S), seconds / 3), 3)


BYZANTINE_MODES = tuple(m for m in admin.BYZANTINE_MODES if m != "vote-flood")
"""The validator's hostile modes (`node.byzantine`) a schedule may switch on, on one
node per run (f = 1 of 4). The vote flood is left out: its thousands of messages a
second cost real CPU for nothing the others do not cover."""


TWIN_SHARE = 0.2
"""The share of runs in which the Byzantine node also has a twin for a while (the fault
kit's `byzantine NODE twin`, `devnet.simnet.world.World.twin`)."""


def draw(
    rng: random.Random, n: int, seconds: float, *, crashes: bool = True, burst_scale: float = 1.0
) -> list[Action]:
    """Episodes of link faults, partitions, crashes, key starvation, Byzantine modes and
    (in runs of `BURST_MIN_S` or more) client bursts; at most one node crashed at a
    time, and one Byzantine node in the run, which may also have a twin for a while.
    burst_scale multiplies a burst's rate and peak (the same draws otherwise: the
    schedule is the seed's)."""
    end = heal_time(seconds)
    actions: list[Action] = []
    down_until = 0.0
    traitor = rng.randrange(n)
    kinds = ["link", "link", "partition", "crash", "keys", "byzantine"]
    if seconds >= BURST_MIN_S:
        kinds.append("burst")
    bursts = 0
    for _ in range(max(1, int(seconds / 4))):
        t = round(rng.uniform(0.5, max(0.6, end - 0.5)), 3)
        d = round(rng.uniform(0.3, min(6.0, max(0.4, end - t))), 3)
        kind = rng.choice(kinds)
        node = rng.randrange(n)
        if kind == "crash" and (not crashes or t < down_until):
            kind = "link"
        if kind == "burst" and bursts:
            kind = "link"
        if kind == "link":
            peer = rng.choice([j for j in range(n) if j != node])
            faults = {
                "drop_pct": round(rng.choice([0, 0, 5, 20, 50]), 1),
                "duplicate_pct": rng.choice([0, 5, 20]),
                "reorder_pct": rng.choice([0, 5, 20]),
                "corrupt_pct": rng.choice([0, 0, 2, 10]),
                "jitter_s": rng.choice([0.003, 0.02, 0.1]),
            }
            actions.append(Action(t, "link", {"src": node, "dst": peer, **faults}))
            actions.append(Action(t + d, "link", {"src": node, "dst": peer}))
        elif kind == "byzantine":
            mode = rng.choice(BYZANTINE_MODES)
            actions.append(Action(t, "byzantine", {"node": traitor, "mode": mode}))
            actions.append(Action(t + d, "byzantine", {"node": traitor, "mode": None}))
        elif kind == "burst":
            # The clients send at a high rate for a while, then many transactions at
            # once, each to a node drawn at random: large blocks, a leader under load.
            ramp = round(rng.uniform(*BURST_RAMP_S), 3)
            rate = rng.randint(*BURST_RATE)
            peak = rng.randint(*BURST_TXS)
            t = round(min(t, max(0.5, end - ramp)), 3)
            args = {
                "rate": round(rate * burst_scale),
                "seconds": ramp,
                "txs": round(peak * burst_scale),
            }
            actions.append(Action(t, "burst", args))
            bursts += 1
        elif kind == "partition":
            actions.append(Action(t, "partition", {"node": node}))
            actions.append(Action(t + d, "unpartition", {"node": node}))
        elif kind == "crash":
            if rng.random() < 0.5:
                actions.append(Action(t, "crash", {"node": node}))
            else:
                # Inside one of its next synced writes (a commit, a vote, a lock):
                # what that step revealed never leaves.
                writes = rng.randint(1, 8)
                actions.append(Action(t, "crash-at-persist", {"node": node, "writes": writes}))
            actions.append(Action(t + d, "restart", {"node": node}))
            down_until = t + d
        else:
            peer = rng.choice([j for j in range(n) if j != node])
            actions.append(Action(t, "keys-off", {"a": node, "b": peer}))
            actions.append(Action(t + d, "keys-on", {"a": node, "b": peer}))
    actions += _twin(rng, traitor, end)
    actions = [a for a in actions if a.t < end]
    actions.append(Action(end, "heal"))
    return sorted(actions, key=lambda a: a.t)


def _twin(rng: random.Random, traitor: int, end: float) -> list[Action]:
    """In `TWIN_SHARE` of the runs, a twin of the traitor for a while. Drawn after the
    episodes, so a run without a twin has the schedule it had before twins were drawn."""
    if rng.random() >= TWIN_SHARE:
        return []
    t = round(rng.uniform(0.5, max(0.6, end - 0.5)), 3)
    d = round(rng.uniform(0.3, min(6.0, max(0.4, end - t))), 3)
    return [Action(t, "twin", {"node": traitor}), Action(t + d, "untwin", {"node": traitor})]
