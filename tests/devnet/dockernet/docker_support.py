"""What the Docker tests share: a skip when no daemon is reachable, one Docker test at a
time per machine (a file lock: the tests share the image, the wheelhouse and the
daemon), the image build, and a compose devnet that is torn down with its volumes
whatever happens.

Not a test module (no `test_` prefix): `test_docker.py` and `test_faults_docker.py`
import it.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from devnet.dockernet.engine import docker_available
from devnet.dockernet.files import write_docker_network
from devnet.dockernet.network import ComposeNetwork
from devnet.dockernet.plan import DockerSettings, host_port_offsets
from devnet.network import NetworkPlan, free_port_base

REPO = Path(__file__).resolve().parents[3]
IMAGE = "qchain:dev"
LOCK_FILE = Path(tempfile.gettempdir()) / "qchain-dockertest.lock"


def skip_without_docker(what: str) -> None:
    """pytest.skip, saying why, unless a Docker daemon and Compose are there."""
    reason = docker_available()
    if reason is not None:
        pytest.skip(f"{what} skipped: {reason}")


@contextmanager
def docker_lock() -> Iterator[None]:
    """Hold the machine-wide Docker test lock (blocks until the running test is done)."""
    with open(LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build_image(tag: str = IMAGE) -> None:
    """`devnet/docker/build.sh`: local base, no registry; 8 s when nothing changed."""
    env = dict(os.environ, PYTHON=sys.executable)
    build = subprocess.run(
        [str(REPO / "devnet" / "docker" / "build.sh"), "--tag", tag],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, f"image build failed:\n{build.stdout}\n{build.stderr}"


def free_base_port(validators: int) -> int:
    """A host base port under which every port a devnet of this size publishes is free
    (the machine may run other devnets and tests)."""
    return free_port_base(host_port_offsets(validators))


def project_volumes(project: str) -> list[str]:
    r = subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", f"name={project}_"],
        capture_output=True,
        text=True,
        check=True,
    )
    return r.stdout.split()


@contextmanager
def compose_devnet(
    directory: Path, plan: NetworkPlan, settings: DockerSettings
) -> Iterator[ComposeNetwork]:
    """Write a Docker devnet into `directory`, bring it up (containers started; the
    caller waits for readiness) and, on leaving, print the containers' logs if the body
    failed (or QCHAIN_DOCKER_TEST_LOGS is set), run `compose down --volumes` and check
    that no volume of the project is left."""
    write_docker_network(directory, plan, settings)
    net = ComposeNetwork(directory)
    net.down(volumes=True)  # whatever a crashed earlier run left behind
    try:
        net.up()
        yield net
    finally:
        if sys.exc_info()[0] is not None or os.environ.get("QCHAIN_DOCKER_TEST_LOGS"):
            net.compose("logs", "--tail", "40", check=False)
        net.down(volumes=True)
        left = project_volumes(settings.project)
        assert left == [], f"compose down --volumes left volumes behind: {left}"
