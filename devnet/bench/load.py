"""The open-loop load generator: a separate process that offers transactions at a fixed
rate, whatever the nodes answer.

    python -m devnet.bench.load SPEC.json RESULT.json

SPEC names the nodes' API URLs, one pre-signed stream file per node (a msgpack array of
transaction bytes, in submission order), the rate in tx/s over all nodes, the duration and
the tick. Every tick, each node's share of the rate is cut from its stream and queued as a
chunk stamped with its *scheduled* time; one sender task per node posts the queued chunks
over one connection (`POST /v1/txs/batch`, msgpack), merging chunks that piled up while a
request was in flight. Latency is measured from the scheduled time, so a slow node cannot
hide its queue (no coordinated omission).

A transaction refused for want of room (`overloaded`, `mempool-full`, 429, 503, a
dropped connection) is sent again, as a partner's client would: after the `Retry-After`
the node gave (the item's `retry_after`, else the answer's header), or after a back-off
when it gave none. New transactions keep coming at the offered rate, as from a
partner's many clients, each waiting only for its own. A refused transaction's sender's
later nonces cannot commit without it, so they are held back (in order) until it is
accepted, instead of piling up behind a gap.
A chunk records when each of its transactions that was sent again got accepted
(`accepted_at`, by position), and when a transaction held back behind its sender's
refused one got accepted: latency counts from the first
scheduled time for the offered load, and from that acceptance for what the nodes
accepted.

RESULT records every chunk: node, offset in its stream, size, scheduled and posted wall
times, per-chunk acceptance counts, resends, and the codes of final refusals. The run is
bounded: it stops offering at the duration, keeps resending refused transactions until
none is left, and abandons what is still unsent or in flight `drain_s` later.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgpack

MAX_BATCH_TXS = 1000
MAX_BATCH_BYTES = 3 * 1024 * 1024
MSGPACK = "application/msgpack"
RETRYABLE = {"overloaded", "mempool-full", "rate-limited", "http-429", "http-503"}
"""Refusals that mean "not now": the transaction is sent again."""
RESEND_PAUSE_S = 0.2
RESEND_PAUSE_MAX_S = 2.0
"""A refused transaction waits before it is sent again, 0.2 s doubling per refusal up to
2 s (a full pool stays full for a while: no hammering)."""
RETRY_AFTER_MAX_S = 30.0
"""Longest `Retry-After` honoured (a longer one is taken as this)."""


@dataclass
class Chunk:
    node: int
    offset: int
    count: int
    scheduled: float
    posted: float = 0.0
    answered: float = 0.0
    accepted: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    """Final refusals by code."""
    resent: int = 0
    """How many times one of its transactions was sent again."""
    accepted_at: dict[str, float] = field(default_factory=dict)
    """Position in the chunk (as text, as in JSON) -> wall time of the request that got
    it accepted, for the transactions accepted only when sent again or after being held
    back behind a refused one of their sender."""
    error: str = ""


@dataclass(frozen=True)
class Spec:
    nodes: list[str]
    streams: list[str]
    rate: float
    duration_s: float
    tick_s: float = 0.02
    drain_s: float = 15.0
    started_file: str = ""
    """Written with the wall time of the first tick once the streams are loaded."""

    @classmethod
    def load(cls, path: Path) -> Spec:
        doc = json.loads(path.read_text())
        return cls(**doc)


class _NodeSender:
    def __init__(self, index: int, url: str, stream: list[bytes], session: aiohttp.ClientSession):
        self.index = index
        self.url = url.rstrip("/") + "/v1/txs/batch"
        self.stream = stream
        self.session = session
        self.queue: asyncio.Queue[Chunk | None] = asyncio.Queue()
        self.cursor = 0
        self.done: list[Chunk] = []
        self.resend: list[tuple[float, int, Chunk, int, str]] = []
        """A heap of (when, sequence, chunk, position in it, code of the last refusal):
        what to send again, soonest first (code "" for a held transaction released)."""
        self._seq = 0
        self.blocked: dict[bytes, set[int]] = {}
        """Sender -> the stream indices of its transactions refused and not accepted yet:
        none of its later ones is sent before them."""
        self.held: dict[bytes, list[tuple[Chunk, int]]] = {}
        """Sender -> its later transactions, held back while it is blocked."""
        self._sender_of: dict[int, bytes] = {}
        self.attempts: dict[int, int] = {}
        """Stream index -> refusals so far, for the back-off."""
        self.released: set[int] = set()
        """Stream indices held back behind a refused transaction, then released."""

    def offer(self, count: int, scheduled: float) -> None:
        count = min(count, len(self.stream) - self.cursor)
        if count <= 0:
            return
        self.queue.put_nowait(Chunk(self.index, self.cursor, count, scheduled))
        self.cursor += count

    async def run(self) -> None:
        while True:
            if self.resend:
                wait = max(0.0, self.resend[0][0] - time.time())
                try:
                    first = await asyncio.wait_for(self.queue.get(), wait)
                except TimeoutError:
                    await self._post([])
                    continue
            else:
                first = await self.queue.get()
            if first is None:
                await self._drain_resends()
                return
            chunks = [first]
            size = first.count
            nbytes = sum(len(t) for t in self._txs(first))
            stop = False
            while not self.queue.empty():
                nxt = self.queue.get_nowait()
                if nxt is None:
                    stop = True
                    break
                extra = sum(len(t) for t in self._txs(nxt))
                if size + nxt.count > MAX_BATCH_TXS or nbytes + extra > MAX_BATCH_BYTES:
                    await self._post(chunks)
                    chunks, size, nbytes = [], 0, 0
                chunks.append(nxt)
                size += nxt.count
                nbytes += extra
            if chunks:
                await self._post(chunks)
            if stop:
                await self._drain_resends()
                return

    async def _drain_resends(self) -> None:
        while self.resend:
            await asyncio.sleep(max(0.0, self.resend[0][0] - time.time()))
            await self._post([])

    def finish(self) -> None:
        """Count what is still waiting to be sent (again) as refused."""
        for _, _, c, _, code in self.resend:
            c.refused[code or "held"] = c.refused.get(code or "held", 0) + 1
        for slots in self.held.values():
            for c, _ in slots:
                c.refused["held"] = c.refused.get("held", 0) + 1
        self.resend, self.held = [], {}

    def _sender(self, c: Chunk, pos: int) -> bytes:
        """The sender of a stream transaction (field 1 of its array); the bytes
        themselves if they are not a transaction (no ordering then)."""
        i = c.offset + pos
        who = self._sender_of.get(i)
        if who is None:
            raw = self.stream[i]
            try:
                fields = msgpack.unpackb(raw)
            except (ValueError, msgpack.UnpackException):
                fields = None
            ok = isinstance(fields, list) and len(fields) > 1 and isinstance(fields[1], bytes)
            who = self._sender_of[i] = fields[1] if ok else raw
        return who

    def _push(self, when: float, c: Chunk, pos: int, code: str) -> None:
        self._seq += 1
        heapq.heappush(self.resend, (when, self._seq, c, pos, code))

    def _txs(self, c: Chunk) -> list[bytes]:
        return self.stream[c.offset : c.offset + c.count]

    async def _post(self, chunks: list[Chunk]) -> None:
        """Post the refused transactions that are due again (in their own request if
        they do not fit with the chunks), then the chunks'."""
        now = time.time()
        due: list[tuple[Chunk, int, str]] = []
        nbytes = 0
        while self.resend and self.resend[0][0] <= now and len(due) < MAX_BATCH_TXS:
            _, _, c, pos, _ = self.resend[0]
            size = len(self.stream[c.offset + pos])
            if nbytes + size > MAX_BATCH_BYTES:
                break
            _, _, _, _, code = heapq.heappop(self.resend)
            due.append((c, pos, code))
            nbytes += size
        slots = [(c, pos, "") for c in chunks for pos in range(c.count)]
        slots_bytes = sum(len(self.stream[c.offset + pos]) for c, pos, _ in slots)
        if due and (
            len(due) + len(slots) > MAX_BATCH_TXS or nbytes + slots_bytes > MAX_BATCH_BYTES
        ):
            await self._send(self._in_order(due, now), [])
            due = []
        # Chosen only now, after the answer to the due ones: a sender refused there holds
        # its new transactions back (sent now, they would wait behind the refused nonce).
        await self._send(self._in_order(due + slots, time.time()), chunks)

    def _in_order(
        self, entries: list[tuple[Chunk, int, str]], now: float
    ) -> list[tuple[Chunk, int]]:
        """Of entries (chunk, position, code of the last refusal, "" for none), those that
        may go in one request, in stream order: a refused one goes again only when every
        earlier refused one of its sender goes before it in the same request (else it is
        due again shortly); any other only when its sender has no earlier one refused
        and not accepted yet (else it is held until they are)."""
        out: list[tuple[Chunk, int]] = []
        going: dict[bytes, set[int]] = {}
        for c, pos, code in sorted(entries, key=lambda e: e[0].offset + e[1]):
            i = c.offset + pos
            who = self._sender(c, pos)
            ahead = {j for j in self.blocked.get(who, ()) if j < i}
            if ahead - going.get(who, set()) if code else ahead:
                if code:
                    self._push(now + RESEND_PAUSE_S, c, pos, code)
                else:
                    self.held.setdefault(who, []).append((c, pos))
                continue
            going.setdefault(who, set()).add(i)
            if code:
                c.resent += 1
            out.append((c, pos))
        return out

    async def _send(self, slots: list[tuple[Chunk, int]], chunks: list[Chunk]) -> None:
        """One request with the transactions at slots; chunks are those posted first
        (recorded even when all their transactions were held back)."""
        if not slots:
            now = time.time()
            for c in chunks:
                c.posted = c.answered = now
                self.done.append(c)
            return
        body = msgpack.packb([self.stream[c.offset + pos] for c, pos in slots], use_bin_type=True)
        posted = time.time()
        for c in chunks:
            c.posted = posted
        results: list[dict[str, Any]] | None = None
        retry_after: float | None = None
        try:
            async with self.session.post(
                self.url, data=body, headers={"Content-Type": MSGPACK}
            ) as resp:
                data = await resp.read()
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            failure = "" if status == 200 else f"http-{status}"
            if status == 200:
                results = json.loads(data)["results"]
            elif status in (429, 503):
                failure = _problem_code(data) or failure
        except (aiohttp.ClientError, TimeoutError) as e:
            failure = type(e).__name__
        answered = time.time()
        for c in chunks:
            c.answered = answered
            c.error = failure
            self.done.append(c)
        for k, (c, pos) in enumerate(slots):
            who = self._sender(c, pos)
            waited = c.offset + pos in self.attempts
            late = waited or c.offset + pos in self.released
            wait = retry_after
            if results is None:
                code = failure
            else:
                problem = results[k].get("problem")
                code = "" if problem is None else str(problem.get("type", "refused"))
                code = code.rsplit("/", 1)[-1]
                if problem is not None and "retry_after" in problem:
                    wait = parse_retry_after(str(problem["retry_after"]))
            if code in RETRYABLE or (results is None and not failure.startswith("http-")):
                n = self.attempts[c.offset + pos] = self.attempts.get(c.offset + pos, 0) + 1
                pause = min(RESEND_PAUSE_MAX_S, RESEND_PAUSE_S * 2 ** (n - 1))
                self._push(answered + (pause if wait is None else wait), c, pos, code)
                self.blocked.setdefault(who, set()).add(c.offset + pos)
                continue
            if code:
                c.refused[code] = c.refused.get(code, 0) + 1
            else:
                c.accepted += 1
                if late:
                    c.accepted_at[str(pos)] = posted
                self.released.discard(c.offset + pos)
            if waited:
                self.attempts.pop(c.offset + pos)
                self.blocked[who].discard(c.offset + pos)
                if not self.blocked[who]:
                    del self.blocked[who]
                    held = sorted(self.held.pop(who, []), key=lambda s: s[0].offset + s[1])
                    for hc, hpos in held:
                        self.released.add(hc.offset + hpos)
                        self._push(answered, hc, hpos, "")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds of a `Retry-After` (delay-seconds form), at most `RETRY_AFTER_MAX_S`; None
    when absent or not a non-negative number."""
    try:
        seconds = float(value) if value is not None else -1.0
    except ValueError:
        return None
    if not 0 <= seconds < float("inf"):
        return None
    return min(seconds, RETRY_AFTER_MAX_S)


def _problem_code(body: bytes) -> str:
    """The slug of a problem document's type, "" if body is not one."""
    try:
        doc = json.loads(body)
    except ValueError:
        return ""
    kind = doc.get("type") if isinstance(doc, dict) else None
    return kind.rsplit("/", 1)[-1] if isinstance(kind, str) else ""


async def generate(spec: Spec) -> dict[str, Any]:
    streams: list[list[bytes]] = []
    for path in spec.streams:
        data = msgpack.unpackb(Path(path).read_bytes(), raw=False)
        streams.append([bytes(x) for x in data])
    n = len(spec.nodes)
    timeout = aiohttp.ClientTimeout(total=spec.duration_s + spec.drain_s, sock_connect=5)
    connector = aiohttp.TCPConnector(limit_per_host=1)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        senders = [_NodeSender(i, u, streams[i], session) for i, u in enumerate(spec.nodes)]
        tasks = [asyncio.create_task(s.run()) for s in senders]
        start = time.time() + 0.2
        if spec.started_file:
            Path(spec.started_file).write_text(repr(start))
        ticks = int(spec.duration_s / spec.tick_s)
        per_node = spec.rate / n
        offered = 0
        for k in range(ticks):
            target = start + k * spec.tick_s
            delay = target - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            for s in senders:
                due = int(per_node * spec.tick_s * (k + 1)) - int(per_node * spec.tick_s * k)
                before = s.cursor
                s.offer(due, target)
                offered += s.cursor - before
        end = time.time()
        for s in senders:
            s.queue.put_nowait(None)
        _, pending = await asyncio.wait(tasks, timeout=spec.drain_s)
        for t in pending:
            t.cancel()
        for s in senders:
            s.finish()
        chunks = [asdict(c) for s in senders for c in s.done]
    return {"start": start, "end": end, "offered": offered, "ticks": ticks, "chunks": chunks}


def command(work: Path) -> list[str]:
    """The load generator as a process of its own: it reads `work/spec.json` and writes
    its record to `work/load.json` (`main`)."""
    return [
        sys.executable,
        "-m",
        "devnet.bench.load",
        str(work / "spec.json"),
        str(work / "load.json"),
    ]


def main() -> int:
    spec = Spec.load(Path(sys.argv[1]))
    result = asyncio.run(generate(spec))
    Path(sys.argv[2]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
