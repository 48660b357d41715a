from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from contracts.execution import (
    BlockContext,
    app_hash,
    build_block,
    check_sender,
    execute_block,
    validate_block,
)
from contracts.membership import nonce_key
from contracts.testing import DevChain, digest, pilot_chain
from qchain.errors import InvalidBlock, NonceMismatch
from qchain.keys import Scheme, dev_key
from qchain.store import open_store
from qchain.store.schema import state_key
from qchain.types import Block, BlockHeader, Transaction, tx_root


def anchor(chain: DevChain, label: str, doc: str, **kw: int) -> Transaction:
    return chain.tx(label, "notary", "anchor", [digest(doc), "sha256", "t", "c", b""], **kw)


def cause_of(chain: DevChain, txs: list[Transaction]) -> tuple[str, int | None]:
    with pytest.raises(InvalidBlock) as e:
        chain.execute(txs)
    return e.value.cause, e.value.index


def test_nonce_must_be_sequential(chain: DevChain) -> None:
    assert cause_of(chain, [anchor(chain, "ent", "a", nonce=1)]) == ("nonce-mismatch", 0)
    first = anchor(chain, "ent", "a", nonce=0)
    chain.block([first, anchor(chain, "ent", "b", nonce=1)])
    assert cause_of(chain, [first]) == ("nonce-mismatch", 0)
    assert cause_of(
        chain, [anchor(chain, "ent", "c", nonce=2), anchor(chain, "ent", "d", nonce=2)]
    ) == (
        "nonce-mismatch",
        1,
    )


def test_wrong_chain_expiry_and_non_member(chain: DevChain) -> None:
    tx = anchor(chain, "ent", "a")
    other = dataclasses.replace(tx, chain_id="other").signed_by(chain.keys["ent"])
    assert cause_of(chain, [other]) == ("wrong-chain", 0)
    chain.block()
    chain.block()
    assert cause_of(chain, [anchor(chain, "ent", "a", nonce=0, expiry_height=2)]) == ("expired", 0)
    assert chain.execute([anchor(chain, "ent", "a", nonce=0, expiry_height=3)]).receipts[0].ok
    chain.keys["stranger"] = dev_key("x", "stranger", Scheme.ED25519)
    assert cause_of(chain, [anchor(chain, "stranger", "a")]) == ("not-a-member", 0)


def test_signatures_are_checked(chain: DevChain) -> None:
    tx = anchor(chain, "ent", "a", nonce=0)
    forged = dataclasses.replace(tx, args=[digest("b"), "sha256", "t", "c", b""])
    assert cause_of(chain, [forged]) == ("bad-signature", 0)
    other = chain.keys["ent2"]
    wrong_key = dataclasses.replace(tx, public_key=other.public_key)
    assert cause_of(chain, [wrong_key.signed_by(other)]) == ("bad-signature", 0)
    ml = dev_key("x", "ml", Scheme.ML_DSA_65)
    unsigned = dataclasses.replace(tx, scheme="ml-dsa-65", public_key=b"", signature=b"")
    ml_signed = dataclasses.replace(unsigned, signature=ml.sign(unsigned.signing_digest()))
    assert cause_of(chain, [ml_signed]) == ("bad-signature", 0)
    # a transaction may leave out its public key: the registered key is used
    no_key = dataclasses.replace(tx, public_key=b"", signature=b"")
    no_key = dataclasses.replace(no_key, signature=chain.keys["ent"].sign(no_key.signing_digest()))
    assert chain.execute([no_key]).receipts[0].ok


def test_ml_dsa_member() -> None:
    from qchain.store import MemoryStore

    chain = pilot_chain(MemoryStore(), scheme=Scheme.ML_DSA_65)
    r = chain.run(anchor(chain, "ent", "a"))
    assert r.ok


def test_failed_call_consumes_nonce_and_writes_nothing_else(chain: DevChain) -> None:
    chain.run(anchor(chain, "ent", "a"))
    dup = anchor(chain, "ent", "a")
    result = chain.execute([dup])
    r = result.receipts[0]
    assert (r.ok, r.code, r.result, r.events) == (False, "duplicate", None, ())
    assert "already exists" in r.message
    ent = chain.address("ent")
    assert [k for k, _ in result.write_set] == [state_key("membership", nonce_key(ent))]
    assert result.receipts[0].index == 0 and result.receipts[0].height == chain.height + 1


@pytest.mark.parametrize(
    ("contract", "method", "code"),
    [
        ("bank", "transfer", "unknown-contract"),
        ("notary", "burn", "unknown-method"),
        ("notary", "get", "unknown-method"),
    ],
)
def test_unknown_methods_fail_in_receipt(
    chain: DevChain, contract: str, method: str, code: str
) -> None:
    r = chain.run(chain.tx("ent", contract, method, [digest("a")]))
    assert r.code == code
    assert chain.run(anchor(chain, "ent", "b")).ok


def test_args_not_a_list(chain: DevChain) -> None:
    r = chain.run(chain.tx("ent", "notary", "anchor", []))
    assert r.code == "invalid-argument"
    tx = dataclasses.replace(anchor(chain, "ent", "x"), args=7).signed_by(chain.keys["ent"])
    r = chain.run(tx)
    assert r.code == "invalid-argument" and "list" in r.message


def test_build_block_leaves_out_invalid(chain: DevChain) -> None:
    good = anchor(chain, "ent", "a", nonce=0)
    gap = anchor(chain, "ent2", "b", nonce=5)
    dup_nonce = anchor(chain, "ent", "c", nonce=0)
    good2 = anchor(chain, "ent", "d", nonce=1)
    result, included, rejected = build_block(
        chain.store, chain.context(), [good, gap, dup_nonce, good2]
    )
    assert included == [good, good2]
    assert [(x.tx, x.error.code) for x in rejected] == [
        (gap, "nonce-mismatch"),
        (dup_nonce, "nonce-mismatch"),
    ]
    assert execute_block(chain.store, chain.context(), included) == result


def make_block(chain: DevChain, txs: list[Transaction]) -> Block:
    ctx = chain.context()
    result = execute_block(chain.store, ctx, txs)
    header = BlockHeader(
        ctx.chain_id,
        ctx.height,
        0,
        ctx.time,
        b"\x00" * 32,
        0,
        tx_root(txs),
        result.receipts_root,
        result.app_hash,
    )
    return Block(header, tuple(txs))


def test_validate_block(chain: DevChain) -> None:
    txs = [anchor(chain, "ent", "a"), anchor(chain, "ent2", "a")]
    block = make_block(chain, txs)
    result = validate_block(chain.store, block, chain.app_hash)
    assert [r.ok for r in result.receipts] == [True, False]
    bad_app = dataclasses.replace(
        block, header=dataclasses.replace(block.header, app_hash=b"\x01" * 32)
    )
    with pytest.raises(InvalidBlock, match="app hash"):
        validate_block(chain.store, bad_app, chain.app_hash)
    with pytest.raises(InvalidBlock, match="app hash"):
        validate_block(chain.store, block, b"\x02" * 32)
    bad_receipts = dataclasses.replace(
        block, header=dataclasses.replace(block.header, receipts_root=b"\x01" * 32)
    )
    with pytest.raises(InvalidBlock, match="receipts root"):
        validate_block(chain.store, bad_receipts, chain.app_hash)
    with pytest.raises(InvalidBlock, match="tx_root"):
        validate_block(chain.store, dataclasses.replace(block, txs=block.txs[:1]), chain.app_hash)


def test_execution_leaves_source_untouched(chain: DevChain) -> None:
    before = list(chain.store.iterate())
    chain.execute([anchor(chain, "ent", "a")])
    assert list(chain.store.iterate()) == before


def test_app_hash_chains() -> None:
    ws = ((b"a", b"1"), (b"b", None))
    assert app_hash(b"\x00" * 32, ws) != app_hash(b"\x01" * 32, ws)
    assert app_hash(b"\x00" * 32, ws) != app_hash(b"\x00" * 32, ws[:1])
    assert app_hash(b"\x00" * 32, ()) != b"\x00" * 32


def test_block_context_from_header(chain: DevChain) -> None:
    block = make_block(chain, [])
    ctx = BlockContext.from_header(block.header, chain.app_hash)
    assert ctx == chain.context()


def test_admission_nonce_window(chain: DevChain) -> None:
    tx = anchor(chain, "ent", "a", nonce=3)
    check_sender(chain.store, tx, exact_nonce=False, max_nonce_ahead=3)
    with pytest.raises(NonceMismatch):
        check_sender(chain.store, tx, exact_nonce=False, max_nonce_ahead=2)
    with pytest.raises(NonceMismatch):
        check_sender(chain.store, tx, exact_nonce=True)


def test_same_results_on_leveldb(chain: DevChain, tmp_path: Path) -> None:
    with open_store(tmp_path / "db") as db:
        other = DevChain(db, chain.genesis, chain.keys)
        for c in (chain, other):
            c.nonces.clear()
            c.block(
                [
                    anchor(c, "ent", "a"),
                    anchor(c, "ent", "a"),
                    c.tx("bureau", "voucher", "create", ["p", "t", 5, 9]),
                ]
            )
            c.block([c.tx("bureau", "voucher", "grant", ["p", c.address("ent"), 5])])
        assert chain.results == other.results
        assert list(chain.store.iterate()) == list(db.iterate())
