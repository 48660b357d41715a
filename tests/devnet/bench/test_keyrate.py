"""The steady-state figures of a benchmark window at a key-rate profile
(`devnet.bench.keyrate`): consumption per link pair against the profile's rate, and the
verdict the report prints."""

from __future__ import annotations

from devnet.bench.keyrate import initial_keys, key_rate_figures, starts_empty, verdict
from devnet.bench.observe import LinkCounters, Snapshot
from devnet.bench.summary import summary

LONG_HAUL_KEYS_S = 10_000 / 256


def _snap(at: float, height: int, keys: dict[tuple[int, int], int], waits: int = 0) -> Snapshot:
    links = {k: LinkCounters(v, v * 32, v, v * 100, waits) for k, v in keys.items()}
    return Snapshot(at, {0: height, 1: height}, links, {k: 10 for k in keys})


def _window(per_direction_s: float, seconds: float = 20.0, waits: int = 0) -> dict[str, object]:
    spent = round(per_direction_s * seconds)
    start = _snap(100.0, 10, {(0, 1): 1000, (1, 0): 1000})
    end = _snap(
        100.0 + seconds, 10 + 2 * int(seconds), {(0, 1): 1000 + spent, (1, 0): 1000 + spent}, waits
    )
    return key_rate_figures("long-haul", (start, end), ({"a~b": 500}, {"a~b": 300}), 4000)


def test_a_window_within_the_rate_is_steady_and_counts_both_directions() -> None:
    k = _window(per_direction_s=15.0)
    assert k["consumed_keys_per_s_per_pair"] == {"mean": 30.0, "max": 30.0}
    assert k["produced_keys_per_s_per_pair"] == round(LONG_HAUL_KEYS_S, 2)
    assert k["rate_used"] == round(30.0 / LONG_HAUL_KEYS_S, 3)
    assert k["steady_state"] is True
    assert k["blocks_per_s"] == 2.0
    assert k["committed_tx_s"] == 200.0
    assert k["stock_start"] == {"kms": 500, "pools": 20}
    assert k["stock_end"] == {"kms": 300, "pools": 20}
    assert verdict(k).startswith("steady state")


def test_a_window_above_the_rate_drew_on_stock() -> None:
    k = _window(per_direction_s=30.0, waits=7)
    assert k["steady_state"] is False
    assert k["key_waits"] == 14, "both directions' waits"
    assert verdict(k).startswith("drew on stock")


def test_an_unknown_profile_is_never_called_steady() -> None:
    start = _snap(0.0, 0, {(0, 1): 0})
    end = _snap(10.0, 5, {(0, 1): 50})
    k = key_rate_figures("no-such-profile", (start, end), (None, None), 0)
    assert k["rate_used"] is None and k["steady_state"] is False
    assert k["stock_start"]["kms"] is None
    assert verdict(k) == "unknown profile rate"


def test_only_lab_starts_with_a_full_stock() -> None:
    assert not starts_empty("lab") and initial_keys("lab") > 0
    for profile in ("metro", "long-haul", "constrained"):
        assert starts_empty(profile) and initial_keys(profile) == 0


def test_summary_adds_the_key_rate_table_for_slow_profiles() -> None:
    point = {
        "offered_tx_s": 500.0,
        "committed_tx_s": 200.0,
        "latency_ms": {"p50": 1.0, "p95": 2.0, "p99": 3.0},
        "block_interval_ms": 500.0,
        "txs_per_block": 100.0,
        "cpu_ms_per_tx": {"node0": 0.2},
        "qkd": {
            "keys_per_block": 10.0,
            "keys_per_tx": 0.1,
            "keys_per_link_per_s": 15.0,
            "frames_per_link_per_height": 5.0,
        },
        "fraction_of_ceiling": 0.1,
        "key_rate": _window(per_direction_s=15.0),
    }
    config = {"validators": 4, "scheme": "ed25519", "tx": "notary", "faults": 0}
    config |= {"baseline": False, "kms_rate": "long-haul"}
    report = {"config": config, "points": [point], "idle": {}}
    text = summary([report])
    assert "keys/s/pair produced" in text and "steady state" in text
    config["kms_rate"] = "lab"
    assert "keys/s/pair produced" not in summary([report])
