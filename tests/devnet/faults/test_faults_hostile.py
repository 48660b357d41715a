"""The hostile-peer kit without a network: new scenario fields, the attacker's bounds and
frames (and one short attack on a local listener), the max-size flood transaction, the
bit flip, and the progress, latency and readiness checkers fed with synthetic histories
that must fail."""

from __future__ import annotations

import asyncio
import random
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from devnet.faults.attacker import (
    Attacker,
    AttackError,
    AttackSpec,
    Victim,
    check_spec,
    forged_frame,
    hello,
    pairs,
)
from devnet.faults.checkers import check_served_blocks
from devnet.faults.disk import flip_bit_in_tables
from devnet.faults.history import History, ReadySample, StatusSample
from devnet.faults.load import Accounts, max_size_anchor_many
from devnet.faults.observer import Observer
from devnet.faults.scenario import load_scenario, parse_scenario, shipped_scenarios
from devnet.faults.service_checks import check_latency, check_progress, check_readiness
from node.wire import Kind, decode_body
from qchain.errors import CodecError, ConfigError
from qchain.qkd.frame import decode_frame
from qchain.types import MAX_TX_SIZE, decode_transaction

NODES = ["node0", "node1", "node2", "node3"]
HOSTILE = (
    "hello-hijack",
    "partner-anchor-flood",
    "vote-flood",
    "future-time-leader",
    "far-height-vote",
    "disk-bitflip",
    "forged-frames",
    "conn-flood",
    "far-claims",
    "unknown-batch-leader",
)


def scenario(step: dict[str, Any], checks: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"duration_s": 30, "step": [step], "checks": checks or {}}


# --- scenarios -----------------------------------------------------------------------


def test_hostile_scenarios_are_shipped_and_local_only_where_needed() -> None:
    shipped = shipped_scenarios()
    for name in HOSTILE:
        sc = load_scenario(shipped[name])
        assert 15 <= sc.duration_s <= 30, name
        assert sc.checks.readiness, name
        local = any(s.action in ("attack", "corrupt-disk") for s in sc.steps)
        assert sc.docker_ok is not local, name


def test_attack_step_parses_with_defaults() -> None:
    sc = parse_scenario(
        scenario(
            {"at": 1, "action": "attack", "mode": "hijack", "target": "node0", "duration_s": 5}
        )
    )
    st = sc.steps[0]
    assert st.param("mode") == "hijack" and st.param("rate") == 16.0
    assert st.param("connections") == 64 and st.param("target") == ("node0",)


@pytest.mark.parametrize(
    "step, field",
    [
        ({"action": "attack", "mode": "slow-reader", "target": "node0", "duration_s": 5}, "mode"),
        ({"action": "attack", "mode": "hijack", "target": "node0"}, "duration_s"),
        (
            {"action": "attack", "mode": "forge", "target": "node0", "duration_s": 5, "rate": 500},
            "rate",
        ),
        (
            {
                "action": "attack",
                "mode": "conn-flood",
                "target": "n",
                "duration_s": 5,
                "connections": 0,
            },
            "connections",
        ),
        ({"action": "partner-flood", "count": 1000}, "count"),
        ({"action": "partner-flood", "account": "mallory"}, "account"),
        ({"action": "corrupt-disk", "target": "node0", "pct": 3}, "pct"),
        ({"action": "byzantine", "target": "node0", "mode": "far-height"}, "mode"),
    ],
)
def test_bad_hostile_steps_name_the_field(step: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_scenario(scenario({"at": 1, **step}))
    assert field in e.value.message or field in str(e.value)


def test_new_checks_parse_and_validate() -> None:
    sc = parse_scenario(
        scenario(
            {"at": 1, "action": "partner-flood"},
            {"min_progress": 3, "max_latency_s": 1.5, "readiness": True, "readiness_stall_s": 4},
        )
    )
    assert sc.checks.min_progress == 3 and sc.checks.max_latency_s == 1.5
    assert sc.checks.readiness and sc.checks.readiness_stall_s == 4.0
    assert sc.steps[0].param("count") == 64 and sc.steps[0].param("account") == "partner1"
    for bad in ({"min_progress": -1}, {"readiness": "yes"}, {"max_latency_s": 0}):
        with pytest.raises(ConfigError):
            parse_scenario(scenario({"at": 1, "action": "heal"}, bad))


# --- the attacker --------------------------------------------------------------------


def victim(i: int, port: int = 1, host: str = "127.0.0.1") -> Victim:
    return Victim(f"node{i}", i, host, port, f"SAE-node{i}")


def spec(kind: str = "hijack", **kw: Any) -> AttackSpec:
    base: dict[str, Any] = {
        "kind": kind,
        "targets": (victim(0),),
        "claims": tuple(victim(i) for i in range(4)),
        "chain_id": "qchain-test",
        "duration_s": 1.0,
    }
    base.update(kw)
    return AttackSpec(**base)


def test_attacks_stay_on_loopback_and_within_bounds() -> None:
    check_spec(spec())
    for bad in (
        spec(targets=(victim(0, host="10.0.0.5"),)),
        spec(duration_s=0),
        spec(duration_s=1000),
        spec(rate=1000),
        spec(connections=10_000),
        spec(kind="slow-reader"),
        spec(claims=(victim(0),)),
    ):
        with pytest.raises(AttackError):
            check_spec(bad)


def test_pairs_never_claim_the_target_itself() -> None:
    got = pairs(spec(targets=(victim(0), victim(1))))
    assert len(got) == 6 and all(t.index != c.index for t, c in got)


def test_forged_frame_is_well_formed_but_untagged() -> None:
    s = spec("forge")
    data = forged_frame(s, victim(0), victim(1), random.Random(5))
    (length,) = struct.unpack(">I", data[:4])
    assert length == len(data) - 4
    header, _, body, tag = decode_frame(data[4:])
    assert header.sender == "SAE-node1" and header.receiver == "SAE-node0"
    assert header.chain_id == "qchain-test" and len(tag) == 16
    assert [e.kind for e in decode_body(bytes(body))] == [Kind.CONSENSUS]


async def test_hijack_reconnects_when_the_node_closes_and_stops_by_itself() -> None:
    hellos: list[bytes] = []

    async def node(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hellos.append(await reader.readexactly(6))
        writer.close()  # the real peer came back: the hijacker's connection is evicted

    server = await asyncio.start_server(node, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        s = spec(targets=(victim(0, port),), claims=(victim(2),), duration_s=0.5, rate=40)
        stats = await asyncio.wait_for(Attacker(s).run(), 5)
    finally:
        server.close()
        await server.wait_closed()
    assert stats.connects >= 3 and stats.closed_by_node >= 3
    assert set(hellos) == {hello(2)}
    assert stats.connects <= 40 * 0.5 + 2


# --- partner flood and disk ----------------------------------------------------------


def test_flood_transactions_are_exactly_the_maximum_size() -> None:
    acc = Accounts("ed25519", "qchain-test")
    txs = [max_size_anchor_many(acc, "partner1", "t") for _ in range(3)]
    assert [len(t.encode()) for t in txs] == [MAX_TX_SIZE] * 3
    assert [t.nonce for t in txs] == [0, 1, 2] and acc.nonce["partner1"] == 3
    tx = decode_transaction(txs[0].encode())
    assert tx.contract == "notary" and tx.method == "anchor_many"
    items = tx.args[0]
    assert len({bytes(i[0]) for i in items}) == len(items)


def test_flip_bit_in_tables_flips_exactly_one_bit_after_the_marker(tmp_path: Path) -> None:
    data = bytes(100) + b"qchain-test" + bytes(range(60)) + bytes(100)
    (tmp_path / "000005.ldb").write_bytes(data)
    (tmp_path / "000001.log").write_bytes(data)
    where = flip_bit_in_tables(tmp_path, b"qchain-test", random.Random(6))
    after = (tmp_path / "000005.ldb").read_bytes()
    diff = [i for i in range(len(data)) if data[i] != after[i]]
    assert diff == [where["offset"]] and bin(data[diff[0]] ^ after[diff[0]]).count("1") == 1
    assert 111 + 8 <= where["offset"] < 111 + 40
    assert (tmp_path / "000001.log").read_bytes() == data


# --- checkers ------------------------------------------------------------------------


def statuses(
    heights: dict[str, list[int]], dt: float = 1.0, latency: float = 0.01
) -> list[StatusSample]:
    return [
        StatusSample(i * dt, n, h, latency_s=latency)
        for n, hs in heights.items()
        for i, h in enumerate(hs)
    ]


def test_progress_needs_k_blocks_in_the_window() -> None:
    good = statuses({"node0": [1, 2, 4, 8, 9]})
    assert check_progress(good, "attack@1s", 1, 4, 5).ok
    stuck = statuses({"node0": [1, 2, 2, 2, 3]})
    bad = check_progress(stuck, "attack@1s", 1, 4, 5)
    assert not bad.ok and "fewer than 5" in bad.summary


def test_latency_fails_on_a_slow_or_silent_honest_node() -> None:
    ok = statuses({n: [1, 2, 3] for n in NODES})
    assert check_latency(ok, NODES, [(0, 3)], 1.0).ok
    slow = [*ok, StatusSample(1.5, "node1", 2, latency_s=1.7)]
    r = check_latency(slow, NODES, [(0, 3)], 1.0)
    assert not r.ok and "node1" in r.details[0]
    silent = [*ok, StatusSample(1.5, "node2", None, latency_s=2.0)]
    assert not check_latency(silent, NODES, [(0, 3)], 1.0).ok
    # The Byzantine node itself and samples outside the windows are not judged.
    assert check_latency(slow, ["node0", "node2", "node3"], [(0, 3)], 1.0).ok
    assert check_latency(slow, NODES, [(2, 3)], 1.0).ok


def ready(node: str, ts: range | list[float], ok: bool | None, *reasons: str) -> list[ReadySample]:
    return [ReadySample(float(t), node, ok, tuple(reasons)) for t in ts]


def test_readiness_holds_for_truthful_nodes() -> None:
    st = statuses({n: list(range(1, 21)) for n in NODES})
    rd = [r for n in NODES for r in ready(n, range(20), True)]
    assert check_readiness(rd, st, NODES, [(2, 12)], 14, 5).ok


def test_readiness_fails_a_stalled_node_that_says_ready() -> None:
    heights = {n: list(range(1, 21)) for n in NODES}
    heights["node0"] = [1, 2, 3] + [3] * 10 + list(range(4, 11))
    st = statuses(heights)
    rd = [r for n in NODES for r in ready(n, range(20), True)]
    r = check_readiness(rd, st, NODES, [(2, 12)], 14, 5)
    assert not r.ok and r.details[0].startswith("node0: answered ready")
    # Said 503 while stalled: truthful.
    rd = [x for x in rd if not (x.node == "node0" and 7 <= x.t <= 12)]
    rd += ready("node0", range(7, 13), False, "connected to 0 peers, a quorum needs 2")
    assert check_readiness(rd, st, NODES, [(2, 12)], 14, 5).ok


def test_readiness_fails_a_committing_node_stuck_not_ready() -> None:
    st = statuses({n: list(range(1, 21)) for n in NODES})
    rd = [r for n in NODES for r in ready(n, range(20), n != "node2", "catching up")]
    r = check_readiness(rd, st, NODES, [(2, 12)], 14, 5)
    assert not r.ok and "node2: commits after the heal" in r.details[0]
    assert "catching up" in r.details[0]


def test_readiness_of_a_corrupted_node() -> None:
    honest = ["node0", "node1", "node3"]
    st = statuses({n: list(range(1, 21)) for n in NODES})
    base = [r for n in honest for r in ready(n, range(20), True)]

    def verdict(samples: list[ReadySample], log: str = "") -> bool:
        rd = base + samples
        return check_readiness(rd, st, honest, [], 14, 5, ["node2"], {"node2": log}).ok

    assert not verdict(ready("node2", range(20), True))
    assert not verdict(ready("node2", range(20), False, "catching up"))
    assert verdict(ready("node2", range(20), False, "store corrupted: block 7 checksum"))
    assert not verdict(ready("node2", range(20), None), "started")
    assert verdict(ready("node2", range(20), None), "refusing to start: LevelDB is damaged")


def test_progress_fails_a_chain_that_stops_halfway() -> None:
    heights = [1, 3, 5, 7, 9, 11, 11, 11, 11, 11, 11, 11, 11]
    st = statuses({"node0": heights})
    assert check_progress(st, "flood", 0, 12, 5).ok
    r = check_progress(st, "flood", 0, 12, 5, max_stall_s=5)
    assert not r.ok and "no block for 7.0s" in r.summary
    assert check_progress(st, "flood", 0, 6, 5, max_stall_s=5).ok


def test_served_blocks_fails_a_node_serving_a_block_that_does_not_verify() -> None:
    bad = {"node2": ["height 7: block transactions do not match the header's tx_root"]}
    r = check_served_blocks(bad, NODES)
    assert not r.ok and r.details == (f"node2: {bad['node2'][0]}",)
    # A damaged node that says it is not ready is judged by the readiness check instead.
    assert check_served_blocks(bad, ["node0", "node1", "node3"]).ok


class BlocksClient:
    """Serves heights 1..top; `bad` heights fail the client's verification."""

    def __init__(self, top: int, bad: set[int]) -> None:
        self.top = top
        self.bad = bad

    async def blocks(self, start: int, limit: int = 20) -> list[Any]:
        heights = range(start, min(self.top, start + limit - 1) + 1)
        if self.bad & set(heights):
            raise CodecError("block transactions do not match the header's tx_root")
        return [
            SimpleNamespace(
                height=h, hash=bytes([h]) * 32, header=SimpleNamespace(app_hash=bytes(32)), txs=()
            )
            for h in heights
        ]


async def test_observer_reads_around_a_block_that_does_not_verify() -> None:
    obs = Observer.__new__(Observer)
    obs.names = ["node0", "node2"]
    obs.history = History()
    obs.clients = {"node0": BlocksClient(250, set()), "node2": BlocksClient(250, {150})}  # type: ignore[dict-item]
    chains = await obs.chains()
    assert sorted(chains["node0"]) == list(range(1, 251))
    assert sorted(chains["node2"]) == [h for h in range(1, 251) if h != 150]
    assert list(obs.history.bad_blocks) == ["node2"]
    assert obs.history.bad_blocks["node2"][0].startswith("height 150: block transactions")
