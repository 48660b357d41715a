"""A governed chain with headers and real commit certificates, for set-chain tests: every
block gets a header (parent, roots and app hash of its execution) and any height can get a
certificate signed with the ML-DSA-65 keys of the set in force there (genesis validators
`validator-i` of the test seed; added and rotated keys from the pool of `new_key`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from contracts import setchain, validators
from contracts.execution import BlockResult
from contracts.state import StateReader
from contracts.testing import DevChain
from qchain.keys import Scheme, SigningKey, dev_key
from qchain.merkle import merkle_proof
from qchain.types import (
    BlockHeader,
    CommitCertificate,
    CommitSignature,
    ReceiptProof,
    Transaction,
    commit_sign_digest,
    tx_root,
)

from .validators_chain import (
    SEED,
    add_args,
    governed_chain,
    new_key,
    ready_signature,
    remove_args,
    status,
)


@dataclass
class CertifiedChain:
    chain: DevChain
    headers: dict[int, BlockHeader] = field(default_factory=dict)
    results: dict[int, BlockResult] = field(default_factory=dict)
    signers: dict[bytes, SigningKey] = field(default_factory=dict)
    """Signing key by public key: every validator key this chain has used."""
    scheduling: list[int] = field(default_factory=list)
    """The scheduling blocks of `schedule_change`, in order."""
    txs: dict[int, tuple[Transaction, ...]] = field(default_factory=dict)
    """The transactions of every block."""

    @property
    def chain_id(self) -> str:
        return self.chain.genesis.chain_id

    @property
    def delay(self) -> int:
        return self.chain.genesis.consensus.reconfig_delay

    def block(self, txs: Sequence[Transaction] = ()) -> BlockResult:
        result = self.chain.block(txs)
        h = self.chain.height
        parent = self.headers[h - 1].hash if h > 1 else self.chain.genesis.hash
        self.headers[h] = BlockHeader(
            self.chain_id,
            h,
            0,
            self.chain.time,
            parent,
            0,
            tx_root(list(txs)),
            result.receipts_root,
            result.app_hash,
        )
        self.results[h] = result
        self.txs[h] = tuple(txs)
        return result

    def set_at(self, height: int) -> tuple[validators.Record, ...]:
        """`V(height)` as the contract's set history records it."""
        state = StateReader(self.chain.store, validators.NAME)
        return validators.set_at(state, height).records

    def certificate(
        self, height: int, records: Sequence[validators.Record] | None = None
    ) -> CommitCertificate:
        """The certificate of height signed by every member of records (default: the set
        in force at height), each with the key its record names."""
        members = self.set_at(height) if records is None else records
        digest = commit_sign_digest(self.chain_id, height, self.headers[height].hash)
        sigs = tuple(
            CommitSignature(r.id, self.signers[r.public_key].sign(digest)) for r in members
        )
        return CommitCertificate(height, self.headers[height].hash, sigs)

    def link(self, r: int, c: int | None = None) -> setchain.SetChainLink:
        """The link of scheduling block r, certified at c (default: r + 1 ≤ a − 1)."""
        c = r + 1 if c is None else c
        state = self.results[r].set_state
        assert state is not None
        return setchain.SetChainLink(
            self.headers[r],
            tuple(self.headers[x] for x in range(r + 1, c + 1)),
            self.certificate(c),
            state.prove(),
        )

    def tail(self, t: int, height: int) -> setchain.SetChainTail:
        state = self.results[t].set_state
        assert state is not None
        return setchain.SetChainTail(
            self.headers[t],
            state.prove([validators.NEXT_SEQ_KEY]),
            tuple(self.headers[x] for x in range(t + 1, height + 1)),
        )

    def start(self) -> setchain.Start:
        return setchain.genesis_start(self.set_at(1))

    def receipt_proof(self, height: int, index: int = 0) -> ReceiptProof:
        receipts = self.results[height].receipts
        return ReceiptProof(
            receipts[index],
            merkle_proof([r.encode() for r in receipts], index),
            self.headers[height],
            self.certificate(height),
        )


def certified_chain(n: int = 4, delay: int = 2, state_root_interval: int = 0) -> CertifiedChain:
    chain = governed_chain(n, delay=delay, state_root_interval=state_root_interval)
    out = CertifiedChain(chain)
    for i in range(n):
        k = dev_key(SEED, f"validator-{i}", Scheme.ML_DSA_65)
        out.signers[k.public_key] = k
    return out


def schedule_change(
    cc: CertifiedChain,
    args: list[object],
    key: int | None,
    approvers: Sequence[str] = ("op0", "op1", "op2"),
) -> tuple[int, int]:
    """Propose, approve (default op0..op2: more than 2·n/3 of four operators) and make
    ready a change (key: the pool key of its new record, None for a remove); returns (its
    scheduling block r, its activation height e)."""
    r = cc.block([cc.chain.tx("op0", validators.NAME, "propose", args)]).receipts[0]
    assert r.ok, r.message
    cid = r.result
    assert isinstance(cid, bytes)
    for op in approvers:
        cc.block([cc.chain.tx(op, validators.NAME, "approve", [cid])])
    if key is not None:
        cc.signers[new_key(key).public_key] = new_key(key)
        sig = ready_signature(cc.chain, cid, key)
        cc.block([cc.chain.tx("outsider", validators.NAME, "ready", [cid, sig, []])])
    s = status(cc.chain, cid)
    assert s.change.status == "scheduled", s.change
    cc.scheduling.append(s.change.activation_height - cc.delay)
    return s.change.activation_height - cc.delay, s.change.activation_height


def add_then_remove(cc: CertifiedChain, past: int = 3) -> tuple[int, int]:
    """An add (of pool key 0, made ready by "outsider") that activates, then a remove of
    validator 1 approved by all four operators, and `past` blocks past its activation;
    returns the two activation heights."""
    _, e1 = schedule_change(cc, add_args(0, cc.chain.address("outsider")), key=0)
    while cc.chain.height < e1 + 1:
        cc.block()
    _, e2 = schedule_change(cc, remove_args(1), None, approvers=("op0", "op1", "op2", "op3"))
    while cc.chain.height < e2 + past:
        cc.block()
    return e1, e2
