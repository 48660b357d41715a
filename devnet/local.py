"""A devnet as local processes: the key manager(s) and N validators, started in the
background with their PIDs and logs under the devnet directory.

    DIR/run/NAME.pid      PID of a running service (kms or kme-node0.., node0, node1, ...)
    DIR/logs/NAME.log     its standard output and error

Every service runs in its own session, so a terminal's Ctrl-C reaches only the process
that owns the terminal (`up --foreground` stops the network itself). `stop` sends SIGTERM
and waits; a validator closes LevelDB cleanly on SIGTERM. SIGKILL follows only after a
grace period.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devnet.network import NetworkPlan, load_plan

STOP_GRACE_S = 10.0


@dataclass(frozen=True)
class Service:
    name: str
    argv: tuple[str, ...]


def qchain_argv(*args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "qchain.cli", *args)


def poll_ready(
    wanted: Iterable[str],
    node_status: Callable[[str], dict[str, Any] | None],
    min_height: int,
    timeout: float,
    dead: Callable[[list[str]], str | None],
    interval: float,
) -> dict[str, dict[str, Any]]:
    """Poll until every wanted node answers with height >= min_height; their statuses.
    `dead(missing)` names what has died (RuntimeError) or returns None. Raises
    TimeoutError naming the nodes that are not there."""
    names = list(wanted)
    deadline = time.monotonic() + timeout
    statuses: dict[str, dict[str, Any]] = {}
    while True:
        for name in names:
            st = node_status(name)
            if st is not None:
                statuses[name] = st
        missing = [
            n for n in names if n not in statuses or statuses[n].get("height", 0) < min_height
        ]
        if not missing:
            return statuses
        problem = dead(missing)
        if problem is not None:
            raise RuntimeError(problem)
        if time.monotonic() > deadline:
            raise TimeoutError(f"not ready after {timeout:.0f}s: {', '.join(missing)}")
        time.sleep(interval)


def http_json(url: str, timeout: float = 2.0, token: str | None = None) -> Any:
    """GET a JSON document; raises OSError (URLError included) on failure."""
    req = urllib.request.Request(url)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


class LocalNetwork:
    def __init__(self, directory: Path) -> None:
        self.dir = directory.resolve()
        self.plan: NetworkPlan = load_plan(self.dir)
        self.run_dir = self.dir / "run"
        self.log_dir = self.dir / "logs"
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        """Children started by this object, kept so they can be reaped."""

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
            Service(name, qchain_argv("kms", "--config", str(self.dir / "kms" / f"{name}.toml")))
            for name in self.kms_services()
        ]
        for n in self.plan.nodes:
            cfg = self.dir / "nodes" / n.name / "config.toml"
            out.append(Service(n.name, qchain_argv("node", "run", "--config", str(cfg))))
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
        path = self.pid_file(name)
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            return None
        if not _alive(pid):
            path.unlink(missing_ok=True)
            return None
        return pid

    def running(self) -> dict[str, int]:
        out = {}
        for s in self.services():
            pid = self.pid(s.name)
            if pid is not None:
                out[s.name] = pid
        return out

    def start(self, name: str) -> int:
        """Start a service in the background (no-op if it runs); returns its PID."""
        existing = self.pid(name)
        if existing is not None:
            return existing
        svc = self.service(name)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_file(name), "ab") as log:
            proc = subprocess.Popen(
                svc.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.dir,
                env=env,
                start_new_session=True,
            )
        self._procs[proc.pid] = proc
        self.pid_file(name).write_text(f"{proc.pid}\n")
        return proc.pid

    def signal(self, name: str, sig: signal.Signals) -> bool:
        pid = self.pid(name)
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        return True

    def stop(self, names: Iterable[str] | None = None, grace_s: float = STOP_GRACE_S) -> list[str]:
        """SIGTERM, wait, then SIGKILL what is left. Returns the names stopped."""
        targets = {n: p for n, p in self.running().items() if names is None or n in set(names)}
        for pid in targets.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_alive(p) for p in targets.values()):
            time.sleep(0.05)
        for pid in targets.values():
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
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
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        self._reap(pid)
        self.pid_file(name).unlink(missing_ok=True)
        return True

    def _reap(self, pid: int) -> None:
        proc = self._procs.pop(pid, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        else:
            _reap(pid)

    def start_all(self, min_height: int = 1, timeout: float = 60.0) -> dict[str, dict[str, Any]]:
        """Start the key managers, then every validator; wait until each has committed
        min_height. Returns the nodes' statuses."""
        for name in self.kms_services():
            self.start(name)
        for name in self.kms_services():
            self.wait_kms(name)
        for n in self.plan.nodes:
            self.start(n.name)
        return self.wait_ready(min_height=min_height, timeout=timeout)

    # --- readiness -------------------------------------------------------------------

    def node_status(self, name: str, timeout: float = 2.0) -> dict[str, Any] | None:
        node = next(n for n in self.plan.nodes if n.name == name)
        try:
            doc = http_json(f"{node.api_url}/v1/status", timeout)
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def wait_ready(
        self, min_height: int = 1, timeout: float = 60.0, names: Iterable[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Wait until every named node (default: all) answers and has committed
        min_height. Raises TimeoutError naming the nodes that are not there."""
        wanted = [n.name for n in self.plan.nodes] if names is None else list(names)

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
        token = (self.dir / "kms" / "admin.token").read_text().strip()
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


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
