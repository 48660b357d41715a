"""The devnet under Docker Compose.

The end-to-end test (marked `docker`) builds the image from the locally bootstrapped base
(`devnet/docker/build.sh`: no registry, `docker build --network none`), brings up the key
manager and 4 validators, submits transactions, checks that every node commits them in
identical blocks, kills one validator's container and sees it catch up after a restart,
and tears everything down, volumes included. It is skipped, saying why, when no Docker
daemon is reachable. The first run bootstraps the base image (about a minute and a half);
later runs reuse `.cache/docker/`.

The other tests check the generated files and need no Docker.
"""

from __future__ import annotations

import subprocess
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devnet.dockernet.files import write_docker_network
from devnet.dockernet.network import ComposeNetwork
from devnet.dockernet.plan import STOP_GRACE_S, DockerSettings, plan_docker_network
from devnet.dockernet.render import reference_compose_yaml
from devnet.network import account_key
from devnet.testing import anchor_tx
from qchain.client import Client
from qchain.config import load_config
from qchain.errors import ApiError
from qchain.types import Transaction

from .docker_support import (
    IMAGE,
    REPO,
    build_image,
    compose_devnet,
    docker_lock,
    free_base_port,
    skip_without_docker,
)

PROJECT = "qchain-dockertest"
SCHEME = "ed25519"


def test_reference_compose_file_is_current() -> None:
    kept = (REPO / "devnet" / "docker" / "docker-compose.yml").read_text()
    assert kept == reference_compose_yaml(), (
        "devnet/docker/docker-compose.yml is stale: regenerate it with "
        "`python -m devnet.dockernet > devnet/docker/docker-compose.yml`"
    )


def test_init_writes_container_configs(tmp_path: Path) -> None:
    plan = plan_docker_network(validators=4, scheme=SCHEME)
    settings = DockerSettings(project="qchain-x", base_port=29900)
    assert write_docker_network(tmp_path, plan, settings)
    assert not write_docker_network(tmp_path, plan, settings)
    cfg = load_config(tmp_path / "nodes" / "node1" / "config.toml")
    assert cfg.p2p.listen == "0.0.0.0:7000"
    assert cfg.api.listen == "0.0.0.0:8000"
    assert [p.address for p in cfg.p2p.peers] == ["node0:7000", "node2:7000", "node3:7000"]
    assert cfg.qkd.kme_url == "https://kms:6000"
    assert str(cfg.node.data_dir) == "/var/lib/qchain/data"
    kms = tomllib.loads((tmp_path / "kms" / "kms.toml").read_text())
    assert kms["server"]["host"] == "0.0.0.0"
    assert kms["admin"]["host"] == "127.0.0.1"
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((tmp_path / "ca" / "kms.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kms" in san.get_values_for_type(x509.DNSName)
    for key in [*tmp_path.glob("ca/*.key"), *tmp_path.glob("nodes/*/validator.key")]:
        assert key.stat().st_mode & 0o004, f"{key} is not readable by the container user"
    assert tmp_path.stat().st_mode & 0o005 == 0o005, "the mount's root is not open to uid 10001"
    compose = (tmp_path / "docker-compose.yml").read_text()
    for line in (
        '"127.0.0.1:29900:6000"',
        '"127.0.0.1:30003:8000"',
        '"127.0.0.1:30103:9000"',
        "condition: service_healthy",
        "cap_add: [NET_ADMIN]",
        "node3-data:/var/lib/qchain",
        ".:/devnet:ro",
    ):
        assert line in compose


# --- end to end ------------------------------------------------------------------------


def _anchor(chain_id: str, nonce: int, tag: int) -> Transaction:
    digest = bytes([tag, nonce % 256, nonce // 256]) * 10 + b"\x00\x02"
    key = account_key("partner1", SCHEME)
    return anchor_tx(key, chain_id, nonce, digest, f"docker doc {nonce}", "report")


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


def _committed(client: Client, tx: Transaction) -> bool:
    try:
        return client.tx_status(tx.hash).status == "committed"
    except ApiError:  # not known there yet
        return False


@pytest.fixture(scope="module")
def compose_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeNetwork]:
    skip_without_docker("Docker devnet test")
    with docker_lock():
        build_image(IMAGE)
        directory = tmp_path_factory.mktemp("docker-devnet")
        plan = plan_docker_network(validators=4, scheme=SCHEME, heartbeat_ms=500)
        settings = DockerSettings(project=PROJECT, base_port=free_base_port(4), image=IMAGE)
        with compose_devnet(directory, plan, settings) as net:
            yield net


@pytest.mark.docker
@pytest.mark.timeout(900)
def test_compose_network_commits_and_recovers_a_killed_node(compose_net: ComposeNetwork) -> None:
    net = compose_net
    nodes = [n.name for n in net.plan.nodes]
    net.wait_ready(min_height=1, timeout=120)
    _wait(
        lambda: all(net.state(s) == ("running", "healthy") for s in net.services()),
        90,
        "every container to be healthy",
    )
    clients = {name: Client(net.api_url(name), timeout_s=10) for name in nodes}
    try:
        chain_id = net.plan.chain_id
        # Transactions sent to every node are committed by every node.
        txs = [_anchor(chain_id, nonce, 1) for nonce in range(8)]
        for i, tx in enumerate(txs):
            clients[nodes[i % 4]].submit(tx)
        last = clients["node0"].submit_and_wait(txs[-1], timeout_s=60)
        assert last.status == "committed"

        def all_committed() -> bool:
            return all(_committed(clients[n], tx) for n in nodes for tx in txs)

        _wait(all_committed, 60, "every node to commit the transactions")
        for tx in txs:
            info = clients["node2"].tx_status(tx.hash)
            assert info.receipt is not None and info.receipt.ok, info
        top = min(c.status()["height"] for c in clients.values())
        for h in range(1, top + 1):
            hashes = {clients[n].block(h).header.hash for n in nodes}
            assert len(hashes) == 1, f"nodes disagree at height {h}"

        # The fault kit's hook: root in a container may change its qdisc (NET_ADMIN,
        # iproute2). netem itself needs a kernel with sch_netem.
        cid = net.container_id("node1")
        assert cid is not None
        tc = ["docker", "exec", "-u", "root", cid, "tc", "qdisc"]
        tbf = ["tbf", "rate", "100mbit", "burst", "64kb", "latency", "50ms"]
        netem = subprocess.run(
            [*tc, "add", "dev", "eth0", "root", "netem", "delay", "5ms"],
            capture_output=True,
            text=True,
            check=False,
        )
        if netem.returncode != 0:
            assert "qdisc kind is unknown" in netem.stderr, netem.stderr
            shaped = subprocess.run(
                [*tc, "add", "dev", "eth0", "root", *tbf],
                capture_output=True,
                text=True,
                check=False,
            )
            assert shaped.returncode == 0, shaped.stderr
        subprocess.run([*tc, "del", "dev", "eth0", "root"], check=True, capture_output=True)

        # A crash (SIGKILL) of one validator: the others go on, and after a restart it
        # catches up from its volume and the network.
        clients["node3"].close()
        net.kill("node3")
        assert net.state("node3")[0] == "exited"
        others = nodes[:3]
        start = max(clients[n].status()["height"] for n in others)
        _wait(
            lambda: min(clients[n].status()["height"] for n in others) >= start + 3,
            60,
            "three validators to go on without node3",
        )
        more = [_anchor(chain_id, nonce, 2) for nonce in range(8, 12)]
        for tx in more:
            clients["node1"].submit(tx)
        assert clients["node0"].submit_and_wait(more[-1], timeout_s=60).status == "committed"
        net.start("node3")
        target = max(clients[n].status()["height"] for n in others)
        net.wait_ready(min_height=target, timeout=90, names=["node3"])
        clients["node3"] = Client(net.api_url("node3"), timeout_s=10)
        for h in range(1, target + 1):
            assert clients["node3"].block(h).header.hash == clients["node0"].block(h).header.hash
        for tx in more:
            assert _committed(clients["node3"], tx)
        # ...and it takes part again: a transaction sent to it commits everywhere.
        after = _anchor(chain_id, 12, 3)
        clients["node3"].submit(after)
        _wait(
            lambda: all(_committed(clients[n], after) for n in nodes),
            60,
            "a transaction sent to the restarted node to commit everywhere",
        )
        _wait(lambda: net.state("node3")[1] == "healthy", 60, "node3 to be healthy again")

        # `docker stop` sends SIGTERM (through the init process): the validator shuts down
        # cleanly, closing LevelDB, and exits 0 well within the grace period.
        cid = net.container_id("node2")
        assert cid is not None
        started = time.monotonic()
        net.compose("stop", "node2")
        assert time.monotonic() - started < STOP_GRACE_S
        exit_code = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.ExitCode}}", cid],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert exit_code == "0"
        logs = subprocess.run(
            ["docker", "logs", "--tail", "20", cid], capture_output=True, text=True, check=True
        )
        assert "shutting down" in logs.stdout + logs.stderr
    except BaseException:
        net.compose("logs", "--tail", "60", check=False)
        raise
    finally:
        for c in clients.values():
            c.close()
