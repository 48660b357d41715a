"""The user-space delay line: data crosses it in order, each direction delay_ms late, EOF
is passed on, and bad routes are named."""

from __future__ import annotations

import asyncio
import time

import pytest

from devnet.delayline import DelayLine, Route, parse_route


async def _echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    while data := await r.read(1024):
        w.write(data)
        await w.drain()
    w.close()


async def test_a_round_trip_takes_two_delays_and_keeps_order() -> None:
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = echo.sockets[0].getsockname()[1]
    line = DelayLine([Route("127.0.0.1", 0, "127.0.0.1", port)], delay_ms=60)
    await line.start()
    (line_port,) = line.ports()
    try:
        r, w = await asyncio.open_connection("127.0.0.1", line_port)
        started = time.monotonic()
        w.write(b"ping")
        await w.drain()
        assert await r.readexactly(4) == b"ping"
        assert time.monotonic() - started >= 0.12
        for i in range(20):
            w.write(b"%02d" % i)
        await w.drain()
        assert await r.readexactly(40) == b"".join(b"%02d" % i for i in range(20))
        w.write_eof()
        assert await r.read() == b""
        w.close()
        await w.wait_closed()
    finally:
        await line.close()
        echo.close()
        await echo.wait_closed()


@pytest.mark.parametrize(
    ("text", "part"),
    [("0.0.0.0:7000", "LISTEN=TARGET"), ("x=h:1", "listen"), ("h:1=h:99999", "target")],
)
def test_bad_routes_are_named(text: str, part: str) -> None:
    with pytest.raises(ValueError, match=part):
        parse_route(text)


def test_a_route() -> None:
    assert parse_route("0.0.0.0:7000=127.0.0.1:7001") == Route("0.0.0.0", 7000, "127.0.0.1", 7001)
