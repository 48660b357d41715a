"""The check phase: which invariants a run is held to, given its scenario and what its
timeline did, and their verdicts over the history and the chains (`checkers`).

A node with a corrupted disk is judged by the readiness check; once it says it is
ready, it is held to everything else too. Key reuse is judged knowing whether a step
tampered with frames (corrupt, replay, forged MACs, twins).
"""

from __future__ import annotations

from devnet.faults.actions import StepRecord, TimelineState
from devnet.faults.checkers import (
    CheckResult,
    check_acked_committed,
    check_agreement,
    check_app_hash,
    check_equivocation,
    check_halt,
    check_key_reuse,
    check_liveness,
    check_lost_writes,
    check_no_restart,
    check_resume,
    check_served_blocks,
    check_starvation,
)
from devnet.faults.history import ChainViews, History
from devnet.faults.reconf import (
    SetEvidence,
    check_activation_window,
    check_membership,
    check_set_changes,
    check_signers,
    expected_operators,
    left_lost_writes,
)
from devnet.faults.scenario import Scenario
from devnet.faults.service_checks import check_latency, check_progress, check_readiness

TAMPERING = ("corrupt", "replay")
TAMPERING_MODES = ("forge-mac", "twin")


def judge(
    scenario: Scenario,
    history: History,
    chains: ChainViews,
    st: TimelineState,
    records: list[StepRecord],
    healed_at: float,
    evidence: SetEvidence | None = None,
) -> list[CheckResult]:
    """Every check the scenario asks for, in report order. The nodes judged are the
    members at the end; a validator a set change removed is held to agreement, app
    hashes and lost writes up to the last height it had (its chain in `st.left`)."""
    names = st.net.node_names()
    spec = scenario.checks
    last_ready = {r.node: r.ready for r in history.readiness}
    trusted = [n for n in names if n not in st.damaged or last_ready.get(n)]
    judged = {n: c for n, c in chains.items() if n in trusted}
    with_left = judged | st.left
    checks = [
        check_served_blocks(history.bad_blocks, trusted + sorted(st.left)),
        check_agreement(with_left),
        check_app_hash(with_left),
        check_lost_writes(history.ops, judged, spec.max_lost),
        *left_lost_writes(history.ops, st.left),
        check_liveness(history.statuses, trusted, healed_at, spec.liveness_deadline_s),
        check_key_reuse(
            history.qkd,
            history.kms,
            {n.name: n.sae_id for n in st.net.plan.nodes},
            _tampering(scenario),
        ),
        check_equivocation(_final_alerts(history), spec.equivocation, st.byzantine),
    ]
    checks += _halt_checks(scenario, history, records, names)
    if spec.all_acked_commit:
        checks.append(check_acked_committed(history.ops))
    if spec.no_restart:
        checks.append(check_no_restart(history.statuses, names))
    for link in spec.starvation:
        window = key_window(records, link)
        if window is None:
            checks.append(CheckResult(f"starvation {link}", False, "no step cut this link's keys"))
        else:
            checks.append(check_starvation(history.qkd, link, *window))
    if evidence is not None:
        checks += [
            check_set_changes(records, st.changes, with_left),
            check_membership(evidence, st.changes, expected_operators(st.net, st.changes)),
            check_signers(evidence, st.changes),
        ]
    if spec.activate_during:
        checks.append(
            check_activation_window(
                st.changes, history.statuses, records, spec.activate_during, healed_at
            )
        )
    return checks + _hostile_checks(scenario, st, history, records, healed_at)


def _tampering(scenario: Scenario) -> bool:
    return any(
        s.action in TAMPERING or (s.action == "byzantine" and s.param("mode") in TAMPERING_MODES)
        for s in scenario.steps
    )


def _final_alerts(history: History) -> dict[str, dict[str, int]]:
    """Each node's alerts as it last answered."""
    out: dict[str, dict[str, int]] = {}
    for s in history.statuses:
        if s.height is not None:
            out[s.node] = s.alerts
    return out


def _halt_checks(
    scenario: Scenario, history: History, records: list[StepRecord], names: list[str]
) -> list[CheckResult]:
    """A step expected to halt the chain: it halted, and (if asked) resumed in time."""
    out = []
    for rec in records:
        if not rec.step.expect_halt or rec.applied_at is None:
            continue
        end = rec.undone_at if rec.undone_at is not None else rec.applied_at
        out.append(check_halt(history.statuses, names, rec.applied_at + rec.step.halt_after_s, end))
        if scenario.checks.max_resume_s is not None and rec.undone_at is not None:
            out.append(
                check_resume(
                    history.statuses,
                    names,
                    f"{rec.step.action}@{rec.step.at:g}s",
                    rec.undone_at,
                    scenario.checks.max_resume_s,
                )
            )
    return out


def _hostile_checks(
    scenario: Scenario,
    st: TimelineState,
    history: History,
    records: list[StepRecord],
    healed_at: float,
) -> list[CheckResult]:
    """Progress during each step, honest nodes' latency, truthful readiness."""
    spec = scenario.checks
    windows = [
        (r.applied_at, r.undone_at)
        for r in records
        if r.applied_at is not None and r.undone_at is not None and r.step.duration_s
    ]
    honest = [n for n in st.net.node_names() if n not in st.byzantine | st.damaged]
    out = []
    for r in records if spec.min_progress else ():
        if r.applied_at is None or r.undone_at is None or not r.step.duration_s:
            continue
        if r.step.expect_halt:
            continue
        name = f"{r.step.action}@{r.step.at:g}s"
        out.append(
            check_progress(
                history.statuses,
                name,
                r.applied_at,
                r.undone_at,
                spec.min_progress,
                spec.max_stall_s,
            )
        )
    if spec.max_latency_s is not None:
        out.append(check_latency(history.statuses, honest, windows, spec.max_latency_s))
    if spec.readiness:
        tails = {n: log_tail(st, n) for n in st.damaged}
        out.append(
            check_readiness(
                history.readiness,
                history.statuses,
                honest,
                windows,
                healed_at,
                spec.readiness_stall_s,
                sorted(st.damaged),
                tails,
            )
        )
    return out


def log_tail(st: TimelineState, name: str, size: int = 8192) -> str:
    """The end of a local node's log ("" if it cannot be read)."""
    try:
        with open(st.net.log_hint(name), "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def key_window(records: list[StepRecord], link: str) -> tuple[float, float] | None:
    """When a step cut `link`'s keys (rate 0, outage or eavesdropper), if one did."""
    a, b = sorted(link.split("~"))
    for rec in records:
        s = rec.step
        if s.action not in ("keys", "kms", "kme-drain"):
            continue
        if rec.applied_at is None or rec.undone_at is None:
            continue
        if s.action in ("keys", "kme-drain") and s.param("rate") != 0:
            continue
        if s.action == "kms" and s.param("mode") == "clear":
            continue
        lk = s.param("link")
        if lk == "all" or sorted(lk.split("~")) == [a, b]:
            return rec.applied_at, rec.undone_at
    return None
