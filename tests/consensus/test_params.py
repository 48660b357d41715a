"""`Params`: the one round-timeout formula (CONSENSUS.md §4), for every timing profile."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from consensus.params import Params
from qchain.config import PROFILES, TimingConfig


def _params(t: TimingConfig) -> Params:
    """The consensus parameters the node builds from its timing config."""
    return Params(n=4).with_timing(t)


def _spec(t: TimingConfig, r: int) -> int:
    """§4 as written: timeout(0) = propose_wait_max + base, or propose_wait_min + base in
    idle mode (no heartbeat); min(cap, base * backoff^r) after."""
    if r == 0:
        wait = t.propose_wait_max_ms
        return (t.propose_wait_min_ms if wait is None else wait) + t.base_ms
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


def test_idle_round_zero_covers_the_leaders_batching_wait() -> None:
    """In idle mode the leader waits propose_wait_min before it builds; a round-0 timer
    of `base` alone would give up on it that much early (the engine did, §4 did not)."""
    p = Params(n=4, base_ms=2000, propose_wait_max_ms=None, propose_wait_min_ms=200)
    assert p.timeout_ms(0) == 2200
    assert Params(n=4, base_ms=2000, propose_wait_max_ms=1000).timeout_ms(0) == 3000
