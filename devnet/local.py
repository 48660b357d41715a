"""A devnet as local processes: the key manager(s) and N validators, started in the
background with their PIDs and logs under the devnet directory.

    DIR/run/NAME.pid      PID of a running service (kms or kme-node0.., node0, node1, ...)
    DIR/logs/NAME.log     its standard output and error

`LocalNetwork` is the local flavour of `devnet.running.Network`. Services are started
and stopped with `devnet.spawn` (own session, SIGTERM then SIGKILL after a grace period;
`up --foreground` stops the network itself on Ctrl-C).
"""

from __future__ import annotations

import contextlib
import signal
import time
import urllib.error
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devnet import spawn
from devnet.network import NetworkPlan, NodePlan, load_plan
from devnet.nodeapi import http_call, http_json, node_status, poll_ready, read_token
from devnet.running import BackendError, kme_service, node_of

STOP_GRACE_S = 10.0


@dataclass(frozen=True)
class Service:
    name: str
    argv: tuple[str, ...]


class LocalNetwork:
    def __init__(self, directory: Path) -> None:
        self.dir = directory.resolve()
        self.plan: NetworkPlan = load_plan(self.dir)
        self.run_dir = self.dir / "run"
        self.log_dir = self.dir / "logs"

    # --- services --------------------------------------------------------------------

    def kms_services(self) -> dict[str, str]:
        """The key managers this devnet starts: {service name: its admin URL}. None with
        external KMEs."""
        from devnet.kms import kms_config_files

        out = {}
        for file, node in kms_config_files(self.plan).items():
            if node is None:
                out["kms"] = self.plan.kms_admin_url
            else:
                out[file.removesuffix(".toml")] = f"http://127.0.0.1:{node.kme_admin_port}"
        return out

    def services(self) -> list[Service]:
        out = [
            Service(
                name, spawn.qchain_argv("kms", "--config", str(self.dir / "kms" / f"{name}.toml"))
            )
            for name in self.kms_services()
        ]
        for n in self.plan.nodes:
            if n.removed:
                continue
            cfg = self.dir / "nodes" / n.name / "config.toml"
            out.append(Service(n.name, spawn.qchain_argv("node", "run", "--config", str(cfg))))
        return out

    def service(self, name: str) -> Service:
        for s in self.services():
            if s.name == name:
                return s
        raise KeyError(f"no service {name!r} in this devnet")

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def pid(self, name: str) -> int | None:
        """PID of a running service, or None (stale PID files are removed)."""
        return spawn.live_pid(self.pid_file(name))

    def running(self) -> dict[str, int]:
        """The services that run, and any removed node that still does (to stop it)."""
        out = {}
        names = [s.name for s in self.services()] + [n.name for n in self.plan.nodes if n.removed]
        for name in names:
            pid = self.pid(name)
            if pid is not None:
                out[name] = pid
        return out

    def start(self, name: str) -> int:
        """Start a service in the background (no-op if it runs); returns its PID."""
        existing = self.pid(name)
        if existing is not None:
            return existing
        svc = self.service(name)
        return spawn.spawn(svc.argv, self.log_file(name), self.pid_file(name), self.dir).pid

    def signal(self, name: str, sig: signal.Signals) -> bool:
        pid = self.pid(name)
        if pid is None:
            return False
        spawn.send(pid, sig)
        return True

    def stop(self, names: Iterable[str] | None = None, grace_s: float = STOP_GRACE_S) -> list[str]:
        """SIGTERM, wait, then SIGKILL what is left. Returns the names stopped."""
        wanted = None if names is None else set(names)
        targets = {n: p for n, p in self.running().items() if wanted is None or n in wanted}
        spawn.terminate(targets.values(), grace_s)
        for pid in targets.values():
            self._reap(pid)
        for name in targets:
            self.pid_file(name).unlink(missing_ok=True)
        return sorted(targets)

    def kill(self, name: str) -> bool:
        """SIGKILL one service (a crash)."""
        pid = self.pid(name)
        if pid is None:
            return False
        spawn.kill(pid)
        self._reap(pid)
        self.pid_file(name).unlink(missing_ok=True)
        return True

    def _reap(self, pid: int) -> None:
        spawn.wait(pid, timeout=5)

    def start_all(self, min_height: int = 1, timeout: float = 60.0) -> dict[str, dict[str, Any]]:
        """Start the key managers, then every validator (not the removed ones); wait
        until each has committed min_height. Returns the nodes' statuses."""
        for name in self.kms_services():
            self.start(name)
        for name in self.kms_services():
            self.wait_kms(name)
        for name in self.node_names():
            self.start(name)
        return self.wait_ready(min_height=min_height, timeout=timeout)

    # --- readiness -------------------------------------------------------------------

    def node_status(self, name: str, timeout: float = 2.0) -> dict[str, Any] | None:
        return node_status(self.api_url(name), timeout)

    def height(self, name: str) -> int:
        """The node's committed height, -1 while it does not answer."""
        st = self.node_status(name)
        return -1 if st is None else int(st["height"])

    def frames_from(self, sender: str, skip: str = "") -> dict[str, dict[str, int]]:
        """At each other node (but skip), from its `/v1/qkd`: frames accepted from sender,
        the last number accepted, and frames refused as stale."""
        sae = self.node(sender).sae_id
        out = {}
        for n in self.plan.nodes:
            if n.name not in (sender, skip):
                recv = http_json(f"{n.api_url}/v1/qkd")["links"][sae]["receive"]
                out[n.name] = {
                    "frames": recv["frames"],
                    "last_seq": recv["last_seq"],
                    "stale": recv["rejected"].get("stale-sequence", 0),
                }
        return out

    def wait_ready(
        self, min_height: int = 1, timeout: float = 60.0, names: Iterable[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Wait until every named node (default: all) answers and has committed
        min_height. Raises TimeoutError naming the nodes that are not there."""
        wanted = self.node_names() if names is None else list(names)

        def dead(missing: list[str]) -> str | None:
            gone = [n for n in missing if self.pid(n) is None]
            if not gone:
                return None
            logs = ", ".join(str(self.log_file(n)) for n in gone)
            return f"{', '.join(gone)} exited; see {logs}"

        return poll_ready(wanted, self.node_status, min_height, timeout, dead, 0.1)

    def wait_kms(self, name: str = "kms", timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        url = f"{self.kms_services()[name]}/admin/v1/links"
        token = read_token(self.dir / "kms" / "admin.token")
        while True:
            try:
                http_json(url, 1.0, token)
                return
            except urllib.error.HTTPError:
                return
            except (OSError, ValueError):
                if self.pid(name) is None:
                    raise RuntimeError(
                        f"the key manager exited; see {self.log_file(name)}"
                    ) from None
                if time.monotonic() > deadline:
                    raise TimeoutError("the key manager did not start") from None
                time.sleep(0.05)

    # --- devnet.running.Network ------------------------------------------------------

    def node(self, name: str) -> NodePlan:
        return node_of(self.plan, name)

    def node_names(self) -> list[str]:
        """The nodes the devnet runs: every site but the removed ones."""
        return [n.name for n in self.plan.nodes if not n.removed]

    def api_url(self, name: str) -> str:
        return self.node(name).api_url

    def admin_url(self, name: str) -> str:
        return self.node(name).admin_url

    def start_node(self, name: str) -> None:
        if self.node(name).removed:
            raise BackendError(f"{name} was removed from the validator set: it is not started")
        self.start(name)

    def stop_node(self, name: str) -> None:
        self.node(name)
        self.stop([name])

    def kill_node(self, name: str) -> None:
        self.node(name)
        self.kill(name)

    def restart_node(self, name: str) -> None:
        """SIGTERM (graceful), then start again."""
        self.stop_node(name)
        self.start_node(name)

    def pause_node(self, name: str) -> None:
        self.node(name)
        if not self.signal(name, signal.SIGSTOP):
            raise BackendError(f"{name} is not running")

    def resume_node(self, name: str) -> None:
        self.signal(name, signal.SIGCONT)

    def node_alive(self, name: str) -> bool:
        return self.pid(name) is not None

    def admin(self, name: str, method: str, path: str, body: object = None) -> Any:
        token = read_token(self.dir / "nodes" / name / "admin.token")
        return http_call(f"{self.admin_url(name)}{path}", method, body, token)

    def kme_names(self) -> list[str]:
        names = list(self.kms_services())
        if not names:
            raise BackendError("external KMEs: the devnet runs no key manager the kit could reach")
        return names

    def kme_of(self, name: str) -> str:
        return kme_service(self.plan, name)

    def _kme_url(self, kme: str) -> str:
        urls = self.kms_services()
        if kme not in urls:
            raise BackendError(f"no key manager {kme!r} (this devnet runs: {', '.join(urls)})")
        return urls[kme]

    def kme_admin(self, kme: str, method: str, path: str, body: object = None) -> Any:
        token = read_token(self.dir / "kms" / "admin.token")
        return http_call(f"{self._kme_url(kme)}{path}", method, body, token)

    def stop_kme(self, kme: str) -> None:
        """SIGTERM one key manager (SIGKILL after the grace period)."""
        self._kme_url(kme)
        self.stop([kme])

    def start_kme(self, kme: str) -> None:
        """Start a stopped key manager and wait until its admin endpoint answers."""
        self._kme_url(kme)
        self.start(kme)
        try:
            self.wait_kms(kme)
        except (RuntimeError, TimeoutError) as e:
            raise BackendError(f"{kme}: {e}") from e

    def log_hint(self, name: str) -> str:
        return str(self.log_file(name))

    def kms_admin_hint(self) -> str:
        urls = self.kms_services()
        return "; ".join(f"{kme}: GET {url}/admin/links" for kme, url in urls.items())

    def down_hint(self) -> str:
        return f"qchain devnet down --dir {self.dir}"

    def close(self) -> None:
        """Nothing to release: the services run on until `stop`."""


def create_network(directory: Path, plan: NetworkPlan) -> LocalNetwork:
    """Write a devnet (genesis, keys, configs, key manager files) and open it."""
    from devnet.kms import write_kms_files
    from devnet.network import write_network

    write_network(directory, plan)
    write_kms_files(directory, plan)
    return LocalNetwork(directory)


@contextlib.contextmanager
def running_network(
    directory: Path, plan: NetworkPlan, min_height: int = 1
) -> Iterator[LocalNetwork]:
    """A fresh devnet of local processes, stopped (everything) on exit."""
    net = create_network(directory, plan)
    try:
        net.start_all(min_height=min_height)
        yield net
    finally:
        net.stop()
