"""How a perturbation reaches a running devnet.

`Target` is what the actions and the runner need from a network, whatever runs it:

- process control: `kill` (SIGKILL / `docker kill`), `stop` (SIGTERM, graceful), `start`,
  `pause` / `resume` (SIGSTOP / SIGCONT, `docker pause` / `unpause`), `alive`;
- the node admin API (`admin`: transport fault rules, Byzantine modes, dumps), reached
  with the bearer token in `DIR/nodes/NODE/admin.token`;
- the key manager admin API (`kms_admin`: per-link rate, outage, eavesdropper, counters)
  with the token in `DIR/kms/admin.token`;
- where to look when something failed (`log_hint`).

`LocalTarget` drives a `devnet.local.LocalNetwork` (processes on 127.0.0.1);
`DockerTarget` drives a `devnet.dockernet.ComposeNetwork` and adds what only containers
offer: `disconnect` / `connect` (docker network) and `netem` (`tc qdisc` through
`docker exec`, needs NET_ADMIN and iproute2 in the image).
"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Protocol

from devnet.network import NetworkPlan, NodePlan


class BackendError(RuntimeError):
    """A perturbation could not be applied (the message says which and why)."""


def http_call(
    url: str,
    method: str = "GET",
    body: object = None,
    token: str | None = None,
    timeout: float = 5.0,
) -> Any:
    """One JSON request; raises BackendError with the server's answer on HTTP errors and
    OSError when the server cannot be reached."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as e:
        raise BackendError(f"{method} {url}: HTTP {e.code}: {e.read()[:300]!r}") from e
    return json.loads(raw) if raw else None


class Target(Protocol):
    dir: Path
    plan: NetworkPlan

    def node_names(self) -> list[str]: ...

    def api_url(self, name: str) -> str: ...

    def kill(self, name: str) -> None: ...

    def stop(self, name: str) -> None: ...

    def start(self, name: str) -> None: ...

    def pause(self, name: str) -> None: ...

    def resume(self, name: str) -> None: ...

    def alive(self, name: str) -> bool: ...

    def admin(self, name: str, method: str, path: str, body: object = None) -> Any: ...

    def kms_admin(self, method: str, path: str, body: object = None) -> Any: ...

    def log_hint(self, name: str) -> str: ...


def _token(path: Path) -> str:
    return path.read_text().strip()


class LocalTarget:
    """A local-process devnet (`qchain devnet up`)."""

    def __init__(self, directory: Path) -> None:
        from devnet.local import LocalNetwork

        self.net = LocalNetwork(directory)
        self.dir = self.net.dir
        self.plan = self.net.plan
        self.paused: set[str] = set()

    def node(self, name: str) -> NodePlan:
        for n in self.plan.nodes:
            if n.name == name:
                return n
        raise BackendError(f"no node {name!r} (nodes: {', '.join(self.node_names())})")

    def node_names(self) -> list[str]:
        return [n.name for n in self.plan.nodes]

    def api_url(self, name: str) -> str:
        return self.node(name).api_url

    def kill(self, name: str) -> None:
        self.node(name)
        self.net.kill(name)
        self.paused.discard(name)

    def stop(self, name: str) -> None:
        self.node(name)
        self.net.stop([name])
        self.paused.discard(name)

    def start(self, name: str) -> None:
        self.node(name)
        self.net.start(name)

    def pause(self, name: str) -> None:
        if not self.net.signal(name, signal.SIGSTOP):
            raise BackendError(f"{name} is not running")
        self.paused.add(name)

    def resume(self, name: str) -> None:
        self.net.signal(name, signal.SIGCONT)
        self.paused.discard(name)

    def alive(self, name: str) -> bool:
        return self.net.pid(name) is not None

    def admin(self, name: str, method: str, path: str, body: object = None) -> Any:
        token = _token(self.dir / "nodes" / name / "admin.token")
        return http_call(f"{self.node(name).admin_url}{path}", method, body, token)

    def kms_admin(self, method: str, path: str, body: object = None) -> Any:
        token = _token(self.dir / "kms" / "admin.token")
        return http_call(f"{self.plan.kms_admin_url}{path}", method, body, token)

    def log_hint(self, name: str) -> str:
        return str(self.net.log_file(name))


class DockerTarget:
    """A Docker Compose devnet (`qchain devnet init --docker` + `up --docker`). Node APIs
    and admin APIs are published on 127.0.0.1; the key manager's admin endpoint only
    listens inside its container, so it is called through `docker exec`."""

    def __init__(self, directory: Path) -> None:
        from devnet.dockernet import ComposeNetwork

        self.net = ComposeNetwork(directory)
        self.dir = self.net.dir
        self.plan = self.net.plan

    def node_names(self) -> list[str]:
        return [n.name for n in self.plan.nodes]

    def api_url(self, name: str) -> str:
        return self.net.api_url(name)

    def _docker(self, *args: str) -> str:
        r = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise BackendError(f"docker {' '.join(args)}: {r.stderr.strip()[:300]}")
        return r.stdout

    def _cid(self, name: str) -> str:
        cid = self.net.container_id(name)
        if cid is None:
            raise BackendError(f"no container for {name}")
        return cid

    def kill(self, name: str) -> None:
        self.net.kill(name)

    def stop(self, name: str) -> None:
        self._docker("stop", "-t", "20", self._cid(name))

    def start(self, name: str) -> None:
        self.net.start(name)

    def pause(self, name: str) -> None:
        self._docker("pause", self._cid(name))

    def resume(self, name: str) -> None:
        if self.net.state(name)[0] == "paused":
            self._docker("unpause", self._cid(name))

    def alive(self, name: str) -> bool:
        return self.net.state(name)[0] in ("running", "paused")

    def network_name(self) -> str:
        return f"{self.net.settings.project}_default"

    def disconnect(self, name: str) -> None:
        self._docker("network", "disconnect", self.network_name(), self._cid(name))

    def connect(self, name: str) -> None:
        self._docker("network", "connect", "--alias", name, self.network_name(), self._cid(name))

    def netem(self, name: str, spec: str | None) -> None:
        """`tc qdisc replace dev eth0 root netem SPEC` inside the container (None clears)."""
        cid = self._cid(name)
        if spec is None:
            subprocess.run(
                ["docker", "exec", "-u", "0", cid, "tc", "qdisc", "del", "dev", "eth0", "root"],
                capture_output=True,
                check=False,
            )
            return
        self._docker(
            "exec", "-u", "0", cid, "tc", "qdisc", "replace", "dev", "eth0", "root", "netem",
            *spec.split(),
        )  # fmt: skip

    def admin(self, name: str, method: str, path: str, body: object = None) -> Any:
        token = _token(self.dir / "nodes" / name / "admin.token")
        return http_call(f"{self.net.admin_url(name)}{path}", method, body, token)

    def kms_admin(self, method: str, path: str, body: object = None) -> Any:
        token = _token(self.dir / "kms" / "admin.token")
        script = (
            "import json,sys,urllib.request as u;"
            "r=u.Request(sys.argv[1],data=sys.argv[3].encode() or None,method=sys.argv[2]);"
            "r.add_header('Authorization','Bearer '+sys.argv[4]);"
            "r.add_header('Content-Type','application/json');"
            "print(u.urlopen(r,timeout=5).read().decode())"
        )
        payload = "" if body is None else json.dumps(body)
        out = self._docker(
            "exec", self._cid("kms"), "python", "-c", script,
            f"{self.plan.kms_admin_url}{path}", method, payload, token,
        )  # fmt: skip
        return json.loads(out) if out.strip() else None

    def log_hint(self, name: str) -> str:
        return f"qchain devnet logs --docker --dir {self.dir} {name}"
