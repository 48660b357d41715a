"""Deliberately broken engines, used only by tests and `qchain sim` to prove the simulator
has teeth. Production code never imports this module.

Each mutant changes one rule that CONSENSUS.md marks as carrying safety or liveness:
`<=` instead of `<` in eligibility, value-blind claims in `claimed_at`, claims by a single
reporter instead of a blocking set, the two-values rule of `safe_at` removed, no persist
before a vote, no body persisted with VOTE1, a quorum of n-f-1, and (§10.8 M1) a set
change activated one height early.
"""

from __future__ import annotations

from dataclasses import replace

from consensus.engine import Engine
from consensus.events import Action, Persist, StartHeight
from consensus.instance import Instance
from consensus.messages import Block, Summary
from consensus.params import Params
from consensus.safety import ANY_VALUE, Claim, SafetyRules, Value
from consensus.sim.config import EngineFactory


class LeqEligibility(SafetyRules):
    def eligible(self, s: Summary, r2: int, v: Value) -> bool:
        return s.last_round is None or s.last_round <= r2


class ValueBlindClaims(SafetyRules):
    def claimed_at(self, s: Summary, r2: int) -> Claim:
        if s.last_round is None or s.last_round < r2:
            return frozenset()
        return ANY_VALUE


class NoBlockingClaim(SafetyRules):
    def claim_threshold(self, b: int) -> int:
        return 1


class NoTwoValues(SafetyRules):
    def two_values(self) -> bool:
        return False


def _with_rules(rules: SafetyRules) -> EngineFactory:
    class RulesMutant(Engine):
        pass

    RulesMutant.rules = rules
    return RulesMutant


class SkipPersistBeforeVote(Engine):
    def _cast(self, inst: Instance, k: int, v: bytes) -> list[Action]:
        """A cast's output starts with its own persist: drop it, keep the VOTE."""
        out = super()._cast(inst, k, v)
        return out[1:] if out and isinstance(out[0], Persist) else out


class NoBodyWithVote1(Engine):
    def _vote1_body(self, blk: Block) -> list[Action]:
        return []


class SmallQuorum(Engine):
    def quorum(self, inst: Instance) -> int:
        return inst.vs.n - inst.vs.f - 1


class EarlyActivation(Engine):
    """§10.8 M1: a change activates at e-1: the height before an activation is run with
    the set of the activation height."""

    def _on_start_height(self, ev: StartHeight) -> list[Action]:
        if ev.next_members is not None and ev.members != ev.next_members:
            ev = replace(ev, members=ev.next_members)
        return super()._on_start_height(ev)


MUTANTS: dict[str, EngineFactory] = {
    "leq-eligibility": _with_rules(LeqEligibility()),
    "value-blind-claims": _with_rules(ValueBlindClaims()),
    "no-blocking-claim": _with_rules(NoBlockingClaim()),
    "no-two-values": _with_rules(NoTwoValues()),
    "skip-persist-before-vote": SkipPersistBeforeVote,
    "no-body-with-vote1": NoBodyWithVote1,
    "quorum-n-f-1": SmallQuorum,
}

RECONF_MUTANTS: dict[str, EngineFactory] = {
    "early-activation": EarlyActivation,
}
"""Mutants of §10 (`consensus.sim.scenarios.RECONF_SCENARIOS` catch them)."""


def make(name: str) -> EngineFactory:
    return (MUTANTS | RECONF_MUTANTS)[name]


__all__ = ["MUTANTS", "RECONF_MUTANTS", "Params", "make"]
