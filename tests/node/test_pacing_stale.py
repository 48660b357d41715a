"""A build the engine asked for can wait (for its time, or for transactions) while its
height is committed by another path: another round's block, or catch-up. Building it then
would fail ("cannot build height h on top of h") and raise a false `build-failed` alert;
the stale request is dropped instead. Seen once in a loaded run of the largest-transactions
devnet test."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from consensus.events import BuildBlock
from consensus.params import Params
from node.pacing import BlockPacer
from qchain.config import PROFILES, MempoolSection


class _App:
    def __init__(self, tip: int) -> None:
        self.height = tip
        self.builds: list[int] = []

    def tip(self) -> tuple[int, bytes, bytes, int]:
        return self.height, b"", b"", 0

    def build(self, height: int, *args: Any) -> Any:
        self.builds.append(height)
        if height != self.height + 1:
            raise AssertionError("built on the wrong tip")
        return SimpleNamespace(cblock=object())


def _pacer(app: _App, alerts: list[str], fed: list[Any]) -> BlockPacer:
    mempool = SimpleNamespace(has_ready=lambda: False, reap=lambda n, b: [])
    alarms = SimpleNamespace(alert=lambda name, msg: alerts.append(name))
    byzantine = SimpleNamespace(me=0, block_time_ms=lambda: 1_000)
    metrics = SimpleNamespace(execution_block_duration=SimpleNamespace(observe=lambda s: None))
    return BlockPacer(
        PROFILES["lan"],
        MempoolSection(),
        Params(n=4),
        cast(Any, app),
        cast(Any, mempool),
        cast(Any, SimpleNamespace(verify_s=0.0)),
        cast(Any, metrics),
        cast(Any, alarms),
        cast(Any, byzantine),
        fed.append,
    )


async def test_a_build_for_a_height_committed_meanwhile_is_dropped_without_an_alert() -> None:
    app, alerts, fed = _App(tip=0), [], []
    pacer = _pacer(app, alerts, fed)
    pacer.pending = BuildBlock(1, 1, b"p")
    app.height = 1  # height 1 committed from another round's block
    pacer.maybe_build()
    assert (app.builds, alerts, fed, pacer.pending) == ([], [], [], None)
    pacer.cancel_timers()


async def test_a_round_change_build_on_the_right_tip_still_builds_at_once() -> None:
    app, alerts, fed = _App(tip=0), [], []
    pacer = _pacer(app, alerts, fed)
    pacer.request_build(BuildBlock(1, 1, b"p"))
    await asyncio.sleep(0)
    assert app.builds == [1] and alerts == [] and len(fed) == 1
    pacer.cancel_timers()
