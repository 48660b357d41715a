"""Starting and stopping the devnet's background processes (key managers, validators,
twins): each runs `python -m qchain.cli ...` in its own session, with its output appended
to a log file and its PID in a file, so a later command can find and signal it.

Every service runs in its own session, so a terminal's Ctrl-C reaches only the process
that owns the terminal. `terminate` sends SIGTERM and waits; a validator closes LevelDB
cleanly on SIGTERM. SIGKILL follows only after a grace period.

A service outlives the call that started it, and often the object that asked for it (a
later command finds it by its PID file). So this module keeps every child's process
object until `reap` collects its exit status: none is dropped while its process runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

_children: dict[int, subprocess.Popen[bytes]] = {}
"""Children started here and not yet reaped, by PID."""


def qchain_argv(*args: str) -> tuple[str, ...]:
    """The command line of `qchain ARGS...` with this interpreter."""
    return (sys.executable, "-m", "qchain.cli", *args)


def spawn(
    argv: Sequence[str], log_file: Path, pid_file: Path, cwd: Path
) -> subprocess.Popen[bytes]:
    """Start argv in the background in its own session, its output appended to log_file
    and its PID written to pid_file."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    pid_file.write_text(f"{proc.pid}\n")
    return proc


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
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


def live_pid(pid_file: Path) -> int | None:
    """The PID in pid_file if that process runs, else None (a stale file is removed)."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if not alive(pid):
        pid_file.unlink(missing_ok=True)
        return None
    return pid


def send(pid: int, sig: signal.Signals) -> None:
    """Signal a process that may have exited meanwhile."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def reap(pid: int) -> None:
    """Collect an exited child's status, if it is this process's child."""
    proc = _children.get(pid)
    if proc is not None:
        if proc.poll() is not None:
            del _children[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def wait(pid: int, timeout: float) -> None:
    """Wait up to timeout for a child this module started to exit, and reap it."""
    proc = _children.get(pid)
    if proc is None:
        reap(pid)
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
        del _children[pid]


def terminate(pids: Iterable[int], grace_s: float) -> None:
    """SIGCONT and SIGTERM (a paused process must run to exit), wait up to grace_s, then
    SIGKILL whatever is left."""
    pids = list(pids)
    for pid in pids:
        send(pid, signal.SIGCONT)
        send(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        for pid in pids:
            reap(pid)
        time.sleep(0.05)
    for pid in pids:
        if alive(pid):
            kill(pid)


def kill(pid: int, wait_s: float = 5.0) -> None:
    """SIGKILL and wait (up to wait_s) until the process is gone."""
    send(pid, signal.SIGKILL)
    deadline = time.monotonic() + wait_s
    while alive(pid) and time.monotonic() < deadline:
        reap(pid)
        time.sleep(0.01)
