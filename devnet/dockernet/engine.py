"""The Docker engine, driven through its command line: whether Docker and Compose are
there, the image, `docker` and `docker compose` calls, and a long-lived `docker exec`
shell for a key manager's admin API (which listens on its container's loopback only).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import select
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from devnet.dockernet.plan import DEFAULT_IMAGE
from devnet.running import BackendError
from qchain.errors import ConfigError

BUILD_SCRIPT = Path(__file__).resolve().parents[1] / "docker" / "build.sh"
DOCKER_TIMEOUT_S = 60.0


@functools.cache
def compose_command() -> tuple[str, ...]:
    """`docker compose` (v2 plugin) if present, else `docker-compose` (v1)."""
    try:
        r = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, timeout=30, check=False
        )
        if r.returncode == 0:
            return ("docker", "compose")
    except (OSError, subprocess.TimeoutExpired):
        pass
    if shutil.which("docker-compose"):
        return ("docker-compose",)
    raise ConfigError("docker", "neither `docker compose` nor `docker-compose` is installed")


def docker_available(timeout: float = 10.0) -> str | None:
    """None if a Docker daemon answers and Compose exists, else why not."""
    if shutil.which("docker") is None:
        return "the docker command is not installed"
    try:
        r = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"docker info failed: {e}"
    if r.returncode != 0:
        return f"no Docker daemon reachable: {r.stderr.strip() or r.stdout.strip()}"
    try:
        compose_command()
    except ConfigError as e:
        return e.message
    return None


def image_exists(image: str) -> bool:
    r = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
    return r.returncode == 0


def build_image(base: str | None = None, tag: str = DEFAULT_IMAGE) -> None:
    """Run devnet/docker/build.sh (local base without a registry unless base is given)."""
    if not BUILD_SCRIPT.exists():
        raise ConfigError(str(BUILD_SCRIPT), "missing: build the image from a source checkout")
    argv = [str(BUILD_SCRIPT), "--tag", tag]
    if base is not None:
        argv += ["--base", base]
    subprocess.run(argv, check=True)


def docker(*args: str, timeout: float = DOCKER_TIMEOUT_S) -> str:
    """`docker ARGS...`; its output, or BackendError with the end of its error output."""
    try:
        r = subprocess.run(
            ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise BackendError(f"docker {args[0]}: no answer within {timeout:.0f}s") from e
    if r.returncode != 0:
        raise BackendError(f"docker {' '.join(args[:3])}: {r.stderr.strip()[-300:]}")
    return r.stdout


def docker_quiet(*args: str, timeout: float = DOCKER_TIMEOUT_S) -> str | None:
    """`docker ARGS...`; its output, or None if it failed."""
    r = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    return r.stdout if r.returncode == 0 else None


def compose(
    project: str,
    compose_file: Path,
    *args: str,
    capture: bool = False,
    check: bool = True,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """`docker compose -p PROJECT -f FILE ARGS...` in the file's directory; RuntimeError
    if it fails and check is set."""
    argv = [*compose_command(), "-p", project, "-f", str(compose_file), *args]
    r = subprocess.run(
        argv,
        capture_output=capture,
        text=True,
        timeout=timeout,
        check=False,
        cwd=compose_file.parent,
    )
    if check and r.returncode != 0:
        detail = (r.stderr or "").strip()[-2000:] if capture else ""
        raise RuntimeError(f"{' '.join(argv)} exited with {r.returncode}: {detail}")
    return r


# Runs inside the key manager's container (`docker exec -i`), whose admin endpoint
# listens on the container's loopback only: a loop that reads one JSON request per line
# ({"url", "method", "body"}) and writes one JSON answer per line ({"status", "body"} or
# {"status": 0, "error"}), with the token read from the mounted devnet directory (so it
# never appears in a process list). One long-lived process, because starting Python in
# the container for every request takes seconds on a busy machine.
KMS_SHELL = """
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


def close_shells(shells: dict[str, ContainerShell]) -> None:
    for shell in shells.values():
        shell.close()


class ContainerShell:
    """A `docker exec -i CID python3 -c KMS_SHELL` process and its line protocol.
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
