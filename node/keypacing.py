"""Key-aware block pacing: a leader builds blocks no faster than its links' QKD key rate
can pay for.

Every height costs each link some frames, one one-time key each: the consensus messages,
the forwarded transaction batches, the commit signatures. The two SAEs of a link draw on
one pool at the key manager, refilled at the link's rate; what the key manager and the
node's own pools hold beyond that is stock, gone after a burst. A link therefore sustains

    B_link = MARGIN × rate_link / keys_per_height_link     blocks per second

where `rate_link` is the keys a second the key manager reports for the pair (the
`bits_per_second` of its status ÷ the key size), and `keys_per_height_link` the keys this
node spent on the link in both directions (sent, and received from the peer) per
committed height, over the last WINDOW_S seconds. The leader builds at most B = min over
its links blocks a second (`KeyPacer.min_interval_s` after its previous build); the
mempool fills meanwhile, so blocks grow up to the block cap and throughput holds: only
latency pays. Stock is never counted, so a link with a large stock cannot make the leader
race ahead and then stall on key waits. Keys that are not paid per height (forwarded
batches come at the clients' pace) are priced in by the measurement: at a lower block
rate they cost more per height, and B settles where the link's rate pays for everything.

A key wait on one of this node's send pools means the estimate was too high (something
spends the pair's keys that the node does not see, or the key manager overstates its
rate): the rate is trimmed by TRIM_DOWN at each observation that saw new waits, down to
TRIM_MIN, and recovers by TRIM_UP per WINDOW_S without waits.

What the key manager reports is hostile input. A link whose rate is unknown, zero,
negative or not finite is left out; when no link is left the leader is not paced (the
behaviour without pacing: frames wait when keys run out). Whatever the figures, the
interval between two builds is at most `max_interval_s` (one block per heartbeat,
`propose_wait_max`), so nonsense never makes blocks arbitrarily slow; and a huge rate
gives an interval of about zero, which is no pacing. Followers are not paced: the pacer
asks only when this node builds.

Forwarded transactions go to the leader at the clients' pace, one frame (one key) per
batch, which on a slow link can cost more keys than the consensus itself. A follower
therefore hands its batches to the transport as lazy envelopes (`forward_wait_s`): they
ride in the next frame that goes to the leader anyway (a vote every few tens of
milliseconds under load), and only if none goes within the wait do they take a key of
their own, at most FORWARD_SHARE of the link's key rate.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

MARGIN = 0.8
"""Share of a link's reported key rate the leader plans to spend; the rest refills the
stock that absorbs bursts (round changes, catch-up, keepalives, batch fetches)."""
WINDOW_S = 5.0
"""Seconds of history the keys-per-height figure is measured over."""
MIN_WINDOW_HEIGHTS = 2
"""Fewer committed heights than this in the window: not enough to measure, no pacing."""
MIN_KEYS_PER_HEIGHT = 1.0
"""A height costs a link at least one key (the frame that carries its proposal or vote),
whatever a short window counted."""
TRIM_DOWN = 0.75
TRIM_UP = 1.1
TRIM_MIN = 0.25
FORWARD_SHARE = 0.1
"""The most of a link's key rate forwarded batches spend in frames of their own."""
MAX_FORWARD_WAIT_S = 0.25
"""The longest a forwarded batch waits for a frame to ride in."""
MAX_SAMPLES = 512
"""Samples kept at most (a bound on memory if heights come faster than expected)."""


@dataclass(frozen=True)
class LinkKeys:
    """What this node sees of one link at one instant."""

    keys_spent: int
    """Keys spent on the link since start, both directions: frames sent to the peer plus
    frames received from it."""
    keys_per_s: float | None
    """The pair's key rate as the key manager last reported it (None: not reported)."""
    waits: int
    """Times a frame to the peer waited for a key, since start."""


@dataclass(frozen=True)
class _Sample:
    at: float
    height: int
    links: Mapping[int, LinkKeys]


@dataclass(frozen=True)
class KeyBudget:
    """The pacing decision and what it was made from, for `/v1/status` and the logs."""

    blocks_per_s: float | None
    """The most blocks a second the links pay for (None: not paced)."""
    min_interval_s: float
    """The least time between two builds of this leader (0: not paced)."""
    limiting_peer: int | None
    """The link that sets the limit."""
    keys_per_height: float | None
    """Keys per height on that link, both directions."""
    keys_per_s: float | None
    """That link's reported key rate."""
    trim: float


NOT_PACED = KeyBudget(None, 0.0, None, None, None, 1.0)


def usable_rate(keys_per_s: float | None) -> float | None:
    """The rate if it is a positive finite number, else None (the link is left out)."""
    if keys_per_s is None or not math.isfinite(keys_per_s) or keys_per_s <= 0:
        return None
    return keys_per_s


def forward_wait_s(keys_per_s: float | None) -> float:
    """How long a forwarded batch may wait for a frame that goes anyway: one frame of its
    own per 1 / (FORWARD_SHARE × rate) seconds, at most MAX_FORWARD_WAIT_S; 0 (send at
    once) when the rate is unknown or nonsense, or so high that the wait is under 1 ms."""
    rate = usable_rate(keys_per_s)
    if rate is None:
        return 0.0
    wait = 1.0 / (FORWARD_SHARE * rate)
    return 0.0 if wait < 0.001 else min(MAX_FORWARD_WAIT_S, wait)


class KeyPacer:
    """The key budget of one node's links, and the pace it allows its blocks."""

    def __init__(self, max_interval_s: float, margin: float = MARGIN) -> None:
        if not max_interval_s > 0 or not 0 < margin <= 1:
            raise ValueError("need max_interval_s > 0 and 0 < margin <= 1")
        self.max_interval_s = max_interval_s
        self.margin = margin
        self.trim = 1.0
        self.budget = NOT_PACED
        self._samples: deque[_Sample] = deque(maxlen=MAX_SAMPLES)
        self._waits_seen: int | None = None
        self._clean_since = 0.0

    def observe(self, at: float, height: int, links: Mapping[int, LinkKeys]) -> KeyBudget:
        """Record the links at `at` (seconds, monotonic) and committed `height`; return
        the new budget. Call at least once per height this node builds."""
        samples = self._samples
        if samples and (height < samples[-1].height or at < samples[-1].at):
            samples.clear()  # a clock or height that goes back: start measuring again
        samples.append(_Sample(at, height, dict(links)))
        while len(samples) > 2 and samples[1].at <= at - WINDOW_S:
            samples.popleft()
        self._adjust_trim(at, links)
        self.budget = self._decide()
        return self.budget

    def _adjust_trim(self, at: float, links: Mapping[int, LinkKeys]) -> None:
        waits = sum(max(0, lk.waits) for lk in links.values())
        seen, self._waits_seen = self._waits_seen, waits
        if seen is None or waits > seen or at < self._clean_since:
            self._clean_since = at
            if seen is not None and waits > seen:
                self.trim = max(TRIM_MIN, self.trim * TRIM_DOWN)
        elif at - self._clean_since >= WINDOW_S:
            self._clean_since = at
            self.trim = min(1.0, self.trim * TRIM_UP)

    def _decide(self) -> KeyBudget:
        first, last = self._samples[0], self._samples[-1]
        heights = last.height - first.height
        if heights < MIN_WINDOW_HEIGHTS:
            return NOT_PACED
        best: KeyBudget | None = None
        for peer, now in last.links.items():
            then = first.links.get(peer)
            rate = usable_rate(now.keys_per_s)
            if then is None or rate is None:
                continue
            spent = max(0, now.keys_spent - then.keys_spent)
            per_height = max(MIN_KEYS_PER_HEIGHT, spent / heights)
            blocks_per_s = self.margin * self.trim * rate / per_height
            if best is None or blocks_per_s < (best.blocks_per_s or math.inf):
                best = KeyBudget(blocks_per_s, 0.0, peer, per_height, rate, self.trim)
        if best is None or best.blocks_per_s is None:
            return NOT_PACED
        interval = min(self.max_interval_s, 1.0 / best.blocks_per_s)
        return KeyBudget(
            1.0 / interval,
            interval,
            best.limiting_peer,
            best.keys_per_height,
            best.keys_per_s,
            best.trim,
        )

    def min_interval_s(self) -> float:
        return self.budget.min_interval_s
