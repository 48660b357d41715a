"""The lease floor (CONSENSUS.md §10.9 (7), Revision 1.17 T2) on a real devnet of four
validator processes (127.0.0.1): a validator whose QKD sequence leases are gone or cannot
be read gets back into consensus.

Its peers, which have not restarted, remember the frame numbers its SAE id sent on every
link and refuse any frame numbered at or below them (`StaleSequence`). State sync and
`rebuild` write the lease floor, so every link numbers its frames from far above those
(and every connection raises the numbers to the clock term, Revision 1.24): each peer
accepts them and none is refused as stale.

- A validator whose data directory is wiped comes back by state sync and votes again:
  with another validator stopped, the chain (n = 4, quorum 3) commits only with its votes.
- A validator whose lease family cannot be read (one lease damaged) is rebuilt without
  leases, under the floor, and catches up.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from functools import partial

import pytest

from devnet import spawn
from devnet.local import LocalNetwork, running_network
from devnet.network import account_key, plan_network
from devnet.nodeapi import http_json
from devnet.testing import anchor_tx, run_qchain, until
from qchain.client import Client
from qchain.config import load_config
from qchain.store import schema
from qchain.store.leveldb import LevelDBStore

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


def _accepted_again(
    net: LocalNetwork, victim: str, seen: dict[str, dict[str, int]]
) -> dict[str, dict[str, int]]:
    """Wait for every peer to accept frames from the victim again; their counts then."""
    _until(
        "every peer to accept the victim's frames again",
        lambda: all(
            now["frames"] > seen[p]["frames"] for p, now in net.frames_from(victim).items()
        ),
    )
    return net.frames_from(victim)


def test_a_wiped_validator_state_syncs_and_its_peers_accept_its_frames(
    devnet: LocalNetwork,
) -> None:
    victim, other, stopped = "node3", "node1", "node0"
    chain_id = devnet.plan.chain_id
    key = account_key("partner1", SCHEME)
    with Client(devnet.api_url(other)) as c:
        for nonce in range(2):
            info = c.submit_and_wait(anchor_tx(key, chain_id, nonce, bytes([nonce + 1]) * 32))
            assert info.status == "committed"
    _until(
        "the others to keep a certified snapshot",
        lambda: http_json(f"{devnet.api_url(other)}/v1/snapshots")["snapshots"],
    )
    config = devnet.dir / "nodes" / victim / "config.toml"
    devnet.stop([victim])
    seen = devnet.frames_from(victim)
    assert all(s["last_seq"] > 0 for s in seen.values()), seen

    shutil.rmtree(load_config(config).node.data_dir)  # the store and its leases are gone
    argv = (*devnet.service(victim).argv, "--state-sync")
    spawn.spawn(argv, devnet.log_file(victim), devnet.pid_file(victim), devnet.dir)
    _until("the victim to serve its API", lambda: devnet.height(victim) >= 0)
    synced = re.search(r"state synced at height (\d+)", devnet.log_file(victim).read_text())
    assert synced is not None, devnet.log_file(victim).read_text()[-3000:]
    base = int(synced.group(1))
    assert base >= INTERVAL

    # Its frames are numbered from the floor (and each connection from the clock term,
    # CONSENSUS.md Revision 1.24, so the numbers before the wipe were of that size too):
    # above what its peers last accepted, and none refused as stale.
    now = _accepted_again(devnet, victim, seen)
    assert all(now[p]["stale"] == seen[p]["stale"] for p in now), (seen, now)
    assert all(now[p]["last_seq"] > seen[p]["last_seq"] for p in now), (seen, now)
    sent = http_json(f"{devnet.api_url(victim)}/v1/qkd")["links"]
    assert all(link["send"]["next_seq"] > 2**56 for link in sent.values())
    _until(
        "the amnesia guard to settle",
        lambda: (devnet.node_status(victim) or {}).get("amnesia", {}).get("settled") is True,
    )
    silent = devnet.node_status(victim)["amnesia"]["silent_through"]
    _until(
        "the victim to pass its silent heights",
        lambda: devnet.height(victim) > silent and devnet.height(other) > silent,
    )

    # With node0 stopped, a height needs the votes of all three others: the victim's too.
    devnet.stop([stopped])
    try:
        top = devnet.height(other)
        target = top + 3
        _until(
            f"the chain to commit up to {target} without {stopped}",
            lambda: min(devnet.height(n) for n in (other, "node2", victim)) >= target,
        )
        with Client(devnet.api_url(victim)) as c:
            info = c.submit_and_wait(anchor_tx(key, chain_id, 2, bytes([9]) * 32), timeout_s=60)
            assert info.status == "committed" and info.height is not None and info.height > top
        after = devnet.frames_from(victim, skip=stopped)
        assert all(after[p]["stale"] == seen[p]["stale"] for p in after), (seen, after)
    finally:
        devnet.start(stopped)


def test_a_validator_whose_leases_cannot_be_read_is_rebuilt_and_accepted(
    devnet: LocalNetwork,
) -> None:
    victim, other = "node2", "node1"
    _until(
        "every validator to serve its API",
        lambda: all(devnet.height(n.name) >= 0 for n in devnet.plan.nodes),
    )
    config = devnet.dir / "nodes" / victim / "config.toml"
    devnet.stop([victim])
    seen = devnet.frames_from(victim)
    # node0 restarted in the test above and may not have heard from the victim since.
    assert sum(s["last_seq"] > 0 for s in seen.values()) >= 2, seen
    with LevelDBStore(load_config(config).node.data_dir / "db") as s:
        leases = [k for k, _ in s.iterate(schema.QKD_LEASE)]
        assert leases
        s.put(leases[0], b"\x00" * 7, sync=True)  # not an 8-byte integer: the family is unreadable

    rebuilt = run_qchain("node", "rebuild", "--config", str(config), timeout=60)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert "its QKD leases could not be read, none kept" in rebuilt.stdout, rebuilt.stdout
    printed = re.search(r"lease floor (\d+)", rebuilt.stdout)
    assert printed is not None, rebuilt.stdout
    floor = int(printed.group(1))
    assert floor > 2**56

    devnet.start(victim)
    now = _accepted_again(devnet, victim, seen)
    assert all(now[p]["stale"] == seen[p]["stale"] for p in now), (seen, now)
    assert all(now[p]["last_seq"] > floor for p in now), (floor, now)
    target = devnet.height(other)
    _until(f"the victim to reach height {target}", lambda: devnet.height(victim) >= target)
