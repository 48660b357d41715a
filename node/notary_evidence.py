"""Notary evidence: what a third party needs to check offline that a file was anchored.

A receipt proof (`qchain.types.ReceiptProof`) shows that the transaction with a given
hash was executed, with a given result, in a block that 2f+1 validators of the genesis
signed; it names the transaction by hash only. To show *what* was anchored, by whom, the
evidence also carries the transaction's canonical bytes: their hash must be the receipt's
`tx_hash`, and then the transaction's sender is the anchoring member and its arguments
the digest, algorithm, title and category; the block header gives the block time. Nothing
else is needed, and no node is asked.

An evidence file is the canonical encoding of `NotaryEvidence`, the fixed-order array
`[1, receipt proof, transaction]`, or on a chain whose genesis sets
`consensus.reconfiguration` of `GovernedEvidence`, `[2, receipt proof, transaction, set
chain]`: the set chain (`contracts.setchain`) proves from the genesis the validator set of
the receipt's height (docs/CONSENSUS.md §10.5), so that evidence of a block after a set
change verifies from the genesis alone, by the code of `qchain receipt verify`
(`node.cli_receipt.verify_receipt_proof`). `qchain notary anchor --receipt-out` writes one
for the anchor it makes; `qchain notary evidence TX_HASH` builds one from a node for an
anchor made any other way (the node serves the receipt proof, with the set chain of its
height on a governed chain, at `GET /v1/receipts/{hash}` and the transaction at
`GET /v1/txs/{hash}`).

Digests are computed over the file streamed in 1 MiB chunks: SHA-256 with `hashlib`, SM3
(GB/T 32905-2016) with `cryptography`'s `hashes.SM3`, which needs an OpenSSL that
provides it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn, Protocol

from contracts import setchain
from contracts.genesis import Genesis
from contracts.notary import ALGORITHMS, NAME, AnchorArgs, AnchorManyArgs
from contracts.registry import DEFAULT_REGISTRY
from contracts.runtime import Kind
from node.cli_receipt import parse_receipt, verify_receipt_proof
from qchain.codec import U16, Limits, Struct
from qchain.errors import BadSignature, CodecError, ConfigError, ContractError, EvidenceMismatch
from qchain.types import ReceiptProof, Transaction

EVIDENCE_VERSION = 1
GOVERNED_EVIDENCE_VERSION = 2
MAX_EVIDENCE_SIZE = 4 * 1024 * 1024 + 128 * 1024
"""Largest evidence file read: a receipt proof with the certificate of a large validator
set and the set chain of its height (together at most `MAX_MESSAGE`, as a node serves
them), and a transaction of at most 64 KiB."""
EVIDENCE_LIMITS = Limits(
    max_size=MAX_EVIDENCE_SIZE,
    max_depth=8,
    max_bytes_len=setchain.MAX_PROOF_BYTES,
    max_array_len=1024,
)
CHUNK = 1 << 20


@dataclass(frozen=True)
class NotaryEvidence(Struct):
    version: U16
    """`EVIDENCE_VERSION`; another value is refused."""
    proof: ReceiptProof
    transaction: Transaction
    """The anchoring transaction, whose hash is the receipt's `tx_hash`."""

    @property
    def set_chain(self) -> setchain.SetChain | None:
        return None


@dataclass(frozen=True)
class GovernedEvidence(Struct):
    """Evidence on a chain whose validator set changes: with the set chain of the
    receipt's height, from genesis."""

    version: U16
    """`GOVERNED_EVIDENCE_VERSION`; another value is refused."""
    proof: ReceiptProof
    transaction: Transaction
    set_chain: setchain.SetChain


Evidence = NotaryEvidence | GovernedEvidence


def make_evidence(
    proof: ReceiptProof, tx: Transaction, chain: setchain.SetChain | None
) -> Evidence:
    """The evidence of tx: with the set chain when the receipt came with one."""
    if chain is None:
        return NotaryEvidence(EVIDENCE_VERSION, proof, tx)
    return GovernedEvidence(GOVERNED_EVIDENCE_VERSION, proof, tx, chain)


def evidence_of_receipt(raw: bytes, tx: Transaction) -> Evidence:
    """The evidence of tx from the receipt bytes a node serves (`GET /v1/receipts/{hash}`:
    a `ReceiptProof`, or a `ChainedReceipt` with the set chain of its height)."""
    proof, chain = parse_receipt(raw)
    return make_evidence(proof, tx, chain)


class _Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...


def _sm3() -> tuple[_Hasher, Callable[[], bytes]]:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes

    try:
        h = hashes.Hash(hashes.SM3())
    except UnsupportedAlgorithm:
        raise ConfigError(
            "--algorithm", "sm3 needs an OpenSSL with SM3; the installed one has none"
        ) from None
    return h, h.finalize


def file_digest(path: Path, algorithm: str) -> bytes:
    """The 32-byte digest of the file at path under algorithm (`sha256` or `sm3`), read in
    chunks so that a file of any size is hashed in constant memory."""
    hasher: _Hasher
    if algorithm == "sha256":
        sha = hashlib.sha256()
        hasher, finish = sha, sha.digest
    elif algorithm == "sm3":
        hasher, finish = _sm3()
    else:
        raise ConfigError("--algorithm", f"unknown {algorithm!r}: {' or '.join(ALGORITHMS)}")
    try:
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                hasher.update(chunk)
    except OSError as e:
        raise ConfigError("FILE", f"cannot read {path}: {e.strerror}") from e
    return finish()


def save_evidence(evidence: Evidence, path: Path) -> None:
    if evidence.transaction.hash != evidence.proof.receipt.tx_hash:
        raise EvidenceMismatch("transaction", "is not the receipt's transaction")
    path.write_bytes(evidence.encode())


def load_evidence(path: Path) -> Evidence:
    """An evidence file, with or without a set chain (bounded: by `MAX_EVIDENCE_SIZE`,
    `EVIDENCE_LIMITS` and the set chain's own bounds, §10.5); a bare receipt proof is
    refused with a message saying how to get evidence instead."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_EVIDENCE_SIZE + 1)
    except OSError as e:
        raise ConfigError("--receipt", f"cannot read {path}: {e.strerror}") from e
    if len(data) > MAX_EVIDENCE_SIZE:
        raise CodecError(f"{path}: larger than {MAX_EVIDENCE_SIZE} bytes, not notary evidence")
    evidence: Evidence
    try:
        evidence = NotaryEvidence.decode(data, EVIDENCE_LIMITS)
        expected = EVIDENCE_VERSION
    except CodecError as e:
        try:
            evidence = GovernedEvidence.decode(data, EVIDENCE_LIMITS)
            expected = GOVERNED_EVIDENCE_VERSION
        except CodecError as governed:
            _refuse_receipt(path, data, governed if data[:1] == b"\x94" else e)
    if evidence.version != expected:
        raise CodecError(
            f"{path}: evidence version {evidence.version}, expected "
            f"{EVIDENCE_VERSION} (or {GOVERNED_EVIDENCE_VERSION} with a set chain)"
        )
    chain = evidence.set_chain
    if chain is not None and len(chain.encode()) > setchain.MAX_SETCHAIN_BYTES:
        raise CodecError(f"{path}: a set chain larger than {setchain.MAX_SETCHAIN_BYTES} bytes")
    return evidence


def _refuse_receipt(path: Path, data: bytes, e: CodecError) -> NoReturn:
    try:
        parse_receipt(data)
    except CodecError:
        raise CodecError(f"{path}: not a notary evidence file: {e.message}") from None
    raise CodecError(
        f"{path} is a bare receipt proof, without the anchoring transaction: make the "
        "evidence with `qchain notary evidence TX_HASH --out FILE` (or "
        "`qchain notary anchor --receipt-out FILE`)"
    ) from None


@dataclass(frozen=True)
class Anchored:
    """What verified evidence shows about a file."""

    digest: bytes
    algorithm: str
    title: str
    category: str
    member: bytes
    """The anchoring member's address (the transaction's sender)."""
    member_name: str | None
    """The member's organisation name in the genesis, if it was a genesis member."""
    height: int
    time_ms: int
    """Block time, milliseconds since the Unix epoch."""
    tx_hash: bytes
    block_hash: bytes
    chain_id: str
    signatures: int
    validators: int

    @property
    def time_utc(self) -> str:
        """The block time for a reader: `2026-12-04 19:25:45.678 UTC`."""
        return self._time().strftime("%Y-%m-%d %H:%M:%S.") + f"{self.time_ms % 1000:03d} UTC"

    @property
    def time_iso(self) -> str:
        """The block time in ISO 8601, as the API writes it: `2026-12-04T19:25:45.678Z`."""
        return self._time().isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def _time(self) -> datetime:
        return datetime.fromtimestamp(self.time_ms / 1000, UTC)


def anchored_items(tx: Transaction) -> tuple[AnchorArgs, ...]:
    """The anchors a notary transaction makes; `EvidenceMismatch` for any other one."""
    if tx.contract != NAME or tx.method not in ("anchor", "anchor_many"):
        raise EvidenceMismatch("transaction", f"is {tx.contract}.{tx.method}, not a notary anchor")
    method = DEFAULT_REGISTRY.method(NAME, tx.method, Kind.TX)
    try:
        parsed = method.parse_args(tx.args)
    except ContractError as e:
        raise EvidenceMismatch("transaction", f"its arguments do not parse: {e.message}") from None
    if isinstance(parsed, AnchorManyArgs):
        return parsed.items
    if isinstance(parsed, AnchorArgs):
        return (parsed,)
    raise EvidenceMismatch("transaction", "its arguments are not an anchor's")


def check_evidence(evidence: Evidence, path: Path, genesis: Genesis) -> Anchored:
    """Check offline that evidence shows the file at path anchored on genesis's chain:
    the receipt proof verifies against the genesis's validator keys (on a chain whose set
    changes, against the set of its height that the evidence's set chain proves from the
    genesis, as `qchain receipt verify` checks it), the transaction is the receipt's and
    succeeded, and it is a notary anchor of the file's digest under the anchor's
    algorithm. Raises `EvidenceMismatch` naming the part that fails."""
    proof, tx = evidence.proof, evidence.transaction
    try:
        chain_id, validators = verify_receipt_proof(proof, genesis, None, None, evidence.set_chain)
    except setchain.SetUnproven as e:
        again = (
            ": this evidence carries no set chain; fetch it again with `qchain notary "
            "evidence TX_HASH --out FILE` from a node of the chain"
            if evidence.set_chain is None
            else ""
        )
        raise EvidenceMismatch("set chain", f"{e.message}{again}") from None
    except setchain.SetChainRefused as e:
        raise EvidenceMismatch("set chain", e.message) from None
    except BadSignature as e:
        raise EvidenceMismatch(
            "certificate", f"the receipt proof does not verify against the genesis: {e.message}"
        ) from None
    except ConfigError:
        raise EvidenceMismatch(
            "set chain",
            "the evidence carries a set chain, but this genesis does not enable "
            "validator-set changes: it is not this chain's evidence",
        ) from None
    receipt = proof.receipt
    if tx.hash != receipt.tx_hash:
        raise EvidenceMismatch(
            "transaction",
            f"the receipt is for transaction {receipt.tx_hash.hex()}, "
            f"the evidence carries transaction {tx.hash.hex()}",
        )
    if not receipt.ok:
        raise EvidenceMismatch("receipt", f"the anchor failed: {receipt.code}: {receipt.message}")
    items = anchored_items(tx)
    digests: dict[str, bytes] = {}
    for item in items:
        if item.algorithm not in digests:
            digests[item.algorithm] = file_digest(path, item.algorithm)
        if digests[item.algorithm] == item.digest:
            return Anchored(
                item.digest,
                item.algorithm,
                item.title,
                item.category,
                tx.sender,
                next((m.name for m in genesis.members if m.address == tx.sender), None),
                proof.header.height,
                proof.header.time,
                tx.hash,
                proof.header.hash,
                chain_id,
                len(proof.certificate.signatures),
                len(validators),
            )
    anchored = ", ".join(f"{i.algorithm}:{i.digest.hex()}" for i in items)
    found = ", ".join(f"{a}:{d.hex()}" for a, d in sorted(digests.items()))
    raise EvidenceMismatch(
        "file",
        f"its digest {found} is not the one anchored ({anchored}): "
        "it is not the anchored document, or it was modified",
    )
