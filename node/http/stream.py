"""The handler of `/v1/events`: chain events as server-sent events.

A client resumes with `Last-Event-ID` (or `?last_event_id=`); an idle stream gets a
heartbeat comment every `SSE_HEARTBEAT_S` seconds, and every stream ends when the app
shuts down (`CLOSING`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

from node.http.context import CLOSING, SERVICE, SSE_HEARTBEAT_S
from node.http.params import parse_uint
from node.service import ChainEvent, EventStream
from qchain.jsonform import fields_to_json


def event_frame(ev: ChainEvent) -> bytes:
    """The event as server-sent-event bytes; built once per event, however many
    subscribers stream it (kept on the event)."""
    frame: bytes | None = ev.__dict__.get("_frame")
    if frame is None:
        data = json.dumps(fields_to_json(ev.data), separators=(",", ":"))
        frame = f"id: {ev.id}\nevent: {ev.kind}\ndata: {data}\n\n".encode()
        ev.__dict__["_frame"] = frame
    return frame


async def _next_event(stream: EventStream) -> ChainEvent:
    return await stream.__anext__()


async def _pump(
    resp: web.StreamResponse, stream: EventStream, closing: asyncio.Event, heartbeat_s: float
) -> None:
    """Write stream's events to resp until the stream ends or the app closes."""
    closed: asyncio.Future[Any] = asyncio.ensure_future(closing.wait())
    nxt: asyncio.Future[ChainEvent] | None = None
    try:
        while not closing.is_set():
            if nxt is None:
                nxt = asyncio.ensure_future(_next_event(stream))
            done, _ = await asyncio.wait(
                {nxt, closed}, timeout=heartbeat_s, return_when=asyncio.FIRST_COMPLETED
            )
            if nxt in done:
                try:
                    event = nxt.result()
                except StopAsyncIteration:
                    break
                nxt = None
                # A commit publishes a block's events at once: write them together.
                batch = [event, *stream.ready()]
                await resp.write(b"".join(event_frame(e) for e in batch))
            elif closed not in done:
                await resp.write(b": heartbeat\n\n")
    finally:
        closed.cancel()
        if nxt is not None:
            nxt.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await nxt


async def events(request: web.Request) -> web.StreamResponse:
    raw_id = request.headers.get("Last-Event-ID", request.query.get("last_event_id"))
    last_id = None if raw_id in (None, "") else parse_uint(str(raw_id), "Last-Event-ID")
    stream = request.app[SERVICE].events(last_id)
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    try:
        await resp.prepare(request)
        await resp.write(b"retry: 2000\n\n")
        await _pump(resp, stream, request.app[CLOSING], request.app[SSE_HEARTBEAT_S])
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
    except ConnectionError:
        pass
    finally:
        await stream.aclose()
    return resp
