"""State sync on a real devnet of four validator processes (127.0.0.1).

The chain commits to its state every `INTERVAL` heights. A validator is stopped and its
store moved aside (`qchain node rebuild`, which keeps its QKD leases); with
`state_sync_after` lowered in its config, it starts by syncing its state from the
snapshot its peers keep (the default path: no flag), then catches up the later blocks
through consensus and follows it: block hashes (which carry the app hashes) are the
others' at every later height, the next checkpoint's included (its app hash commits to
the state the victim holds), a transaction submitted to it commits, and the blocks below
its snapshot answer 410 with the base height (the snapshot's own block is held).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import partial

import pytest

from devnet.local import LocalNetwork, running_network
from devnet.network import account_key, plan_network
from devnet.nodeapi import http_json
from devnet.testing import anchor_tx, run_qchain, until
from qchain.client import Client
from qchain.config import load_config
from qchain.errors import ApiError

pytestmark = pytest.mark.slow
SCHEME = "ed25519"
INTERVAL = 10

_until = partial(until, timeout=90.0)


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    plan = plan_network(
        base_port=None, scheme=SCHEME, heartbeat_ms=300, state_root_interval=INTERVAL
    )
    with running_network(tmp_path_factory.mktemp("devnet"), plan, min_height=2) as net:
        yield net


def _hashes(net: LocalNetwork, node: str, height: int) -> tuple[str, str]:
    """(block hash, app hash) of a committed block as node serves it."""
    doc = http_json(f"{net.api_url(node)}/v1/blocks/{height}")
    return str(doc["hash"]), str(doc["header"]["app_hash"])


def test_a_wiped_validator_state_syncs_and_follows_consensus(devnet: LocalNetwork) -> None:
    victim, other = "node3", "node0"
    chain_id = devnet.plan.chain_id
    key = account_key("partner1", SCHEME)
    with Client(devnet.api_url(other)) as c:
        for nonce in range(3):
            info = c.submit_and_wait(anchor_tx(key, chain_id, nonce, bytes([nonce + 1]) * 32))
            assert info.status == "committed"
    config = devnet.dir / "nodes" / victim / "config.toml"
    devnet.stop([victim])
    moved = run_qchain("node", "rebuild", "--config", str(config), timeout=60)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    _until(
        "the others to keep a certified snapshot",
        lambda: http_json(f"{devnet.api_url(other)}/v1/snapshots")["snapshots"],
    )
    text = config.read_text()
    config.write_text(
        text.replace('log_format = "text"\n', 'log_format = "text"\nstate_sync_after = 1\n')
    )
    assert load_config(config).node.state_sync_after == 1
    devnet.start(victim)
    _until("the victim to serve its API", lambda: devnet.height(victim) >= 0)
    log = devnet.log_file(victim).read_text()
    synced = re.search(r"state synced at height (\d+)", log)
    assert synced is not None, log[-3000:]
    base = int(synced.group(1))
    assert base % INTERVAL == 0 and base >= INTERVAL
    status = devnet.node_status(victim)
    assert status is not None and status["base_height"] == base
    # Past the next checkpoint, whose state root the victim computes over the synced state.
    target = max(devnet.height(other) + 3, base + INTERVAL + 1)
    _until(f"the victim to reach height {target}", lambda: devnet.height(victim) >= target)
    for h in range(base, target + 1):
        assert _hashes(devnet, victim, h) == _hashes(devnet, other, h), h
    with Client(devnet.api_url(victim)) as c:
        _until("the victim to be ready", lambda: c.ready()[0])
        info = c.submit_and_wait(anchor_tx(key, chain_id, 3, bytes([9]) * 32), timeout_s=30)
        assert info.status == "committed" and info.height is not None and info.height > base
        assert c.receipt(info.tx_hash).receipt.ok
        assert c.block(base).height == base
        with pytest.raises(ApiError) as gone:
            c.block(base - 1)
        assert gone.value.status == 410 and gone.value.extra.get("base_height") == base
        # The earlier anchors are in the synced state, without their blocks.
        assert c.notary_lookup(bytes([1]) * 32) is not None
