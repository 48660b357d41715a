"""The checks of a run whose validator set changes (`devnet.simnet.reconf`).

- **reconf-flow**: the add activated (at `e_add`) and the remove activated (at
  `e_remove`) and the removed node was stopped, all before the end of the run;
- **sets-followed**: every `StartHeight(h)` a node built carried `V(h)` and `V(h+1)` as
  the chain defines them (the `validators` contract's `set` query on the highest node at
  the end), so every node computed the same set of each height: a node that counts a
  change one height early or late fails here even where the certificates happen to be
  right;
- **certificates-by-set**: every commit certificate a node holds (the removed node's as
  it had them when it stopped) is signed by q(h) members of `V(h)` and by no one else:
  the joiner's signature on no height before its activation, the removed validator's on
  none from its activation on.
"""

from __future__ import annotations

from collections.abc import Mapping

from contracts import validators
from devnet.faults.checkers import CheckResult
from devnet.simnet.reconf import Changes
from node.runtime import Validator
from qchain.types import quorum_size

Sets = Mapping[int, tuple[int, ...]]
Signers = Mapping[str, Mapping[int, tuple[int, ...]]]
"""node -> height -> the ids that signed the certificate it holds of that height."""


def chain_sets(v: Validator, top: int) -> dict[int, tuple[int, ...]]:
    """`V(h)` for h in 1..top as v's executed state defines it (exact up to its height +
    D): the contract's own query, not the node's `ChainSets`."""
    out = {}
    for h in range(1, top + 1):
        doc = v.query(validators.NAME, "set", {"height": h})
        assert isinstance(doc, dict)
        out[h] = tuple(int(r.id) for r in doc["records"])
    return out


def check_reconf_flow(ch: Changes) -> CheckResult:
    done = ch.e_add is not None and ch.e_remove is not None and ch.retired
    if ch.failure is not None or not done:
        why = ch.failure or "the schedule of changes did not finish by the end of the run"
        return CheckResult("reconf-flow", False, why, tuple(ch.steps))
    return CheckResult(
        "reconf-flow",
        True,
        f"validator {ch.joiner} added from height {ch.e_add}, validator {ch.removed} removed "
        f"from height {ch.e_remove} and stopped",
        tuple(ch.steps),
        {"e_add": ch.e_add, "e_remove": ch.e_remove},
    )


def check_sets_followed(
    starts: Mapping[int, Mapping[int, set[tuple[tuple[int, ...], tuple[int, ...]]]]],
    truth: Sets,
    names: list[str],
) -> CheckResult:
    bad: list[str] = []
    count = 0
    for node, heights in sorted(starts.items()):
        for h, seen in sorted(heights.items()):
            want = (truth.get(h), truth.get(h + 1))
            if None in want:
                continue  # above the highest node's state at the end
            for got in sorted(seen):
                count += 1
                if got != want:
                    bad.append(
                        f"{names[node]} started height {h} with V(h) {list(got[0])}, V(h+1) "
                        f"{list(got[1])}; the chain's are {list(want[0] or ())}, "
                        f"{list(want[1] or ())}"
                    )
    if bad:
        return CheckResult(
            "sets-followed", False, f"{len(bad)} heights started with a wrong set", tuple(bad[:20])
        )
    return CheckResult(
        "sets-followed",
        True,
        f"{count} height starts on {len(starts)} nodes, each with the chain's sets",
    )


def check_certificate_signers(signers: Signers, truth: Sets) -> CheckResult:
    bad: list[str] = []
    count = 0
    for name, certs in sorted(signers.items()):
        for h, ids in sorted(certs.items()):
            members = truth.get(h)
            if members is None:
                continue
            count += 1
            outside = sorted(set(ids) - set(members))
            if outside:
                bad.append(f"{name}: the certificate of height {h} carries {outside}, not of V(h)")
            elif len(set(ids)) < quorum_size(len(members)):
                bad.append(
                    f"{name}: the certificate of height {h} has {len(set(ids))} signatures, "
                    f"q(h) is {quorum_size(len(members))}"
                )
    if bad:
        return CheckResult(
            "certificates-by-set", False, f"{len(bad)} certificates not by V(h)", tuple(bad[:20])
        )
    return CheckResult(
        "certificates-by-set", True, f"{count} certificates, each signed by q(h) of V(h) alone"
    )
