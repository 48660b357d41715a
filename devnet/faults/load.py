"""Open-loop load: transactions at a fixed rate, whatever the network does, each one
recorded as an `Op` (submitted, acknowledged, committed with height).

Open loop (Jepsen's and CometBFT e2e's choice) means a stalled network does not slow the
client down: operations pile up, which is what exposes lost or duplicated writes. Every
operation is one signed transaction; its bytes never change, so resubmitting it to
another node is always safe (same hash, and its nonce allows one commit at most).

An operation's life: submit to a node (HTTP 202/200 is the acknowledgement; a node that
cannot be reached is skipped for another), then wait for the commit with `?wait=commit`
long-polls, resubmitting the same bytes (to another node if this one stops answering)
until a node says "committed at height H" or the drain deadline passes.

The mix draws, per operation, a notary anchor (any dev account, unique digest) or a
voucher payment (partner1/partner2 pay 1 unit to the provider from a programme the
issuer sets up, closed-loop, before load starts).

A partner flood (`partner_flood`, the `partner-flood` step) is the other kind of load: one
account's `count` valid `notary.anchor_many` transactions of exactly `MAX_TX_SIZE` bytes,
sent to every API at once, the first nonce last, so that all of them become ready in
every mempool at the same moment.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from devnet.faults.history import Op
from devnet.faults.scenario import LoadSpec
from devnet.network import account_key
from qchain.client import AsyncClient
from qchain.errors import ApiError, NodeUnavailable
from qchain.keys import SigningKey
from qchain.types import MAX_TX_SIZE, Transaction, new_transaction

ANCHOR_ACCOUNTS = ("admin", "auditor", "provider", "issuer", "partner1", "partner2")
PAY_ACCOUNTS = ("partner1", "partner2")
PROGRAMME_GRANT = 1_000_000
WAIT_SLICE_S = 4.0


class Accounts:
    """Dev account keys with the next nonce each will use."""

    def __init__(self, scheme: str, chain_id: str) -> None:
        self.chain_id = chain_id
        self.keys: dict[str, SigningKey] = {
            r: account_key(r, scheme) for r in {*ANCHOR_ACCOUNTS, *PAY_ACCOUNTS}
        }
        self.nonce: dict[str, int] = dict.fromkeys(self.keys, 0)
        self._lock = threading.Lock()
        """`take` is also called from a set change's thread (its governance transactions
        come from operators' accounts the load sends from too)."""

    async def sync(self, client: AsyncClient) -> None:
        for role, key in self.keys.items():
            self.nonce[role] = await client.next_nonce(key.address)

    def take(self, role: str) -> int:
        """The next nonce of `role`, used up."""
        with self._lock:
            nonce = self.nonce[role]
            self.nonce[role] = nonce + 1
        return nonce

    def tx(self, role: str, contract: str, method: str, args: list[object]) -> Transaction:
        nonce = self.take(role)
        return new_transaction(
            self.keys[role],
            chain_id=self.chain_id,
            nonce=nonce,
            contract=contract,
            method=method,
            args=args,
        )


async def setup_vouchers(client: AsyncClient, accounts: Accounts, programme: str) -> None:
    """Create a programme and grant both partners enough to pay for the whole run."""
    status = await client.status()
    expiry = int(status["height"]) + 1_000_000
    txs = [
        accounts.tx(
            "issuer", "voucher", "create", [programme, "fault kit", 4 * PROGRAMME_GRANT, expiry]
        )
    ]
    for p in PAY_ACCOUNTS:
        txs.append(
            accounts.tx(
                "issuer", "voucher", "grant", [programme, accounts.keys[p].address, PROGRAMME_GRANT]
            )
        )
    for tx in txs:
        await client.submit(tx)
    for tx in txs:
        info = await client.submit_and_wait(tx, timeout_s=30)
        if info.receipt is not None and not info.receipt.ok:
            raise RuntimeError(f"voucher setup failed: {info.receipt}")


class LoadGenerator:
    def __init__(
        self,
        spec: LoadSpec,
        urls: dict[str, str],
        accounts: Accounts,
        programme: str,
        rng: random.Random,
        clock: Callable[[], float],
    ) -> None:
        self.spec = spec
        self.urls = urls
        self.accounts = accounts
        self.programme = programme
        self.rng = rng
        self.clock = clock
        self.ops: list[Op] = []
        self.clients = {n: AsyncClient(u, timeout_s=5.0) for n, u in urls.items()}
        self._tasks: list[asyncio.Task[None]] = []
        self._anchor_i = 0
        self._pay_i = 0
        self.drain_deadline = float("inf")

    def _next_tx(self) -> tuple[str, str, Transaction]:
        kinds = [k for k, _ in self.spec.mix]
        weights = [w for _, w in self.spec.mix]
        kind = self.rng.choices(kinds, weights)[0]
        if kind == "pay":
            role = PAY_ACCOUNTS[self._pay_i % len(PAY_ACCOUNTS)]
            self._pay_i += 1
            provider = self.accounts.keys["provider"].address
            tx = self.accounts.tx(
                role, "voucher", "pay", [self.programme, provider, 1, f"op {len(self.ops)}"]
            )
        else:
            role = ANCHOR_ACCOUNTS[self._anchor_i % len(ANCHOR_ACCOUNTS)]
            self._anchor_i += 1
            digest = hashlib.sha256(f"{self.programme}/{len(self.ops)}".encode()).digest()
            tx = self.accounts.tx(
                role, "notary", "anchor", [digest, "sha256", f"op {len(self.ops)}", "fault", b""]
            )
        return kind, role, tx

    async def run(self, duration_s: float, stop: asyncio.Event) -> None:
        """Submit at `spec.rate` for duration_s (or until stop is set)."""
        if self.spec.rate <= 0:
            return
        interval = 1.0 / self.spec.rate
        start = time.monotonic()
        i = 0
        while not stop.is_set():
            due = start + i * interval
            if due - start >= duration_s:
                break
            delay = due - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    break
                except TimeoutError:
                    pass
            kind, role, tx = self._next_tx()
            op = Op(
                op_id=len(self.ops),
                kind=kind,
                sender=role,
                nonce=tx.nonce,
                tx_hash=tx.hash.hex(),
                submitted_at=self.clock(),
            )
            self.ops.append(op)
            self._tasks.append(asyncio.create_task(self._drive(op, tx.encode())))
            i += 1

    def follow(self, urls: dict[str, str]) -> None:
        """Send to these nodes from now on (the set changed); an operation already
        acknowledged by a node that left is resubmitted to the others."""
        for name, url in urls.items():
            if name not in self.clients:
                self.clients[name] = AsyncClient(url, timeout_s=5.0)
        self.urls = dict(urls)

    def _order(self, first: str | None) -> list[str]:
        names = sorted(self.urls)
        self.rng.shuffle(names)
        if first in names:
            names.remove(first)
            names.insert(0, first)
        return names

    async def _drive(self, op: Op, raw: bytes) -> None:
        while self.clock() < self.drain_deadline:
            for candidate in self._order(op.node or None):
                if self.clock() >= self.drain_deadline:
                    return
                op.attempts += 1
                op.node = candidate
                client = self.clients[candidate]
                try:
                    if op.acked_at is None:
                        await client.submit(raw)
                        op.acked_at = self.clock()
                    left = self.drain_deadline - self.clock()
                    info = await client.submit_and_wait(
                        raw, timeout_s=max(0.5, min(WAIT_SLICE_S, left))
                    )
                except NodeUnavailable:
                    continue
                except ApiError as e:
                    op.error = e.code
                    if e.code == "commit-timeout":
                        # Not committed yet: rebroadcast the same bytes through the next
                        # node (this one may be cut off with the only copy).
                        continue
                    await asyncio.sleep(0.5)
                    continue
                if info.status == "committed" and info.height is not None:
                    op.height = info.height
                    op.committed_at = self.clock()
                    op.error = ""
                    return
            else:
                await asyncio.sleep(0.2)

    async def drain(self, deadline_s: float) -> None:
        """Let pending operations commit until deadline_s (scenario clock), then stop."""
        self.drain_deadline = deadline_s
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for c in self.clients.values():
            await c.close()


def summarize(ops: Sequence[Op]) -> dict[str, int]:
    return {
        "submitted": len(ops),
        "acknowledged": sum(1 for o in ops if o.acked_at is not None),
        "committed": sum(1 for o in ops if o.committed),
        "uncommitted": sum(1 for o in ops if not o.committed),
    }


FLOOD_ITEM_METADATA = 4096
"""Metadata bytes per anchored item (the notary contract's maximum)."""


def max_size_anchor_many(
    accounts: Accounts, role: str, tag: str, size: int = MAX_TX_SIZE
) -> Transaction:
    """A valid `notary.anchor_many` transaction of exactly `size` encoded bytes from role
    (fresh digests from tag), padded with item metadata. Takes role's next nonce."""
    nonce = accounts.nonce[role]

    def build(meta_lens: list[int], title_pad: int) -> Transaction:
        items = []
        for i, n in enumerate(meta_lens):
            digest = hashlib.sha256(f"{tag}/{nonce}/{i}".encode()).digest()
            title = f"flood {nonce}.{i}" + ("x" * title_pad if i == 0 else "")
            items.append([digest, "sha256", title, "fault", b"\x00" * n])
        return new_transaction(
            accounts.keys[role],
            chain_id=accounts.chain_id,
            nonce=nonce,
            contract="notary",
            method="anchor_many",
            args=[items],
        )

    lens: list[int] = []
    while len(build([*lens, FLOOD_ITEM_METADATA], 0).encode()) <= size:
        lens.append(FLOOD_ITEM_METADATA)
    lens.append(0)
    title_pad = 0
    for _ in range(8):
        tx = build(lens, title_pad)
        delta = size - len(tx.encode())
        if delta == 0:
            accounts.nonce[role] = nonce + 1
            return tx
        # Length prefixes grow at 256 bytes: when a step misses, nudge the title instead.
        if 0 <= lens[-1] + delta <= FLOOD_ITEM_METADATA:
            lens[-1] += delta
        else:
            title_pad = max(0, title_pad + delta)
    raise ValueError(f"cannot build an anchor_many of exactly {size} bytes")


async def partner_flood(
    urls: Mapping[str, str], accounts: Accounts, role: str, count: int, tag: str
) -> dict[str, int]:
    """Send `count` max-size anchor_many transactions from role to every API at once, the
    first nonce last (so all become ready together). Returns answers by outcome."""
    txs = [max_size_anchor_many(accounts, role, tag) for _ in range(count)]
    clients = [AsyncClient(u, timeout_s=10.0) for u in urls.values()]
    outcome: dict[str, int] = {}

    async def one(client: AsyncClient, raw: bytes) -> None:
        try:
            await client.submit(raw)
            key = "accepted"
        except ApiError as e:
            key = e.code
        except NodeUnavailable:
            key = "unavailable"
        outcome[key] = outcome.get(key, 0) + 1

    try:
        for batch in (txs[1:], txs[:1]):
            await asyncio.gather(*(one(c, tx.encode()) for c in clients for tx in batch))
    finally:
        for c in clients:
            await c.close()
    return outcome
