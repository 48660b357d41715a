"""A follower's validation of a proposal's body (`ChainApp.validate`): a body whose
transactions do not match its header's `tx_root`, or that does not decode, is refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from consensus.messages import Block as CBlock
from devnet.network import account_key, plan_network, write_network
from node.runtime import Validator
from qchain.config import load_config
from qchain.errors import InvalidBlock
from qchain.store import MemoryStore
from qchain.types import Block, new_transaction


def _validator(tmp_path: Path, node: int) -> Validator:
    if not (tmp_path / "network.json").exists():
        write_network(tmp_path, plan_network(base_port=None, scheme="ed25519"))
    path = tmp_path / "nodes" / f"node{node}" / "config.toml"
    return Validator(load_config(path), store=MemoryStore())


def _proposal(tmp_path: Path) -> tuple[CBlock, Block, Validator]:
    leader, follower = _validator(tmp_path, 0), _validator(tmp_path, 1)
    key = account_key("partner1", "ed25519")
    tx = new_transaction(
        key,
        chain_id=leader.chain_id,
        nonce=0,
        contract="notary",
        method="anchor",
        args=[b"\x07" * 32, "sha256", "t", "c", b""],
    )
    parent = leader.app.committed_value(0)
    assert parent is not None
    p = leader.app.build(1, 0, parent, 0, [tx], now_ms=1_000)
    assert len(p.block.txs) == 1
    return p.cblock, p.block, follower


def test_a_built_block_validates_on_a_follower(tmp_path: Path) -> None:
    cblock, block, follower = _proposal(tmp_path)
    assert follower.app.validate(cblock).block == block


@pytest.mark.parametrize("swap", ["tx_root", "no-txs"])
def test_a_body_that_misses_its_tx_root_is_refused(tmp_path: Path, swap: str) -> None:
    cblock, block, follower = _proposal(tmp_path)
    if swap == "tx_root":
        bad = Block(dataclasses.replace(block.header, tx_root=b"\x01" * 32), block.txs)
    else:
        bad = Block(block.header, ())
    forged = dataclasses.replace(cblock, body=bad.encode())
    with pytest.raises(InvalidBlock, match="tx_root"):
        follower.app.validate(forged)


def test_a_body_that_does_not_decode_is_refused(tmp_path: Path) -> None:
    cblock, _, follower = _proposal(tmp_path)
    forged = dataclasses.replace(cblock, body=cblock.body + b"\x00")
    with pytest.raises(InvalidBlock, match="does not decode"):
        follower.app.validate(forged)
