"""CPU per transaction in each stage of a validator's pipeline, without the network.

    .venv/bin/python -m devnet.bench.pipeline [--blocks 5] [--block-txs 1000]
        [--scheme ed25519] [--tx notary] [--profile FILE]

Writes a devnet (with the bench senders) to a temporary directory and opens two of its
validators in this process, on their own LevelDB stores, without starting them. For each
block: the leader admits every transaction (decode + mempool checks + signature) and
builds the block; the follower validates the block as received (decode + execution with
signature checks, since it never saw the transactions); both commit it: each first writes
the block's body as the pending record the engine persists before it proposes or votes
(synced, as the driver does), then the commit batch. Reports the median microseconds per
transaction of each stage. `--profile FILE` writes cProfile statistics of
the whole run. A measurement, not a test.

`--per-validator` adds what the stages come to per validator of a 4-validator network
where each node admits its own clients' quarter: the leader admits every transaction
(its own, and those forwarded to it), builds and commits; a follower admits its quarter,
validates every transaction (counted as if it had seen none) and commits. Beside them, the
essential work measured in the same run (one signature check and one execution, as
`qchain bench` measures its ceiling) and the ratio to it. Network, HTTP and consensus
messages are not in these figures.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from consensus.messages import Block as CBlock
from consensus.messages import block_hash as consensus_value
from devnet.bench import workload
from node.chain import Prepared
from node.runtime import Validator
from qchain.config import load_config
from qchain.keys import Scheme
from qchain.store import schema
from qchain.store.kv import Batch
from qchain.types import decode_transaction

STAGES = ("admit", "build", "validate", "commit (leader)", "commit (follower)")


def _open(directory: Path, name: str) -> Validator:
    return Validator(load_config(directory / "nodes" / name / "config.toml"))


def _admit(v: Validator, raws: list[bytes]) -> None:
    h = v.chain.height()
    for raw in raws:
        v.mempool.add(decode_transaction(raw), height=h, now=0.0, local=True)


def _commit(v: Validator, cblock: CBlock) -> None:
    pending = Batch()
    pending.put(schema.pending_body_key(cblock.height, consensus_value(cblock)), cblock.encode())
    v.store.write(pending, sync=True)
    prepared = v.app.validate(cblock)
    v.store.write(v.app.commit_batch(prepared), sync=True)
    v.app.forget(prepared.value)
    v.accounts.invalidate()
    v.mempool.on_commit(prepared.block.txs, prepared.block.height)


def run(blocks: int, block_txs: int, scheme: str, kind: str) -> dict[str, float]:
    from devnet.kms import write_kms_files
    from devnet.network import plan_network, write_network

    senders = 256
    per_sender = -(-blocks * block_txs // senders)
    tmp = Path(tempfile.mkdtemp(prefix="qchain-pipeline-"))
    try:
        plan = plan_network(validators=4, base_port=None, scheme=scheme)
        write_network(tmp, plan)
        write_kms_files(tmp, plan)
        workload.add_bench_members(tmp, plan, senders)
        streams = workload.presign(scheme, kind, plan.chain_id, senders, [0] * senders, per_sender)
        raws = workload.interleave(streams)
        leader, follower = _open(tmp, "node0"), _open(tmp, "node1")
        per_tx: dict[str, list[float]] = {s: [] for s in STAGES}

        def timed(stage: str, n: int, f: Callable[..., object], *args: object) -> object:
            t0 = time.process_time()
            out = f(*args)
            per_tx[stage].append((time.process_time() - t0) / n * 1e6)
            return out

        for b in range(blocks):
            chunk = raws[b * block_txs : (b + 1) * block_txs]
            timed("admit", len(chunk), _admit, leader, chunk)
            height = leader.chain.height() + 1
            parent = leader.app.committed_value(height - 1)
            assert parent is not None
            txs = leader.mempool.reap(block_txs, 1 << 30)
            prepared = timed("build", len(txs), leader.app.build, height, 0, parent, 0, txs)
            assert isinstance(prepared, Prepared)
            n = len(prepared.block.txs)
            if n != len(chunk):
                raise SystemExit(f"block {height} holds {n} of {len(chunk)} transactions")
            timed("validate", n, follower.app.validate, prepared.cblock)
            timed("commit (leader)", n, _commit, leader, prepared.cblock)
            timed("commit (follower)", n, _commit, follower, prepared.cblock)
        for v in (leader, follower):
            v.store.close()
        return {s: round(statistics.median(xs), 1) for s, xs in per_tx.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--block-txs", type=int, default=1000)
    parser.add_argument("--scheme", choices=[s.value for s in Scheme], default="ed25519")
    parser.add_argument("--tx", choices=list(workload.KINDS), default="notary")
    parser.add_argument("--profile", type=Path, help="write cProfile statistics here")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--per-validator", action="store_true")
    a = parser.parse_args()
    prof = cProfile.Profile() if a.profile else None
    if prof is not None:
        prof.enable()
    result = run(a.blocks, a.block_txs, a.scheme, a.tx)
    if prof is not None:
        prof.disable()
        prof.dump_stats(a.profile)
    out = dict(result)
    if a.per_validator:
        out.update(per_validator(result, a.scheme, a.tx))
    if a.json:
        print(json.dumps(out))
        return
    print(f"{a.blocks} blocks of {a.block_txs} {a.scheme} {a.tx} transactions, CPU µs per tx:")
    for stage, us in out.items():
        print(f"  {stage:18} {us:8.2f}" if "ratio" in stage else f"  {stage:18} {us:8.1f}")


def per_validator(stages: dict[str, float], scheme: str, kind: str, n: int = 4) -> dict[str, float]:
    """The stages per validator of an n-validator network, and their ratio to the
    essential work (verify + execute) measured now."""
    from devnet.bench.cli import measure_limit

    limit = measure_limit(scheme, kind, n)
    essential = float(limit["verify_us"]) + float(limit["execute_us"])
    leader = stages["admit"] + stages["build"] + stages["commit (leader)"]
    follower = stages["admit"] / n + stages["validate"] + stages["commit (follower)"]
    return {
        "leader": round(leader, 1),
        "follower": round(follower, 1),
        "verify + execute": round(essential, 1),
        "leader ratio": round(leader / essential, 2),
        "follower ratio": round(follower / essential, 2),
    }


if __name__ == "__main__":
    main()
