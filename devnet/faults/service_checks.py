"""Checks of service under attack: the chain kept committing during each step
(`check_progress`), honest nodes kept answering in time (`check_latency`), and `/readyz`
told the truth, above all on a node whose disk was corrupted (`check_readiness`).

Pure functions from recorded samples to a `checkers.CheckResult`, like the other
checkers; what each one observes is spelled out in `devnet/faults/README.md`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from devnet.faults.checkers import CheckResult, first_items
from devnet.faults.history import ReadySample, StatusSample

CORRUPTION_WORDS = ("corrupt", "checksum", "integrity", "damaged")
"""A not-ready reason (or log line) naming store corruption contains one of these."""


def _top(samples: Sequence[StatusSample], t: float) -> int:
    """The highest height any node had answered at or before t."""
    return max((s.height for s in samples if s.t <= t and s.height is not None), default=0)


def check_progress(
    samples: Sequence[StatusSample],
    name: str,
    start: float,
    end: float,
    blocks: int,
    max_stall_s: float | None = None,
) -> CheckResult:
    """The chain commits at least `blocks` blocks between start and end (an attack's
    window): the highest height any node answered grows by that much; and, if
    max_stall_s is given, it never stands still longer than that inside the window (a
    chain that stops halfway through an attack fails even if it made `blocks` first)."""
    h0 = _top(samples, start)
    h1 = _top(samples, end)
    top, since, stall = h0, start, 0.0
    for s in sorted(samples, key=lambda s: s.t):
        if start < s.t <= end and s.height is not None and s.height > top:
            stall = max(stall, s.t - since)
            top, since = s.height, s.t
    stall = max(stall, end - since)
    problems = []
    if h1 - h0 < blocks:
        problems.append(f"fewer than {blocks} blocks")
    if max_stall_s is not None and stall > max_stall_s:
        problems.append(f"no block for {stall:.1f}s (bound {max_stall_s:g}s)")
    summary = f"height {h0} -> {h1} between {start:.1f}s and {end:.1f}s" + (
        ": " + "; ".join(problems) if problems else f", longest stall {stall:.1f}s"
    )
    return CheckResult(
        f"progress {name}",
        not problems,
        summary,
        data={"from": h0, "to": h1, "longest_stall_s": round(stall, 3)},
    )


def check_latency(
    samples: Sequence[StatusSample],
    nodes: Sequence[str],
    windows: Sequence[tuple[float, float]],
    bound_s: float,
) -> CheckResult:
    """During the windows, every `/v1/status` of the given (honest) nodes answered within
    bound_s. A request that did not answer counts as over the bound."""
    slow: dict[str, list[float]] = {}
    worst = 0.0
    for s in samples:
        if s.node not in nodes or not any(a <= s.t <= b for a, b in windows):
            continue
        took = s.latency_s if s.latency_s is not None else float("inf")
        if s.height is None or took > bound_s:
            slow.setdefault(s.node, []).append(s.t)
        if s.height is not None and s.latency_s is not None:
            worst = max(worst, s.latency_s)
    if slow:
        details = tuple(
            f"{n}: {len(ts)} requests slower than {bound_s}s or unanswered, first at {ts[0]:.1f}s"
            for n, ts in sorted(slow.items())
        )
        return CheckResult("latency", False, f"{len(slow)} honest nodes over {bound_s}s", details)
    return CheckResult(
        "latency", True, f"honest nodes answered within {worst:.2f}s (bound {bound_s}s)"
    )


def _names_corruption(text: str) -> bool:
    low = text.lower()
    return any(w in low for w in CORRUPTION_WORDS)


def check_readiness(
    ready: Sequence[ReadySample],
    statuses: Sequence[StatusSample],
    honest: Sequence[str],
    windows: Sequence[tuple[float, float]],
    healed_at: float,
    stall_s: float,
    damaged: Sequence[str] = (),
    log_tails: Mapping[str, str] | None = None,
) -> CheckResult:
    """`/readyz` tells the truth:

    - during the windows (the steps), an honest node whose height has not moved for
      stall_s does not answer ready (it is cut off, or the chain stopped around it);
    - after the final heal, an honest node that commits (its height grew after the heal)
      answers ready the last time it is asked;
    - a node whose disk was corrupted answers not ready with a reason naming the
      corruption, or is down with its log naming it."""
    problems: list[str] = []
    by_node: dict[str, list[tuple[float, int]]] = {}
    for s in sorted(statuses, key=lambda s: s.t):
        if s.height is not None:
            by_node.setdefault(s.node, []).append((s.t, s.height))

    def stalled(node: str, t: float) -> bool:
        hs = by_node.get(node, [])
        now = [h for at, h in hs if at <= t]
        then = [h for at, h in hs if at <= t - stall_s]
        return bool(now and then) and now[-1] == then[-1]

    lying: dict[str, list[float]] = {}
    for r in ready:
        in_window = any(a <= r.t <= b for a, b in windows)
        if r.node in honest and r.ready and in_window and stalled(r.node, r.t):
            lying.setdefault(r.node, []).append(r.t)
    for n, ts in sorted(lying.items()):
        problems.append(
            f"{n}: answered ready {len(ts)} times while its height stood still for "
            f"{stall_s:.0f}s (first at {ts[0]:.1f}s)"
        )
    last: dict[str, ReadySample] = {}
    for r in sorted(ready, key=lambda r: r.t):
        last[r.node] = r
    for n in honest:
        hs = by_node.get(n, [])
        before = [h for at, h in hs if at <= healed_at]
        after = [h for at, h in hs if at > healed_at]
        commits = bool(after) and (not before or max(after) > before[-1])
        fin = last.get(n)
        if commits and (fin is None or not fin.ready):
            why = "no answer" if fin is None or fin.ready is None else "; ".join(fin.reasons)
            problems.append(f"{n}: commits after the heal but is not ready at the end ({why})")
    for n in damaged:
        fin = last.get(n)
        if fin is not None and fin.ready:
            problems.append(f"{n}: its disk was corrupted but it answers ready")
        elif (
            fin is not None and fin.ready is False and not _names_corruption(" ".join(fin.reasons))
        ):
            problems.append(
                f"{n}: not ready, but the reasons do not name the corruption: {list(fin.reasons)}"
            )
        elif (fin is None or fin.ready is None) and not _names_corruption(
            (log_tails or {}).get(n, "")
        ):
            problems.append(f"{n}: down, and its log does not name the corruption")
    ok = not problems
    summary = (
        "stalled nodes not ready, committing nodes ready"
        + (", corrupted nodes name the corruption" if damaged else "")
        if ok
        else f"{len(problems)} untruthful readiness answers"
    )
    return CheckResult("readiness", ok, summary, first_items(problems))
