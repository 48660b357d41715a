"""Four validators in one event loop over real TCP and HTTP on 127.0.0.1: a node that
replays heights without signing them (as a joining validator replays the heights before
its activation) gets their certificates from its peers' APIs and serves the receipts of
those heights."""

from __future__ import annotations

import asyncio
from pathlib import Path

from devnet.network import account_key
from devnet.testing import anchor_tx, inproc_network
from node.certificates import Verdict
from node.runtime import Validator
from qchain.client import AsyncClient
from qchain.qkd.testing import wait_until


async def test_a_node_replaying_heights_it_does_not_sign_gets_their_certificates(
    tmp_path: Path,
) -> None:
    async with inproc_network(tmp_path) as network:
        await wait_until(lambda: all(v.chain.height() >= 2 for v in network), timeout=60)
        away = network[3]
        cfg, source = away.cfg, away._key_source
        await away.stop()
        others = network[:3]
        key = account_key("partner1", "ed25519")
        chain_id = network[0].chain_id
        txs = [
            anchor_tx(key, chain_id, nonce, bytes([nonce + 1]) * 32, f"doc {nonce}", "report")
            for nonce in range(3)
        ]
        for tx in txs:
            network[0].submit_tx(tx)
        done = await asyncio.gather(*(network[0].wait_committed(t.hash, 60) for t in txs))
        assert all(d is not None for d in done)
        start = max(v.chain.height() for v in others)
        await wait_until(lambda: all(v.chain.height() >= start + 2 for v in others), timeout=60)

        replayer = Validator(cfg, key_source=source)
        # It signs no height, as a validator before its activation, and the signatures
        # its peers queued for it while it was away never reach its certificates (no
        # member sends them to a node outside the set).
        replayer.certificates.member = lambda h: False
        replayer.certificates.collector.received = lambda *a, **kw: Verdict()  # type: ignore[method-assign]
        network[3] = replayer
        first = replayer.chain.height() + 1
        await replayer.start()
        target = max(v.chain.height() for v in others)
        await wait_until(lambda: replayer.chain.height() >= target, timeout=60)
        replayed = range(first, target + 1)
        await wait_until(
            lambda: all(replayer.chain.certificate(h) is not None for h in replayed), timeout=90
        )
        assert replayer.certificates.backfill.stats.stored > 0
        assert replayer.certificates.backfill.stats.refused == 0

        # Its API serves the receipts of the replayed heights, with certificates a
        # partner verifies against the genesis keys.
        url = replayer.genesis.validators[3].api
        async with AsyncClient(url) as client:
            for tx in txs:
                proof = await client.receipt(tx.hash)
                proof.verify(chain_id, replayer.validator_keys)
                assert first <= proof.header.height <= target
