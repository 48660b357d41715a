"""Crashes, restarts and rollbacks of simulated nodes (CONSENSUS.md §8 S8, S9).

A crash discards everything but the node's durable store; a restart feeds the stored
records back through `Start`, exactly as the node does on boot (§2.6). A crash inside a
step happens at one of the points of `CRASH_POINTS`, each defined against the phases of
the driver plan (`consensus.driver`):

- `after_persist`: the durable batch is written, no frame has left;
- `mid_send`: a strict prefix of the plan's frames has left;
- `after_send`: every frame has left, no local effect has happened;
- `before_commit`: the local phase ran up to its first `Commit`, which is not carried out;
- `before_durable`: a `Commit` was carried out (the block executed, the next height started
  and may have voted), and the node crashes when its synced batch would have landed. At a
  random crash, the point means the step's durable batch is written and the commit still
  in flight, if any, is lost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from consensus.amnesia import AmnesiaGuard
from consensus.driver import Plan
from consensus.events import Action, Commit, MempoolNonEmpty, Send, Start
from consensus.sim.app import GENESIS_HASH
from consensus.sim.config import CRASH_POINTS, MS, CrashSpec, Rollback

if TYPE_CHECKING:
    from consensus.sim.world import Sim, SimNode


def arm_crash(sim: Sim, spec: CrashSpec) -> None:
    """At `spec.at_us`: crash now, or at the node's next step that matches the spec."""
    nd = sim.nodes[spec.node][0]
    if spec.point == "now" and spec.trigger is None:
        schedule_restart(sim, nd, spec)
        crash(sim, nd)
    else:
        nd.pending_crash = spec


def crash_point(sim: Sim, nd: SimNode, acts: list[Action], todo: Plan) -> str | None:
    """The point of this step at which `nd` crashes, if it does."""
    spec = nd.pending_crash
    has_commit = any(isinstance(a, Commit) for a in todo.local)
    if spec is not None and spec.up_by_us is not None and sim.now >= spec.up_by_us - MS:
        sim.log(f"node {nd.name} CRASH dropped: no step matched before {spec.up_by_us - MS}us")
        nd.pending_crash = spec = None
    if spec is not None:
        if spec.trigger is not None and not spec.trigger(acts):
            return None
        point = spec.point
        if point == "before_durable":
            return None
        if point == "before_commit" and not has_commit:
            return None
        if point in ("after_persist", "mid_send") and not any(
            isinstance(m, Send) for m in todo.messages()
        ):
            return None
        nd.pending_crash = None
        schedule_restart(sim, nd, spec)
        return point if point != "now" else "after_persist"
    rc = sim.cfg.random_crashes
    if (
        rc is None
        or nd.ident not in rc.nodes
        or sim.now >= rc.until_us
        or sim.down_count >= rc.max_down
        or sim.rng.random() >= rc.prob
    ):
        return None
    point = sim.rng.choice(CRASH_POINTS)
    if (point == "before_commit" and not has_commit) or point == "before_durable":
        point = "after_persist"
    down = sim.rng.randint(*rc.down_us)
    schedule_restart(sim, nd, CrashSpec(nd.ident, down_us=down))
    return point


def schedule_restart(sim: Sim, nd: SimNode, spec: CrashSpec) -> None:
    if spec.dead:
        sim.dead.add(nd.ident)
    if spec.down_us is not None:
        up = sim.now + spec.down_us
        if spec.up_by_us is not None:
            up = min(up, max(spec.up_by_us, sim.now + MS))
        sim.at(up, lambda: restart(sim, nd))


def crash(sim: Sim, nd: SimNode) -> None:
    if not nd.up:
        return
    sim.log(f"node {nd.name} CRASH")
    nd.up = False
    nd.epoch += 1
    nd.timers.clear()
    nd.fetching.clear()
    nd.pending = None
    sim.down_count += 1


def restart(sim: Sim, nd: SimNode) -> None:
    """Boot from the durable store: `Start`, then `StartHeight` if no record is open."""
    if nd.up:
        return
    sim.log(f"node {nd.name} RESTART")
    nd.up = True
    sim.last_restart_us = sim.now
    sim.down_count -= 1
    sim.dead.discard(nd.ident)
    sim.monitor.on_restart(nd)
    nd.engine = sim.make_engine(nd.ident)
    if nd.amnesia is not None:
        nd.amnesia = nd.engine.amnesia = nd.amnesia.restarted()
    nd.seen_keys = {}
    committed = nd.executed = len(nd.chain)
    recs = tuple(nd.records[h] for h in sorted(nd.records))
    blocks = tuple(b for b in nd.blocks.values() if b.height > committed)
    sim.step(nd, Start(recs, blocks, committed, sim.set_epochs(nd)))
    if not any(h > committed for h in nd.records):
        parent = nd.chain[-1] if nd.chain else GENESIS_HASH
        sim.step(nd, sim.start_height(nd, committed + 1, parent, nd.next_anchor))
    if sim.idle_mode and nd.mempool:
        sim.step(nd, MempoolNonEmpty(True))


def snapshot(sim: Sim, ident: int) -> None:
    nd = sim.nodes[ident][0]
    recs, blocks, _ = nd.durable_state()
    nd.snapshots.append((sim.now, recs, blocks, nd.next_anchor))


def rollback(sim: Sim, rb: Rollback) -> None:
    """Crash `rb.node` and restart it from its snapshot (or from nothing)."""
    nd = sim.nodes[rb.node][0]
    crash(sim, nd)
    # The records are replaced on purpose: what the node executed is no claim on them
    # (invariant 14 holds a crash, not a rollback, to it).
    nd.executed = len(nd.chain)
    if rb.wipe or not nd.snapshots:
        nd.records, nd.blocks = {}, {}
    else:
        _, recs, blocks, _ = nd.snapshots[-1]
        nd.records, nd.blocks = recs, blocks
    if rb.amnesic:
        nd.amnesia = AmnesiaGuard(sim.params, nd.ident)
    sim.at(sim.now + 5 * MS, lambda: restart(sim, nd))
