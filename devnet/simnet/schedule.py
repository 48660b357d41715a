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
    heal (and cut, uncut from fault-kit scenarios)."""
    args: dict[str, Any] = field(default_factory=dict)


def heal_time(seconds: float) -> float:
    return round(max(min(seconds * FAULT_SHARE, seconds - RECOVERY_S), seconds / 3), 3)


BYZANTINE_MODES = tuple(m for m in admin.BYZANTINE_MODES if m != "vote-flood")
"""The validator's hostile modes (`node.byzantine`) a schedule may switch on, on one
node per run (f = 1 of 4). The vote flood is left out: its thousands of messages a
second cost real CPU for nothing the others do not cover."""


def draw(rng: random.Random, n: int, seconds: float, *, crashes: bool = True) -> list[Action]:
    """Episodes of link faults, partitions, crashes, key starvation and Byzantine modes;
    at most one node crashed at a time, and one Byzantine node in the run."""
    end = heal_time(seconds)
    actions: list[Action] = []
    down_until = 0.0
    traitor = rng.randrange(n)
    for _ in range(max(1, int(seconds / 4))):
        t = round(rng.uniform(0.5, max(0.6, end - 0.5)), 3)
        d = round(rng.uniform(0.3, min(6.0, max(0.4, end - t))), 3)
        kind = rng.choice(["link", "link", "partition", "crash", "keys", "byzantine"])
        node = rng.randrange(n)
        if kind == "crash" and (not crashes or t < down_until):
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
        elif kind == "partition":
            actions.append(Action(t, "partition", {"node": node}))
            actions.append(Action(t + d, "unpartition", {"node": node}))
        elif kind == "crash":
            if rng.random() < 0.5:
                actions.append(Action(t, "crash", {"node": node}))
            else:
                # Right after one of its next synced writes (a commit, a vote, a lock):
                # what that step revealed never leaves.
                writes = rng.randint(1, 8)
                actions.append(Action(t, "crash-at-persist", {"node": node, "writes": writes}))
            actions.append(Action(t + d, "restart", {"node": node}))
            down_until = t + d
        else:
            peer = rng.choice([j for j in range(n) if j != node])
            actions.append(Action(t, "keys-off", {"a": node, "b": peer}))
            actions.append(Action(t + d, "keys-on", {"a": node, "b": peer}))
    actions = [a for a in actions if a.t < end]
    actions.append(Action(end, "heal"))
    return sorted(actions, key=lambda a: a.t)
