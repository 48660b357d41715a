"""Transport faults through the node admin API: per-node rules for outgoing and incoming
frames (drop, delay, duplicate, corrupt, blocked peers).

Rules are read-modify-write (`GET` then `PUT /admin/faults`), so a partition and a delay
on the same node combine, and separate `qchain fault` invocations see each other's
rules. `heal` clears every node's rules.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from typing import Any

from devnet.running import BackendError, Network, node_of


def index_of(target: Network, name: str) -> int:
    return node_of(target.plan, name).index


def _rules(target: Network, name: str) -> dict[str, dict[str, Any]]:
    doc = target.admin(name, "GET", "/admin/faults")
    if not isinstance(doc, dict):
        raise BackendError(f"{name}: unexpected /admin/faults answer")
    return {"out": dict(doc.get("out", {})), "in": dict(doc.get("in", {}))}


def update_rules(target: Network, name: str, direction: str, **fields: Any) -> None:
    """Set some fields of one direction's rules on a node, keeping the rest."""
    rules = _rules(target, name)
    rules[direction].update(fields)
    target.admin(name, "PUT", "/admin/faults", rules)


def block(target: Network, name: str, peers: Iterable[int], add: bool) -> None:
    rules = _rules(target, name)
    for d in ("out", "in"):
        blocked = set(rules[d].get("blocked", []))
        blocked = blocked | set(peers) if add else blocked - set(peers)
        rules[d]["blocked"] = sorted(blocked)
    target.admin(name, "PUT", "/admin/faults", rules)


def partition(
    target: Network, side: Sequence[str], other: Sequence[str] | None = None
) -> list[str]:
    """Cut every link between `side` and `other` (default: every other node). A node that
    does not answer (a validator being added, not started yet or still starting) gets no
    rules if every node on the other side got them: those block both directions of every
    link to it. Returns the nodes that got no rules; raises if a link stays uncut."""
    names = target.node_names()
    rest = [n for n in names if n not in side] if not other else list(other)
    missed: dict[str, str] = {}
    for group, peers in ((side, rest), (rest, side)):
        for name in group:
            try:
                block(target, name, [index_of(target, p) for p in peers], True)
            except (OSError, BackendError) as e:
                missed[name] = str(e)
    if any(n in missed for n in side) and any(n in missed for n in rest):
        raise BackendError(f"partition: no rules set on either end of some links: {missed}")
    return sorted(missed)


def unpartition(target: Network, side: Sequence[str], other: Sequence[str] | None = None) -> None:
    names = target.node_names()
    rest = [n for n in names if n not in side] if not other else list(other)
    for a in side:
        with contextlib.suppress(OSError, BackendError):
            block(target, a, [index_of(target, b) for b in rest], False)
    for b in rest:
        with contextlib.suppress(OSError, BackendError):
            block(target, b, [index_of(target, a) for a in side], False)


def heal(target: Network) -> list[str]:
    """Clear every live node's transport rules. Returns the nodes that did not answer."""
    missed = []
    for name in target.node_names():
        try:
            target.admin(name, "DELETE", "/admin/faults")
        except (OSError, BackendError):
            missed.append(name)
    return missed


def delay(target: Network, name: str, ms: int, jitter_ms: int = 0) -> None:
    update_rules(target, name, "out", delay_ms=ms, jitter_ms=jitter_ms)


def drop(target: Network, name: str, pct: float) -> None:
    update_rules(target, name, "out", drop_pct=pct)


def corrupt(target: Network, name: str, pct: float) -> None:
    update_rules(target, name, "out", corrupt_pct=pct)


def replay(target: Network, name: str, pct: float = 30.0) -> None:
    """Replay (send twice) pct% of the node's outgoing frames, byte for byte."""
    update_rules(target, name, "out", duplicate_pct=pct)


RULE_OF_ACTION = {
    "delay": ("delay_ms", "jitter_ms"),
    "drop": ("drop_pct",),
    "corrupt": ("corrupt_pct",),
    "replay": ("duplicate_pct",),
}


def clear_rule(target: Network, name: str, action: str) -> None:
    with contextlib.suppress(OSError, BackendError):
        update_rules(target, name, "out", **dict.fromkeys(RULE_OF_ACTION[action], 0))
