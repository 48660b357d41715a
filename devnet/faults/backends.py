"""How a perturbation reaches a running devnet.

`Target` is what the actions and the runner need from a network, whatever runs it:

- process control: `kill` (SIGKILL / `docker kill`), `stop` (SIGTERM, graceful), `start`,
  `pause` / `resume` (SIGSTOP / SIGCONT, `docker pause` / `unpause`), `alive`;
- the node admin API (`admin`: transport fault rules, Byzantine modes, dumps), reached
  with the bearer token in `DIR/nodes/NODE/admin.token`;
- the key manager admin API (`kms_admin`: per-link rate, outage, eavesdropper, counters)
  with the token in `DIR/kms/admin.token`; with one KME per node (`kme_mode =
  "per-node"`) every KME has its own admin endpoint: `kme_names` lists the key managers
  the devnet runs (`kms`, or `kme-node0`, `kme-node1`, ...), `kme_of` names the one a
  node takes its keys from, `kme_admin` calls one of them, and `stop_kme` / `start_kme`
  take one down (SIGTERM) and bring it back;
- where to look when something failed (`log_hint`, `admin_url`, `kms_admin_hint`,
  `down_hint`).

`LocalTarget` drives a `devnet.local.LocalNetwork` (processes on 127.0.0.1);
`DockerTarget` drives a `devnet.dockernet.ComposeNetwork` and adds what only containers
offer: `disconnect` / `connect` (docker network) and `netem` (`tc qdisc` through
`docker exec`, needs NET_ADMIN and iproute2 in the image).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import weakref
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

    def kme_names(self) -> list[str]: ...

    def kme_of(self, name: str) -> str: ...

    def kme_admin(self, kme: str, method: str, path: str, body: object = None) -> Any: ...

    def stop_kme(self, kme: str) -> None: ...

    def start_kme(self, kme: str) -> None: ...

    def log_hint(self, name: str) -> str: ...

    def admin_url(self, name: str) -> str: ...

    def kms_admin_hint(self) -> str: ...

    def down_hint(self) -> str: ...

    def close(self) -> None: ...


def _token(path: Path) -> str:
    return path.read_text().strip()


SHARED_KMS = "kms"
"""The service name of the devnet's one shared key manager."""


def kme_service(plan: NetworkPlan, name: str) -> str:
    """The key manager that serves node `name`: `kme-NODE` with one KME per node, else the
    shared `kms`. External KMEs are not the devnet's to perturb (BackendError)."""
    if plan.kme_mode == "external":
        raise BackendError("external KMEs: the devnet runs no key manager the kit could reach")
    if name not in {n.name for n in plan.nodes}:
        raise BackendError(f"no node {name!r}")
    return f"kme-{name}" if plan.kme_mode == "per-node" else SHARED_KMS


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
        """The first key manager's admin API (the shared KMS, or node0's KME)."""
        return self.kme_admin(self.kme_names()[0], method, path, body)

    def kme_names(self) -> list[str]:
        names = list(self.net.kms_services())
        if not names:
            raise BackendError("external KMEs: the devnet runs no key manager the kit could reach")
        return names

    def kme_of(self, name: str) -> str:
        return kme_service(self.plan, name)

    def _kme_url(self, kme: str) -> str:
        urls = self.net.kms_services()
        if kme not in urls:
            raise BackendError(f"no key manager {kme!r} (this devnet runs: {', '.join(urls)})")
        return urls[kme]

    def kme_admin(self, kme: str, method: str, path: str, body: object = None) -> Any:
        token = _token(self.dir / "kms" / "admin.token")
        return http_call(f"{self._kme_url(kme)}{path}", method, body, token)

    def stop_kme(self, kme: str) -> None:
        """SIGTERM one key manager (SIGKILL after the grace period)."""
        self._kme_url(kme)
        self.net.stop([kme])

    def start_kme(self, kme: str) -> None:
        """Start a stopped key manager and wait until its admin endpoint answers."""
        self._kme_url(kme)
        self.net.start(kme)
        try:
            self.net.wait_kms(kme)
        except (RuntimeError, TimeoutError) as e:
            raise BackendError(f"{kme}: {e}") from e

    def log_hint(self, name: str) -> str:
        return str(self.net.log_file(name))

    def admin_url(self, name: str) -> str:
        return self.node(name).admin_url

    def kms_admin_hint(self) -> str:
        urls = self.net.kms_services()
        return "; ".join(f"{kme}: GET {url}/admin/links" for kme, url in urls.items())

    def down_hint(self) -> str:
        return f"qchain devnet down --dir {self.dir}"

    def close(self) -> None:
        """Nothing to release: every call is a signal or an HTTP request."""


# Runs inside the key manager's container (`docker exec -i`), whose admin endpoint
# listens on the container's loopback only: a loop that reads one JSON request per line
# ({"url", "method", "body"}) and writes one JSON answer per line ({"status", "body"} or
# {"status": 0, "error"}), with the token read from the mounted devnet directory (so it
# never appears in a process list). One long-lived process, because starting Python in
# the container for every request takes seconds on a busy machine.
_KMS_SHELL = """
import json, sys, urllib.error, urllib.request as u
token = open(sys.argv[1]).read().strip()
for line in sys.stdin:
    q = json.loads(line)
    body = None if q["body"] is None else json.dumps(q["body"]).encode()
    req = u.Request(q["url"], data=body, method=q["method"])
    req.add_header("Authorization", "Bearer " + token)
    req.add_header("Content-Type", "application/json")
    try:
        with u.urlopen(req, timeout=5) as r:
            a = {"status": r.status, "body": r.read().decode()}
    except urllib.error.HTTPError as e:
        a = {"status": e.code, "body": e.read()[:300].decode(errors="replace")}
    except OSError as e:
        a = {"status": 0, "error": str(e)}
    sys.stdout.write(json.dumps(a) + "\\n")
    sys.stdout.flush()
"""


def _close_shells(shells: dict[str, _ContainerShell]) -> None:
    for shell in shells.values():
        shell.close()


class _ContainerShell:
    """A `docker exec -i CID python3 -c _KMS_SHELL` process and its line protocol.
    Thread-safe (one request at a time); started anew on the next request if it died
    (the container was restarted) or the command changed (a new container)."""

    def __init__(self) -> None:
        self.argv: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()
        self.buf = b""

    def request(self, argv: list[str], doc: dict[str, Any], timeout: float) -> dict[str, Any]:
        with self.lock:
            if argv != self.argv:
                self._close()
                self.argv = argv
            try:
                return self._request(doc, timeout)
            except BackendError:
                self._close()
                raise

    def _request(self, doc: dict[str, Any], timeout: float) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            self._close()
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            self.buf = b""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(doc).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError as e:
            raise BackendError(f"key manager admin shell: {e}: {self._stderr()}") from e
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BackendError(f"key manager admin shell: no answer within {timeout:.0f}s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise BackendError(f"key manager admin shell ended: {self._stderr()}")
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _stderr(self) -> str:
        proc = self.proc
        if proc is None or proc.stderr is None or proc.poll() is None:
            return ""
        return proc.stderr.read().decode(errors="replace").strip()[-300:]

    def _close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        with self.lock:
            self._close()


class DockerTarget:
    """A Docker Compose devnet (`qchain devnet init --docker` + `up --docker`). Node APIs
    and admin APIs are published on 127.0.0.1; a key manager's admin endpoint (the shared
    `kms`, or each `kme-NODE`) only listens inside its container, so it is called through
    `docker exec`."""

    DOCKER_TIMEOUT_S = 60.0

    def __init__(self, directory: Path) -> None:
        from devnet.dockernet import MOUNT, ComposeNetwork

        self.net = ComposeNetwork(directory)
        self.dir = self.net.dir
        self.plan = self.net.plan
        self._cids: dict[str, str] = {}
        self._kme_shells: dict[str, _ContainerShell] = {}
        """One `docker exec` shell per key manager container, started on first use."""
        # Ends the shells if the target is dropped without close().
        self._finalizer = weakref.finalize(self, _close_shells, self._kme_shells)
        self._kms_token_inside = f"{MOUNT}/kms/admin.token"

    def node_names(self) -> list[str]:
        return [n.name for n in self.plan.nodes]

    def _node(self, name: str) -> NodePlan:
        for n in self.plan.nodes:
            if n.name == name:
                return n
        raise BackendError(f"no node {name!r} (nodes: {', '.join(self.node_names())})")

    def api_url(self, name: str) -> str:
        self._node(name)
        return self.net.api_url(name)

    def admin_url(self, name: str) -> str:
        self._node(name)
        return self.net.admin_url(name)

    def _docker(self, *args: str, timeout: float = DOCKER_TIMEOUT_S) -> str:
        try:
            r = subprocess.run(
                ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as e:
            raise BackendError(f"docker {args[0]}: no answer within {timeout:.0f}s") from e
        if r.returncode != 0:
            raise BackendError(f"docker {' '.join(args[:3])}: {r.stderr.strip()[-300:]}")
        return r.stdout

    def _compose(self, *args: str) -> None:
        """A compose verb, its progress output captured (errors become BackendError)."""
        try:
            self.net.compose(*args, capture=True, timeout=self.DOCKER_TIMEOUT_S)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            raise BackendError(str(e)) from e

    def _cid(self, name: str) -> str:
        """The service's container id. Cached: a container keeps its id through kill,
        stop, start and pause; `compose ps` (Compose v1 is a Python program) is slow."""
        cid = self._cids.get(name) or self.net.container_id(name)
        if cid is None:
            raise BackendError(f"no container for {name} (is the devnet up?)")
        self._cids[name] = cid
        return cid

    def state(self, name: str) -> str:
        """The container's status: running, paused, exited, ... or missing."""
        for _ in range(2):
            try:
                cid = self._cid(name)
            except BackendError:
                return "missing"
            r = subprocess.run(
                ["docker", "inspect", "-f", "{{.State.Status}}", cid],
                capture_output=True,
                text=True,
                timeout=self.DOCKER_TIMEOUT_S,
                check=False,
            )
            if r.returncode == 0:
                return r.stdout.strip()
            self._cids.pop(name, None)  # removed (and maybe created anew): look again
        return "missing"

    def kill(self, name: str) -> None:
        """SIGKILL the container (a crash); its volume stays."""
        self._node(name)
        self._docker("kill", "--signal", "SIGKILL", self._cid(name))

    def stop(self, name: str) -> None:
        """SIGTERM through the container's init, SIGKILL after the grace period."""
        from devnet.dockernet import STOP_GRACE_S

        self._node(name)
        cid = self._cid(name)
        self._docker("stop", "-t", str(STOP_GRACE_S), cid, timeout=STOP_GRACE_S + 30)

    def start(self, name: str) -> None:
        """Start the stopped container again; if it was removed, create it (same volume)."""
        self._node(name)
        if self.state(name) == "missing":
            self._compose("up", "-d", "--no-deps", "--no-build", name)
        else:
            self._docker("start", self._cid(name))

    def pause(self, name: str) -> None:
        self._node(name)
        self._docker("pause", self._cid(name))

    def resume(self, name: str) -> None:
        if self.state(name) == "paused":
            self._docker("unpause", self._cid(name))

    def alive(self, name: str) -> bool:
        return self.state(name) in ("running", "paused")

    def network_name(self) -> str:
        """The compose network (`networks: devnet` in `dockernet.compose_yaml`)."""
        return f"{self.net.settings.project}_devnet"

    def disconnect(self, name: str) -> None:
        self._docker("network", "disconnect", self.network_name(), self._cid(name))

    def connect(self, name: str) -> None:
        self._docker("network", "connect", "--alias", name, self.network_name(), self._cid(name))

    def netem(self, name: str, spec: str | None) -> None:
        """`tc qdisc replace dev eth0 root netem SPEC` inside the container (None clears).
        Needs the host kernel's sch_netem."""
        cid = self._cid(name)
        if spec is None:
            subprocess.run(
                ["docker", "exec", "-u", "0", cid, "tc", "qdisc", "del", "dev", "eth0", "root"],
                capture_output=True,
                timeout=self.DOCKER_TIMEOUT_S,
                check=False,
            )
            return
        self._docker(
            "exec", "-u", "0", cid, "tc", "qdisc", "replace", "dev", "eth0", "root", "netem",
            *spec.split(),
        )  # fmt: skip

    def admin(self, name: str, method: str, path: str, body: object = None) -> Any:
        token = _token(self.dir / "nodes" / name / "admin.token")
        return http_call(f"{self.admin_url(name)}{path}", method, body, token)

    def kms_admin_url(self, kme: str = SHARED_KMS) -> str:
        """A key manager's admin endpoint as seen inside its container."""
        for n in self.plan.nodes:
            if kme == f"kme-{n.name}" and n.kme_admin_port:
                return f"http://127.0.0.1:{n.kme_admin_port}"
        return f"http://127.0.0.1:{self.plan.kms_admin_port}"

    def kms_admin(self, method: str, path: str, body: object = None) -> Any:
        """The first key manager's admin API (the shared KMS, or node0's KME)."""
        return self.kme_admin(self.kme_names()[0], method, path, body)

    def kme_admin(self, kme: str, method: str, path: str, body: object = None) -> Any:
        """One request to a key manager's admin API, through a long-lived
        `docker exec -i` shell in its container (started on first use)."""
        if kme not in self.kme_names():
            raise BackendError(f"no key manager {kme!r} (this devnet runs: {self.kme_names()})")
        cid = self._cid(kme)
        argv = ["docker", "exec", "-i", cid, "python3", "-c", _KMS_SHELL, self._kms_token_inside]
        url = f"{self.kms_admin_url(kme)}{path}"
        doc = {"url": url, "method": method, "body": body}
        shell = self._kme_shells.setdefault(kme, _ContainerShell())
        answer = shell.request(argv, doc, 20.0)
        status = int(answer.get("status", 0))
        if status == 0:
            raise BackendError(f"{method} {url} in the key manager's container: {answer}")
        if status >= 300:
            raise BackendError(f"{method} {url}: HTTP {status}: {answer.get('body', '')!r}")
        raw = str(answer.get("body", ""))
        return json.loads(raw) if raw.strip() else None

    def kme_names(self) -> list[str]:
        if self.plan.kme_mode == "shared":
            return [SHARED_KMS]
        return [kme_service(self.plan, n.name) for n in self.plan.nodes]

    def kme_of(self, name: str) -> str:
        return kme_service(self.plan, name)

    def stop_kme(self, kme: str) -> None:
        """SIGTERM one key manager's container (SIGKILL after the grace period)."""
        from devnet.dockernet import STOP_GRACE_S

        if kme not in self.kme_names():
            raise BackendError(f"no key manager {kme!r} (this devnet runs: {self.kme_names()})")
        self._docker("stop", "-t", str(STOP_GRACE_S), self._cid(kme), timeout=STOP_GRACE_S + 30)

    def start_kme(self, kme: str) -> None:
        """Start a stopped key manager's container and wait until its admin API answers."""
        if kme not in self.kme_names():
            raise BackendError(f"no key manager {kme!r} (this devnet runs: {self.kme_names()})")
        self._docker("start", self._cid(kme))
        deadline = time.monotonic() + self.DOCKER_TIMEOUT_S
        while True:
            try:
                self.kme_admin(kme, "GET", "/admin/links")
                return
            except BackendError as e:
                if time.monotonic() > deadline:
                    raise BackendError(f"{kme} did not answer after its start: {e}") from e
                time.sleep(0.2)

    def close(self) -> None:
        """End the key manager shells (those that were started)."""
        self._finalizer()

    def log_hint(self, name: str) -> str:
        return f"qchain devnet logs --docker --dir {self.dir} {name}"

    def kms_admin_hint(self) -> str:
        kme = self.kme_names()[0]
        return (
            f"GET {self.kms_admin_url(kme)}/admin/links inside the {kme} container "
            f"(docker exec; token in {self.dir / 'kms' / 'admin.token'}; "
            "see devnet/docker/README.md)"
        )

    def down_hint(self) -> str:
        return f"qchain devnet down --docker --dir {self.dir} --volumes"
