"""The timeline and the heal: the phases of a run that perturb the network.

`Timeline.run` applies every step at its `at` (looking its action up in
`actions.PERTURBATIONS`), or `at` seconds after the step it comes `after` finished, and
undoes it `duration_s` later; a step that fails records its error and the others go on.
`heal_all` undoes everything at the end of the timeline: attacks cancelled, twins
stopped, transport rules cleared, paused nodes resumed, dead nodes started (not those a
set change removed), Byzantine modes off, KMEs started and refilled, the key managers'
behaviour and faults cleared.
"""

from __future__ import annotations

import asyncio
import contextlib

from devnet.faults import keys, transport, twins
from devnet.faults.actions import PERTURBATIONS, StepRecord, TimelineState, call, resolve
from devnet.faults.attacker import AttackError
from devnet.running import BackendError


class Timeline:
    def __init__(self, state: TimelineState, records: list[StepRecord]) -> None:
        self.state = state
        self.records = records
        self.finished = {r.step.index: asyncio.Event() for r in records}
        """By step index: the step was applied (and undone, if it has a duration)."""

    async def _at(self, t: float) -> None:
        delay = t - self.state.clock()
        if delay > 0:
            await asyncio.sleep(delay)

    async def apply(self, rec: StepRecord) -> None:
        st = self.state
        s = rec.step
        sel = s.param("target") or s.param("nodes") or ()
        if sel:
            rec.nodes = await call(resolve, st.net, sel, st.rng)
        other = list(s.param("from") or ())
        if other:
            rec.other = await call(resolve, st.net, other, st.rng)
        rec.applied_at = st.clock()
        await PERTURBATIONS[s.action].apply(st, rec)
        st.history.event(
            rec.applied_at, s.action, nodes=rec.nodes, params=dict(s.params), **rec.detail
        )

    async def undo(self, rec: StepRecord) -> None:
        undo = PERTURBATIONS[rec.step.action].undo
        if undo is not None:
            await undo(self.state, rec)
        rec.undone_at = self.state.clock()
        self.state.history.event(rec.undone_at, f"undo {rec.step.action}", nodes=rec.nodes)

    async def _one(self, rec: StepRecord) -> None:
        s = rec.step
        try:
            if s.after is not None:
                await self.finished[s.after].wait()
                rec.due = self.state.clock() + s.at
            else:
                rec.due = s.at
            await self._at(rec.due)
            await self.apply(rec)
            if s.duration_s is not None and not PERTURBATIONS[s.action].self_timed:
                await self._at(rec.due + s.duration_s)
                await self.undo(rec)
        except (OSError, BackendError, AttackError) as e:
            rec.error = str(e)
            self.state.history.event(self.state.clock(), "error", step=s.action, detail=str(e))
        finally:
            self.finished[s.index].set()

    async def run(self) -> None:
        await asyncio.gather(*(self._one(r) for r in self.records))


async def heal_all(st: TimelineState, records: list[StepRecord]) -> None:
    """Undo everything: the end of the timeline."""
    net = st.net
    for task in st.attacks.values():
        task.cancel()
    await asyncio.gather(*st.attacks.values(), return_exceptions=True)
    st.attacks.clear()
    for n in st.twins:
        await call(twins.stop_twin, net, n)
    await call(transport.heal, net)
    for name in net.node_names():  # a validator removed by a set change is not started
        with contextlib.suppress(OSError, BackendError):
            await call(net.resume_node, name)
        if not await call(net.node_alive, name):
            await call(net.start_node, name)
    for name in st.byzantine - st.twins:
        with contextlib.suppress(OSError, BackendError):
            await call(twins.byzantine, net, name, None)
    await _heal_key_managers(st, records)
    # Nodes just started answer after a moment: clear their rules once they do.
    deadline = st.clock() + 30
    while st.clock() < deadline:
        missed = await call(transport.heal, net)
        if not missed:
            break
        await asyncio.sleep(0.5)


async def _heal_key_managers(st: TimelineState, records: list[StepRecord]) -> None:
    """KMEs started again, drained links refilled, behaviour and faults cleared."""
    net = st.net
    for n in sorted(st.kmes_down):
        with contextlib.suppress(OSError, BackendError):
            await call(keys.kme_up, net, n)
    st.kmes_down.clear()
    for link, count in sorted(st.drained.items()):
        with contextlib.suppress(OSError, BackendError):
            await call(keys.refill, net, link, count)
    st.drained.clear()
    if any(r.step.action == "kme-behaviour" for r in records):
        with contextlib.suppress(OSError, BackendError):
            await call(keys.set_behaviour, net, {}, None)
    with contextlib.suppress(OSError, BackendError):
        await call(keys.kms_fault, net, "clear", "all")
