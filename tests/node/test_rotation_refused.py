"""A `rotate` is refused before it can be approved (docs/CONSENSUS.md, Revision 1.20), on
four real validators in process whose genesis enables set changes: a client's proposal is
answered 422 `rotation-not-supported` over the HTTP API, a peer's forwarded one is refused
at admission, and a Byzantine leader that puts one in its block gets no honest vote: the
chain goes on without it and no node stops."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts import validators
from devnet.network import account_key, operator_role
from devnet.testing import inproc_network
from node.runtime import Validator
from qchain import clock
from qchain.client import AsyncClient
from qchain.errors import ApiError, RotationNotSupported
from qchain.keys import Scheme, dev_key
from qchain.qkd.testing import wait_until
from qchain.types import Transaction, new_transaction


def _rotate(node: Validator, proposer: int, vid: int) -> Transaction:
    key = account_key(operator_role(proposer), "ed25519")
    new = dev_key("qchain-rotation-test", "new", Scheme.ML_DSA_65).public_key
    return new_transaction(
        key,
        chain_id=node.chain_id,
        nonce=node.accounts.next_nonce(key.address),
        contract=validators.NAME,
        method="propose",
        args=["rotate", vid, new, "SAE-rotated", b"", "", "", ""],
    )


def _committed(node: Validator, tx: Transaction) -> bool:
    st = node.tx_status(tx.hash)
    return st is not None and st.state == "committed"


async def test_a_rotate_is_refused_at_admission_and_gets_no_vote(tmp_path: Path) -> None:
    async with inproc_network(tmp_path, heartbeat_ms=200, reconfiguration=True) as nodes:
        await wait_until(lambda: all(v.chain.height() >= 2 for v in nodes), timeout=60)
        tx = _rotate(nodes[1], 1, 2)

        async with AsyncClient(f"http://{nodes[1].cfg.api.listen}") as c:
            with pytest.raises(ApiError) as e:
                await c.submit(tx)
        assert e.value.status == 422 and e.value.code == "rotation-not-supported"
        assert e.value.extra == {"method": "propose", "validator": 2}
        assert "does not build rotation" in e.value.detail
        for v in nodes:
            # A peer's forwarded transaction goes through the same admission.
            with pytest.raises(RotationNotSupported):
                v.admission.admit(tx)
            assert tx.hash not in v.mempool

        # Node 0, the leader of the first heights, turns Byzantine: it drops the rule
        # and its mempool holds the rotate, which it puts in its blocks.
        byz = nodes[0]
        tx = _rotate(byz, 0, 2)
        byz.pacer.refuse = lambda tx: None
        assert byz.mempool.add(tx, height=byz.app.head_height(), now=clock.monotonic())
        start = max(v.chain.height() for v in nodes)
        honest = nodes[1:]
        await wait_until(
            lambda: all(v.alarms.counts.get("refused-proposal") for v in honest), timeout=60
        )
        await wait_until(lambda: all(v.chain.height() >= start + 5 for v in nodes), timeout=120)
        assert not any(_committed(v, tx) for v in nodes)
        assert all(v.alarms.fatal is None for v in nodes)
        assert all(v.sets.rotations() == [] for v in nodes)
