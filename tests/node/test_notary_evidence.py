"""Notary evidence checked offline: digests of files streamed in chunks, the evidence file
format, and each way evidence can fail to show that a file was anchored. Blocks and
certificates are real (the API tests' `FakeNode`, signed by dev validator keys)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes

from contracts.genesis import Genesis, parse_genesis
from node.genesis_file import save_genesis
from node.notary_evidence import (
    CHUNK,
    EVIDENCE_VERSION,
    MAX_EVIDENCE_SIZE,
    NotaryEvidence,
    check_evidence,
    file_digest,
    load_evidence,
    save_evidence,
)
from qchain.cli import main
from qchain.errors import CodecError, ConfigError, EvidenceMismatch
from qchain.keys import SigningKey, dev_key
from qchain.types import Transaction, new_transaction

from .conftest import CHAIN_ID, PARTNERS, VALIDATORS, FakeNode, make_tx

ADMIN = dev_key("api-test", "admin", "ed25519")


def genesis_of(validators: list[tuple[str, bytes]]) -> Genesis:
    return parse_genesis(
        {
            "chain_id": CHAIN_ID,
            "validators": [
                {"index": i, "name": f"v{i}", "scheme": s, "public_key": k.hex(), "sae_id": f"s{i}"}
                for i, (s, k) in enumerate(validators)
            ],
            "members": [
                {
                    "name": "Admin",
                    "scheme": "ed25519",
                    "public_key": ADMIN.public_key.hex(),
                    "roles": ["admin"],
                },
                *(
                    {
                        "name": f"Partner {i}",
                        "scheme": "ed25519",
                        "public_key": k.public_key.hex(),
                        "roles": ["partner"],
                    }
                    for i, k in enumerate(PARTNERS[:2])
                ),
            ],
        }
    )


GENESIS = genesis_of([(v.scheme, v.public_key) for v in VALIDATORS])


def anchor_tx(key: SigningKey, nonce: int, method: str, args: list[object]) -> Transaction:
    return new_transaction(
        key, chain_id=CHAIN_ID, nonce=nonce, contract="notary", method=method, args=args
    )


def committed(txs: list[Transaction]) -> list[NotaryEvidence]:
    node = FakeNode()
    for tx in txs:
        node.submit_tx(tx)
    node.commit_pending()
    out = []
    for tx in txs:
        proof = node.receipt_proof(tx.hash)
        assert proof is not None
        out.append(NotaryEvidence(EVIDENCE_VERSION, proof, tx))
    return out


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    one, two = tmp_path / "one.pdf", tmp_path / "two.bin"
    one.write_bytes(b"one " * 100)
    two.write_bytes(b"two " * 100)
    return one, two


def test_digests_stream_files_of_any_size(tmp_path: Path) -> None:
    data = bytes(range(256)) * (3 * CHUNK // 256) + b"odd tail"
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert file_digest(path, "sha256") == hashlib.sha256(data).digest()
    sm3 = hashes.Hash(hashes.SM3())
    sm3.update(data)
    assert file_digest(path, "sm3") == sm3.finalize()
    abc = tmp_path / "abc"
    abc.write_bytes(b"abc")
    # GB/T 32905-2016, example 1.
    assert file_digest(abc, "sm3").hex() == (
        "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    )
    with pytest.raises(ConfigError, match="unknown 'md5'"):
        file_digest(abc, "md5")
    with pytest.raises(ConfigError, match="cannot read"):
        file_digest(tmp_path / "missing", "sha256")


def test_evidence_of_an_anchor_shows_who_and_when(files: tuple[Path, Path]) -> None:
    one, _ = files
    tx = anchor_tx(PARTNERS[1], 0, "anchor", [file_digest(one, "sm3"), "sm3", "One", "deed", b""])
    (ev,) = committed([tx])
    found = check_evidence(ev, one, GENESIS)
    assert (found.algorithm, found.title, found.category) == ("sm3", "One", "deed")
    assert (found.member, found.member_name) == (PARTNERS[1].address, "Partner 1")
    assert (found.height, found.tx_hash, found.chain_id) == (1, tx.hash, CHAIN_ID)
    assert found.time_utc == "2023-11-14 22:13:21.000 UTC"
    assert (found.signatures, found.validators) == (3, 4)


def test_evidence_of_a_batch_finds_the_files_item(files: tuple[Path, Path]) -> None:
    one, two = files
    items = [
        [file_digest(one, "sha256"), "sha256", "One", "deed", b""],
        [file_digest(two, "sm3"), "sm3", "Two", "scan", b"\x01"],
    ]
    (ev,) = committed([anchor_tx(PARTNERS[2], 0, "anchor_many", [items])])
    assert check_evidence(ev, two, GENESIS).title == "Two"
    found = check_evidence(ev, one, GENESIS)
    assert found.title == "One" and found.member_name is None


def test_another_or_a_modified_file_fails(files: tuple[Path, Path], tmp_path: Path) -> None:
    one, two = files
    (ev,) = committed(
        [
            anchor_tx(
                PARTNERS[0], 0, "anchor", [file_digest(one, "sha256"), "sha256", "One", "deed", b""]
            )
        ]
    )
    changed = tmp_path / "changed.pdf"
    changed.write_bytes(one.read_bytes() + b"\n")
    for other in (two, changed):
        with pytest.raises(EvidenceMismatch, match="it was modified") as e:
            check_evidence(ev, other, GENESIS)
        assert e.value.part == "file"


def test_a_receipt_of_another_transaction_fails(files: tuple[Path, Path]) -> None:
    one, two = files
    a, b = committed(
        [
            anchor_tx(
                PARTNERS[0], 0, "anchor", [file_digest(one, "sha256"), "sha256", "1", "c", b""]
            ),
            anchor_tx(
                PARTNERS[1], 0, "anchor", [file_digest(two, "sha256"), "sha256", "2", "c", b""]
            ),
        ]
    )
    mixed = dataclasses.replace(a, transaction=b.transaction)
    with pytest.raises(EvidenceMismatch, match="the receipt is for transaction") as e:
        check_evidence(mixed, two, GENESIS)
    assert e.value.part == "transaction"


def test_a_transaction_that_is_not_an_anchor_fails(files: tuple[Path, Path]) -> None:
    one, _ = files
    (ev,) = committed([make_tx(PARTNERS[0], 0, args=[b"\x01", "x"])])
    with pytest.raises(EvidenceMismatch, match=r"is membership\.register, not a notary anchor"):
        check_evidence(ev, one, GENESIS)


def test_a_certificate_of_other_validators_fails(files: tuple[Path, Path]) -> None:
    one, _ = files
    (ev,) = committed(
        [anchor_tx(PARTNERS[0], 0, "anchor", [file_digest(one, "sha256"), "sha256", "1", "c", b""])]
    )
    others = [dev_key("other-chain", f"validator-{i}") for i in range(4)]
    with pytest.raises(EvidenceMismatch, match="certificate has 0 valid signatures") as e:
        check_evidence(ev, one, genesis_of([(k.scheme.value, k.public_key) for k in others]))
    assert e.value.part == "certificate"


def test_evidence_files_round_trip_and_refuse_what_is_not_evidence(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    one, _ = files
    (ev,) = committed(
        [anchor_tx(PARTNERS[0], 0, "anchor", [file_digest(one, "sha256"), "sha256", "1", "c", b""])]
    )
    path = tmp_path / "one.evidence"
    save_evidence(ev, path)
    assert load_evidence(path) == ev
    bare = tmp_path / "receipt.bin"
    bare.write_bytes(ev.proof.encode())
    with pytest.raises(CodecError, match=r"bare receipt proof.*qchain notary evidence TX_HASH"):
        load_evidence(bare)
    future = tmp_path / "v2.evidence"
    future.write_bytes(dataclasses.replace(ev, version=2).encode())
    with pytest.raises(CodecError, match="evidence version 2, expected 1"):
        load_evidence(future)
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x93\x01\x02")
    with pytest.raises(CodecError, match="not a notary evidence file"):
        load_evidence(junk)
    huge = tmp_path / "huge"
    huge.write_bytes(bytes(MAX_EVIDENCE_SIZE + 1))
    with pytest.raises(CodecError, match="larger than"):
        load_evidence(huge)
    other = committed([make_tx(PARTNERS[1], 0)])[0].transaction
    with pytest.raises(EvidenceMismatch, match="is not the receipt's transaction"):
        save_evidence(dataclasses.replace(ev, transaction=other), tmp_path / "x")


# --- the CLI, offline ------------------------------------------------------------------


def test_cli_verify_prints_when_and_by_whom(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one, two = files
    digest = file_digest(one, "sha256")
    (ev,) = committed([anchor_tx(PARTNERS[0], 0, "anchor", [digest, "sha256", "1", "c", b""])])
    genesis, evidence = tmp_path / "genesis.json", tmp_path / "one.evidence"
    save_genesis(GENESIS, genesis)
    save_evidence(ev, evidence)
    assert (
        main(["notary", "verify", str(one), "--receipt", str(evidence), "--genesis", str(genesis)])
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"sha256:{digest.hex()} '1' (c)"
    assert out[1] == (
        "anchored at height 1, block time 2023-11-14 22:13:21.000 UTC, "
        f"by member {PARTNERS[0].address.hex()} (Partner 0)"
    )
    assert (
        main(["notary", "verify", str(two), "--receipt", str(evidence), "--genesis", str(genesis)])
        == 1
    )
    assert capsys.readouterr().err.startswith("error: file: its digest sha256:")
    args = ["notary", "verify", str(one), "--receipt", str(evidence), "--genesis", str(genesis)]
    assert main([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["verified"] is True and doc["member_name"] == "Partner 0"
    assert (doc["digest"], doc["height"], doc["time_utc"]) == (
        digest.hex(),
        1,
        "2023-11-14T22:13:21.000Z",
    )


def test_cli_refuses_bad_input_before_asking_a_node(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one, _ = files
    key = tmp_path / "key.json"
    PARTNERS[0].save(key)
    unreachable = ["--node", "http://127.0.0.1:9"]
    anchor = ["notary", "anchor", str(one), "--key", str(key), *unreachable]
    assert main([*anchor, "--title", "t" * 257]) == 1
    assert "argument title: " in capsys.readouterr().err
    assert main([*anchor, "--metadata-hex", "zz"]) == 1
    assert "--metadata-hex: expected hex digits" in capsys.readouterr().err
    assert main(["notary", "lookup", "abc", *unreachable]) == 1
    assert "DIGEST: expected 64 hex digits" in capsys.readouterr().err
    assert (
        main(["notary", "anchor", str(tmp_path / "missing"), "--key", str(key), *unreachable]) == 1
    )
    assert "cannot read" in capsys.readouterr().err
