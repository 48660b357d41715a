"""The key-pacing rule (`node.keypacing`) on a simulated link, with a fake clock: the
leader settles at the block rate the key rate pays for, ignores stock, follows the
slowest link, backs off on key waits, and survives a key manager that reports nonsense."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from node.keypacing import MARGIN, NOT_PACED, TRIM_MIN, KeyPacer, LinkKeys

HEARTBEAT_S = 1.0


@dataclass
class SimLink:
    """One pair's pool at the key manager, refilled at `rate` keys/s, with `stock` keys."""

    rate: float
    stock: float
    keys_per_height: float
    reported: float | None = None
    """The rate the key manager reports (`rate` unless set)."""
    spent: int = 0
    waits: int = 0

    def run(self, dt: float) -> None:
        self.stock += self.rate * dt

    def height(self) -> None:
        """One height's frames: each key that is not in stock is a wait."""
        for _ in range(round(self.keys_per_height)):
            if self.stock >= 1:
                self.stock -= 1
            else:
                self.waits += 1
            self.spent += 1

    def view(self) -> LinkKeys:
        reported = self.rate if self.reported is None else self.reported
        return LinkKeys(keys_spent=self.spent, keys_per_s=reported, waits=self.waits)


def run_leader(
    pacer: KeyPacer | None, links: dict[int, SimLink], seconds: float, build_s: float = 0.08
) -> list[float]:
    """A leader with transactions always waiting: it builds every `build_s` (its
    propose wait and consensus) or as the pacer allows. Returns the build times."""
    now, height, builds = 0.0, 0, []
    last_built: float | None = None
    while now < seconds:
        if pacer is not None:
            pacer.observe(now, height, {p: lk.view() for p, lk in links.items()})
        at = now if last_built is None else max(now, last_built + _interval(pacer))
        for lk in links.values():
            lk.run(at - now + build_s)
        now = at + build_s
        last_built = at
        builds.append(at)
        for lk in links.values():
            lk.height()
        height += 1
    return builds


def _interval(pacer: KeyPacer | None) -> float:
    return 0.0 if pacer is None else pacer.min_interval_s()


def rate_in(builds: list[float], start: float) -> float:
    late = [b for b in builds if b >= start]
    return (len(late) - 1) / (late[-1] - late[0])


def test_settles_at_the_block_rate_the_key_rate_pays_for() -> None:
    link = SimLink(rate=39.0, stock=200, keys_per_height=12)
    pacer = KeyPacer(HEARTBEAT_S)
    builds = run_leader(pacer, {1: link}, 120)
    expected = MARGIN * 39.0 / 12
    assert rate_in(builds, 60) == pytest.approx(expected, rel=0.05)
    budget = pacer.budget
    assert budget.limiting_peer == 1
    assert budget.keys_per_height == pytest.approx(12, rel=0.01)
    waits_at_60 = link.waits
    more = run_leader(pacer, {1: link}, 60)
    assert more and link.waits == waits_at_60, "no key waits once pacing has settled"


def test_without_pacing_the_same_link_stalls() -> None:
    """The counter-test: the rule is what keeps the link out of key waits."""
    link = SimLink(rate=39.0, stock=200, keys_per_height=12)
    run_leader(None, {1: link}, 60)
    assert link.waits > 1000


def test_a_large_stock_does_not_make_the_leader_race_ahead() -> None:
    rich = SimLink(rate=39.0, stock=20_000, keys_per_height=12)
    pacer = KeyPacer(HEARTBEAT_S)
    builds = run_leader(pacer, {1: rich}, 30)
    assert rate_in(builds, 5) == pytest.approx(MARGIN * 39.0 / 12, rel=0.05)
    assert rich.stock > 20_000, "paced below the key rate, the stock grows"


def test_the_slowest_link_sets_the_pace() -> None:
    links = {
        1: SimLink(rate=400.0, stock=1000, keys_per_height=12),
        2: SimLink(rate=20.0, stock=0, keys_per_height=12),
        3: SimLink(rate=400.0, stock=1000, keys_per_height=12),
    }
    pacer = KeyPacer(HEARTBEAT_S)
    builds = run_leader(pacer, links, 120)
    assert pacer.budget.limiting_peer == 2
    assert rate_in(builds, 60) == pytest.approx(MARGIN * 20.0 / 12, rel=0.05)
    waits = links[2].waits
    run_leader(pacer, links, 30)
    assert links[2].waits == waits


def test_an_overstated_rate_is_trimmed_by_the_key_waits() -> None:
    """The key manager claims 100 keys/s but makes 30: waits trim the budget until they stop."""
    link = SimLink(rate=30.0, stock=0, keys_per_height=12, reported=100.0)
    pacer = KeyPacer(HEARTBEAT_S)
    run_leader(pacer, {1: link}, 120)
    assert pacer.trim < 1.0
    waits, spent = link.waits, link.spent
    run_leader(pacer, {1: link}, 60)
    # Untrimmed, 0.8 x 100 keys/s would be asked of a link making 30: most keys would wait.
    assert link.waits - waits < 0.01 * (link.spent - spent), "waits all but stop once trimmed"


def test_too_few_heights_is_not_paced() -> None:
    pacer = KeyPacer(HEARTBEAT_S)
    assert pacer.observe(0.0, 5, {1: LinkKeys(0, 39.0, 0)}) == NOT_PACED
    assert pacer.observe(0.5, 6, {1: LinkKeys(12, 39.0, 0)}) == NOT_PACED
    assert pacer.observe(1.0, 7, {1: LinkKeys(24, 39.0, 0)}).min_interval_s > 0


@pytest.mark.parametrize("rate", [None, 0.0, -39.0, math.nan, math.inf, -math.inf])
def test_nonsense_rates_fall_back_to_no_pacing(rate: float | None) -> None:
    pacer = KeyPacer(HEARTBEAT_S)
    for h in range(10):
        budget = pacer.observe(h * 0.1, h, {1: LinkKeys(12 * h, rate, 0)})
    assert budget == NOT_PACED
    assert pacer.min_interval_s() == 0.0


def test_a_nonsense_link_is_left_out_and_the_others_still_pace() -> None:
    pacer = KeyPacer(HEARTBEAT_S)
    for h in range(10):
        budget = pacer.observe(
            h * 0.1, h, {1: LinkKeys(12 * h, -5.0, 0), 2: LinkKeys(12 * h, 39.0, 0)}
        )
    assert budget.limiting_peer == 2
    assert budget.min_interval_s == pytest.approx(12 / (MARGIN * 39.0), rel=0.01)


def test_a_huge_rate_is_no_pacing_and_a_tiny_one_is_one_block_per_heartbeat() -> None:
    huge, tiny = KeyPacer(HEARTBEAT_S), KeyPacer(HEARTBEAT_S)
    for h in range(10):
        huge.observe(h * 0.1, h, {1: LinkKeys(12 * h, 1e18, 0)})
        tiny.observe(h * 0.1, h, {1: LinkKeys(12 * h, 1e-9, 0)})
    assert huge.min_interval_s() < 1e-9
    assert tiny.min_interval_s() == HEARTBEAT_S


def test_counters_that_go_back_or_waits_that_pile_up_stay_bounded() -> None:
    """A counter that goes back (a restarted pool) counts as nothing spent, not as a
    negative cost; waits on every sample trim only down to TRIM_MIN."""
    pacer = KeyPacer(HEARTBEAT_S)
    for h in range(50):
        spent = 1_000_000 - 12 * h
        budget = pacer.observe(h * 0.1, h, {1: LinkKeys(spent, 39.0, 100 * h)})
        assert 0 <= budget.min_interval_s <= HEARTBEAT_S
    assert pacer.trim == TRIM_MIN


def test_a_clock_or_height_that_goes_back_restarts_the_measure() -> None:
    pacer = KeyPacer(HEARTBEAT_S)
    for h in range(10):
        pacer.observe(h * 0.1, h, {1: LinkKeys(12 * h, 39.0, 0)})
    assert pacer.min_interval_s() > 0
    assert pacer.observe(0.0, 3, {1: LinkKeys(0, 39.0, 0)}) == NOT_PACED


def test_configuration_is_checked() -> None:
    with pytest.raises(ValueError):
        KeyPacer(0.0)
    with pytest.raises(ValueError):
        KeyPacer(1.0, margin=1.5)


def test_the_trim_recovers_once_the_waits_stop() -> None:
    """Waits from an outage trim the budget; once keys flow again it comes back in full."""
    pacer = KeyPacer(HEARTBEAT_S)
    for h in range(20):
        pacer.observe(h * 0.5, h, {1: LinkKeys(12 * h, 39.0, 3 * h)})
    assert pacer.trim == TRIM_MIN
    for h in range(20, 220):
        pacer.observe(h * 0.5, h, {1: LinkKeys(12 * h, 39.0, 60)})
    assert pacer.trim == 1.0
    assert pacer.min_interval_s() == pytest.approx(12 / (MARGIN * 39.0), rel=0.01)
