"""Fault-kit scenarios (TOML, `devnet/faults/scenarios/`) as fixed simulator schedules.

The steps the simulator can play become `Action`s at the same times: kill and stop
(a crash, restarted when the step's duration ends), restart, partition (optionally only
from some nodes) and flap (cut and uncut every half period, as the kit's timeline
does), heal, delay, drop, corrupt and replay (a duplicated frame) on a node's outgoing
links, key outages (`keys` with rate 0, `kms` outage, `kme-down`: every link of the
site's key manager), `kme-drain` (the links' stored keys emptied at a rate, refilled at
the end), the validator's own Byzantine modes and twins (`devnet.simnet.world.World.twin`,
stopped when the step's duration ends), the kit's outside attacker
(`devnet.faults.attacker`: hijack, forge, conn-flood) on the simulated network, and a
partner flood (`World.flood`). A target `leader` is resolved when the step runs. Steps it
cannot play (pauses, disk corruption, a key manager's non-standard answers, set changes)
are listed, and the scenario is refused unless the caller accepts playing it without
them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devnet.faults.scenario import Scenario, Step, load_scenario
from devnet.simnet.schedule import RECOVERY_S, Action
from qchain.errors import ConfigError

PLAYABLE = frozenset(
    {"kill", "stop", "restart", "partition", "flap", "heal", "delay", "drop", "corrupt"}
    | {"replay", "keys", "kms", "byzantine", "attack", "kme-down", "kme-drain", "partner-flood"}
)


def _nodes(value: Any, n: int) -> list[int | str]:
    names = [value] if isinstance(value, str) else list(value or [])
    out: list[int | str] = []
    for name in names:
        if name == "leader":
            out.append("leader")
        elif isinstance(name, str) and name.startswith("node") and name[4:].isdigit():
            if int(name[4:]) >= n:
                raise ConfigError("scenario", f"{name} is not one of the {n} validators")
            out.append(int(name[4:]))
        else:
            raise ConfigError("scenario", f"unknown node {name!r}")
    return out


def _link(step: Step, n: int) -> list[tuple[int, int]]:
    link = step.param("link", "all")
    if link == "all":
        return [(a, b) for a in range(n) for b in range(a + 1, n)]
    a, b = (_nodes(x, n)[0] for x in link.split("~"))
    return [(int(a), int(b))]


def _step_actions(step: Step, n: int) -> list[Action]:
    end = step.end if step.duration_s else None
    targets = _nodes(step.param("target"), n)
    kind = step.action
    out: list[Action] = []
    if kind in LATER:
        return _later_step_actions(step, n, targets, end)
    if kind in ("kill", "stop"):
        for t in targets:
            out.append(Action(step.at, "crash", {"node": t}))
            if end is not None:
                out.append(Action(end, "restart", {"node": t}))
    elif kind == "restart":
        out += [Action(step.at, "restart", {"node": t}) for t in targets]
    elif kind == "partition":
        nodes = _nodes(step.param("nodes"), n)
        others = _nodes(step.param("from"), n) or None
        args = {"nodes": nodes, "from": others}
        out.append(Action(step.at, "cut", args))
        if end is not None:
            out.append(Action(end, "uncut", args))
    elif kind == "heal":
        out.append(Action(step.at, "heal"))
    elif kind in ("keys", "kms"):
        cut = step.param("rate", 0) == 0 if kind == "keys" else step.param("mode") == "outage"
        for a, b in _link(step, n) if cut else []:
            out.append(Action(step.at, "keys-off", {"a": a, "b": b}))
            if end is not None:
                out.append(Action(end, "keys-on", {"a": a, "b": b}))
    return out


LATER = frozenset(
    {"flap", "attack", "partner-flood", "kme-down", "kme-drain", "byzantine"}
    | {"delay", "drop", "corrupt", "replay"}
)


def _later_step_actions(
    step: Step, n: int, targets: list[int | str], end: float | None
) -> list[Action]:
    """The actions of the steps in `LATER` (flapping links, what comes from outside, the
    key managers, Byzantine nodes and twins, a node's faulty outgoing links)."""
    kind = step.action
    out: list[Action] = []
    if kind == "flap":
        nodes = _nodes(step.param("nodes"), n)
        others = _nodes(step.param("from"), n) or None
        args = {"nodes": nodes, "from": others}
        half = float(step.param("period_s")) / 2
        when = float(step.at)
        while when + half <= step.end:  # as the kit's timeline flaps
            out += [Action(when, "cut", args), Action(when + half, "uncut", args)]
            when += 2 * half
    elif kind == "attack":
        claims = _nodes(step.param("claim"), n) or list(range(n))
        out.append(
            Action(
                step.at,
                "attack",
                {
                    "mode": step.param("mode"),
                    "targets": targets,
                    "claims": claims,
                    "rate": step.param("rate"),
                    "connections": step.param("connections"),
                    "seconds": step.duration_s,
                },
            )
        )
    elif kind == "partner-flood":
        out.append(Action(step.at, "flood", {"count": step.param("count")}))
    elif kind == "kme-down":
        # One key manager per site: its SAE's every link gets no key while it is down.
        for t in targets:
            for peer in (p for p in range(n) if p != t):
                out.append(Action(step.at, "keys-off", {"a": t, "b": peer}))
                if end is not None:
                    out.append(Action(end, "keys-on", {"a": t, "b": peer}))
    elif kind == "kme-drain":
        pairs = _link(step, n)
        out.append(Action(step.at, "drain", {"pairs": pairs, "rate": step.param("rate", 0)}))
        if end is not None:
            out.append(Action(end, "refill", {"pairs": pairs, "count": step.param("refill")}))
    elif kind == "byzantine" and step.param("mode") == "twin":
        for t in targets:
            out.append(Action(step.at, "twin", {"node": t}))
            if end is not None:
                out.append(Action(end, "untwin", {"node": t}))
    elif kind == "byzantine":
        for t in targets:
            out.append(Action(step.at, "byzantine", {"node": t, "mode": step.param("mode")}))
            if end is not None:
                out.append(Action(end, "byzantine", {"node": t, "mode": None}))
    elif kind in ("delay", "drop", "corrupt", "replay"):
        faults = {
            "delay": {
                "latency_s": step.param("ms", 0) / 1000,
                "jitter_s": step.param("jitter_ms", 0) / 1000,
            },
            "drop": {"drop_pct": step.param("pct", 0)},
            "corrupt": {"corrupt_pct": step.param("pct", 0)},
            "replay": {"duplicate_pct": step.param("pct", 0)},
        }[kind]
        for t in targets:
            for peer in range(n):
                if peer != t:
                    out.append(Action(step.at, "link", {"src": t, "dst": peer, **faults}))
                    if end is not None:
                        out.append(Action(end, "link", {"src": t, "dst": peer}))
    return out


def schedule_of(scenario: Scenario, n: int) -> tuple[tuple[Action, ...], float, list[str]]:
    """The scenario's actions, the run's length in virtual seconds, and the steps it
    cannot play."""
    played = [s for s in scenario.steps if s.action in PLAYABLE]
    skipped = [f"{s.action} at {s.at:g}s" for s in scenario.steps if s not in played]
    actions = [a for s in played for a in _step_actions(s, n)]
    heal_at = max((s.end for s in scenario.steps), default=0.0)
    actions.append(Action(heal_at, "heal"))
    seconds = max(scenario.duration_s, heal_at + RECOVERY_S + 2.0)
    return tuple(sorted(actions, key=lambda a: a.t)), seconds, skipped


def load(path: Path, n: int) -> tuple[Scenario, tuple[Action, ...], float, list[str]]:
    scenario = load_scenario(path)
    return scenario, *schedule_of(scenario, n)
