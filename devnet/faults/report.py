"""The report of a run: its result (checks, history, per-step figures), the text printed
at the end and the JSON report.

Recovery time of a step = seconds from its undo until every node is above the highest
height any node had at the undo. Transactions committed during a step = acknowledged
operations whose commit height lies between the highest heights at its start and end.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devnet.faults import twins
from devnet.faults.actions import StepRecord, TimelineState
from devnet.faults.checkers import CheckResult
from devnet.faults.history import History, StatusSample
from devnet.faults.scenario import Scenario
from devnet.running import BackendError


@dataclass
class RunResult:
    scenario: Scenario
    seed: int
    directory: Path
    checks: list[CheckResult]
    history: History
    steps: list[StepRecord]
    step_stats: list[dict[str, Any]]
    healed_at: float
    load: dict[str, int]
    rejections: dict[str, int]
    kept_up: bool
    hints: list[str]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.name,
            "seed": self.seed,
            "ok": self.ok,
            "directory": str(self.directory),
            "network_left_up": self.kept_up,
            "checks": [c.to_json() for c in self.checks],
            "steps": self.step_stats,
            "healed_at": round(self.healed_at, 3),
            "load": self.load,
            "frame_rejections": self.rejections,
            "where_to_look": self.hints,
            "history": self.history.to_json(),
        }


def max_height(samples: list[StatusSample], t: float) -> int:
    best: dict[str, int] = {}
    for s in samples:
        if s.t <= t and s.height is not None:
            best[s.node] = s.height
    return max(best.values(), default=0)


def _step_stats(rec: StepRecord, history: History, nodes: list[str]) -> dict[str, Any]:
    s = rec.step
    out: dict[str, Any] = {
        "action": s.action,
        "at": s.at,
        "after": s.after,
        "applied_at": None if rec.applied_at is None else round(rec.applied_at, 3),
        "duration_s": s.duration_s,
        "nodes": rec.nodes,
        "params": dict(s.params),
        "error": rec.error,
        "detail": rec.detail,
    }
    if rec.applied_at is None:
        return out
    end = rec.undone_at if rec.undone_at is not None else rec.applied_at
    h0 = max_height(history.statuses, rec.applied_at)
    h1 = max_height(history.statuses, end)
    out["height_at_start"] = h0
    out["height_at_end"] = h1
    out["txs_committed_during"] = sum(
        1 for o in history.ops if o.height is not None and h0 < o.height <= h1
    )
    if rec.undone_at is not None and s.duration_s:
        reached: dict[str, float] = {}
        for smp in sorted(history.statuses, key=lambda x: x.t):
            if smp.t >= rec.undone_at and smp.height is not None and smp.height > h1:
                reached.setdefault(smp.node, smp.t - rec.undone_at)
        out["recovery_s"] = round(max(reached.values()), 2) if set(nodes) <= set(reached) else None
    return out


def step_stats(
    records: list[StepRecord], history: History, nodes: list[str]
) -> list[dict[str, Any]]:
    """Every step's figures (heights, transactions committed, recovery time)."""
    return [_step_stats(r, history, nodes) for r in records]


def hints(st: TimelineState) -> list[str]:
    """Where to look when a check failed: logs, engine dumps, key managers, how to stop."""
    net = st.net
    out = []
    for n in net.node_names():
        out.append(f"{n}: log {net.log_hint(n)}; engine state: GET {net.admin_url(n)}/admin/dump")
    for twin in st.twins:
        out.append(f"twin of {twin}: log {twins.twin_log(net, twin)}")
    with contextlib.suppress(BackendError):
        logs = ", ".join(net.log_hint(k) for k in net.kme_names())
        out.append(f"key managers: logs {logs}; counters: {net.kms_admin_hint()}")
    out.append(f"stop the network with: {net.down_hint()}")
    return out


def render(result: RunResult) -> str:
    lines = [
        f"scenario {result.scenario.name} (seed {result.seed}): "
        + ("ALL CHECKS HELD" if result.ok else "CHECKS FAILED"),
    ]
    if result.scenario.description:
        lines.append(f"  {result.scenario.description}")
    ld = result.load
    lines.append(
        f"load: {ld['submitted']} submitted, {ld['acknowledged']} acknowledged, "
        f"{ld['committed']} committed, {ld['uncommitted']} not committed by the deadline"
    )
    lines.append("timeline:")
    for st in result.step_stats:
        at = st["applied_at"] if st.get("after") is not None else None
        when = (
            f"{st['at']:6.1f}s"
            if at is None
            else f"{at:6.1f}s ({st['at']:g}s after step {st['after']})"
        )
        desc = f"  {when} {st['action']:<10} {','.join(st['nodes']) or ''}"
        params = {k: v for k, v in st["params"].items() if k not in ("target", "nodes")}
        if params:
            desc += " " + " ".join(f"{k}={v}" for k, v in params.items())
        if st.get("duration_s"):
            desc += f" for {st['duration_s']:.0f}s"
        if "txs_committed_during" in st:
            desc += (
                f"; heights {st['height_at_start']}->{st['height_at_end']}, "
                f"{st['txs_committed_during']} txs committed"
            )
        if "recovery_s" in st:
            rec = st["recovery_s"]
            desc += f"; recovered in {rec:.1f}s" if rec is not None else "; did not recover"
        if st.get("detail"):
            shown = {k: v for k, v in st["detail"].items() if k != "hellos"}
            desc += "; " + json.dumps(shown, separators=(",", ":"))
        if st["error"]:
            desc += f"; ERROR {st['error']}"
        lines.append(desc)
    lines.append(f"healed everything at {result.healed_at:.1f}s")
    if result.rejections:
        lines.append(
            "frames rejected: "
            + ", ".join(f"{k} {v}" for k, v in sorted(result.rejections.items()))
        )
    lines.append("checks:")
    for c in result.checks:
        lines.append(f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.summary}")
        for d in c.details if not c.ok or c.name == "equivocation" else ():
            lines.append(f"         {d}")
    if result.hints:
        lines.append(f"the network is left up in {result.directory}; where to look:")
        lines += [f"  {h}" for h in result.hints]
    elif result.kept_up:
        lines.append(f"network left up in {result.directory}")
    return "\n".join(lines)


def write_report(result: RunResult, path: Path) -> None:
    path.write_text(json.dumps(result.to_json(), indent=2) + "\n")
