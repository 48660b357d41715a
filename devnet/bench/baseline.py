"""INSECURE benchmark baseline: a validator whose link MACs use one fixed, published test
key instead of one-time QKD keys.

    python -m devnet.bench.baseline --config nodes/nodeI/config.toml

The node is the ordinary `node.runtime.Validator`, given a `FixedKeySource` instead of the
ETSI client its config names: every "key" has a fresh id and the same 32 bytes of
material, so frames still carry a Poly1305 tag and go through the same sealing, pool and
transport code, but no key manager is asked for anything. Comparing a baseline run with a
normal one shows what fetching and managing QKD keys costs. A network running this
authenticates nothing (the key is in this file); `qchain bench --baseline` is its only
user.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import uuid
from collections.abc import Sequence
from pathlib import Path

from qchain.qkd.source import MAC_KEY_BITS, Key, KeyId, KeySource, LinkStatus

INSECURE_FIXED_KEY = bytes(range(32))
"""Published on purpose: the baseline protects nothing."""


class FixedKeySource(KeySource):
    """Endless keys, all with the same material (benchmark baseline only)."""

    def __init__(self, sae_id: str) -> None:
        self.sae_id = sae_id

    async def enc_keys(self, slave_sae_id: str, number: int, size: int | None = None) -> list[Key]:
        return [Key(uuid.uuid4().bytes, bytearray(INSECURE_FIXED_KEY)) for _ in range(number)]

    async def dec_keys(self, master_sae_id: str, key_ids: Sequence[KeyId]) -> list[Key]:
        return [Key(k, bytearray(INSECURE_FIXED_KEY)) for k in key_ids]

    async def status(self, slave_sae_id: str) -> LinkStatus:
        return LinkStatus(
            source_kme_id="baseline",
            target_kme_id="baseline",
            master_sae_id=self.sae_id,
            slave_sae_id=slave_sae_id,
            key_size=MAC_KEY_BITS,
            stored_key_count=1 << 20,
            max_key_count=1 << 20,
            max_key_per_request=1024,
            max_key_size=MAC_KEY_BITS,
            min_key_size=MAC_KEY_BITS,
            max_sae_id_count=0,
        )


async def run_baseline_validator(config: Path) -> int:
    from node.logs import configure
    from node.runtime import Validator
    from qchain.config import load_config

    cfg = load_config(config)
    configure(cfg.node.name, cfg.node.log_format)
    validator = Validator(cfg, key_source=FixedKeySource(cfg.qkd.sae_id))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await validator.start()
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await validator.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path)
    return asyncio.run(run_baseline_validator(parser.parse_args().config))


if __name__ == "__main__":
    raise SystemExit(main())
