"""The safety check `shows_safe` of CONSENSUS.md §2.5 (TetraBFT plus the two-values rule).

Before voting in round r >= 1 a node must be convinced, from a quorum of REPORTs of round r,
that no value other than the proposed one can have been decided in an earlier round. Each
REPORT carries the sender's summaries of its votes in rounds below r. The check succeeds
in one of two ways:

(i)  a quorum of reporters never voted in phase A before r: nothing can have been decided;
(ii) for some earlier round r2, a quorum has no phase-A vote after r2 and, at r2, only for
     the value v ("eligibility"), and v is *safe at r2*: a blocking set of reporters claims,
     from its phase-B votes at or after r2, that nothing but v can have been decided below
     r2, or two different values are each claimed by a blocking set (then nothing at all was
     decided below r2).

Voters use phases (A, B) = (4, 1), which is what protects safety; a leader uses (3, 2) to
pick a value every correct voter will accept. The code below follows the specification
literally (every r2 is tried; no shortcut through a single maximum). `SafetyRules` is a
class only so that the simulator's test mutants can override one comparison at a time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Final, TypeAlias

from consensus.messages import Report, Summary


class Sentinel:
    """An in-memory marker that never equals a decoded hash."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


FRESH: Final = Sentinel("FRESH")
"""A value nobody has voted for; if FRESH is justified, every value is."""
ANY_VALUE: Final = Sentinel("ANY_VALUE")
"""The claim "every value is safe"."""

Value: TypeAlias = bytes | Sentinel
Claim: TypeAlias = Sentinel | frozenset[bytes]
Reports: TypeAlias = Mapping[int, Report]

_NOTHING: frozenset[bytes] = frozenset()


class SafetyRules:
    """The predicates of §2.5. Production code uses the single instance `RULES`."""

    def claimed_at(self, s: Summary, r2: int) -> Claim:
        """What a phase-B summary claims safe at r2 >= 1: ANY_VALUE, one value, or nothing."""
        if s.last_round is None or s.last_round < r2:
            return _NOTHING
        if s.prev_round is not None and s.prev_round >= r2:
            return ANY_VALUE
        return _NOTHING if s.last_value is None else frozenset((s.last_value,))

    def eligible(self, s: Summary, r2: int, v: Value) -> bool:
        """No phase-A vote after r2, and at r2 only a vote for v."""
        return (
            s.last_round is None or s.last_round < r2 or (s.last_round == r2 and s.last_value == v)
        )

    def claim_threshold(self, b: int) -> int:
        """Claims must come from a blocking set."""
        return b

    def two_values(self) -> bool:
        """Whether the two-values rule of `safe_at` is in force (§2.5)."""
        return True

    def safe_at(self, reps: Reports, v: Value, r2: int, phase_b: int, b: int) -> bool:
        """b reporters claim v safe at r2, or two values are each claimed by b reporters."""
        if r2 == 0:
            return True
        need = self.claim_threshold(b)
        n_all = 0
        per_value: Counter[bytes] = Counter()
        for rep in reps.values():
            c = self.claimed_at(rep.s[phase_b - 1], r2)
            if isinstance(c, frozenset):
                per_value.update(c)
            else:
                n_all += 1
        count_v = per_value[v] if isinstance(v, bytes) else 0
        if n_all + count_v >= need:
            return True
        if not self.two_values():
            return False
        return sum(1 for x in per_value if n_all + per_value[x] >= need) >= 2

    def shows_safe(
        self, reps: Reports, v: Value, r: int, phase_a: int, phase_b: int, q: int, b: int
    ) -> bool:
        """reps: sender -> REPORT of round r (one per sender). v: a hash or FRESH."""
        if r == 0:
            return True
        return self.justifying_round(reps, v, r, phase_a, phase_b, q, b) is not None

    def justifying_round(
        self, reps: Reports, v: Value, r: int, phase_a: int, phase_b: int, q: int, b: int
    ) -> int | None:
        """The highest r2 for which branch (ii) holds, r for branch (i), else None."""
        if len(reps) < q:
            return None
        # (i) a quorum of reporters never voted in phase A before round r
        if sum(rep.s[phase_a - 1].last_round is None for rep in reps.values()) >= q:
            return r
        # (ii) some r2 < r: a quorum is eligible at r2 and v is safe at r2
        for r2 in range(r - 1, -1, -1):
            eligible = sum(1 for rep in reps.values() if self.eligible(rep.s[phase_a - 1], r2, v))
            if eligible < q:
                continue
            if self.safe_at(reps, v, r2, phase_b, b):
                return r2
        return None

    def justified_values(
        self, reps: Reports, r: int, phase_a: int, phase_b: int, q: int, b: int
    ) -> list[bytes]:
        """Values named in phase-A or phase-B summaries that pass, best r2 first, then bytes.

        Any value not named in a summary behaves like FRESH, which the caller checks first.
        """
        candidates: set[bytes] = set()
        for rep in reps.values():
            for k in (phase_a, phase_b):
                lv = rep.s[k - 1].last_value
                if lv is not None:
                    candidates.add(lv)
        scored: list[tuple[int, bytes]] = []
        for v in candidates:
            r2 = self.justifying_round(reps, v, r, phase_a, phase_b, q, b)
            if r2 is not None:
                scored.append((-r2, v))
        return [v for _, v in sorted(scored)]


RULES: Final = SafetyRules()


def shows_safe(reps: Reports, v: Value, r: int, phase_a: int, phase_b: int, q: int, b: int) -> bool:
    """`shows_safe` of §2.5 with the production rules."""
    return RULES.shows_safe(reps, v, r, phase_a, phase_b, q, b)


def summarize(votes: Iterable[tuple[int, bytes]], before: int) -> Summary:
    """The summary of one phase from a full vote history `(round, value)`, rounds < before.

    Used by the simulator's truthfulness check (invariant 6) and by tests.
    """
    hist = sorted((r, v) for r, v in votes if r < before)
    if not hist:
        return Summary()
    last_round, last_value = hist[-1]
    prev = [r for r, v in hist if r < last_round and v != last_value]
    return Summary(last_round, last_value, max(prev) if prev else None)
