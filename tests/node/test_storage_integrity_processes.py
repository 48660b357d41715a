"""Disk as attacker, on a real devnet of validator processes: one flipped bit in a table
file of a stopped validator's LevelDB (in a commit certificate's signature, or in a block
body) is found at startup; the node logs it, answers /readyz with 503 and a store-corrupt
reason, stops voting and never serves the receipt whose certificate the bit broke, nor the
block. `qchain node rebuild` then moves the store aside, the node catches up from its
peers, becomes ready, and the chain keeps committing."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from devnet.local import LocalNetwork, running_network
from devnet.network import account_key, plan_network
from devnet.testing import anchor_tx, run_qchain, until
from node.genesis_file import load_genesis
from qchain.client import Client
from qchain.errors import ApiError
from qchain.store import schema
from qchain.store.leveldb import LevelDBStore
from qchain.store.testing import flip_bit_in_table
from qchain.types import Transaction

pytestmark = pytest.mark.slow
SCHEME = "ed25519"
VICTIM = "node3"


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[LocalNetwork]:
    plan = plan_network(base_port=None, scheme=SCHEME, heartbeat_ms=300)
    with running_network(tmp_path / "devnet", plan, min_height=3) as net:
        yield net


def _anchor(chain_id: str, nonce: int) -> Transaction:
    return anchor_tx(account_key("partner1", SCHEME), chain_id, nonce, bytes([nonce]) * 32)


_until = partial(until, timeout=20.0)


def _receipt_or_none(c: Client, tx: Transaction) -> object:
    """The receipt, or None while the node answers 404 (not committed here yet)."""
    try:
        return c.receipt(tx.hash)
    except ApiError as e:
        if e.status == 404:
            return None
        raise


_qchain = partial(run_qchain, timeout=60)


@pytest.mark.parametrize("target", ["certificate", "block"])
def test_flipped_bit_is_found_refused_and_rebuilt_from_peers(
    devnet: LocalNetwork, target: str
) -> None:
    chain_id = devnet.plan.chain_id
    genesis = load_genesis(devnet.dir / "genesis.json")
    victim = next(n for n in devnet.plan.nodes if n.name == VICTIM)
    config = devnet.dir / "nodes" / VICTIM / "config.toml"
    db_dir = devnet.dir / "nodes" / VICTIM / "data" / "db"
    tx = _anchor(chain_id, 0)
    with Client(devnet.plan.nodes[0].api_url) as c:
        info = c.submit_and_wait(tx, timeout_s=20)
    assert info.status == "committed" and info.height is not None
    height = info.height
    with Client(victim.api_url) as c:
        # The victim announces the block once its own commit is durable, and its receipt
        # once it holds the certificate: both may come after node 0 reported the commit.
        _until("the victim's certificate", partial(_receipt_or_none, c, tx))
        c.receipt(tx.hash).verify(chain_id, genesis.validator_keys())
    devnet.stop([VICTIM])

    # Reopening turns LevelDB's log into a table file; flip one bit there, in the last
    # signature of the certificate or of the block's transaction.
    key = schema.cert_key(height) if target == "certificate" else schema.block_key(height)
    with LevelDBStore(db_dir) as store:
        value = store.get(key)
    assert value is not None
    flip_bit_in_table(db_dir, value[-16:], offset=8)

    devnet.start(VICTIM)
    with Client(victim.api_url) as c:
        _until("the victim's API", lambda: devnet.node_status(VICTIM))
        ready, reasons = c.ready()
        assert not ready
        assert any(r.startswith("store-corrupt:") for r in reasons), reasons
        status = c.status()
        assert status["store_corrupt"] and status["halted"]
        with pytest.raises(ApiError) as e:
            if target == "certificate":
                c.receipt(tx.hash)
            else:
                c.block(height)
        assert e.value.status == 503 and e.value.code == "store-corrupt"
    log = devnet.log_file(VICTIM).read_text()
    assert "store corrupt" in log and "rebuild this node" in log

    devnet.stop([VICTIM])
    rebuilt = _qchain("node", "rebuild", "--config", str(config))
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert list(db_dir.parent.glob("db.corrupt-*"))
    devnet.start(VICTIM)

    with Client(devnet.plan.nodes[1].api_url) as c:
        after = c.submit_and_wait(_anchor(chain_id, 1), timeout_s=20)
    assert after.status == "committed" and after.height is not None
    with Client(victim.api_url) as c:
        _until(
            "the rebuilt node to catch up",
            lambda: (st := devnet.node_status(VICTIM)) and st["height"] >= after.height,
        )
        _until("the rebuilt node to be ready", lambda: c.ready()[0])
        assert c.status()["store_corrupt"] is None
        c.receipt(tx.hash).verify(chain_id, genesis.validator_keys())
        assert c.block(height).txs[0].hash == tx.hash
    with Client(victim.api_url) as c:
        more = c.submit_and_wait(_anchor(chain_id, 2), timeout_s=20)
    assert more.status == "committed"
