"""Invariant checkers: pure functions from what a run recorded to a verdict.

Each checker returns a `CheckResult` with a one-line summary and the evidence (heights,
nodes, transactions) a tester needs to start digging. None of them talks to a network,
so each is tested with synthetic histories that must fail.

The checks of service under attack (progress, latency, truthful readiness) are in
`devnet.faults.service_checks`. What each one observes, and its limits, is spelled out
in `devnet/faults/README.md`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from devnet.faults.history import BlockView, ChainViews, KmsSample, Op, QkdSample, StatusSample

EQUIVOCATION_ALERTS = (
    "vote-equivocation",
    "leader-equivocation",
    "done-equivocation",
    "equivocation-suspected",
)
"""Alerts a node raises when a peer signs or proposes two things for one slot."""

TAMPER_REASONS = ("key-reused", "bad-tag", "stale-sequence", "unknown-key")


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    summary: str
    details: tuple[str, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "summary": self.summary,
            "details": list(self.details),
            "data": dict(self.data),
        }


def first_items(items: Sequence[str], limit: int = 20) -> tuple[str, ...]:
    more = len(items) - limit
    return tuple(items[:limit]) + ((f"... and {more} more",) if more > 0 else ())


def check_served_blocks(bad: Mapping[str, Sequence[str]], nodes: Sequence[str]) -> CheckResult:
    """Every block the given nodes served verifies against its own header (bad: node ->
    the blocks that did not, as the observer found them)."""
    problems = [f"{n}: {b}" for n in nodes for b in bad.get(n, ())]
    if problems:
        who = sorted({n for n in nodes if bad.get(n)})
        return CheckResult(
            "served-blocks",
            False,
            f"{len(problems)} blocks served by {', '.join(who)} do not verify",
            first_items(problems),
        )
    return CheckResult("served-blocks", True, "every block served verifies against its header")


def _conflicts_by_height(
    chains: ChainViews, value: Callable[[BlockView], str]
) -> tuple[list[int], list[str]]:
    """The heights any node has, and one line for each height where the nodes that have
    it disagree on `value` of its block (which value, on which nodes)."""
    heights = sorted({h for blocks in chains.values() for h in blocks})
    bad = []
    for h in heights:
        seen: dict[str, list[str]] = {}
        for node, blocks in sorted(chains.items()):
            if h in blocks:
                seen.setdefault(value(blocks[h]), []).append(node)
        if len(seen) > 1:
            bad.append(
                f"height {h}: " + "; ".join(f"{v[:16]} on {','.join(n)}" for v, n in seen.items())
            )
    return heights, bad


def check_agreement(chains: ChainViews) -> CheckResult:
    """One block hash per height across every node that has that height."""
    heights, bad = _conflicts_by_height(chains, lambda b: b.hash)
    top = max(heights, default=0)
    if bad:
        return CheckResult(
            "agreement", False, f"conflicting blocks at {len(bad)} heights", first_items(bad)
        )
    return CheckResult(
        "agreement", True, f"one block per height at heights 1..{top}", data={"top": top}
    )


def check_app_hash(chains: ChainViews) -> CheckResult:
    """One app hash per height across every node that has that height."""
    heights, bad = _conflicts_by_height(chains, lambda b: b.app_hash)
    if bad:
        return CheckResult(
            "app-hash", False, f"diverging state at {len(bad)} heights", first_items(bad)
        )
    return CheckResult("app-hash", True, f"one app hash per height over {len(heights)} heights")


def check_lost_writes(ops: Iterable[Op], chains: ChainViews, max_lost: int = 0) -> CheckResult:
    """Every transaction a node reported committed is in every node's chain exactly once,
    at the height reported; and no transaction appears twice in any chain."""
    committed = [o for o in ops if o.committed]
    where: dict[str, dict[str, list[int]]] = {}
    for node, blocks in chains.items():
        idx: dict[str, list[int]] = {}
        for h, b in blocks.items():
            for tx in b.txs:
                idx.setdefault(tx, []).append(h)
        where[node] = idx
    problems: list[str] = []
    lost: set[str] = set()
    behind: list[str] = []
    for node, idx in sorted(where.items()):
        top = max(chains[node], default=0)
        for tx, hs in idx.items():
            if len(hs) > 1:
                problems.append(f"{node}: tx {tx[:16]} committed {len(hs)} times at {sorted(hs)}")
        for o in committed:
            if o.height is None:
                continue
            if o.height > top:
                behind.append(f"{node} (at {top}) lacks height {o.height} of op {o.op_id}")
                continue
            hs = idx.get(o.tx_hash, [])
            if not hs:
                lost.add(o.tx_hash)
                problems.append(
                    f"{node}: op {o.op_id} tx {o.tx_hash[:16]} acknowledged committed at "
                    f"{o.height} (by {o.node}) is not in its chain"
                )
            elif hs != [o.height]:
                problems.append(
                    f"{node}: op {o.op_id} tx {o.tx_hash[:16]} reported at {o.height}, "
                    f"found at {hs}"
                )
    dup_or_moved = [p for p in problems if "not in its chain" not in p]
    ok = not dup_or_moved and len(lost) <= max_lost and not behind
    summary = (
        f"{len(committed)} acknowledged-committed txs present exactly once on {len(chains)} nodes"
        if ok
        else f"{len(lost)} lost, {len(dup_or_moved)} duplicated or moved, "
        f"{len(behind)} not checkable"
    )
    return CheckResult(
        "no-lost-writes",
        ok,
        summary,
        first_items(problems + behind),
        {"committed": len(committed), "lost": sorted(lost)},
    )


def height_at(samples: Sequence[StatusSample], node: str, t: float) -> int | None:
    """The node's last answered height at or before t."""
    best: int | None = None
    for s in samples:
        if s.node == node and s.t <= t and s.height is not None:
            best = s.height
    return best


def check_liveness(
    samples: Sequence[StatusSample], nodes: Sequence[str], healed_at: float, deadline_s: float
) -> CheckResult:
    """After the final heal, every node commits a block above the highest height any node
    had at the heal, within the deadline. Reports the recovery time."""
    base = max((h for n in nodes if (h := height_at(samples, n, healed_at)) is not None), default=0)
    reached: dict[str, float] = {}
    for s in sorted(samples, key=lambda s: s.t):
        if s.t < healed_at or s.node in reached or s.node not in nodes:
            continue
        if s.height is not None and s.height > base and s.t <= healed_at + deadline_s:
            reached[s.node] = s.t - healed_at
    missing = [n for n in nodes if n not in reached]
    recovery = max(reached.values(), default=0.0)
    if missing:
        last = {n: max((s.height or 0 for s in samples if s.node == n), default=0) for n in missing}
        return CheckResult(
            "liveness",
            False,
            f"{', '.join(missing)} did not pass height {base} within {deadline_s:.0f}s of the heal",
            tuple(f"{n}: last height {h}" for n, h in last.items()),
            {"base": base},
        )
    return CheckResult(
        "liveness",
        True,
        f"every node passed height {base} {recovery:.1f}s after the heal",
        data={"base": base, "recovery_s": round(recovery, 3)},
    )


def check_halt(
    samples: Sequence[StatusSample], nodes: Sequence[str], start: float, end: float, slack: int = 1
) -> CheckResult:
    """While f+1 validators are out, the chain must stand still: no node's height grows by
    more than `slack` (a block already in flight) between start and end."""
    grew = []
    for n in nodes:
        hs = [
            s.height
            for s in samples
            if s.node == n and start <= s.t <= end and s.height is not None
        ]
        if len(hs) >= 2 and max(hs) - hs[0] > slack:
            grew.append(f"{n}: height {hs[0]} -> {max(hs)} between {start:.1f}s and {end:.1f}s")
    if grew:
        return CheckResult("halt", False, "the chain advanced without a quorum", tuple(grew))
    return CheckResult(
        "halt",
        True,
        f"no node advanced more than {slack} block between {start:.1f}s and {end:.1f}s",
    )


def check_resume(
    samples: Sequence[StatusSample], nodes: Sequence[str], name: str, undone: float, bound: float
) -> CheckResult:
    """After a halt is undone (keys back, KME refilled), every node commits a block above the
    highest height any node had at the undo within `bound` seconds. The evidence gives each
    node's time, measured on the 0.5 s status samples."""
    top = max((s.height for s in samples if s.t <= undone and s.height is not None), default=0)
    took: dict[str, float] = {}
    for s in sorted(samples, key=lambda x: x.t):
        if s.t >= undone and s.height is not None and s.height > top:
            took.setdefault(s.node, s.t - undone)
    missing = [n for n in nodes if n not in took]
    slow = [n for n in nodes if n in took and took[n] > bound]
    evidence = tuple(f"{n}: {took[n]:.2f}s" for n in nodes if n in took)
    evidence += tuple(f"{n}: no block above {top} was seen" for n in missing)
    worst = max(took.values(), default=0.0)
    check = f"resume {name}"
    if missing or slow:
        return CheckResult(
            check, False, f"not every node committed above {top} within {bound:g}s", evidence
        )
    return CheckResult(
        check,
        True,
        f"every node committed above {top} within {worst:.2f}s (<= {bound:g}s)",
        evidence,
    )


def check_no_restart(samples: Sequence[StatusSample], nodes: Sequence[str]) -> CheckResult:
    """No node process was restarted during the run: the uptime each node reports never
    drops between two of its answers (a node that did not answer is not judged then)."""
    restarts = []
    for n in nodes:
        last: StatusSample | None = None
        for s in sorted((x for x in samples if x.node == n), key=lambda x: x.t):
            if s.uptime_s is None:
                continue
            if last is not None and last.uptime_s is not None and s.uptime_s < last.uptime_s:
                restarts.append(
                    f"{n}: uptime {last.uptime_s:.1f}s at {last.t:.1f}s, {s.uptime_s:.1f}s at "
                    f"{s.t:.1f}s"
                )
            last = s
    if restarts:
        return CheckResult("no-restart", False, "a node was restarted", tuple(restarts))
    return CheckResult("no-restart", True, f"no restart of {len(nodes)} nodes (uptime grew)")


def check_acked_committed(ops: Sequence[Op]) -> CheckResult:
    """Every operation a node acknowledged (took into its mempool) was committed by the
    end of the run: stricter than no-lost-writes, which only holds nodes to commits they
    reported."""
    open_ops = [o for o in ops if o.acked_at is not None and o.height is None]
    acked = sum(1 for o in ops if o.acked_at is not None)
    if open_ops:
        return CheckResult(
            "acked-committed",
            False,
            f"{len(open_ops)} of {acked} acknowledged txs never committed",
            tuple(
                f"op {o.op_id} ({o.kind}) acknowledged at {o.acked_at:.1f}s" for o in open_ops[:20]
            ),
        )
    return CheckResult("acked-committed", True, f"all {acked} acknowledged txs committed")


def check_equivocation(
    final: Mapping[str, Mapping[str, int]], expect: str, byzantine: Iterable[str]
) -> CheckResult:
    """final: node -> alerts. expected: some honest node reported an equivocation; absent:
    no honest node did; ignore: report only."""
    bad_nodes = set(byzantine)
    seen = {
        n: {k: alerts[k] for k in EQUIVOCATION_ALERTS if alerts.get(k)}
        for n, alerts in final.items()
        if n not in bad_nodes
    }
    reporters = {n: a for n, a in seen.items() if a}
    details = tuple(f"{n}: {a}" for n, a in sorted(reporters.items()))
    if expect == "expected":
        ok = bool(reporters)
        summary = (
            f"{len(reporters)} honest nodes reported equivocation"
            if ok
            else "no honest node reported the equivocation"
        )
    elif expect == "absent":
        ok = not reporters
        summary = (
            "no equivocation reported" if ok else f"{len(reporters)} honest nodes saw equivocation"
        )
    else:
        ok = True
        summary = f"{len(reporters)} honest nodes reported equivocation (not judged)"
    return CheckResult("equivocation", ok, summary, details, {"reporters": sorted(reporters)})


def _kms_link_of(a_sae: str, b_sae: str) -> str:
    x, y = sorted((a_sae, b_sae))
    return f"{x}~{y}"


def check_key_reuse(
    qkd: Sequence[QkdSample],
    kms: Sequence[KmsSample],
    node_sae: Mapping[str, str],
    tampering: bool = False,
) -> CheckResult:
    """No one-time key authenticated two accepted frames, as far as the APIs let us see.

    Key ids are not exposed (by design), so this checks what is observable: (1) per link,
    frames accepted by the two receivers never exceed the keys the key manager handed to
    slaves on that link (each key goes to its slave once), and frames sealed never exceed
    keys handed to masters; (2) no receiver rejected a frame as `key-reused` unless the
    scenario tampered with frames (then the rejections are the defence working, and are
    reported)."""
    if not kms:
        return CheckResult("no-key-reuse", False, "no key manager counters were recorded")
    last_kms = kms[-1]
    last_node: dict[str, QkdSample] = {}
    for s in sorted(qkd, key=lambda s: s.t):
        if s.t <= last_kms.t:
            last_node[s.node] = s
    problems = []
    reused: dict[str, int] = {}
    pairs = sorted({tuple(sorted((a, b))) for a in last_node for b in last_node[a].links})
    for a, b in pairs:
        link = _kms_link_of(node_sae.get(a, a), node_sae.get(b, b))
        counters = last_kms.links.get(link)
        if counters is None:
            continue
        accepted = sent = 0
        for x, y in ((a, b), (b, a)):
            sample = last_node.get(x)
            if sample is None or y not in sample.links:
                continue
            lc = sample.links[y]
            accepted += lc.receive_frames
            sent += lc.send_frames
            if lc.rejected.get("key-reused"):
                reused[f"{x}<-{y}"] = lc.rejected["key-reused"]
        if accepted > counters.get("keys_to_slave", 0):
            problems.append(
                f"{a}~{b}: {accepted} frames accepted but only {counters.get('keys_to_slave')} "
                "keys delivered to slaves"
            )
        if sent > counters.get("keys_to_master", 0):
            problems.append(
                f"{a}~{b}: {sent} frames sealed but only {counters.get('keys_to_master')} keys "
                "delivered to masters"
            )
    if reused and not tampering:
        problems += [f"{k}: {v} frames rejected as key-reused" for k, v in sorted(reused.items())]
    ok = not problems
    summary = (
        f"accepted frames within delivered keys on {len(pairs)} links"
        + (
            f"; {sum(reused.values())} replayed/tampered frames rejected as key-reused"
            if reused
            else ""
        )
        if ok
        else f"{len(problems)} key accounting problems"
    )
    return CheckResult(
        "no-key-reuse", ok, summary, first_items(problems), {"key_reused_rejections": reused}
    )


def check_starvation(qkd: Sequence[QkdSample], link: str, start: float, end: float) -> CheckResult:
    """While the link's keys were cut (start..end) at least one of its nodes reports
    starvation on it in `/v1/qkd` (key manager refusals or frames waiting for keys, with
    its send pool run dry), and after `end` both directions seal frames again."""
    a, b = link.split("~")

    def series(node: str, peer: str) -> list[tuple[float, Any]]:
        return [(s.t, s.links[peer]) for s in qkd if s.node == node and peer in s.links]

    starved = []
    resumed = []
    for x, y in ((a, b), (b, a)):
        ser = series(x, y)
        before = [lc for t, lc in ser if t <= start]
        during = [lc for t, lc in ser if start < t <= end]
        after = [lc for t, lc in ser if t > end]
        if before and during:
            b0 = before[-1]
            if any(
                (lc.kms_errors > b0.kms_errors or lc.waits > b0.waits) and lc.send_level == 0
                for lc in during
            ):
                starved.append(f"{x}->{y}")
        if during and after and after[-1].send_frames > during[-1].send_frames:
            resumed.append(f"{x}->{y}")
    ok = bool(starved) and len(resumed) == 2
    summary = (
        f"{link}: starvation reported ({', '.join(starved)}), both directions resumed"
        if ok
        else f"{link}: starved {starved or 'never'}; resumed {resumed or 'neither direction'}"
    )
    return CheckResult(
        f"starvation {link}", ok, summary, data={"starved": starved, "resumed": resumed}
    )


def rejections_total(qkd: Sequence[QkdSample]) -> Counter[str]:
    """Frame rejections by reason over every node's last sample."""
    last: dict[str, QkdSample] = {}
    for s in qkd:
        last[s.node] = s
    total: Counter[str] = Counter()
    for s in last.values():
        for lc in s.links.values():
            total.update(lc.rejected)
    return total
