"""Test helpers for whole validators: a network of real `Validator`s in one event loop.

It lives in `devnet`, not in `node`, because it builds the network from a devnet plan,
and `node` imports nothing from `devnet`.

`inproc_network` writes a devnet plan to a directory, gives every validator a key source
on one in-process key manager, and starts them over real TCP on 127.0.0.1. Tests use it to
drive the real node code (and, as a hostile peer, a real validator's transport and keys)
without spawning processes.

`anchor_tx` is the notary transaction that tests of running devnets (in-process, local
processes, Docker) send to see the chain commit; `until` polls with a deadline, and
`run_qchain` runs the command-line tool to completion; `die_once_then_verify` is a
signature-verification worker task whose first run kills its process.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from devnet.network import plan_network, write_network
from devnet.spawn import qchain_argv
from node.runtime import Validator
from node.verifypool import verify_chunk
from qchain.config import NodeConfig, load_config
from qchain.keys import SigningKey
from qchain.qkd.clock import SystemClock
from qchain.qkd.simsource import LocalKeySource, full_mesh
from qchain.store.kv import KVStore
from qchain.types import Transaction, new_transaction


@contextlib.asynccontextmanager
async def inproc_network(
    directory: Path,
    *,
    heartbeat_ms: int | None = 200,
    validators: int = 4,
    bits_per_second: int = 20_000_000,
    initial_keys: int = 10_000,
    configure: Callable[[NodeConfig], NodeConfig] = lambda cfg: cfg,
    store: Callable[[NodeConfig], KVStore | None] = lambda cfg: None,
    reconfiguration: bool = False,
) -> AsyncIterator[list[Validator]]:
    """`validators` started validators (ed25519 dev accounts), each configured as its
    config file says, then changed by `configure`, on the store `store` gives it (None:
    its own LevelDB); on exit every validator in the yielded list is stopped (a test may
    replace one with a restarted one). Every link of the key manager makes
    `bits_per_second` and starts with `initial_keys`. reconfiguration: the genesis
    enables validator-set changes (`devnet.network.plan_network`)."""
    plan = plan_network(
        base_port=None,
        scheme="ed25519",
        heartbeat_ms=heartbeat_ms,
        validators=validators,
        reconfiguration=reconfiguration,
    )
    write_network(directory, plan)
    manager = full_mesh(
        [n.sae_id for n in plan.nodes],
        SystemClock(),
        bits_per_second=bits_per_second,
        initial_key_count=initial_keys,
    )
    configs = [
        configure(load_config(directory / "nodes" / n.name / "config.toml")) for n in plan.nodes
    ]
    nodes = [
        Validator(cfg, store=store(cfg), key_source=LocalKeySource(manager, n.sae_id))
        for cfg, n in zip(configs, plan.nodes, strict=True)
    ]
    try:
        for v in nodes:
            await v.start()
        yield nodes
    finally:
        for v in nodes:
            await v.stop()


def anchor_tx(
    key: SigningKey,
    chain_id: str,
    nonce: int,
    digest: bytes,
    title: str | None = None,
    category: str = "test",
) -> Transaction:
    """A notary `anchor` of the sha256 `digest`, without metadata, signed by `key`;
    titled `evidence NONCE` unless `title` says otherwise."""
    return new_transaction(
        key,
        chain_id=chain_id,
        nonce=nonce,
        contract="notary",
        method="anchor",
        args=[digest, "sha256", f"evidence {nonce}" if title is None else title, category, b""],
    )


T = TypeVar("T")


def until(what: str, check: Callable[[], T], timeout: float) -> T:
    """Poll check every 0.1 s until it returns a true value; that value. Fails naming what
    when timeout seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def run_qchain(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`qchain ARGS` with this interpreter, run to completion, its output captured."""
    return subprocess.run(qchain_argv(*args), capture_output=True, text=True, timeout=timeout)


def die_once_then_verify(marker: str, items: Sequence[tuple[bytes, bytes]]) -> list[bool]:
    """A `node.verifypool` worker task that kills its process the first time (when the
    file `marker` does not exist yet, creating it), and verifies as usual afterwards; it
    dies every time if `marker` cannot be created."""
    path = Path(marker)
    if not path.exists():
        with contextlib.suppress(OSError):
            path.write_text("died")
        os._exit(1)
    return verify_chunk(items)
