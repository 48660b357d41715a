"""Measure the core library: codec and signature costs on this machine.

    .venv/bin/python -m devnet.bench.core [--runs N]

Prints the median (and the 10th/90th percentiles) over N runs of: canonical encode and
decode of a typical signed transaction (ML-DSA-65, a few arguments), and sign and verify of
a 32-byte transaction digest with ML-DSA-65 and Ed25519.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from qchain.keys import Scheme, dev_key, verify
from qchain.types import decode_transaction, new_transaction


def measure(fn: Callable[[], object], runs: int) -> list[float]:
    """Wall time of each of `runs` calls, in microseconds (after a short warm-up)."""
    for _ in range(min(50, runs)):
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1000)
    return out


def report(name: str, samples: list[float]) -> None:
    q = statistics.quantiles(samples, n=10)
    med = statistics.median(samples)
    print(f"{name:<24} median {med:9.1f} µs   p10 {q[0]:9.1f}   p90 {q[-1]:9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    runs = parser.parse_args().runs

    key = dev_key("bench", "alice", Scheme.ML_DSA_65)
    tx = new_transaction(
        key,
        chain_id="qchain-bench",
        nonce=17,
        contract="registry",
        method="register",
        args=["alice", b"\x01" * 32, 1000, [True, None]],
        expiry_height=500,
    )
    data = tx.encode()
    print(f"typical transaction: {len(data)} bytes (ML-DSA-65 signed), {runs} runs each")
    report("codec encode", measure(lambda: tx.encode(), runs))
    report("codec decode", measure(lambda: decode_transaction(data), runs))
    report("codec encode+decode", measure(lambda: decode_transaction(tx.encode()), runs))

    digest = tx.signing_digest()
    for scheme in Scheme:
        k = dev_key("bench", "signer", scheme)
        pk = k.public_key
        sig = k.sign(digest)
        report(f"{scheme.value} sign", measure(lambda k=k: k.sign(digest), runs))  # type: ignore[misc]
        report(
            f"{scheme.value} verify",
            measure(lambda s=scheme, p=pk, g=sig: verify(s, p, digest, g), runs),  # type: ignore[misc]
        )


if __name__ == "__main__":
    main()
