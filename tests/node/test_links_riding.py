"""Envelopes that ride (`Links.send_riding`): a commit signature waits for the next
envelope to its peer and is queued just before it, so the transport packs both into one
frame (one key); it leaves alone only when its wait is over, and the waiting is bounded."""

from __future__ import annotations

import asyncio
from typing import Any

from consensus.messages import Vote, decode_message
from node.links import MAX_RIDERS, Links
from node.wire import Envelope, Kind


class _Transport:
    def __init__(self) -> None:
        self.sent: list[tuple[int, Envelope]] = []

    def send(self, peer: int, env: Envelope) -> None:
        self.sent.append((peer, env))


class _Honest:
    def outgoing(self, to: int, msg: Any) -> Any:
        return msg


def _links() -> tuple[Links, _Transport]:
    links = Links(0, {i: f"sae{i}" for i in range(4)}, _Honest())  # type: ignore[arg-type]
    t = _Transport()
    links.transport = t  # type: ignore[assignment]
    return links, t


SIG = Envelope(Kind.CERT_SIG, b"sig")
VOTE = Vote("qchain-test", 2, 0, 1, b"\x01" * 32)


async def test_a_rider_waits_for_the_next_envelope_to_its_peer_and_goes_just_before_it() -> None:
    links, t = _links()
    links.send_riding(SIG, range(4), wait_s=60)
    assert t.sent == [], "nothing leaves alone before its wait is over"
    links.send_consensus(1, VOTE)
    assert [(p, e.kind) for p, e in t.sent] == [(1, Kind.CERT_SIG), (1, Kind.CONSENSUS)]
    assert decode_message(t.sent[1][1].payload) == VOTE
    # forwarded transactions carry riders too; peer 3 still waits
    links.send_all(Envelope(Kind.BATCH, b"txs"), [2])
    assert [(p, e.kind) for p, e in t.sent[2:]] == [(2, Kind.CERT_SIG), (2, Kind.BATCH)]
    links.send(2, Envelope(Kind.BATCH, b"more"))
    assert [(p, e.kind) for p, e in t.sent[4:]] == [(2, Kind.BATCH)], "a rider leaves once"
    links.cancel_timers()


async def test_only_riders_whose_wait_is_over_leave_alone() -> None:
    links, t = _links()
    links.send_riding(SIG, [1], wait_s=0)
    late = Envelope(Kind.CERT_SIG, b"later")
    links.send_riding(late, [2], wait_s=60)
    timer = links._rider_timer
    assert timer is not None
    assert timer.when() <= asyncio.get_running_loop().time(), "armed for the oldest rider"
    links._release_due()
    assert t.sent == [(1, SIG)]
    rearmed = links._rider_timer
    assert rearmed is not None and rearmed.when() > asyncio.get_running_loop().time() + 50
    links.cancel_timers()
    assert links._rider_timer is None
    links.send_consensus(2, VOTE)
    assert [e.kind for _, e in t.sent[1:]] == [Kind.CONSENSUS], "cancel drops what waited"


async def test_riders_per_peer_are_bounded() -> None:
    links, t = _links()
    for i in range(MAX_RIDERS):
        links.send_riding(Envelope(Kind.CERT_SIG, bytes([i])), [1], wait_s=60)
    assert t.sent == []
    links.send_riding(Envelope(Kind.CERT_SIG, b"one more"), [1], wait_s=60)
    assert len(t.sent) == MAX_RIDERS + 1 and {p for p, _ in t.sent} == {1}
    links.cancel_timers()


async def test_without_a_transport_nothing_waits() -> None:
    links, _ = _links()
    links.transport = None
    links.send_riding(SIG, range(4), wait_s=60)
    assert links._rider_timer is None and not links._riders
