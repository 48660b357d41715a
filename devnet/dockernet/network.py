"""`ComposeNetwork`: a devnet directory written by `init --docker`, driven with docker
compose; the Docker flavour of `devnet.running.Network`.

Node APIs and admin APIs are published on 127.0.0.1; a key manager's admin endpoint (the
shared `kms`, or each `kme-NODE`) only listens inside its container, so it is called
through a long-lived `docker exec` shell (`engine.ContainerShell`). Beyond the common
interface, containers offer `disconnect` / `connect` (docker network) and `netem` (`tc
qdisc` through `docker exec`, needs NET_ADMIN and iproute2 in the image).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import tomllib
import weakref
from pathlib import Path
from typing import Any

from devnet.dockernet import engine
from devnet.dockernet.files import load_settings
from devnet.dockernet.plan import COMPOSE_FILE, MOUNT, NETWORK, STOP_GRACE_S, kms_services
from devnet.network import NodePlan, load_plan
from devnet.nodeapi import http_call, node_status, poll_ready, read_token
from devnet.running import BackendError, kme_service, node_of
from qchain.errors import ConfigError


class ComposeNetwork:
    """A devnet directory written by `init --docker`, driven with docker compose."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory.resolve()
        self.plan = load_plan(self.dir)
        self.settings = load_settings(self.dir)
        self.compose_file = self.dir / COMPOSE_FILE
        self._cids: dict[str, str] = {}
        self._kme_shells: dict[str, engine.ContainerShell] = {}
        """One `docker exec` shell per key manager container, started on first use."""
        # Ends the shells if the network object is dropped without close().
        self._finalizer = weakref.finalize(self, engine.close_shells, self._kme_shells)

    # --- compose -----------------------------------------------------------------------

    def compose(
        self, *args: str, capture: bool = False, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return engine.compose(
            self.settings.project,
            self.compose_file,
            *args,
            capture=capture,
            check=check,
            timeout=timeout,
        )

    def services(self) -> list[str]:
        return [*kms_services(self.plan), *(n.name for n in self.plan.nodes)]

    @property
    def kms_url(self) -> str:
        return f"https://127.0.0.1:{self.settings.kms_host_port}"

    def up(self, services: list[str] | None = None) -> None:
        if not engine.image_exists(self.settings.image):
            raise ConfigError(
                "image",
                f"{self.settings.image} is not built: run devnet/docker/build.sh "
                "(or qchain devnet up --docker --build)",
            )
        self.compose("up", "-d", "--no-build", *(services or []))

    def down(self, volumes: bool = False) -> None:
        args = ["down", "--remove-orphans", "--timeout", str(STOP_GRACE_S)]
        if volumes:
            args.append("--volumes")
        self.compose(*args)

    def container_id(self, service: str) -> str | None:
        r = self.compose("ps", "-q", service, capture=True, check=False)
        cid = r.stdout.strip().splitlines()
        return cid[0] if r.returncode == 0 and cid else None

    def state(self, service: str) -> tuple[str, str]:
        """(status, health) of a service's container: ('running', 'healthy'), ('exited',
        ''), ('missing', '') ..."""
        cid = self.container_id(service)
        if cid is None:
            return ("missing", "")
        fmt = "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}"
        out = engine.docker_quiet("inspect", "-f", fmt, cid)
        if out is None:
            return ("missing", "")
        status, _, health = out.strip().partition(" ")
        return (status, health)

    def kill(self, service: str) -> None:
        """SIGKILL a service's container (a crash); its volume stays."""
        self.compose("kill", "-s", "SIGKILL", service)

    def start(self, service: str) -> None:
        self.compose("start", service)

    def tls_client_files(self, name: str) -> dict[str, str]:
        """Host paths of a node's key-manager client certificate and key (its config
        names them under /devnet)."""
        qkd = tomllib.loads((self.dir / "nodes" / name / "config.toml").read_text())["qkd"]
        cfg_dir = Path(MOUNT) / "nodes" / name
        out = {}
        for field in ("client_cert", "client_key"):
            inside = Path(os.path.normpath(cfg_dir / qkd[field]))
            out[f"tls_{field}"] = str(self.dir / inside.relative_to(MOUNT))
        return out

    # --- containers, by id -------------------------------------------------------------

    def _cid(self, name: str) -> str:
        """The service's container id. Cached: a container keeps its id through kill,
        stop, start and pause; `compose ps` (Compose v1 is a Python program) is slow."""
        cid = self._cids.get(name) or self.container_id(name)
        if cid is None:
            raise BackendError(f"no container for {name} (is the devnet up?)")
        self._cids[name] = cid
        return cid

    def _inspect(self, name: str, fmt: str) -> str | None:
        """`docker inspect -f FMT` of the service's container; None if there is none."""
        for _ in range(2):
            try:
                cid = self._cid(name)
            except BackendError:
                return None
            out = engine.docker_quiet("inspect", "-f", fmt, cid)
            if out is not None:
                return out.strip()
            self._cids.pop(name, None)  # removed (and maybe created anew): look again
        return None

    def container_status(self, name: str) -> str:
        """The container's status: running, paused, exited, ... or missing."""
        return self._inspect(name, "{{.State.Status}}") or "missing"

    # --- devnet.running.Network ----------------------------------------------------------

    def node(self, name: str) -> NodePlan:
        return node_of(self.plan, name)

    def node_names(self) -> list[str]:
        return [n.name for n in self.plan.nodes]

    def api_url(self, name: str) -> str:
        node = self.node(name)
        return f"http://127.0.0.1:{self.settings.api_host_port(node.index)}"

    def admin_url(self, name: str) -> str:
        node = self.node(name)
        return f"http://127.0.0.1:{self.settings.admin_host_port(node.index)}"

    def node_status(self, name: str, timeout: float = 2.0) -> dict[str, Any] | None:
        return node_status(self.api_url(name), timeout)

    def wait_ready(
        self, min_height: int = 1, timeout: float = 120.0, names: list[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Wait until every named node (default all) answers on its published API port
        with height >= min_height. Raises RuntimeError if a container exited,
        TimeoutError naming the nodes that are not there."""
        wanted = self.node_names() if names is None else list(names)
        checked_at = 0.0

        def dead(missing: list[str]) -> str | None:
            # Asking Docker for container states is slow: every 3 s at most.
            nonlocal checked_at
            if time.monotonic() - checked_at <= 3:
                return None
            checked_at = time.monotonic()
            kmes = kms_services(self.plan)
            gone = [s for s in [*kmes, *missing] if self.state(s)[0] != "running"]
            if not gone:
                return None
            logs = f"qchain devnet logs --docker --dir {self.dir}"
            return f"{', '.join(gone)} not running; see `{logs}`"

        return poll_ready(wanted, self.node_status, min_height, timeout, dead, 0.25)

    def pid(self, name: str) -> int | None:
        """The host PID of the container's init, None if it does not run."""
        out = self._inspect(name, "{{.State.Pid}}")
        return int(out) if out and out.isdigit() and int(out) > 0 else None

    def kill_node(self, name: str) -> None:
        """SIGKILL the container (a crash); its volume stays."""
        self.node(name)
        engine.docker("kill", "--signal", "SIGKILL", self._cid(name))

    def stop_node(self, name: str) -> None:
        """SIGTERM through the container's init, SIGKILL after the grace period."""
        self.node(name)
        self._stop_container(name)

    def _stop_container(self, name: str) -> None:
        cid = self._cid(name)
        engine.docker("stop", "-t", str(STOP_GRACE_S), cid, timeout=STOP_GRACE_S + 30)

    def start_node(self, name: str) -> None:
        """Start the stopped container again; if it was removed, create it (same volume)."""
        self.node(name)
        if self.container_status(name) == "missing":
            try:
                self.compose(
                    "up", "-d", "--no-deps", "--no-build", name,
                    capture=True, timeout=engine.DOCKER_TIMEOUT_S,
                )  # fmt: skip
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                raise BackendError(str(e)) from e
        else:
            engine.docker("start", self._cid(name))

    def restart_node(self, name: str) -> None:
        """SIGTERM (graceful), then start again."""
        self.stop_node(name)
        self.start_node(name)

    def pause_node(self, name: str) -> None:
        self.node(name)
        engine.docker("pause", self._cid(name))

    def resume_node(self, name: str) -> None:
        if self.container_status(name) == "paused":
            engine.docker("unpause", self._cid(name))

    def node_alive(self, name: str) -> bool:
        return self.container_status(name) in ("running", "paused")

    def admin(self, name: str, method: str, path: str, body: object = None) -> Any:
        token = read_token(self.dir / "nodes" / name / "admin.token")
        return http_call(f"{self.admin_url(name)}{path}", method, body, token)

    def kms_admin_url(self, kme: str) -> str:
        """A key manager's admin endpoint as seen inside its container."""
        for n in self.plan.nodes:
            if kme == f"kme-{n.name}" and n.kme_admin_port:
                return f"http://127.0.0.1:{n.kme_admin_port}"
        return f"http://127.0.0.1:{self.plan.kms_admin_port}"

    def kme_names(self) -> list[str]:
        if self.plan.kme_mode == "shared":
            return kms_services(self.plan)
        return [kme_service(self.plan, n) for n in self.node_names()]

    def kme_of(self, name: str) -> str:
        return kme_service(self.plan, name)

    def _check_kme(self, kme: str) -> None:
        if kme not in self.kme_names():
            raise BackendError(f"no key manager {kme!r} (this devnet runs: {self.kme_names()})")

    def kme_admin(self, kme: str, method: str, path: str, body: object = None) -> Any:
        """One request to a key manager's admin API, through a long-lived
        `docker exec -i` shell in its container (started on first use)."""
        self._check_kme(kme)
        token_inside = f"{MOUNT}/kms/admin.token"
        argv = ["docker", "exec", "-i", self._cid(kme), "python3", "-c", engine.KMS_SHELL]
        url = f"{self.kms_admin_url(kme)}{path}"
        doc = {"url": url, "method": method, "body": body}
        shell = self._kme_shells.setdefault(kme, engine.ContainerShell())
        answer = shell.request([*argv, token_inside], doc, 20.0)
        status = int(answer.get("status", 0))
        if status == 0:
            raise BackendError(f"{method} {url} in the key manager's container: {answer}")
        if status >= 300:
            raise BackendError(f"{method} {url}: HTTP {status}: {answer.get('body', '')!r}")
        raw = str(answer.get("body", ""))
        return json.loads(raw) if raw.strip() else None

    def stop_kme(self, kme: str) -> None:
        """SIGTERM one key manager's container (SIGKILL after the grace period)."""
        self._check_kme(kme)
        self._stop_container(kme)

    def start_kme(self, kme: str) -> None:
        """Start a stopped key manager's container and wait until its admin API answers."""
        self._check_kme(kme)
        engine.docker("start", self._cid(kme))
        deadline = time.monotonic() + engine.DOCKER_TIMEOUT_S
        while True:
            try:
                self.kme_admin(kme, "GET", "/admin/links")
                return
            except BackendError as e:
                if time.monotonic() > deadline:
                    raise BackendError(f"{kme} did not answer after its start: {e}") from e
                time.sleep(0.2)

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

    def close(self) -> None:
        """End the key manager shells (those that were started)."""
        self._finalizer()

    # --- what only containers offer ------------------------------------------------------

    def network_name(self) -> str:
        """The compose network (`NETWORK` in `plan.compose_project`)."""
        return f"{self.settings.project}_{NETWORK}"

    def disconnect(self, name: str) -> None:
        engine.docker("network", "disconnect", self.network_name(), self._cid(name))

    def connect(self, name: str) -> None:
        engine.docker("network", "connect", "--alias", name, self.network_name(), self._cid(name))

    def netem(self, name: str, spec: str | None) -> None:
        """`tc qdisc replace dev eth0 root netem SPEC` inside the container (None clears).
        Needs the host kernel's sch_netem."""
        cid = self._cid(name)
        if spec is None:
            engine.docker_quiet("exec", "-u", "0", cid, "tc", "qdisc", "del", "dev", "eth0", "root")
            return
        engine.docker(
            "exec", "-u", "0", cid, "tc", "qdisc", "replace", "dev", "eth0", "root", "netem",
            *spec.split(),
        )  # fmt: skip
