"""Backup and restore on a real devnet of four validator processes, through the CLI.

- A running validator is backed up (its admin API streams a snapshot), the chain commits
  more blocks, the validator is stopped, its data directory wiped and the backup restored:
  it starts, catches up to the others' height, its links work (its peers accept its
  frames: no stale sequence numbers, thanks to the lease floor the restore wrote) and a
  transaction submitted to it commits.
  It comes back under the amnesia guard and settles its silent heights past the height at
  which it stopped.
- A stopped validator is backed up, runs on, is stopped and restored over its own store:
  the store's leases, ahead of the backup's, are kept; it catches up and is ready again.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from devnet.local import LocalNetwork, running_network
from devnet.network import account_key, plan_network
from devnet.nodeapi import http_json
from devnet.testing import anchor_tx, run_qchain, until
from node.backup import check_backup, expected_of
from qchain.client import Client
from qchain.config import load_config
from qchain.qkd.lease import MAX_FLOOR
from qchain.types import Transaction

pytestmark = pytest.mark.slow
SCHEME = "ed25519"


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    plan = plan_network(base_port=None, scheme=SCHEME, heartbeat_ms=300)
    with running_network(tmp_path_factory.mktemp("devnet"), plan, min_height=2) as net:
        yield net


class Txs:
    """Anchor transactions of one partner, nonces in order."""

    def __init__(self, chain_id: str, who: str) -> None:
        self.chain_id = chain_id
        self.key = account_key(who, SCHEME)
        self.nonce = 0

    def next(self) -> Transaction:
        tx = anchor_tx(self.key, self.chain_id, self.nonce, bytes([self.nonce + 1]) * 32)
        self.nonce += 1
        return tx


_until = partial(until, timeout=60.0)
_qchain = partial(run_qchain, timeout=120)


def _commit(net: LocalNetwork, node: str, tx: Transaction) -> int:
    with Client(net.api_url(node)) as c:
        info = c.submit_and_wait(tx, timeout_s=30)
    assert info.status == "committed" and info.height is not None
    return info.height


def _caught_up_and_ready(net: LocalNetwork, victim: str, other: str) -> None:
    target = net.height(other)
    _until(f"{victim} to reach height {target}", lambda: net.height(victim) >= target)
    with Client(net.api_url(victim)) as c:
        _until(f"{victim} to be ready", lambda: c.ready()[0])


def test_running_node_backed_up_wiped_restored_catches_up(
    devnet: LocalNetwork, tmp_path: Path
) -> None:
    victim, other = "node3", "node0"
    txs = Txs(devnet.plan.chain_id, "partner1")
    config = devnet.dir / "nodes" / victim / "config.toml"
    before = _commit(devnet, other, txs.next())
    _until("the victim to commit it", lambda: devnet.height(victim) >= before)

    out = tmp_path / "node3.qbk"
    made = _qchain("node", "backup", "--config", str(config), "--out", str(out))
    assert made.returncode == 0, made.stdout + made.stderr
    assert "running node" in made.stdout
    summary = check_backup(out, expected_of(load_config(config)))
    assert summary.header.height >= before

    later = [txs.next() for _ in range(3)]
    for tx in later:
        _commit(devnet, other, tx)
    top = devnet.height(other)
    assert top > summary.header.height
    devnet.stop([victim])
    seen = devnet.frames_from(victim)

    data_dir = load_config(config).node.data_dir
    shutil.rmtree(data_dir)
    restored = _qchain("node", "restore", "--config", str(config), "--in", str(out))
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "0 kept from the replaced store" in restored.stdout
    printed = re.search(r"lease floor (\d+)", restored.stdout)
    assert printed is not None, restored.stdout
    floor = int(printed.group(1))
    assert 2**56 < floor <= MAX_FLOOR
    devnet.start(victim)

    _caught_up_and_ready(devnet, victim, other)
    # The restore forgot the votes cast after the backup: the node stays silent up to a
    # height past every one it may have voted in (CONSENSUS.md §3.8), at least `top` + 1.
    _until(
        "the amnesia guard to settle",
        lambda: (devnet.node_status(victim) or {}).get("amnesia", {}).get("settled") is True,
    )
    silent = devnet.node_status(victim)["amnesia"]["silent_through"]
    assert silent >= top + 1
    _until("the chain to pass the silent heights", lambda: devnet.height(victim) > silent)
    with Client(devnet.api_url(victim)) as c:
        for tx in later:  # committed after the backup: the victim has them from its peers
            assert c.tx_status(tx.hash).status == "committed"
    _until(
        "the peers to accept the victim's frames again",
        lambda: all(
            now["frames"] > seen[p]["frames"] for p, now in devnet.frames_from(victim).items()
        ),
    )
    assert all(now["stale"] == seen[p]["stale"] for p, now in devnet.frames_from(victim).items()), (
        "a peer rejected the restored node's frames as stale"
    )
    sent = http_json(f"{devnet.api_url(victim)}/v1/qkd")["links"]
    assert all(link["send"]["next_seq"] > floor for link in sent.values())
    assert _commit(devnet, victim, txs.next()) > top


def test_stopped_node_backed_up_and_restored_over_its_own_store(
    devnet: LocalNetwork, tmp_path: Path
) -> None:
    victim, other = "node2", "node1"
    txs = Txs(devnet.plan.chain_id, "partner2")
    config = devnet.dir / "nodes" / victim / "config.toml"
    _commit(devnet, other, txs.next())
    devnet.stop([victim])
    out = tmp_path / "node2.qbk"
    made = _qchain("node", "backup", "--config", str(config), "--out", str(out))
    assert made.returncode == 0, made.stdout + made.stderr
    assert "stopped node" in made.stdout

    devnet.start(victim)
    _caught_up_and_ready(devnet, victim, other)
    _commit(devnet, other, txs.next())
    running = _qchain("node", "restore", "--config", str(config), "--in", str(out))
    assert running.returncode == 1 and "the node is running" in running.stderr
    devnet.stop([victim])

    restored = _qchain("node", "restore", "--config", str(config), "--in", str(out))
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "0 from the backup" in restored.stdout  # the store's leases are ahead: kept
    data_dir = load_config(config).node.data_dir
    assert list(data_dir.glob("db.replaced-*"))
    devnet.start(victim)
    _caught_up_and_ready(devnet, victim, other)
    assert _commit(devnet, victim, txs.next()) > 0
