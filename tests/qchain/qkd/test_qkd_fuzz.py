"""Fuzzing the frame verifier: 10,000+ random, mutated and well-formed-but-forged frames
raise nothing but `FrameRejected`, and every rejection is counted."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qchain.qkd.errors import FrameRejected
from qchain.qkd.frame import FRAME_VERSION, MAX_ANNOUNCE, FrameHeader, encode_frame
from qchain.qkd.testing import sim_endpoints

EXAMPLES = 420
PER_EXAMPLE = 25
GENUINE = 64

names = st.sampled_from(["a", "b", "c", "test-chain", "", "x" * 65, "é"])
key_ids = st.binary(min_size=16, max_size=16)


@st.composite
def forged(draw: st.DrawFn) -> bytes:
    """A well-formed frame with arbitrary header fields and a random key."""
    kid = draw(key_ids)
    announce = draw(st.lists(key_ids, max_size=4))
    if draw(st.booleans()):
        announce.append(kid)
    header = FrameHeader(
        version=draw(st.sampled_from([FRAME_VERSION] * 6 + [0, 2])),
        chain_id=draw(st.sampled_from(["test-chain"] * 6 + ["other"])),
        sender=draw(st.sampled_from(["a"] * 4 + ["c", "zz"])),
        receiver=draw(st.sampled_from(["b"] * 6 + ["a", "q"])),
        seq=draw(st.one_of(st.integers(0, 100), st.integers(0, 2**64 - 1))),
        key_id=kid,
        announce=tuple(announce[:MAX_ANNOUNCE]),
    )
    return encode_frame(header, draw(st.binary(max_size=64)), bytearray(draw(key_ids) * 2))


@st.composite
def mutated(draw: st.DrawFn, genuine: list[bytes]) -> bytes:
    frame = bytearray(draw(st.sampled_from(genuine)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "cut", "grow", "splice"]))
        pos = draw(st.integers(0, len(frame) - 1)) if frame else 0
        if op == "flip" and frame:
            frame[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and frame:
            frame[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del frame[pos:]
        elif op == "grow":
            frame[pos:pos] = draw(st.binary(min_size=1, max_size=32))
        else:
            other = draw(st.sampled_from(genuine))
            frame[pos:] = other[pos:]
    return bytes(frame)


def test_fuzzed_frames_raise_only_typed_rejections() -> None:
    loop = asyncio.new_event_loop()
    _, eps = sim_endpoints(["a", "b", "c"])
    try:

        async def setup() -> list[bytes]:
            for ep in eps.values():
                ep.start()
            out = []
            for i in range(GENUINE):
                out.append(await eps["a"].sender("b").seal(i.to_bytes(2, "big") * 8))
                await asyncio.sleep(0)
            return out

        genuine = loop.run_until_complete(setup())
        rx = eps["b"].receiver
        outcomes = {"accepted": 0, "rejected": 0}

        frames = st.one_of(
            st.binary(max_size=512),
            st.binary(min_size=2, max_size=2).map(lambda p: p + bytes(40)),
            forged(),
            mutated(genuine),
            st.sampled_from(genuine),
        )

        async def open_all(batch: list[bytes]) -> None:
            for frame in batch:
                try:
                    await rx.open(frame)
                    outcomes["accepted"] += 1
                except FrameRejected:
                    outcomes["rejected"] += 1

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(st.lists(frames, min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
        def check(batch: list[bytes]) -> None:
            loop.run_until_complete(open_all(batch))

        check()
        total = outcomes["accepted"] + outcomes["rejected"]
        assert total >= 10_000
        assert sum(rx.rejected.values()) == outcomes["rejected"]
        assert rx.accepted == outcomes["accepted"] <= GENUINE
        print(f"\n{total} frames: {outcomes}, rejections by reason: {dict(rx.rejected)}")
    finally:

        async def teardown() -> None:
            for ep in eps.values():
                await ep.close()

        loop.run_until_complete(teardown())
        loop.close()
