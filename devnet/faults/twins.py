"""A node turned Byzantine: a test-only misbehaviour of the node itself (admin API), or a
twin, a second process with a validator's identity.

For a twin (`start_twin`) the node is stopped cleanly, its directory (key, config, chain
data, sequence-number lease) is copied to `DIR/twins/NODE`, the original is started
again and the copy runs on fresh ports. Local processes only. See README.md for what a
twin can and cannot do with this transport.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from devnet import spawn
from devnet.network import free_ports, node_config_toml
from devnet.running import BackendError, Network, node_of


def byzantine(target: Network, name: str, mode: str | None) -> None:
    """A test-only misbehaviour of the node itself (admin API; needs admin.byzantine)."""
    target.admin(name, "PUT", "/admin/byzantine", {"mode": mode})


def twin_dir(target: Network, name: str) -> Path:
    return target.dir / "twins" / name


def twin_pid_file(target: Network, name: str) -> Path:
    return target.dir / "run" / f"twin-{name}.pid"


def twin_log(target: Network, name: str) -> Path:
    return target.dir / "logs" / f"twin-{name}.log"


def start_twin(target: Network, name: str) -> int:
    """Start a second process with `name`'s identity and a copy of its state. Local
    processes only. Returns the twin's PID."""
    from devnet.local import LocalNetwork

    if not isinstance(target, LocalNetwork):
        raise BackendError("twins need a local-process devnet (a container has one identity)")
    node = node_of(target.plan, name)
    src = target.dir / "nodes" / name
    dst = twin_dir(target, name)
    stop_twin(target, name)
    target.stop_node(name)
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    target.start_node(name)
    p2p, api, admin = free_ports(3, node.host)
    twin_plan = replace(node, p2p_port=p2p, api_port=api, admin_port=admin)
    (dst / "config.toml").write_text(node_config_toml(target.plan, twin_plan))
    argv = spawn.qchain_argv("node", "run", "--config", str(dst / "config.toml"))
    proc = spawn.spawn(argv, twin_log(target, name), twin_pid_file(target, name), target.dir)
    return proc.pid


def stop_twin(target: Network, name: str, grace_s: float = 10.0) -> bool:
    """SIGTERM the twin (SIGKILL after grace_s). False if none ran."""
    pid_file = twin_pid_file(target, name)
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return False
    pid_file.unlink(missing_ok=True)
    if not spawn.alive(pid):
        spawn.reap(pid)
        return False
    spawn.terminate([pid], grace_s)
    spawn.reap(pid)
    return True
