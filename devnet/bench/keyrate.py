"""Benchmarks at a key-rate profile measured in steady state, not on the key stock.

A run at `--kms-rate lab` has keys to spare whatever it does. At a slower profile
(`metro`, `long-haul`, `constrained`) a pool that starts full would let the chain spend
its stock for a while at a rate the profile cannot sustain. So, unless the profile is
`lab`:

- the key manager starts with no stored key (`initial_key_count = 0`): the devnet has only
  what the profile delivers;
- when the load starts, the harness drains what the links stored meanwhile (the admin
  endpoint's `stored = 0` on every link): the warm-up runs on the nodes' own pools (at
  most a batch and a low-water mark each) and the profile's rate, and the window opens
  after it.

Either way the report says, per load point, what the window spent next to what the
profile makes (`key_rate_figures`): keys a second per link pair (both directions draw on
one pool at the key manager) consumed against produced, the most any pair used of its
rate, key waits, blocks/s, tx/s, and the stock (the key manager's stored keys and the
nodes' send pools) at both edges. The window was in **steady state** when no pair
consumed more than its profile produced: then no stock paid for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol

from devnet.bench.observe import Snapshot
from devnet.running import BackendError
from qchain.qkd.keymanager import PROFILES

MAC_KEY_BITS = 256
FULL_STOCK = 2048
"""Keys per link the devnet's key manager stores at start (the default, `lab`)."""
STEADY_TOLERANCE = 1.02
"""A pair may consume up to this times its rate and still count as steady (the pools
fetch in batches, so the edges of a window cut through a batch)."""


class KmsAdmin(Protocol):
    def kme_admin(self, kme: str, method: str, path: str, body: object = None) -> Any: ...


def starts_empty(profile: str) -> bool:
    """Whether a run at this key-rate profile starts with no stock and drains it at load."""
    return profile != "lab"


def initial_keys(profile: str) -> int:
    return 0 if starts_empty(profile) else FULL_STOCK


def stock_mode(profile: str) -> str:
    if starts_empty(profile):
        return "empty: no initial stock, links drained when the load starts"
    return f"full: {FULL_STOCK:,} keys per link at start"


async def kms_stock(net: KmsAdmin) -> dict[str, int] | None:
    """Keys stored per link at the shared key manager (None without one)."""
    try:
        doc = await asyncio.to_thread(net.kme_admin, "kms", "GET", "/admin/links")
    except (BackendError, OSError, ValueError):
        return None  # per-node or external KMEs: the stock is unknown
    return {str(lk["link"]): int(lk["stored_key_count"]) for lk in doc.get("links", [])}


async def drain(net: KmsAdmin) -> int | None:
    """Empty every link's stored keys at the shared key manager; the keys drained (None
    without one)."""
    stock = await kms_stock(net)
    if stock is None:
        return None
    for name in stock:
        a, b = name.split("~", 1)
        body = {"stored_key_count": 0}
        await asyncio.to_thread(net.kme_admin, "kms", "POST", f"/admin/links/{a}/{b}/stored", body)
    return sum(stock.values())


def key_rate_figures(
    profile: str,
    snaps: tuple[Snapshot, Snapshot],
    kms: tuple[Mapping[str, int] | None, Mapping[str, int] | None],
    committed_txs: int,
) -> dict[str, Any]:
    """What the window spent against what the profile makes, per link pair."""
    start, end = snaps
    dt = end.at - start.at
    delta = {k: v for k, v in end.minus(start).items() if k in start.links}
    pairs: dict[tuple[int, int], int] = {}
    for (i, j), c in delta.items():
        key = (min(i, j), max(i, j))
        pairs[key] = pairs.get(key, 0) + c.keys
    produced = PROFILES.get(profile, 0) / MAC_KEY_BITS
    consumed = {k: v / dt for k, v in pairs.items()} if dt > 0 else {}
    top = max(consumed.values(), default=0.0)
    used = top / produced if produced > 0 else None
    heights = end.heights.get(0, 0) - start.heights.get(0, 0)

    def stock(snap: Snapshot, at_kms: Mapping[str, int] | None) -> dict[str, int | None]:
        return {
            "kms": None if at_kms is None else sum(at_kms.values()),
            "pools": sum(snap.pool_levels.values()),
        }

    return {
        "profile": profile,
        "produced_keys_per_s_per_pair": round(produced, 2),
        "consumed_keys_per_s_per_pair": {
            "mean": round(sum(consumed.values()) / len(consumed), 2) if consumed else None,
            "max": round(top, 2),
        },
        "rate_used": None if used is None else round(used, 3),
        "key_waits": sum(c.waits for c in delta.values()),
        "blocks_per_s": round(heights / dt, 3) if dt > 0 else None,
        "committed_tx_s": round(committed_txs / dt, 1) if dt > 0 else None,
        "keys_per_tx": round(sum(pairs.values()) / committed_txs, 3) if committed_txs else None,
        "stock_start": stock(start, kms[0]),
        "stock_end": stock(end, kms[1]),
        "steady_state": used is not None and used <= STEADY_TOLERANCE,
    }


def verdict(k: Mapping[str, Any]) -> str:
    """One line for report.md."""
    used = k["rate_used"]
    if used is None:
        return "unknown profile rate"
    if k["steady_state"]:
        return f"steady state ({used:.0%} of the profile's rate at the busiest pair)"
    return f"drew on stock (the busiest pair consumed {used:.0%} of the profile's rate)"
