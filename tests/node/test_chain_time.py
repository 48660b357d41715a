"""Block time rules (CONSENSUS.md §3.7): validity bounds the time so a block can always
follow; timeliness is judged against the local clock with precision and delay."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from devnet.network import plan_network, write_network
from node.chain import MAX_BLOCK_TIME_MS, next_block_time, time_follows
from qchain.config import PROFILES, TimingConfig, load_config, validate
from qchain.errors import ConfigError


def test_time_must_advance_within_the_limit() -> None:
    assert time_follows(10, 11)
    assert not time_follows(10, 10)
    assert not time_follows(10, 9)
    assert time_follows(10, MAX_BLOCK_TIME_MS)
    assert not time_follows(10, MAX_BLOCK_TIME_MS + 1)
    assert not time_follows(10, 2**64 - 1)


def test_a_block_can_always_follow() -> None:
    for parent in (0, 1_700_000_000_000, MAX_BLOCK_TIME_MS - 1, MAX_BLOCK_TIME_MS):
        for now in (0, parent, 2**64 - 1):
            t = next_block_time(parent, now)
            assert time_follows(parent, t), (parent, now, t)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_timeliness_window(profile: str) -> None:
    t: TimingConfig = PROFILES[profile]
    local = 1_700_000_000_000
    p, d = t.clock_precision_ms, t.message_delay_ms
    assert t.timely(local, local, 0)
    assert t.timely(local + p, local, 0)
    assert not t.timely(local + p + 1, local, 0)
    assert t.timely(local - p - d, local, 0)
    assert not t.timely(local - p - d - 1, local, 0)
    # The delay grows with the round, so a too small delay costs rounds, not liveness.
    assert t.timely(local - p - d - 1, local, 5)
    assert not t.timely(2**64 - 1, local, 50)


def test_config_refuses_a_delay_below_the_round_base(tmp_path: Path) -> None:
    plan = plan_network(base_port=None, scheme="ed25519")
    write_network(tmp_path, plan)
    cfg = load_config(tmp_path / "nodes" / plan.nodes[0].name / "config.toml")
    t = dataclasses.replace(cfg.timing, message_delay_ms=cfg.timing.base_ms - 1)
    with pytest.raises(ConfigError, match="message_delay_ms"):
        validate(dataclasses.replace(cfg, timing=t))
