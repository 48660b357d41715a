"""`Params`: the one round-timeout formula (CONSENSUS.md §4), for every timing profile."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from consensus.params import Params
from qchain.config import PROFILES, TimingConfig


def _params(t: TimingConfig) -> Params:
    """The consensus parameters the node builds from its timing config."""
    return Params(
        n=4,
        base_ms=t.base_ms,
        backoff=t.backoff,
        cap_ms=t.cap_ms,
        propose_wait_max_ms=t.propose_wait_max_ms,
        sync_interval_ms=t.sync_interval_ms,
    )


def _spec(t: TimingConfig, r: int) -> int:
    """§4 as written: timeout(0) = propose_wait_max + base; min(cap, base * backoff^r)."""
    if r == 0:
        return (t.propose_wait_max_ms or 0) + t.base_ms
    return min(t.cap_ms, int(t.base_ms * t.backoff**r))


@pytest.mark.parametrize("name", sorted(PROFILES))
@pytest.mark.parametrize("idle", [False, True])
def test_round_timeout_follows_section_4_up_to_the_cap(name: str, idle: bool) -> None:
    t = PROFILES[name]
    if idle:
        t = dataclasses.replace(t, propose_wait_max_ms=None)
    p = _params(t)
    got = [p.timeout_ms(r) for r in range(71)]
    assert got == [_spec(t, r) for r in range(71)]
    assert got[70] == t.cap_ms
    assert all(a <= b for a, b in itertools.pairwise(got[1:]))


def test_round_timeout_never_overflows() -> None:
    p = Params(n=4, backoff=1000.0, cap_ms=60_000)
    assert p.timeout_ms(10**6) == 60_000
