"""The whole-network simulator: real validators on virtual time over a simulated network.

A clean run commits and passes every checker; a run with seeded faults (partitions,
crashes, lossy and tampering links, key outages) heals and passes them; a failing run
replays to the identical event trace; the schedule, the loop and the network are
functions of the seed."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import multiprocessing
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devnet.simnet.loop import OWNER, Stalled, VirtualLoop
from devnet.simnet.net import SimNet
from devnet.simnet.run import Outcome, Spec, simulate, sweep
from devnet.simnet.schedule import Action, draw, heal_time

ROOT = Path(__file__).resolve().parents[3]


def test_four_validators_commit_and_pass_the_checkers() -> None:
    o = simulate(Spec(seed=1, seconds=6, faults=False))
    assert o.ok, o.failures
    assert min(o.heights.values()) >= 10
    assert len(set(o.heights.values())) == 1
    names = {c.name for c in o.checks}
    assert names >= {
        "agreement",
        "app-hash",
        "no-lost-writes",
        "acked-committed",
        "liveness",
        "no-key-reuse",
        "equivocation",
        "no-frame-accepted-twice",
    }
    committed = next(c for c in o.checks if c.name == "no-lost-writes").data["committed"]
    assert committed >= 5


def _seed_with(*kinds: str, without: tuple[str, ...] = ()) -> int:
    def drawn(seed: int) -> set[str]:
        return {a.kind for a in draw(random.Random(seed), 4, 20)}

    return next(s for s in range(200) if set(kinds) <= drawn(s) and not set(without) & drawn(s))


def test_a_faulty_run_with_a_crash_heals_and_passes() -> None:
    o = simulate(Spec(seed=_seed_with("crash", "partition"), seconds=20), keep_trace=True)
    assert o.ok, o.failures
    kinds = {line.split()[1] for line in o.trace}
    assert {"crash", "start", "lost"} <= kinds
    # The crashed node came back and caught up with the others.
    assert len(set(o.heights.values())) == 1


def test_a_crash_inside_a_synced_write_heals_and_passes() -> None:
    """The node dies inside its own step, while a synced write is in progress (its
    batch kept whole or lost, as the seed draws) and before what the step queued can
    leave; it restarts from what the disk kept. Nothing of that step runs after the
    crash: going on, it met the closed store (`StorageError('store is closed')` in a task
    or a callback of the dead node, seed 75 of the sweep)."""
    seed = _seed_with("crash-at-persist", without=("crash",))
    o = simulate(Spec(seed=seed, seconds=20), keep_trace=True)
    assert o.ok, o.failures
    assert o.errors == []
    crashes = [line for line in o.trace if line.split()[1] == "crash"]
    assert crashes
    assert all(line.split()[3] == "at-persist" for line in crashes)
    assert len(set(o.heights.values())) == 1


NO_QUORUM = (
    Action(1.0, "partition", {"node": 0}),
    Action(1.0, "partition", {"node": 1}),
)
"""Two of four validators cut off until the end: the chain must stop, so liveness fails."""


def test_a_leader_naming_a_batch_nobody_has_costs_rounds_not_the_chain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Node 0 proposes, whenever it leads, blocks naming a batch that does not exist: no
    follower can rebuild them, each asks every peer once and drops the proposal, the
    round timer moves the height to another leader, and the chain goes on."""
    import node.batches

    given_up: list[int] = []
    give_up = node.batches.Dissemination._give_up

    def counting(self: node.batches.Dissemination, digest: bytes) -> None:
        given_up.append(self.me)
        give_up(self, digest)

    monkeypatch.setattr(node.batches.Dissemination, "_give_up", counting)
    byzantine = (Action(0.5, "byzantine", {"node": 0, "mode": "unknown-batch"}),)
    o = simulate(Spec(seed=3, seconds=10, actions=byzantine))
    assert o.ok, o.failures
    assert given_up and 0 not in given_up
    assert min(o.heights.values()) >= 20
    clean = simulate(Spec(seed=3, seconds=10, faults=False))
    assert min(o.heights.values()) >= min(clean.heights.values()) // 2


def test_a_failing_run_replays_to_the_identical_trace() -> None:
    spec = Spec(seed=5, seconds=5, actions=NO_QUORUM)
    first = simulate(spec, keep_trace=True)
    second = simulate(spec, keep_trace=True)
    assert not first.ok
    assert [c.name for c in first.checks if not c.ok] == ["acked-committed", "liveness"] or (
        "liveness" in [c.name for c in first.checks if not c.ok]
    )
    assert first.digest == second.digest
    assert first.trace == second.trace
    assert first.events > 100


def test_different_seeds_give_different_runs() -> None:
    a = simulate(Spec(seed=1, seconds=3))
    b = simulate(Spec(seed=2, seconds=3))
    assert a.digest != b.digest


def test_the_replay_command_names_the_seed_and_the_options() -> None:
    assert Spec(seed=17).command() == "qchain sim net --seed 17 --replay"
    assert (
        Spec(seed=3, seconds=60, crashes=False).command()
        == "qchain sim net --seed 3 --seconds 60 --no-crashes --replay"
    )


def test_the_schedule_heals_by_the_heal_time_and_crashes_one_node_at_a_time() -> None:
    for seed in range(200):
        actions = draw(random.Random(seed), 4, 30)
        assert actions[-1] == Action(heal_time(30), "heal")
        assert all(a.t <= heal_time(30) for a in actions)
        down: set[int] = set()
        for a in actions:
            if a.kind in ("crash", "crash-at-persist"):
                assert not down, f"seed {seed}: two nodes down at {a.t}"
                down.add(a.args["node"])
            elif a.kind == "restart":
                down.discard(a.args["node"])


def test_bursts_come_only_in_runs_long_enough_and_once_a_run() -> None:
    with_burst = 0
    for seed in range(200):
        assert not [a for a in draw(random.Random(seed), 4, 5) if a.kind == "burst"]
        long = draw(random.Random(seed), 4, 20)
        bursts = [a for a in long if a.kind == "burst"]
        assert len(bursts) <= 1
        for a in bursts:
            assert a.t + a.args["seconds"] <= heal_time(20) + 1e-9
            assert 1100 <= a.args["txs"] <= 1500
        with_burst += bool(bursts)
    assert 50 < with_burst < 150


def test_the_virtual_loop_moves_time_only_to_the_next_timer() -> None:
    loop = VirtualLoop(0)
    try:

        async def main() -> tuple[float, float]:
            t0 = loop.time()
            await asyncio.sleep(3600)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(5):
                    await asyncio.Event().wait()
            return t0, loop.time()

        t0, t1 = loop.run_until_complete(main())
        assert (t0, t1) == (0.0, 3605.0)
    finally:
        loop.close()


def test_frames_of_one_connection_arrive_in_the_order_they_were_written() -> None:
    """Frames written in one turn are due at the same virtual time once the jitter is
    clamped to the previous frame's arrival; asyncio's timer heap does not keep the
    order of such callbacks, so the network makes each arrive strictly after the last
    (a frame overtaken on a clean link would be refused as a stale sequence number)."""
    loop = VirtualLoop(0)
    try:
        net = SimNet(loop, random.Random(0), lambda *a: None, 2)
        got: list[int] = []

        async def accept(reader: asyncio.StreamReader, writer: object) -> None:
            while len(got) < 200:
                got.append(int.from_bytes(await reader.readexactly(4), "big"))

        async def main() -> None:
            _, writer = await net.open_connection("10.0.0.1", 27001)
            for k in range(200):
                writer.write(k.to_bytes(4, "big"))
            await asyncio.sleep(1)

        def as_node(i: int, coro: Any) -> Any:
            ctx = contextvars.copy_context()
            ctx.run(OWNER.set, i)
            return loop.create_task(coro, context=ctx)

        loop.run_until_complete(as_node(1, net.start_server(accept, "10.0.0.1", 27001)))  # type: ignore[arg-type]
        loop.run_until_complete(as_node(0, main()))
        assert got == list(range(200))
    finally:
        loop.close()


def test_the_virtual_loop_refuses_to_wait_for_ever() -> None:
    loop = VirtualLoop(0)
    try:
        with pytest.raises(Stalled):
            loop.run_until_complete(asyncio.Event().wait())
    finally:
        loop.close()


def test_the_node_clock_reads_the_virtual_loop() -> None:
    from qchain import clock

    loop = VirtualLoop(9)
    try:

        async def main() -> tuple[float, float, float, float]:
            await asyncio.sleep(10)
            return clock.monotonic(), clock.perf(), clock.wall(), clock.new_rng("x").random()

        mono, perf, wall, r1 = loop.run_until_complete(main())
    finally:
        loop.close()
    loop2 = VirtualLoop(9)
    try:
        r2 = loop2.run_until_complete(_draw())
    finally:
        loop2.close()
    assert mono == perf == 10.0
    assert wall == 1_767_225_610.0
    assert r1 == r2


async def _draw() -> float:
    from qchain import clock

    await asyncio.sleep(10)
    return clock.new_rng("x").random()


SMOKE_SECONDS = 5.0
SUBSCRIBER_DROP_SEED = 3
"""The first seed of 0..19 at which `make sim-mutants` finds `subscriber-drop`
(docs/SIMULATION.md)."""


SMOKE_SLICE = 50


@pytest.mark.parametrize("first", range(0, 200, SMOKE_SLICE))
def test_a_smoke_of_seeded_whole_network_runs_finds_nothing(first: int) -> None:
    """Two hundred short runs with faults, in slices of 50, each slice on every core
    (`sweep`, as `qchain sim net --jobs 0`; the nightly size is `make sim-sweep`)."""
    specs = [Spec(seed=seed, seconds=SMOKE_SECONDS) for seed in range(first, first + SMOKE_SLICE)]
    outcomes = list(sweep(specs, jobs=0))
    assert [o.spec.seed for o in outcomes] == [s.seed for s in specs]
    assert [f"{o.spec.command()}: {o.failures}" for o in outcomes if not o.ok] == []


def test_a_sweep_on_worker_processes_runs_exactly_what_one_process_runs() -> None:
    """`sweep` with jobs > 1 (`--jobs`) gives each seed's run the same event trace
    digest as running it here, in the specs' order."""
    specs = [Spec(seed=seed, seconds=3.0) for seed in (4, 2)]
    here = [simulate(spec).digest for spec in specs]
    assert [o.digest for o in sweep(specs, jobs=2)] == here


def _clean_and_mutated(clean: Spec, mutated: Spec) -> tuple[Outcome, Outcome]:
    """The clean run on a worker process (as `sweep` runs one) while the mutant's runs
    here, where its patch must be undone after it."""
    with concurrent.futures.ProcessPoolExecutor(1, multiprocessing.get_context("spawn")) as pool:
        future = pool.submit(simulate, clean)
        m = simulate(mutated)
        return future.result(), m


def test_the_mutant_no_resync_is_caught_where_the_clean_code_passes() -> None:
    """The first wave's "keys kept after a reconnection" bug, put back: the seed that
    finds it (docs/SIMULATION.md lists how many seeds each mutant takes) passes on the
    real code, and the patch is gone after the run."""
    from qchain.qkd.frame import LinkSender

    original = LinkSender.resync
    clean, mutated = _clean_and_mutated(Spec(seed=1), Spec(seed=1, mutant="no-resync"))
    assert clean.ok, clean.failures
    assert LinkSender.resync is original
    assert not mutated.ok
    assert "liveness" in [c.name for c in mutated.checks if not c.ok]


def test_the_mutant_subscriber_drop_is_caught_where_the_clean_code_passes() -> None:
    """The "subscribers dropped on large blocks" bug, put back: on the seed whose burst
    brings a block of over 1,023 transactions, the real code keeps every follower of
    the event streams, and the mutant drops them."""
    from node.events import EventBus

    original = EventBus.__init__
    clean, mutated = _clean_and_mutated(
        Spec(seed=SUBSCRIBER_DROP_SEED), Spec(seed=SUBSCRIBER_DROP_SEED, mutant="subscriber-drop")
    )
    assert clean.ok, clean.failures
    followed = next(c for c in clean.checks if c.name == "events-followed")
    assert followed.data["largest_block"] > 1023
    assert EventBus.__init__ is original
    assert [c.name for c in mutated.checks if not c.ok] == ["events-followed"]


GAP_STALL_SEED = 5
"""The first seed of 0..19 at which the mutant `gap-stall` fails with `--client eager`
(docs/SIMULATION.md)."""


def test_the_mutant_gap_stall_is_caught_where_the_clean_code_passes() -> None:
    """A client that goes on sending a sender's later nonces after one was refused: with
    the real pool the refused nonce, sent again, takes the place of a later one waiting
    behind its gap, and every acknowledged transaction commits; with waiting
    transactions that never give way nor expire, they fill every pool and the sender
    stalls for good."""
    from node.mempool import Mempool

    original = Mempool._gives_way_to
    clean, mutated = _clean_and_mutated(
        Spec(seed=GAP_STALL_SEED, client="eager"),
        Spec(seed=GAP_STALL_SEED, client="eager", mutant="gap-stall"),
    )
    assert clean.ok, clean.failures
    assert Mempool._gives_way_to is original
    assert [c.name for c in mutated.checks if not c.ok] == ["acked-committed"]


FORWARD_DROP_BURST = (Action(0.5, "burst", {"rate": 250, "seconds": 2.0, "txs": 1300}),)
"""A burst alone, in a run of 6 s: 500 transactions over 2 s, then 1,300 at once (more
than the pool's 1,280), so that the peers' batches reach full pools."""


def test_the_mutant_forward_drop_is_caught_where_the_clean_code_passes() -> None:
    """An overloaded validator dropping, on arrival, the transactions of its peers'
    batches that its pool has no free place for (and its clients free to fill the whole
    pool): the real code takes every transaction of an honest peer's batch (the
    forwards-taken check), the mutant leaves hundreds undecided. The mutant costs only
    delay (the other validators hold what it dropped), so no other check sees it."""
    from node.forwarding import Forwarder

    original = Forwarder.received
    clean, mutated = _clean_and_mutated(
        Spec(seed=1, seconds=6, actions=FORWARD_DROP_BURST),
        Spec(seed=1, seconds=6, actions=FORWARD_DROP_BURST, mutant="forward-drop"),
    )
    assert clean.ok, clean.failures
    taken = next(c for c in clean.checks if c.name == "forwards-taken")
    assert taken.data["received"] > 5000
    assert Forwarder.received is original
    assert [c.name for c in mutated.checks if not c.ok] == ["forwards-taken"]
    dropped = next(c for c in mutated.checks if c.name == "forwards-taken")
    assert dropped.data["undecided"] > 100


def test_a_burst_scale_multiplies_the_burst_and_changes_nothing_else() -> None:
    for seed in range(40):
        plain = draw(random.Random(seed), 4, 20)
        heavy = draw(random.Random(seed), 4, 20, burst_scale=2)
        assert [(a.t, a.kind) for a in plain] == [(a.t, a.kind) for a in heavy]
        for a, b in zip(plain, heavy, strict=True):
            if a.kind == "burst":
                assert b.args["txs"] == 2 * a.args["txs"]
                assert b.args["rate"] == 2 * a.args["rate"]
            else:
                assert a.args == b.args
    assert "--burst-scale 2 --client eager" in Spec(seed=3, burst_scale=2, client="eager").command()


def test_a_run_is_the_same_under_other_string_hash_seeds() -> None:
    """Two processes with different `PYTHONHASHSEED`s: the same trace digest (the CLI
    also pins the hash seed; this shows nothing depends on it)."""
    code = (
        "from devnet.simnet.run import Outcome, Spec, simulate, sweep\n"
        "print(simulate(Spec(seed=4, seconds=5)).digest)\n"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=100
        )
        assert out.returncode == 0, out.stderr
        digests.add(out.stdout.strip())
    assert len(digests) == 1
    assert digests == {simulate(Spec(seed=4, seconds=5)).digest}


SCENARIOS = ROOT / "devnet" / "faults" / "scenarios"


def test_a_fault_kit_scenario_becomes_a_fixed_schedule() -> None:
    from devnet.simnet.scenarios import load

    _, actions, seconds, skipped = load(SCENARIOS / "minority-partition.toml", 4)
    assert [(a.t, a.kind) for a in actions] == [(3, "cut"), (11, "uncut"), (11, "heal")]
    assert actions[0].args == {"nodes": [3], "from": None}
    assert seconds == 16
    assert skipped == []
    _, actions, _, skipped = load(SCENARIOS / "double-vote.toml", 4)
    assert skipped == []
    assert [a.args["mode"] for a in actions if a.kind == "byzantine"][:1] == ["double-vote"]
    _, _, _, skipped = load(SCENARIOS / "disk-bitflip.toml", 4)
    assert skipped == ["corrupt-disk at 6s"]


def test_the_leader_crash_scenario_plays_and_passes() -> None:
    from devnet.simnet.scenarios import load

    scenario, actions, seconds, _ = load(SCENARIOS / "leader-crash.toml", 4)
    spec = Spec(seed=scenario.seed, seconds=seconds, actions=actions, scenario="leader-crash")
    o = simulate(spec, keep_trace=True)
    assert o.ok, o.failures
    crashes = [line.split() for line in o.trace if line.split()[1] == "crash"]
    assert [float(c[0]) for c in crashes] == [3.0]
    assert "--scenario leader-crash" in spec.command()
