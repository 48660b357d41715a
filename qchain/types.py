"""The chain's data types: transactions, block headers, blocks, receipts and commit
certificates, as frozen dataclasses with canonical encodings and hashes.

- A transaction's hash covers its whole encoding, signature included, and is its identity
  (and the idempotency key of the API). Its signature covers `H(TX_SIGN, body)`, where the
  body is the encoding of every field but the signature.
- A block's hash is the hash of its header. The header commits to the transactions through
  `tx_root` (a Merkle root over transaction hashes), so a receipt can be checked against a
  certificate with the header alone; `Block.check_body` verifies that commitment and every
  holder of a body checks it before trusting the body.
- A commit certificate is a set of validator signatures over
  `H(COMMIT_SIGN, [chain_id, height, block_hash])`; with 2f+1 of them a third party holding
  the genesis validator keys can check offline that the block was decided.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated

from qchain.codec import (
    DEFAULT_LIMITS,
    U16,
    U32,
    U64,
    AnyValue,
    Hash32,
    Len,
    Limits,
    Struct,
    encode_value,
    pack_checked,
    unpack_canonical,
)
from qchain.errors import BadSignature, CodecError, TooLarge
from qchain.hashing import Domain, hash_domain
from qchain.keys import ADDRESS_LEN, SigningKey, parse_scheme, verify
from qchain.merkle import MerkleProof, merkle_root, verify_proof

MAX_TX_SIZE = 64 * 1024
MAX_BLOCK_TXS = 10_000
MAX_BLOCK_SIZE = 8 * 1024 * 1024
TX_LIMITS = Limits(
    max_size=MAX_TX_SIZE, max_depth=8, max_bytes_len=MAX_TX_SIZE, max_array_len=MAX_BLOCK_TXS
)
"""What a transaction may hold, in no dimension looser than what a block's decoding lets a
transaction inside it hold (`BLOCK_LIMITS`): every transaction a node admits decodes
inside a block. (Before, arrays of up to 100,000 items were admitted, and
a block holding one did not decode: a partner's one transaction failed every round of
every leader that proposed it.)"""
BLOCK_LIMITS = Limits(max_size=MAX_BLOCK_SIZE, max_depth=12, max_array_len=MAX_BLOCK_TXS)

ChainId = Annotated[str, Len(1, 64)]
Name = Annotated[str, Len(1, 64)]
Address = Annotated[bytes, Len(ADDRESS_LEN, ADDRESS_LEN)]


@dataclass(frozen=True)
class Transaction(Struct):
    """A signed call of a contract method by a member."""

    chain_id: ChainId
    sender: Address
    nonce: U64
    contract: Name
    method: Name
    args: AnyValue
    """A list of canonical values, the method's arguments in the order its schema declares."""
    expiry_height: U64
    """Last height at which the transaction may be included; 0 means it never expires."""
    scheme: Annotated[str, Len(1, 16)]
    public_key: Annotated[bytes, Len(0, 4096)]
    """The signer's public key, or empty to use the key registered for `sender`."""
    signature: Annotated[bytes, Len(0, 8192)]

    def body_bytes(self) -> bytes:
        """Canonical encoding of every field but the signature: the encoding of the
        whole transaction with a 9-item array header and without its last item."""
        enc = self.encoded
        return b"\x99" + enc[1 : len(enc) - bin_size(len(self.signature))]

    @classmethod
    def _from_wire(cls, obj: object, path: str | None) -> Transaction:
        tx = cls._fields_from_wire(obj, path)
        # The fields are checked: packing the array is the canonical encoding, without
        # converting the fields back (blocks decode thousands of transactions).
        tx.__dict__["encoded"] = pack_checked(obj)
        return tx

    @classmethod
    def _fields_from_wire(cls, obj: object, path: str | None) -> Transaction:
        return super()._from_wire(obj, path)

    @classmethod
    def decode(cls, data: bytes, limits: Limits = DEFAULT_LIMITS) -> Transaction:
        """`Struct.decode` that keeps data as the encoding (decoding checked that it is
        the canonical one) instead of packing the fields again."""
        obj = unpack_canonical(data, limits)
        try:
            tx = cls._fields_from_wire(obj, None)
        except CodecError:
            tx = cls._fields_from_wire(obj, cls.__name__)
        tx.__dict__["encoded"] = bytes(data)
        return tx

    def signing_digest(self) -> bytes:
        digest: bytes | None = self.__dict__.get("_signing_digest")
        if digest is None:
            digest = hash_domain(Domain.TX_SIGN, self.body_bytes())
            # A frozen dataclass: cache in the instance dict, as cached_property does.
            self.__dict__["_signing_digest"] = digest
        return digest

    @cached_property
    def encoded(self) -> bytes:
        return self.encode()

    @cached_property
    def hash(self) -> bytes:
        return hash_domain(Domain.TX, self.encoded)

    def signed_by(self, key: SigningKey) -> Transaction:
        """A copy carrying key's scheme, public key and signature (sender unchanged)."""
        unsigned = Transaction(
            self.chain_id,
            self.sender,
            self.nonce,
            self.contract,
            self.method,
            self.args,
            self.expiry_height,
            key.scheme.value,
            key.public_key,
            b"",
        )
        sig = key.sign(unsigned.signing_digest())
        return dataclasses.replace(unsigned, signature=sig)

    def verify_signature(self, public_key: bytes) -> None:
        """Raise `BadSignature` unless signed by public_key under this tx's scheme."""
        if self.public_key and self.public_key != public_key:
            raise BadSignature("the transaction's public key is not the sender's registered key")
        verify(parse_scheme(self.scheme), public_key, self.signing_digest(), self.signature)


def bin_size(n: int) -> int:
    """Bytes of the canonical encoding of a byte string of length n."""
    return n + (2 if n < 0x100 else 3 if n < 0x10000 else 5)


def array_header(n: int) -> bytes:
    """The canonical encoding's header of an array of n items."""
    if n < 16:
        return bytes([0x90 | n])
    if n < 0x10000:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def decode_transaction(data: bytes) -> Transaction:
    if len(data) > MAX_TX_SIZE:
        raise TooLarge(len(data), MAX_TX_SIZE)
    return Transaction.decode(data, TX_LIMITS)


def new_transaction(
    key: SigningKey,
    *,
    chain_id: str,
    nonce: int,
    contract: str,
    method: str,
    args: Sequence[object],
    expiry_height: int = 0,
    sender: bytes | None = None,
) -> Transaction:
    """Build and sign a transaction; sender defaults to the key's address."""
    tx = Transaction(
        chain_id,
        key.address if sender is None else sender,
        nonce,
        contract,
        method,
        list(args),
        expiry_height,
        key.scheme.value,
        key.public_key,
        b"",
    )
    return tx.signed_by(key)


@dataclass(frozen=True)
class BlockHeader(Struct):
    chain_id: ChainId
    height: U64
    round: U32
    """The consensus round the block claims it was built in (a claim, not a proof)."""
    time: U64
    """Milliseconds since the Unix epoch, set by the proposer; never compared to a clock."""
    parent: Hash32
    proposer: U16
    """Validator index that claims to have built the block (a claim, not a proof)."""
    tx_root: Hash32
    receipts_root: Hash32
    app_hash: Hash32

    @cached_property
    def hash(self) -> bytes:
        return hash_domain(Domain.HEADER, self.encode())


@dataclass(frozen=True)
class Block(Struct):
    header: BlockHeader
    txs: Annotated[tuple[Transaction, ...], Len(0, MAX_BLOCK_TXS)]

    @property
    def hash(self) -> bytes:
        return self.header.hash

    @property
    def height(self) -> int:
        return self.header.height

    def encode(self) -> bytes:
        """Canonical bytes, joined from the header's encoding and each transaction's
        (cached) one: a MessagePack array is its header followed by its items."""
        enc: bytes | None = self.__dict__.get("_encoded")
        if enc is None:
            if len(self.txs) > MAX_BLOCK_TXS:
                raise CodecError(f"Block.txs: length {len(self.txs)} outside [0, {MAX_BLOCK_TXS}]")
            for tx in self.txs:
                if not isinstance(tx, Transaction):
                    raise CodecError("Block.txs: expected Transaction")
            parts = [b"\x92", self.header.encode(), array_header(len(self.txs))]
            parts.extend(tx.encoded for tx in self.txs)
            enc = b"".join(parts)
            if len(enc) > BLOCK_LIMITS.max_size:
                raise CodecError(f"encoding of {len(enc)} bytes exceeds {BLOCK_LIMITS.max_size}")
            self.__dict__["_encoded"] = enc
        return enc

    @classmethod
    def decode(cls, data: bytes, limits: Limits = BLOCK_LIMITS) -> Block:
        block = super().decode(data, limits)
        block.__dict__["_encoded"] = bytes(data)
        return block

    def check_body(self) -> None:
        """Raise `CodecError` unless the transactions match the header's `tx_root`."""
        if tx_root(self.txs) != self.header.tx_root:
            raise CodecError("block transactions do not match the header's tx_root")


def decode_block(data: bytes) -> Block:
    block = Block.decode(data, BLOCK_LIMITS)
    block.check_body()
    return block


def tx_root(txs: Sequence[Transaction]) -> bytes:
    return merkle_root([tx.hash for tx in txs])


@dataclass(frozen=True)
class Event(Struct):
    """Something a contract reports while executing, kept in the receipt."""

    contract: Name
    name: Name
    data: AnyValue


@dataclass(frozen=True)
class Receipt(Struct):
    """The outcome of one transaction in a block."""

    tx_hash: Hash32
    height: U64
    index: U32
    ok: bool
    code: Annotated[str, Len(0, 64)]
    """Stable error code when not ok, empty otherwise."""
    message: Annotated[str, Len(0, 1024)]
    result: AnyValue
    events: tuple[Event, ...] = field(default=())

    # Encoded for the receipts root and again when its block is stored.
    _cache_encoding = True

    @cached_property
    def hash(self) -> bytes:
        return hash_domain(Domain.RECEIPT, self.encode())


def receipts_root(receipts: Sequence[Receipt]) -> bytes:
    return merkle_root([r.encode() for r in receipts])


def commit_sign_digest(chain_id: str, height: int, block_hash: bytes) -> bytes:
    return hash_domain(Domain.COMMIT_SIGN, encode_value([chain_id, height, block_hash]))


@dataclass(frozen=True)
class CommitSignature(Struct):
    validator: U16
    signature: Annotated[bytes, Len(1, 8192)]


@dataclass(frozen=True)
class CommitCertificate(Struct):
    """Validator signatures over a decided block hash."""

    height: U64
    block_hash: Hash32
    signatures: Annotated[tuple[CommitSignature, ...], Len(0, 1024)]


@dataclass(frozen=True)
class ValidatorKey:
    """A validator's certificate-signing key as listed in genesis."""

    scheme: str
    public_key: bytes


def quorum_size(n: int) -> int:
    """n − f with f = (n − 1) // 3."""
    return n - (n - 1) // 3


def verify_certificate(
    cert: CommitCertificate, chain_id: str, validators: Sequence[ValidatorKey]
) -> None:
    """Raise `BadSignature` unless at least n − f distinct validators signed the block."""
    digest = commit_sign_digest(chain_id, cert.height, cert.block_hash)
    good: set[int] = set()
    for s in cert.signatures:
        if s.validator >= len(validators) or s.validator in good:
            continue
        v = validators[s.validator]
        try:
            verify(v.scheme, v.public_key, digest, s.signature)
        except BadSignature:
            continue
        good.add(s.validator)
    need = quorum_size(len(validators))
    if len(good) < need:
        raise BadSignature(f"certificate has {len(good)} valid signatures, {need} needed")


@dataclass(frozen=True)
class ReceiptProof(Struct):
    """Everything a third party needs to check a receipt offline against genesis keys."""

    receipt: Receipt
    proof: MerkleProof
    header: BlockHeader
    certificate: CommitCertificate

    def verify(self, chain_id: str, validators: Sequence[ValidatorKey]) -> None:
        """Raise `BadSignature` unless the receipt is in a block the validators decided."""
        self.verify_inclusion(chain_id)
        verify_certificate(self.certificate, chain_id, validators)

    def verify_inclusion(self, chain_id: str) -> None:
        """Raise `BadSignature` unless the receipt is in the block the header describes and
        the certificate names that block (its signatures are not checked here)."""
        h = self.header
        if h.chain_id != chain_id:
            raise BadSignature(f"header is for chain {h.chain_id!r}, expected {chain_id!r}")
        if self.receipt.height != h.height or self.certificate.height != h.height:
            raise BadSignature("receipt, header and certificate name different heights")
        if self.certificate.block_hash != h.hash:
            raise BadSignature("certificate is for another block")
        if self.proof.index != self.receipt.index:
            raise BadSignature("proof is for another receipt index")
        if not verify_proof(self.receipt.encode(), self.proof, h.receipts_root):
            raise BadSignature("Merkle proof does not lead to the header's receipts root")
