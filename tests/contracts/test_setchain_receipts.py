"""Receipts after a validator-set change verify from genesis through their set chain
(docs/CONSENSUS.md §10.5): `contracts.setchain.verify_receipt` and `qchain receipt verify
--genesis`, on a real chain through a rotation and an add, with ML-DSA-65 certificates."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from contracts import setchain
from contracts.setchain import ChainedReceipt, SetChain, SetChainRefused, SetUnproven
from contracts.testing import dev_genesis
from node.cli_receipt import verify_receipt_proof
from node.genesis_file import save_genesis
from qchain.cli import main as cli_main
from qchain.errors import BadSignature
from qchain.jsonform import receipt_proof_to_json

from .setchain_chain import CertifiedChain, certified_chain, schedule_change
from .validators_chain import add_args, rotate_args


@pytest.fixture(scope="module")
def cc() -> CertifiedChain:
    cc = certified_chain(4, delay=2)
    cc.block([cc.chain.tx("op3", "validators", "update_endpoint", [3, "v3", "", ""])])
    r1, e1 = schedule_change(cc, rotate_args(1, 0), key=0)
    while cc.chain.height < e1:
        cc.block()
    r2, e2 = schedule_change(cc, add_args(1, cc.chain.address("outsider")), key=1)
    while cc.chain.height < e2 + 2:
        cc.block()
    cc.block([cc.chain.tx("op2", "validators", "update_endpoint", [2, "v2", "", ""])])
    assert cc.scheduling == [r1, r2]
    return cc


def _chain(cc: CertifiedChain, height: int) -> SetChain:
    links = tuple(cc.link(r) for r in cc.scheduling if r <= height)
    r_k = links[-1].header.height if links else 0
    return SetChain(links, cc.tail(max(height - cc.delay, r_k), height))


def _verify(cc: CertifiedChain, height: int, chain: SetChain) -> int:
    records = setchain.verify_receipt(
        cc.receipt_proof(height),
        chain,
        chain_id=cc.chain_id,
        start=cc.start(),
        delay=cc.delay,
    )
    return len(records)


def test_a_receipt_after_two_changes_verifies_with_its_set_chain(cc: CertifiedChain) -> None:
    top = cc.chain.height
    assert _verify(cc, top, _chain(cc, top)) == 5
    # the first block's receipt needs no chain: no change can reach height 1 ≤ D
    assert _verify(cc, 1, SetChain((), None)) == 4
    # never against a set not in force at its height
    with pytest.raises(SetUnproven):
        _verify(cc, top, SetChain((), None))
    with pytest.raises(SetUnproven, match="the last link's 1"):
        _verify(cc, top, SetChain((cc.link(cc.scheduling[0]),), cc.tail(top - 2, top)))
    # the chain must end at the receipt's own block
    with pytest.raises(SetChainRefused, match="not at t = max"):
        _verify(cc, top, _chain(cc, top - 1))
    chain = _chain(cc, top)
    assert chain.tail is not None
    fork = replace(chain.tail.headers[-1], time=chain.tail.headers[-1].time + 1)
    forked = replace(chain, tail=replace(chain.tail, headers=(*chain.tail.headers[:-1], fork)))
    with pytest.raises(SetChainRefused, match="another block of height"):
        _verify(cc, top, forked)
    # a certificate signed by the genesis set: 3 of q(5) = 4 at the top
    proof = cc.receipt_proof(top)
    trimmed = cc.certificate(top, cc.set_at(1))
    with pytest.raises(BadSignature, match="3 valid signatures of its set, 4 needed"):
        setchain.verify_receipt(
            type(proof)(proof.receipt, proof.proof, proof.header, trimmed),
            _chain(cc, top),
            chain_id=cc.chain_id,
            start=cc.start(),
            delay=cc.delay,
        )


def test_cli_receipt_verify_follows_the_set_chain_from_genesis(
    cc: CertifiedChain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    genesis_file = tmp_path / "genesis.json"
    save_genesis(cc.chain.genesis, genesis_file)
    top = cc.chain.height
    proof = cc.receipt_proof(top)
    carried = tmp_path / "chained.hex"
    carried.write_text(ChainedReceipt(proof, _chain(cc, top)).encode().hex())

    def verify(*args: str) -> int:
        return cli_main(["receipt", "verify", *args, "--genesis", str(genesis_file)])

    assert verify(str(carried)) == 0
    out = capsys.readouterr().out
    assert f"at height {top}" in out and "of 5 validators signed" in out
    # the bare proof: the set of its height is unproven
    bare = tmp_path / "receipt.bin"
    bare.write_bytes(proof.encode())
    assert verify(str(bare)) == 1
    assert "unproven" in capsys.readouterr().err
    # the chain given apart, as canonical bytes
    chain_file = tmp_path / "setchain.bin"
    chain_file.write_bytes(_chain(cc, top).encode())
    assert verify(str(bare), "--set-chain", str(chain_file)) == 0
    capsys.readouterr()
    assert verify(str(carried), "--set-chain", str(chain_file)) != 0
    assert "carries a set chain already" in capsys.readouterr().err
    # JSON: the proof's object with the chain's bytes in hex; --json prints it back
    doc = receipt_proof_to_json(proof)
    doc["set_chain"] = _chain(cc, top).encode().hex()
    json_file = tmp_path / "receipt.json"
    json_file.write_text(json.dumps(doc))
    assert verify(str(json_file), "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["verified"] is True
    assert setchain.decode_set_chain(bytes.fromhex(printed["set_chain"])).links
    # a skipped change
    skipped = SetChain((cc.link(cc.scheduling[1]),), _chain(cc, top).tail)
    carried.write_text(ChainedReceipt(proof, skipped).encode().hex())
    assert verify(str(carried)) == 1
    assert "its set is not V(" in capsys.readouterr().err


def test_a_set_chain_on_a_genesis_without_changes_is_refused(
    cc: CertifiedChain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain, _ = dev_genesis({"admin": ["admin"]}, validators=4)
    genesis_file = tmp_path / "genesis.json"
    save_genesis(plain, genesis_file)
    top = cc.chain.height
    carried = tmp_path / "chained.hex"
    carried.write_text(ChainedReceipt(cc.receipt_proof(top), _chain(cc, top)).encode().hex())
    assert cli_main(["receipt", "verify", str(carried), "--genesis", str(genesis_file)]) != 0
    assert "genesis set is the set of every height" in capsys.readouterr().err


def test_the_check_notary_evidence_uses_never_takes_the_genesis_set_after_d(
    cc: CertifiedChain,
) -> None:
    """`node.notary_evidence.check_evidence` calls `verify_receipt_proof` with no set chain:
    on this genesis it verifies the first heights only."""
    genesis = cc.chain.genesis
    chain_id, keys = verify_receipt_proof(cc.receipt_proof(1), genesis, None, None)
    assert (chain_id, len(keys)) == (cc.chain_id, 4)
    with pytest.raises(SetUnproven):
        verify_receipt_proof(cc.receipt_proof(cc.chain.height), genesis, None, None)
