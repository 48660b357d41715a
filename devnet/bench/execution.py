"""Execution time per transaction: notary anchors and voucher payments.

    .venv/bin/python -m devnet.bench.execution [--count 10000] [--scheme ed25519] [--json]

Builds a dev chain on an in-memory store, then executes `count` transactions of each kind
one at a time with `execute_transaction` on a block overlay (blocks of 100, committed between
blocks) and reports the median, p90 and p99 time per transaction, with signature
verification and with a warm `SignatureCache` (as when admission already verified the
transaction). A measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from contracts.execution import (
    BlockContext,
    Verifier,
    execute_transaction,
    verify_signature,
)
from contracts.state import Overlay, write_set_to_batch
from contracts.testing import DevChain, dev_genesis
from node.sigcache import SignatureCache
from qchain.keys import Scheme
from qchain.store import Batch, MemoryStore
from qchain.types import Transaction

BLOCK = 100


def _chain(scheme: Scheme) -> DevChain:
    members = {"admin": ["admin"], "ent": ["partner"], "prov": ["provider"], "bureau": ["auditor"]}
    genesis, keys = dev_genesis(members, scheme=scheme, voucher_issuers=["bureau"])
    chain = DevChain(MemoryStore(), genesis, keys)
    chain.block(
        [
            chain.tx("bureau", "voucher", "create", ["bench", "bench", 10**12, 10**9]),
            chain.tx("bureau", "voucher", "grant", ["bench", chain.address("ent"), 10**9]),
        ]
    )
    return chain


def _measure(chain: DevChain, txs: list[Transaction], verifier: Verifier) -> list[float]:
    """Seconds per transaction, executing in blocks of BLOCK and committing each block."""
    times: list[float] = []
    for start in range(0, len(txs), BLOCK):
        ctx = BlockContext(
            chain.genesis.chain_id, chain.height + 1, chain.time + 1000, chain.app_hash
        )
        block = Overlay(chain.store)
        for i, tx in enumerate(txs[start : start + BLOCK]):
            t0 = time.perf_counter()
            receipt = execute_transaction(block, ctx, tx, i, verifier=verifier)
            times.append(time.perf_counter() - t0)
            if not receipt.ok:
                raise SystemExit(f"benchmark transaction failed: {receipt.code} {receipt.message}")
        batch = Batch()
        write_set_to_batch(block.changes(), batch)
        chain.store.write(batch)
        chain.height, chain.time = ctx.height, ctx.time
    return times


def _summary(times: list[float]) -> dict[str, float]:
    q = statistics.quantiles(times, n=100)
    return {
        "median_us": round(statistics.median(times) * 1e6, 1),
        "p90_us": round(q[89] * 1e6, 1),
        "p99_us": round(q[98] * 1e6, 1),
    }


def run(count: int, scheme: Scheme) -> dict[str, dict[str, float]]:
    kinds: dict[str, Callable[[DevChain, int], Transaction]] = {
        "notary.anchor": lambda c, i: c.tx(
            "ent",
            "notary",
            "anchor",
            [i.to_bytes(32, "big"), "sha256", f"document {i}", "bench", b"meta"],
        ),
        "voucher.pay": lambda c, i: c.tx(
            "ent", "voucher", "pay", ["bench", c.address("prov"), 1, f"invoice {i}"]
        ),
    }
    report: dict[str, dict[str, float]] = {}
    for name, make in kinds.items():
        for label, cached in (("verify", False), ("cached-signature", True)):
            chain = _chain(scheme)
            txs = [make(chain, i) for i in range(count)]
            verifier: Verifier = verify_signature
            if cached:
                cache = SignatureCache(capacity=count)
                for tx in txs:
                    cache(tx, chain.keys["ent"].public_key)
                verifier = cache
            report[f"{name} ({label})"] = _summary(_measure(chain, txs, verifier))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--scheme", choices=[s.value for s in Scheme], default="ed25519")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    report = run(args.count, Scheme(args.scheme))
    if args.json:
        print(json.dumps({"count": args.count, "scheme": args.scheme, "results": report}))
        return
    print(f"{args.count} transactions per kind, sender keys {args.scheme}")
    for name, s in report.items():
        print(
            f"  {name:34} median {s['median_us']:8.1f} µs"
            f"   p90 {s['p90_us']:8.1f}   p99 {s['p99_us']:8.1f}"
        )


if __name__ == "__main__":
    main()
