"""Scenario parsing and the invariant checkers, fed with synthetic histories: every
checker must pass a good history and fail the bad ones."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from devnet.faults import keys
from devnet.faults.checkers import (
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
    check_starvation,
)
from devnet.faults.history import (
    BlockView,
    ChainViews,
    KmsSample,
    LinkCounters,
    Op,
    QkdSample,
    StatusSample,
    link_counters_from_qkd,
)
from devnet.faults.scenario import load_scenario, parse_scenario, shipped_scenarios
from devnet.network import plan_network
from devnet.running import BackendError, kme_service
from qchain.errors import ConfigError

NODES = ["node0", "node1", "node2", "node3"]


def chain(
    n: int, fork_at: int | None = None, txs: dict[int, tuple[str, ...]] | None = None
) -> dict[int, BlockView]:
    out = {}
    for h in range(1, n + 1):
        tag = "b" if fork_at is not None and h >= fork_at else "a"
        out[h] = BlockView(h, f"{tag}{h:063x}", f"{tag}{h:063x}", (txs or {}).get(h, ()))
    return out


def good_chains(n: int = 10, txs: dict[int, tuple[str, ...]] | None = None) -> ChainViews:
    return {name: chain(n, txs=txs) for name in NODES}


def op(i: int, tx: str, height: int | None) -> Op:
    return Op(
        i,
        "anchor",
        "admin",
        i,
        tx,
        float(i),
        "node0",
        float(i),
        None if height is None else float(i) + 1,
        height,
    )


# --- scenarios -----------------------------------------------------------------------


def test_every_shipped_scenario_parses() -> None:
    shipped = shipped_scenarios()
    assert len(shipped) >= 10
    for path in shipped.values():
        sc = load_scenario(path)
        assert sc.steps and sc.duration_s > 0


def test_parse_minimal_and_defaults() -> None:
    sc = parse_scenario(
        {
            "duration_s": 10,
            "step": [{"at": 1, "action": "kill", "target": "leader", "duration_s": 3}],
        }
    )
    assert sc.seed == 1 and sc.network.validators == 4
    assert sc.steps[0].param("target") == ("leader",) and sc.steps[0].end == 4
    assert sc.checks.equivocation == "absent"


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({}, "duration_s"),
        ({"duration_s": 10, "bogus": 1}, "scenario.bogus"),
        ({"duration_s": 10, "step": [{"at": 1, "action": "explode"}]}, "step[0].action"),
        ({"duration_s": 10, "step": [{"action": "kill", "target": "node0"}]}, "step[0].at"),
        (
            {
                "duration_s": 10,
                "step": [{"at": 8, "action": "kill", "target": "x", "duration_s": 5}],
            },
            "step[0]",
        ),
        (
            {"duration_s": 10, "step": [{"at": 1, "action": "heal", "duration_s": 5}]},
            "step[0].duration_s",
        ),
        (
            {
                "duration_s": 10,
                "step": [{"at": 1, "action": "drop", "target": "node0", "pct": 200}],
            },
            "step[0].pct",
        ),
        (
            {"duration_s": 10, "step": [{"at": 1, "action": "keys", "link": "node0", "rate": 0}]},
            "step[0].link",
        ),
        (
            {
                "duration_s": 10,
                "step": [{"at": 1, "action": "byzantine", "target": "n", "mode": "evil"}],
            },
            "step[0].mode",
        ),
        (
            {
                "duration_s": 10,
                "step": [{"at": 1, "action": "kill", "target": "n", "expect_halt": True}],
            },
            "step[0].expect_halt",
        ),
        ({"duration_s": 10, "network": {"validators": 3}}, "network.validators"),
        ({"duration_s": 10, "load": {"mix": {"mint": 1}}}, "load.mix.mint"),
        ({"duration_s": 10, "checks": {"equivocation": "maybe"}}, "checks.equivocation"),
        ({"duration_s": 10, "checks": {"starvation": ["node0"]}}, "checks.starvation"),
    ],
)
def test_bad_scenarios_name_the_field(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_scenario(doc)
    assert e.value.field == field


def test_twin_scenarios_are_local_only() -> None:
    doc = tomllib.loads(shipped_scenarios()["twin-validator"].read_text())
    assert not parse_scenario(doc).docker_ok
    assert load_scenario(shipped_scenarios()["leader-crash"]).docker_ok


# --- agreement and app hash ----------------------------------------------------------


def test_agreement_holds_with_lagging_nodes() -> None:
    chains = good_chains()
    chains["node3"] = chain(6)
    assert check_agreement(chains).ok and check_app_hash(chains).ok


def test_agreement_fails_on_a_fork() -> None:
    chains = good_chains()
    chains["node2"] = chain(10, fork_at=7)
    r = check_agreement(chains)
    assert not r.ok and "height 7" in r.details[0] and len(r.details) == 4


def test_app_hash_fails_on_diverging_state() -> None:
    chains = good_chains()
    blocks = dict(chains["node1"])
    blocks[5] = BlockView(5, blocks[5].hash, "f" * 64, ())
    chains["node1"] = blocks
    assert check_agreement(chains).ok
    r = check_app_hash(chains)
    assert not r.ok and "height 5" in r.details[0]


# --- lost writes ---------------------------------------------------------------------


def test_lost_writes_hold() -> None:
    chains = good_chains(txs={3: ("t1", "t2"), 4: ("t3",)})
    ops = [op(1, "t1", 3), op(2, "t2", 3), op(3, "t3", 4), op(4, "t4", None)]
    r = check_lost_writes(ops, chains)
    assert r.ok and r.data["committed"] == 3


def test_lost_write_is_caught() -> None:
    chains = good_chains(txs={3: ("t1",)})
    chains["node2"] = chain(10)  # node2's chain lacks t1
    r = check_lost_writes([op(1, "t1", 3)], chains)
    assert not r.ok and r.data["lost"] == ["t1"] and "node2" in r.details[0]


def test_duplicate_and_moved_writes_are_caught() -> None:
    dup = good_chains(txs={3: ("t1",), 6: ("t1",)})
    assert not check_lost_writes([op(1, "t1", 3)], dup).ok
    moved = good_chains(txs={4: ("t1",)})
    assert not check_lost_writes([op(1, "t1", 3)], moved).ok


def test_a_node_below_the_commit_height_fails() -> None:
    chains = good_chains(txs={8: ("t1",)})
    chains["node3"] = chain(5)
    r = check_lost_writes([op(1, "t1", 8)], chains)
    assert not r.ok and "lacks height 8" in r.details[0]


# --- liveness and halt ---------------------------------------------------------------


def samples(series: dict[str, list[tuple[float, int | None]]]) -> list[StatusSample]:
    return [StatusSample(t, n, h) for n, pts in series.items() for t, h in pts]


def test_liveness_reports_recovery_time() -> None:
    s = samples({n: [(9.5, 20), (10.5, 20), (12.0, 21)] for n in NODES})
    r = check_liveness(s, NODES, healed_at=10.0, deadline_s=5)
    assert r.ok and r.data["recovery_s"] == pytest.approx(2.0)


def test_liveness_fails_when_a_node_stays_behind() -> None:
    series = {n: [(9.5, 20), (12.0, 21)] for n in NODES}
    series["node1"] = [(9.5, 15), (12.0, 16), (14.0, None)]
    r = check_liveness(samples(series), NODES, healed_at=10.0, deadline_s=5)
    assert not r.ok and "node1" in r.summary


def test_liveness_fails_after_the_deadline() -> None:
    s = samples({n: [(9.5, 20), (20.0, 21)] for n in NODES})
    assert not check_liveness(s, NODES, healed_at=10.0, deadline_s=5).ok


def test_halt() -> None:
    still = samples({n: [(3.0, 10), (6.0, 11), (9.0, 11)] for n in NODES})
    assert check_halt(still, NODES, 3.0, 9.0).ok
    moving = samples({n: [(3.0, 10), (6.0, 12), (9.0, 14)] for n in NODES})
    assert not check_halt(moving, NODES, 3.0, 9.0).ok


# --- equivocation --------------------------------------------------------------------


def test_equivocation_expectations() -> None:
    seen = {"node0": {"leader-equivocation": 2}, "node1": {}, "node2": {"vote-equivocation": 1}}
    assert check_equivocation(seen, "expected", ["node2"]).ok
    assert not check_equivocation(
        {"node0": {}, "node2": {"vote-equivocation": 1}}, "expected", ["node2"]
    ).ok
    assert not check_equivocation(seen, "absent", []).ok
    assert check_equivocation({"node0": {"bad-message": 3}}, "absent", []).ok
    assert check_equivocation(seen, "ignore", []).ok


# --- keys ----------------------------------------------------------------------------


def lc(
    frames: int, received: int, *, level: int = 50, errors: int = 0, waits: int = 0, reused: int = 0
) -> LinkCounters:
    return LinkCounters(
        level,
        frames,
        errors,
        waits,
        frames + level,
        received,
        {"key-reused": reused} if reused else {},
    )


def kms(t: float, to_master: int, to_slave: int) -> KmsSample:
    return KmsSample(
        t, {"SAE-node0~SAE-node1": {"keys_to_master": to_master, "keys_to_slave": to_slave}}
    )


SAE = {"node0": "SAE-node0", "node1": "SAE-node1"}


def qkd_pair(t: float, a: LinkCounters, b: LinkCounters) -> list[QkdSample]:
    return [QkdSample(t, "node0", {"node1": a}), QkdSample(t, "node1", {"node0": b})]


def test_key_accounting_holds() -> None:
    r = check_key_reuse(qkd_pair(1.0, lc(100, 90), lc(80, 95)), [kms(1.5, 400, 300)], SAE)
    assert r.ok


def test_more_accepted_frames_than_delivered_keys_fails() -> None:
    r = check_key_reuse(qkd_pair(1.0, lc(100, 200), lc(80, 150)), [kms(1.5, 400, 300)], SAE)
    assert not r.ok and "accepted" in r.details[0]


def test_key_reused_rejections_fail_unless_tampering() -> None:
    q = qkd_pair(1.0, lc(100, 90, reused=3), lc(80, 95))
    assert not check_key_reuse(q, [kms(1.5, 400, 300)], SAE).ok
    r = check_key_reuse(q, [kms(1.5, 400, 300)], SAE, tampering=True)
    assert r.ok and r.data["key_reused_rejections"] == {"node0<-node1": 3}


def test_key_check_needs_key_manager_counters() -> None:
    assert not check_key_reuse(qkd_pair(1.0, lc(1, 1), lc(1, 1)), [], SAE).ok


def test_starvation_reported_and_resumed() -> None:
    q = (
        qkd_pair(1.0, lc(100, 100), lc(100, 100))
        + qkd_pair(5.0, lc(150, 150, level=0, errors=4, waits=1), lc(150, 150, level=0, errors=3))
        + qkd_pair(12.0, lc(300, 300), lc(290, 290))
    )
    assert check_starvation(q, "node0~node1", 2.0, 10.0).ok


def test_starvation_never_reported_fails() -> None:
    q = (
        qkd_pair(1.0, lc(100, 100), lc(100, 100))
        + qkd_pair(5.0, lc(150, 150), lc(150, 150))
        + qkd_pair(12.0, lc(300, 300), lc(290, 290))
    )
    assert not check_starvation(q, "node0~node1", 2.0, 10.0).ok


def test_starvation_without_recovery_fails() -> None:
    q = (
        qkd_pair(1.0, lc(100, 100), lc(100, 100))
        + qkd_pair(5.0, lc(150, 150, level=0, errors=4), lc(150, 150, level=0, errors=3))
        + qkd_pair(12.0, lc(150, 150, level=0, errors=9), lc(150, 150, level=0, errors=9))
    )
    r = check_starvation(q, "node0~node1", 2.0, 10.0)
    assert not r.ok and r.data["resumed"] == []


def test_link_counters_from_a_qkd_document() -> None:
    doc = {
        "sae_id": "SAE-node0",
        "links": {
            "SAE-node1": {
                "peer": 1,
                "send": {"level": 3, "frames": 10, "kms_errors": 2, "waits": 1, "keys_fetched": 13},
                "receive": {"frames": 9, "rejected": {"bad-tag": 1}},
                "transport": {"rejected": {"bad-tag": 1, "key-reused": 2}},
            }
        },
    }
    out = link_counters_from_qkd(doc, {"SAE-node1": "node1"})
    assert out["node1"] == LinkCounters(3, 10, 2, 1, 13, 9, {"bad-tag": 1, "key-reused": 2})


# --- key managers: one per node ------------------------------------------------------


class FakeKmeTarget:
    """Records key manager admin calls; the rest of `devnet.running.Network` is not needed here."""

    def __init__(self, kme_mode: str) -> None:
        self.plan = plan_network(kme_mode=kme_mode, scheme="ed25519")
        self.calls: list[tuple[str, str, str, object]] = []
        self.stopped: list[str] = []

    def kme_names(self) -> list[str]:
        if self.plan.kme_mode == "per-node":
            return [f"kme-{n.name}" for n in self.plan.nodes]
        return ["kms"]

    def kme_of(self, name: str) -> str:
        return kme_service(self.plan, name)

    def kme_admin(self, kme: str, method: str, path: str, body: object = None) -> Any:
        self.calls.append((kme, method, path, body))
        return None

    def stop_kme(self, kme: str) -> None:
        self.stopped.append(kme)


def _kme_target(kme_mode: str) -> Any:
    return FakeKmeTarget(kme_mode)


def test_kme_steps_parse() -> None:
    sc = parse_scenario(
        {
            "duration_s": 30,
            "network": {"kme_per_node": True, "relay_delay_ms": 50},
            "step": [
                {"at": 1, "action": "kme-down", "target": "node3", "duration_s": 5},
                {
                    "at": 2,
                    "action": "kme-behaviour",
                    "switches": {"exhausted_status": 404, "partial_batches": True},
                    "duration_s": 5,
                },
                {"at": 3, "action": "kme-behaviour", "target": "node1", "switches": {}},
                {
                    "at": 4,
                    "action": "kme-drain",
                    "duration_s": 10,
                    "expect_halt": True,
                    "halt_after_s": 6,
                },
            ],
            "checks": {"max_resume_s": 5},
        }
    )
    assert sc.network.kme_per_node and sc.network.relay_delay_ms == 50
    down, behaviour, one_site, drain = sc.steps
    assert down.param("target") == ("node3",)
    assert behaviour.param("target") is None
    assert dict(behaviour.param("switches")) == {"exhausted_status": 404, "partial_batches": True}
    assert one_site.param("target") == ("node1",)
    assert drain.param("link") == "all" and drain.param("rate") == 0
    assert drain.param("refill") == 2048 and drain.halt_after_s == 6
    assert sc.checks.max_resume_s == 5
    assert sc.docker_ok  # every KME action reaches a Docker devnet's KME containers too


@pytest.mark.parametrize(
    ("step", "field"),
    [
        ({"action": "kme-behaviour"}, "step[0].switches"),
        (
            {"action": "kme-behaviour", "switches": {"exhausted_status": 418}},
            "step[0].switches",
        ),
        ({"action": "kme-behaviour", "switches": {"colour": 1}}, "step[0].switches"),
        ({"action": "kme-drain", "refill": 20_001}, "step[0].refill"),
        ({"action": "kme-drain", "rate": "lab"}, "step[0].rate"),
        ({"action": "kme-drain", "link": "node0"}, "step[0].link"),
        ({"action": "kme-down", "link": "all"}, "step[0].link"),
        ({"action": "kme-drain", "halt_after_s": 3}, "step[0].halt_after_s"),
        (
            {"action": "kme-drain", "duration_s": 4, "expect_halt": True, "halt_after_s": 4},
            "step[0].halt_after_s",
        ),
    ],
)
def test_bad_kme_steps_name_the_field(step: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_scenario({"duration_s": 10, "step": [{"at": 1, **step}]})
    assert e.value.field == field


@pytest.mark.parametrize(
    ("network", "field"),
    [
        ({"kme_per_node": "yes"}, "network.kme_per_node"),
        ({"relay_delay_ms": 50}, "network.relay_delay_ms"),
        ({"kme_per_node": True, "relay_delay_ms": -1}, "network.relay_delay_ms"),
    ],
)
def test_bad_kme_network_names_the_field(network: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_scenario({"duration_s": 10, "network": network})
    assert e.value.field == field


def test_link_faults_reach_both_ends_kmes() -> None:
    tg = _kme_target("per-node")
    assert keys.kmes_for_link(tg, "node0~node3") == ["kme-node0", "kme-node3"]
    assert keys.kmes_for_link(tg, "all") == [f"kme-node{i}" for i in range(4)]
    keys.set_keys(tg, "node3~node0", 0)
    assert {c[0] for c in tg.calls} == {"kme-node0", "kme-node3"}
    assert all("/admin/links/SAE-node3/SAE-node0/" in c[2] for c in tg.calls)


def test_shared_kms_gets_every_link_once() -> None:
    tg = _kme_target("shared")
    assert keys.kmes_for_link(tg, "node0~node3") == ["kms"]
    keys.kms_fault(tg, "outage", "all")
    assert len(tg.calls) == 6 and {c[0] for c in tg.calls} == {"kms"}
    with pytest.raises(BackendError):
        keys.kme_down(tg, "node3")


def test_drain_and_refill_every_link_at_every_kme() -> None:
    tg = _kme_target("per-node")
    keys.drain(tg, "all", 0)
    assert len(tg.calls) == 4 * 6 * 2
    rate = ("kme-node2", "POST", "/admin/links/SAE-node1/SAE-node3/rate", {"bits_per_second": 0})
    assert rate in tg.calls
    assert tg.calls[:2] == [
        ("kme-node0", "POST", "/admin/links/SAE-node0/SAE-node1/rate", {"bits_per_second": 0}),
        ("kme-node0", "POST", "/admin/links/SAE-node0/SAE-node1/stored", {"stored_key_count": 0}),
    ]
    tg.calls.clear()
    keys.refill(tg, "node1~node2", 100)
    assert tg.calls == [
        (kme, "POST", f"/admin/links/SAE-node1/SAE-node2/{what}", body)
        for kme in ("kme-node1", "kme-node2")
        for what, body in (("rate", {"profile": "lab"}), ("stored", {"stored_key_count": 100}))
    ]


def test_behaviour_and_kme_down_pick_one_site() -> None:
    tg = _kme_target("per-node")
    keys.set_behaviour(tg, {"exhausted_status": 409}, ["node3"])
    assert tg.calls == [("kme-node3", "PUT", "/admin/behaviour", {"exhausted_status": 409})]
    tg.calls.clear()
    keys.set_behaviour(tg, {}, None)
    assert [c[0] for c in tg.calls] == [f"kme-node{i}" for i in range(4)]
    assert keys.kme_down(tg, "node3") == "kme-node3" and tg.stopped == ["kme-node3"]


def test_counters_add_up_over_kmes() -> None:
    a = {"L": {"keys_to_master": 3, "keys_to_slave": 3}}
    b = {"L": {"keys_to_master": 2}, "M": {"keys_to_slave": 1}}
    assert keys.sum_links([a, b]) == {
        "L": {"keys_to_master": 5, "keys_to_slave": 3},
        "M": {"keys_to_slave": 1},
    }


def test_resume_after_refill() -> None:
    series = {
        "node0": [(9.0, 37), (10.0, 37), (11.0, 38), (12.0, 40)],
        "node1": [(9.0, 37), (10.0, 37), (11.5, 38), (12.5, 41)],
    }
    ok = check_resume(samples(series), ["node0", "node1"], "kme-drain@3s", 10.0, 5.0)
    assert ok.ok and "1.50s" in ok.summary
    slow = check_resume(samples(series), ["node0", "node1"], "kme-drain@3s", 10.0, 1.2)
    assert not slow.ok
    stuck = {"node0": [(9.0, 37), (12.0, 40)], "node1": [(9.0, 37), (14.0, 37)]}
    bad = check_resume(samples(stuck), ["node0", "node1"], "x", 10.0, 5.0)
    assert not bad.ok and any("node1: no block" in e for e in bad.details)


def test_acknowledged_ops_must_commit() -> None:
    done = [op(1, "t1", 3), op(2, "t2", 4)]
    assert check_acked_committed(done).ok
    pending = [*done, op(3, "t3", None)]
    result = check_acked_committed(pending)
    assert not result.ok and "1 of 3" in result.summary


def test_restart_shows_as_uptime_dropping() -> None:
    steady = [StatusSample(t, "node0", 5, uptime_s=100 + t) for t in (1.0, 2.0, 3.0)]
    gap = [StatusSample(2.5, "node0", None)]
    assert check_no_restart(steady + gap, ["node0"]).ok
    restarted = [*steady, StatusSample(4.0, "node0", 5, uptime_s=0.7)]
    result = check_no_restart(restarted, ["node0"])
    assert not result.ok and "node0: uptime 103.0s" in result.details[0]


def test_counters_carry_over_a_kme_restart() -> None:
    last = {"L": {"keys_to_master": 10, "stored_key_count": 50}}
    assert not keys.restarted(last, {"L": {"keys_to_master": 12, "stored_key_count": 0}})
    now = {"L": {"keys_to_master": 2, "stored_key_count": 2048}}
    assert keys.restarted(last, now)
    final = {"L": {"keys_to_master": 14, "stored_key_count": 40}}
    base = keys.carry_over({}, last, final)
    assert base == {"L": {"keys_to_master": 14, "stored_key_count": 0}}
    assert keys.sum_links([base, now])["L"]["keys_to_master"] == 16
    again = keys.carry_over(base, {"L": {"keys_to_master": 5}}, {})
    assert again["L"]["keys_to_master"] == 19
