"""Block execution: a block's transactions applied in order to the state, deterministically.

`execute_block` takes a state source (the committed store, or an overlay holding blocks not
yet committed), the block context (chain id, height, time, previous app hash) and the
transactions, and returns the receipts, the write set and the new app hash without
touching the source. Each step:

1. the begin-block hooks run (voucher expiry; the `validators` contract applies the
   validator-set changes scheduled for this height, then expires and drops changes);
2. per transaction, the inclusion checks: chain id, expiry (`expiry_height` 0 never
   expires, otherwise the block's height must not exceed it), the sender is an active
   member, the nonce equals the sender's next nonce, the scheme and signature match the
   sender's registered key. A transaction that fails any of these may not be in a block:
   `execute_block` raises `InvalidBlock` (a Byzantine leader's block is rejected), while
   `build_block` leaves it out and reports it;
3. the nonce is consumed, then the method runs in the transaction's own overlay. A
   `ContractError` reverts that overlay (the nonce stays consumed) and the receipt records
   the error's code and message; success merges the overlay into the block's.

Signatures are verified here, inside execution, against the key registered at that point of
the block (a key rotation earlier in the same block counts), so validity is a function of
the block and the parent state alone. Verification is the costly part: the `verifier`
is passed in, so that the node can give one that remembers what admission already checked
(`node.sigcache.SignatureCache`) and times the checks it makes.

App hash: `H(APP_STATE, prev_app_hash || encode([k1, v1]) || encode([k2, v2]) || ...)`
over the write set sorted by key (v = nil for a deletion), where the write set holds only
keys whose value changed. The genesis app hash chains from the genesis hash. This chain of
write sets is not a commitment to the state: at the checkpoint heights of a chain whose
genesis sets `state_root_interval` K > 0 (every multiple of K), the app hash is instead
`H(APP_CHECKPOINT, chained || state_root)`, where `chained` is the formula above and
`state_root` commits to the whole state after the block (`contracts.snapshot`), so that a
snapshot of that state can be checked against a certified header. On a chain whose genesis
sets `consensus.reconfiguration`, `chained` is itself `H(SET_STATE, write-set chain ||
root of set, schedule and q)` (`contracts.setchain`), so that the validator set of a
height can be proven from genesis (docs/CONSENSUS.md §10.5). The next block chains from
that app hash as from any other.

Anything other than a `ContractError` raised while running a method (a store that fails,
state that does not decode) is a bug or a broken node and propagates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from contracts import membership, validators
from contracts.registry import DEFAULT_REGISTRY
from contracts.runtime import CallContext, Kind, Registry, canonical_result
from contracts.setchain import SetState, read_set_state
from contracts.snapshot import Checkpoint, compute_checkpoint, is_checkpoint
from contracts.state import (
    Overlay,
    StateReader,
    StateSource,
    StateWriter,
    WriteSet,
    write_set_to_batch,
)
from qchain.codec import encode_value
from qchain.errors import (
    BadSignature,
    ContractError,
    Expired,
    InvalidBlock,
    InvalidTransaction,
    NonceMismatch,
    NotAMember,
    WrongChain,
)
from qchain.hashing import Domain, hash_domain
from qchain.store import Batch
from qchain.types import Block, BlockHeader, Event, Receipt, Transaction, receipts_root, tx_root

MAX_CODE = 64
MAX_MESSAGE = 1024

Verifier = Callable[[Transaction, bytes], None]
"""Raises `BadSignature` unless the transaction is signed by the given registered key."""


def verify_signature(tx: Transaction, public_key: bytes) -> None:
    tx.verify_signature(public_key)


@dataclass(frozen=True)
class BlockContext:
    """What execution needs to know about the block, as plain data."""

    chain_id: str
    height: int
    time: int
    """Block time, milliseconds since the Unix epoch, from the header."""
    prev_app_hash: bytes
    """The app hash after the parent block (the genesis app hash for height 1)."""
    state_root_interval: int = 0
    """The genesis's K: at heights that are multiples of K the app hash also commits to
    the whole state (`contracts.snapshot`); 0 never."""

    @classmethod
    def from_header(
        cls, header: BlockHeader, prev_app_hash: bytes, state_root_interval: int = 0
    ) -> BlockContext:
        return cls(header.chain_id, header.height, header.time, prev_app_hash, state_root_interval)


@dataclass(frozen=True)
class BlockResult:
    receipts: tuple[Receipt, ...]
    write_set: WriteSet
    app_hash: bytes
    receipts_root: bytes
    events: tuple[Event, ...]
    """Events of the begin-block hooks (e.g. voucher expiry), which have no receipt."""
    checkpoint: Checkpoint | None = None
    """At a checkpoint height, the state commitment and its chunks (the snapshot)."""
    set_state: SetState | None = None
    """On a chain with validator-set changes, the `validators` contract's `set`,
    `schedule` and `q` after the block, which its app hash commits to
    (`contracts.setchain`): what a set-chain proof at this height is made from."""

    def to_batch(self, batch: Batch) -> None:
        """Add the state writes to a store batch (the node adds block, receipts, ...)."""
        write_set_to_batch(self.write_set, batch)


@dataclass(frozen=True)
class Rejected:
    """A transaction `build_block` left out, and why."""

    tx: Transaction
    error: InvalidTransaction


def app_hash(prev_app_hash: bytes, write_set: WriteSet) -> bytes:
    parts = [prev_app_hash]
    parts.extend(encode_value([k, v]) for k, v in write_set)
    return hash_domain(Domain.APP_STATE, b"".join(parts))


def check_inclusion(
    source: StateSource, ctx: BlockContext, tx: Transaction, verifier: Verifier
) -> None:
    """Raise `InvalidTransaction` unless tx may be included at this point of the block."""
    if tx.chain_id != ctx.chain_id:
        raise WrongChain(ctx.chain_id, tx.chain_id)
    if tx.expiry_height and ctx.height > tx.expiry_height:
        raise Expired(tx.expiry_height, ctx.height)
    check_sender(source, tx, verifier, exact_nonce=True)


def check_sender(
    source: StateSource,
    tx: Transaction,
    verifier: Verifier = verify_signature,
    *,
    exact_nonce: bool,
    max_nonce_ahead: int = 0,
) -> None:
    """Membership, nonce and signature checks. With `exact_nonce` the nonce must be the
    sender's next one (inclusion); without, it may run up to `max_nonce_ahead` ahead of it
    (mempool admission of queued transactions)."""
    state = StateReader(source, membership.NAME)
    m = membership.get_member(state, tx.sender)
    if m is None:
        raise NotAMember(tx.sender.hex())
    if not m.active:
        raise NotAMember(tx.sender.hex(), "is suspended")
    expected = membership.get_nonce(state, tx.sender)
    if tx.nonce != expected and (
        exact_nonce or not expected <= tx.nonce <= expected + max_nonce_ahead
    ):
        raise NonceMismatch(expected, tx.nonce)
    if tx.scheme != m.scheme:
        # Registered keys are of accepted schemes, so only a mismatch needs the lookup.
        membership.check_transaction_scheme(state, tx.scheme)
        raise BadSignature(f"the sender's registered key is {m.scheme}, not {tx.scheme}")
    verifier(tx, m.public_key)


def _clip(text: str, limit: int) -> str:
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "ignore")


def execute_transaction(
    block: Overlay,
    ctx: BlockContext,
    tx: Transaction,
    index: int,
    *,
    registry: Registry = DEFAULT_REGISTRY,
    verifier: Verifier = verify_signature,
) -> Receipt:
    """Check and run one transaction on the block's overlay; its receipt. Raises
    `InvalidTransaction` (and writes nothing) if tx may not be included."""
    check_inclusion(block, ctx, tx, verifier)
    membership.increment_nonce(StateWriter(block, membership.NAME), tx.sender)
    call = block.child()
    events: list[Event] = []
    try:
        method = registry.method(tx.contract, tx.method, Kind.TX)
        m = membership.get_member(StateReader(block, membership.NAME), tx.sender)
        roles = frozenset(m.roles) if m is not None else frozenset()
        method.check_roles(roles)
        args = method.parse_args(tx.args)
        cctx = CallContext(
            tx.contract,
            tx.sender,
            roles,
            ctx.chain_id,
            ctx.height,
            ctx.time,
            tx.hash,
            StateWriter(call, tx.contract),
            call,
            events,
        )
        result = canonical_result(method.handler(cctx, args))
    except ContractError as e:
        return Receipt(
            tx.hash,
            ctx.height,
            index,
            False,
            _clip(e.code, MAX_CODE),
            _clip(e.message, MAX_MESSAGE),
            None,
            (),
        )
    call.merge_into(block)
    return Receipt(tx.hash, ctx.height, index, True, "", "", result, tuple(events))


def _run(
    source: StateSource,
    ctx: BlockContext,
    txs: Sequence[Transaction],
    registry: Registry,
    verifier: Verifier,
    strict: bool,
) -> tuple[BlockResult, list[Transaction], list[Rejected]]:
    block = Overlay(source)
    events = registry.run_begin_block(block, ctx.chain_id, ctx.height, ctx.time)
    receipts: list[Receipt] = []
    included: list[Transaction] = []
    rejected: list[Rejected] = []
    for tx in txs:
        try:
            receipts.append(
                execute_transaction(
                    block, ctx, tx, len(receipts), registry=registry, verifier=verifier
                )
            )
        except InvalidTransaction as e:
            if strict:
                raise InvalidBlock(e.message, len(receipts), e.code) from e
            rejected.append(Rejected(tx, e))
            continue
        included.append(tx)
    write_set = block.changes()
    chained = app_hash(ctx.prev_app_hash, write_set)
    set_state = read_set_state(StateReader(block, validators.NAME), chained)
    if set_state is not None:
        chained = set_state.committed
    checkpoint = None
    if is_checkpoint(ctx.height, ctx.state_root_interval):
        checkpoint = compute_checkpoint(block, ctx.height, chained)
        if set_state is not None:
            set_state = replace(set_state, state_root=checkpoint.root)
    result = BlockResult(
        tuple(receipts),
        write_set,
        chained if checkpoint is None else checkpoint.app_hash,
        receipts_root(receipts),
        tuple(events),
        checkpoint,
        set_state,
    )
    return result, included, rejected


def execute_block(
    source: StateSource,
    ctx: BlockContext,
    txs: Sequence[Transaction],
    *,
    registry: Registry = DEFAULT_REGISTRY,
    verifier: Verifier = verify_signature,
) -> BlockResult:
    """Execute a block's transactions on an overlay over source (left untouched). Raises
    `InvalidBlock` if any transaction may not be included."""
    return _run(source, ctx, txs, registry, verifier, strict=True)[0]


def build_block(
    source: StateSource,
    ctx: BlockContext,
    candidates: Sequence[Transaction],
    *,
    registry: Registry = DEFAULT_REGISTRY,
    verifier: Verifier = verify_signature,
) -> tuple[BlockResult, list[Transaction], list[Rejected]]:
    """For the proposer: execute candidates in order, leaving out those that may not be
    included. Returns the result, the transactions to put in the block (in order) and the
    rejected ones with their errors. Executing the included list with `execute_block`
    gives the same result."""
    return _run(source, ctx, candidates, registry, verifier, strict=False)


def validate_block(
    source: StateSource,
    block: Block,
    prev_app_hash: bytes,
    *,
    registry: Registry = DEFAULT_REGISTRY,
    verifier: Verifier = verify_signature,
    state_root_interval: int = 0,
) -> BlockResult:
    """The application's part of block validity: the body matches `tx_root`, every
    transaction may be included, and execution gives the header's receipts root and app
    hash. Returns the result to commit; raises `InvalidBlock` otherwise. Deterministic: a
    function of the block, prev_app_hash and the state in source. Header rules (parent,
    height, proposer) are the node's."""
    if tx_root(block.txs) != block.header.tx_root:
        raise InvalidBlock("transactions do not match the header's tx_root")
    result = execute_block(
        source,
        BlockContext.from_header(block.header, prev_app_hash, state_root_interval),
        block.txs,
        registry=registry,
        verifier=verifier,
    )
    if result.receipts_root != block.header.receipts_root:
        raise InvalidBlock("receipts root differs from the header's")
    if result.app_hash != block.header.app_hash:
        raise InvalidBlock("app hash differs from the header's")
    return result
