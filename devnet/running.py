"""A running devnet, whatever runs it: the one interface the CLI, the watch view and the
fault kit use.

`Network` is implemented by `devnet.local.LocalNetwork` (processes on 127.0.0.1) and
`devnet.dockernet.network.ComposeNetwork` (containers of one compose project). It offers:

- the nodes: `node_names`, `api_url`, `admin_url`, `node_status`, `wait_ready`, `pid`;
- node control: `start_node`, `stop_node` (SIGTERM, graceful), `kill_node` (SIGKILL, a
  crash), `restart_node`, `pause_node` / `resume_node` (SIGSTOP / SIGCONT, `docker pause`
  / `unpause`), `node_alive`;
- the node admin API (`admin`: transport fault rules, Byzantine modes, dumps), reached
  with the bearer token in `DIR/nodes/NODE/admin.token`;
- the key managers: `kme_names` lists those the devnet runs (`kms`, or `kme-node0`,
  `kme-node1`, ... with one KME per node), `kme_of` names the one a node takes its keys
  from, `kme_admin` calls one's admin API (token in `DIR/kms/admin.token`), and
  `stop_kme` / `start_kme` take one down (SIGTERM) and bring it back;
- where to look: `log_hint` (a log file, or the command that prints the log),
  `kms_admin_hint`, `down_hint`;
- `close`, which ends what the object started for itself (not the network).

Operations that cannot be done raise `BackendError` saying which and why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from devnet.network import NetworkPlan, NodePlan

SHARED_KMS = "kms"
"""The service name of the devnet's one shared key manager."""


class BackendError(RuntimeError):
    """An operation on a running devnet could not be done (the message says which and
    why)."""


class Network(Protocol):
    @property
    def dir(self) -> Path: ...

    @property
    def plan(self) -> NetworkPlan: ...

    def node_names(self) -> list[str]: ...

    def api_url(self, name: str) -> str: ...

    def admin_url(self, name: str) -> str: ...

    def node_status(self, name: str, timeout: float = 2.0) -> dict[str, Any] | None: ...

    def wait_ready(
        self, min_height: int = 1, timeout: float = 60.0, names: list[str] | None = None
    ) -> dict[str, dict[str, Any]]: ...

    def pid(self, name: str) -> int | None: ...

    def start_node(self, name: str) -> None: ...

    def stop_node(self, name: str) -> None: ...

    def kill_node(self, name: str) -> None: ...

    def restart_node(self, name: str) -> None: ...

    def pause_node(self, name: str) -> None: ...

    def resume_node(self, name: str) -> None: ...

    def node_alive(self, name: str) -> bool: ...

    def admin(self, name: str, method: str, path: str, body: object = None) -> Any: ...

    def kme_names(self) -> list[str]: ...

    def kme_of(self, name: str) -> str: ...

    def kme_admin(self, kme: str, method: str, path: str, body: object = None) -> Any: ...

    def stop_kme(self, kme: str) -> None: ...

    def start_kme(self, kme: str) -> None: ...

    def log_hint(self, name: str) -> str: ...

    def kms_admin_hint(self) -> str: ...

    def down_hint(self) -> str: ...

    def close(self) -> None: ...


def node_of(plan: NetworkPlan, name: str) -> NodePlan:
    """The plan of node `name` (BackendError naming the nodes if there is none)."""
    for n in plan.nodes:
        if n.name == name:
            return n
    names = ", ".join(n.name for n in plan.nodes)
    raise BackendError(f"no node {name!r} (nodes: {names})")


def kme_service(plan: NetworkPlan, name: str) -> str:
    """The key manager that serves node `name`: `kme-NODE` with one KME per node, else the
    shared `kms`. External KMEs are not the devnet's to perturb (BackendError)."""
    if plan.kme_mode == "external":
        raise BackendError("external KMEs: the devnet runs no key manager the kit could reach")
    if name not in {n.name for n in plan.nodes}:
        raise BackendError(f"no node {name!r}")
    return f"kme-{name}" if plan.kme_mode == "per-node" else SHARED_KMS


def open_network(directory: Path, docker: bool) -> Network:
    """The devnet in directory: a Docker one (`init --docker`) or local processes."""
    if docker:
        from devnet.dockernet.network import ComposeNetwork

        return ComposeNetwork(directory)
    from devnet.local import LocalNetwork

    return LocalNetwork(directory)
