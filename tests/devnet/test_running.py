"""The one interface to a running devnet (`devnet.running.Network`), its two flavours,
and the process helper they share (`devnet.spawn`), without starting a network."""

from __future__ import annotations

import gc
import os
import sys
import warnings
from pathlib import Path

import pytest

from devnet import spawn
from devnet.dockernet.files import write_docker_network
from devnet.dockernet.plan import DockerSettings, plan_docker_network
from devnet.local import create_network
from devnet.network import plan_network
from devnet.running import BackendError, Network, node_of, open_network


def _members() -> set[str]:
    return {n for n in vars(Network) if not n.startswith("_")}


def test_both_flavours_have_every_member_of_the_protocol(tmp_path: Path) -> None:
    create_network(tmp_path / "local", plan_network(base_port=None, scheme="ed25519"))
    plan = plan_docker_network(validators=4, scheme="ed25519", kme_mode="per-node")
    write_docker_network(tmp_path / "docker", plan, DockerSettings(base_port=29900))
    local = open_network(tmp_path / "local", docker=False)
    docker = open_network(tmp_path / "docker", docker=True)
    try:
        assert {"node_names", "kill_node", "admin", "kme_admin", "log_hint"} <= _members()
        for net in (local, docker):
            missing = [m for m in _members() if not hasattr(net, m)]
            assert not missing, f"{type(net).__name__} lacks {missing}"
        assert local.node_names() == docker.node_names() == ["node0", "node1", "node2", "node3"]
        assert docker.api_url("node2") == "http://127.0.0.1:30002"
        assert docker.kme_names() == [f"kme-node{i}" for i in range(4)]
        assert local.kme_of("node1") == "kms" and docker.kme_of("node1") == "kme-node1"
        assert local.node_status("node0", 0.2) is None  # nothing runs
        assert not local.node_alive("node0")
    finally:
        local.close()
        docker.close()


def test_an_unknown_node_names_the_nodes(tmp_path: Path) -> None:
    plan = plan_network(base_port=None, scheme="ed25519", validators=1)
    with pytest.raises(BackendError, match="nodes: node0"):
        node_of(plan, "node7")


def test_spawn_writes_pid_and_log_and_terminate_stops_it(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"]
    proc = spawn.spawn(argv, tmp_path / "logs" / "x.log", tmp_path / "run" / "x.pid", tmp_path)
    try:
        assert spawn.live_pid(tmp_path / "run" / "x.pid") == proc.pid
        spawn.terminate([proc.pid], grace_s=5)
        proc.wait(timeout=5)
        assert spawn.live_pid(tmp_path / "run" / "x.pid") is None
        assert not (tmp_path / "run" / "x.pid").exists()  # a stale file is removed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_spawned_service_whose_handle_is_dropped_is_kept_until_reaped(tmp_path: Path) -> None:
    """A later command stops a service by its PID file; the object that started it may be
    gone by then. Dropping the handle must not warn (pytest makes that warning an error in
    whichever test the collector runs), and stopping the service reaps it."""
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pid = spawn.spawn(argv, tmp_path / "x.log", tmp_path / "x.pid", tmp_path).pid
        gc.collect()
    assert [str(w.message) for w in caught] == []
    assert spawn.live_pid(tmp_path / "x.pid") == pid
    spawn.terminate([pid], grace_s=5)
    spawn.wait(pid, timeout=5)
    assert not spawn.alive(pid)
    assert pid not in spawn._children
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
