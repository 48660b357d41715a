"""Set chains: the set of a height proven from genesis (docs/CONSENSUS.md §10.5).

**What the app hash commits to.** On a chain whose genesis sets
`consensus.reconfiguration`, the app hash of every block also commits to the `validators`
contract's three state keys `set`, `schedule` and `q`:

    root          = RFC 6962 Merkle root over the leaves encode([key, value]) of
                    `set`, `schedule` and `q`, in that order (values: their canonical
                    encodings as stored)
    committed(h)  = H(SET_STATE, chained(h) || root)
    app_hash(h)   = committed(h), or at a checkpoint height H(APP_CHECKPOINT,
                    committed(h) || state_root(h)) (`contracts.snapshot`)

where `chained(h)` is the write-set chain of `contracts.execution.app_hash`. A chain without
`consensus.reconfiguration` hashes as before. So a `StateProof` (the write-set chain value,
the state root at a checkpoint height, and the leaves with their Merkle paths) proves
values of those keys against a header's `app_hash`; a link's proof holds all three, a
tail's `q` only.

**The verifier** (`prove_set`) follows §10.5 exactly. Its start is genesis (`V(1)`, no
pending entries, `q` = 0, height 0) or a trusted checkpoint given out of band, never a set
the presenter chose. Link i (scheduling block r_i, headers r_i..c_i, the certificate of
c_i, the proof at r_i) is checked under `V(r_i)` computed from the start or link i−1 (its
set with its pending entries that activate ≤ r_i applied); only then is its proof read:
its `set` must equal that computed `V(r_i)` byte for byte, none of its entries may
activate in (r_i, c_i], it must hold the entry numbered by the previous `q` with
scheduling block r_i (activation − D), and the earlier pending entries still due. The
tail (header t = max(h′ − D, r_k), the proof of `q` at t, headers t+1..h′) only refuses:
`q` at t must equal the last link's `q`, else the set of h′ is unproven (a change was
scheduled after the last link). `V(h′)` is the last link's set with the entries of its
proof that activate ≤ h′ applied. The caller then checks the certificate of h′ under
`V(h′)`; only that settles the tail's headers (Lemma T).

Every count is by validator id: a certificate signature's `validator` is the signer's id
(genesis ids are the genesis indexes, so a genesis chain's certificates read the same).
Everything here is hostile input: the decoders are bounded by §10.5's SETCHAIN bounds (at
most 8 links, each at most 64 headers, a proof at most 256 KB, the whole at most
`MAX_MESSAGE`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Annotated

from contracts import validators
from contracts.snapshot import checkpoint_app_hash
from contracts.state import StateReader
from qchain.codec import Hash32, Len, Limits, Struct, decode_value, encode_value
from qchain.errors import BadSignature, CodecError
from qchain.hashing import Domain, hash_domain
from qchain.keys import Scheme, verify
from qchain.limits import MAX_MESSAGE
from qchain.merkle import MerkleProof, merkle_proof, merkle_root, root_from_proof
from qchain.types import (
    BlockHeader,
    CommitCertificate,
    ReceiptProof,
    commit_sign_digest,
    quorum_size,
)

SET_STATE_KEYS = (validators.SET_KEY, validators.SCHEDULE_KEY, validators.NEXT_SEQ_KEY)
"""The three keys the app hash commits to, in leaf order."""
MAX_LINKS = 8
"""§10.5: a SETCHAIN holds at most 8 links."""
MAX_LINK_HEADERS = 64
"""§10.5: each link at most 64 headers (header r and the headers r+1..c)."""
MAX_TAIL_HEADERS = 17
"""Header t and t+1..h′: h′ − t ≤ D ≤ 16 once t = max(h′ − D, r_k) and r_k ≥ h′ − D."""
MAX_PROOF_BYTES = 256 * 1024
"""§10.5: a proof at most 256 KB."""
MAX_SETCHAIN_BYTES = MAX_MESSAGE


class SetChainRefused(BadSignature):
    """A set chain that fails a check of §10.5 (`setchain-refused`)."""

    code = "setchain-refused"


class SetUnproven(BadSignature):
    """A set chain that proves no set for the height asked (`set of h′ unproven`): it is
    never taken as valid."""

    code = "set-unproven"


def _leaf(key: bytes, value: bytes) -> bytes:
    return encode_value([key, value])


def set_state_root(values: Sequence[bytes]) -> bytes:
    """The Merkle root over the leaves of `set`, `schedule` and `q` holding values."""
    return merkle_root([_leaf(k, v) for k, v in zip(SET_STATE_KEYS, values, strict=True)])


def commit_set_state(chained: bytes, root: bytes) -> bytes:
    return hash_domain(Domain.SET_STATE, chained + root)


@dataclass(frozen=True)
class SetState:
    """The values of the three keys after a block, and what its app hash was built from."""

    chained: bytes
    """The write-set chain's hash of the block, before the set state is committed."""
    values: tuple[bytes, bytes, bytes]
    state_root: bytes = b""
    """At a checkpoint height, the state root (`contracts.snapshot`); else empty."""

    @property
    def committed(self) -> bytes:
        return commit_set_state(self.chained, set_state_root(self.values))

    def prove(self, keys: Sequence[bytes] = SET_STATE_KEYS) -> StateProof:
        """A proof of the named keys (a link: all three; a tail: `q` only)."""
        leaves = [_leaf(k, v) for k, v in zip(SET_STATE_KEYS, self.values, strict=True)]
        out = []
        for key in keys:
            i = SET_STATE_KEYS.index(key)
            out.append(StateLeaf(key, self.values[i], merkle_proof(leaves, i)))
        return StateProof(self.chained, self.state_root, tuple(out))


def read_set_state(state: StateReader, chained: bytes) -> SetState | None:
    """The set state after a block whose write-set chain hash is chained, if the chain
    commits to it (its genesis sets `consensus.reconfiguration`); else None."""
    cfg = validators.get_config(state)
    if cfg is None or not cfg.enabled:
        return None
    raw = [state.get(k) for k in SET_STATE_KEYS]
    if any(v is None for v in raw):
        raise CodecError("the validators contract's set state is incomplete")
    values = (raw[0] or b"", raw[1] or b"", raw[2] or b"")
    return SetState(chained, values)


# --- the data types ----------------------------------------------------------------------

Key = Annotated[bytes, Len(1, 16)]


@dataclass(frozen=True)
class StateLeaf(Struct):
    key: Key
    value: Annotated[bytes, Len(0, MAX_PROOF_BYTES)]
    path: MerkleProof


@dataclass(frozen=True)
class StateProof(Struct):
    """Values of the `validators` contract's keys after block r, against header r's
    app hash."""

    chained: Hash32
    state_root: Annotated[bytes, Len(0, 32)]
    """Empty unless r is a checkpoint height."""
    leaves: Annotated[tuple[StateLeaf, ...], Len(1, 3)]

    def open(self, app_hash: bytes) -> dict[bytes, bytes]:
        """The proven values by key; `SetChainRefused` unless each leaf leads to one root
        that, with `chained` (and `state_root`), gives app_hash."""
        if len(self.encode()) > MAX_PROOF_BYTES:
            raise SetChainRefused(f"a proof of more than {MAX_PROOF_BYTES} bytes")
        roots = set()
        out: dict[bytes, bytes] = {}
        for leaf in self.leaves:
            if leaf.key not in SET_STATE_KEYS or leaf.key in out:
                raise SetChainRefused(f"proof leaf {leaf.key!r} is not one of set, schedule, q")
            if leaf.path.size != len(SET_STATE_KEYS) or leaf.path.index != SET_STATE_KEYS.index(
                leaf.key
            ):
                raise SetChainRefused(f"proof leaf {leaf.key!r} is not at its place")
            roots.add(root_from_proof(_leaf(leaf.key, leaf.value), leaf.path))
            out[leaf.key] = leaf.value
        if len(roots) != 1 or None in roots:
            raise SetChainRefused("the proof's leaves lead to different roots")
        committed = commit_set_state(self.chained, roots.pop() or b"")
        if self.state_root:
            if len(self.state_root) != 32:
                raise SetChainRefused("a state root is 32 bytes")
            committed = checkpoint_app_hash(committed, self.state_root)
        if committed != app_hash:
            raise SetChainRefused("the proof does not lead to the header's app hash")
        return out


@dataclass(frozen=True)
class SetChainLink(Struct):
    """The link of scheduling block r: header r, headers r+1..c, the certificate of c,
    the proof at r."""

    header: BlockHeader
    headers: Annotated[tuple[BlockHeader, ...], Len(0, MAX_LINK_HEADERS - 1)]
    certificate: CommitCertificate
    proof: StateProof


@dataclass(frozen=True)
class SetChainTail(Struct):
    """Header t, the proof of `q` at t, headers t+1..h′."""

    header: BlockHeader
    proof: StateProof
    headers: Annotated[tuple[BlockHeader, ...], Len(0, MAX_TAIL_HEADERS - 1)]


@dataclass(frozen=True)
class SetChain(Struct):
    links: Annotated[tuple[SetChainLink, ...], Len(0, MAX_LINKS)]
    tail: SetChainTail | None


_LIMITS = Limits(
    max_size=MAX_SETCHAIN_BYTES,
    max_depth=8,
    max_bytes_len=MAX_PROOF_BYTES,
    max_str_len=256,
    max_array_len=1024,
)


def decode_set_chain(raw: bytes) -> SetChain:
    """A set chain from hostile bytes; `CodecError` if it is larger than `MAX_MESSAGE` or
    breaks a bound."""
    if len(raw) > MAX_SETCHAIN_BYTES:
        raise CodecError(f"a set chain of {len(raw)} bytes exceeds {MAX_SETCHAIN_BYTES}")
    return SetChain.decode(raw, _LIMITS)


@dataclass(frozen=True)
class Start:
    """Where a verifier starts: genesis (height 0, `V(1)`, no entries, `q` = 0) or a
    trusted checkpoint's `set`, `schedule` and `q` (given out of band)."""

    height: int
    records: tuple[validators.Record, ...]
    entries: tuple[validators.ScheduleEntry, ...] = ()
    next_sequence: int = 0


def genesis_start(records: Sequence[validators.Record]) -> Start:
    return Start(0, tuple(sorted(records, key=lambda r: r.id)))


# --- checks ------------------------------------------------------------------------------


def verify_certificate_by_id(
    cert: CommitCertificate, chain_id: str, records: Sequence[validators.Record]
) -> None:
    """Raise `BadSignature` unless at least q(n) distinct members of the set (by id)
    signed `("qchain-commit", chain_id, height, hash)`; signatures by non-members are
    ignored."""
    keys = {r.id: r.public_key for r in records}
    digest = commit_sign_digest(chain_id, cert.height, cert.block_hash)
    good: set[int] = set()
    for s in cert.signatures:
        key = keys.get(s.validator)
        if key is None or s.validator in good:
            continue
        try:
            verify(Scheme.ML_DSA_65, key, digest, s.signature)
        except BadSignature:
            continue
        good.add(s.validator)
    need = quorum_size(len(records))
    if len(good) < need:
        raise BadSignature(
            f"certificate of height {cert.height} has {len(good)} valid signatures of its "
            f"set, {need} needed"
        )


def _check_headers(chain_id: str, first: BlockHeader, rest: Sequence[BlockHeader]) -> None:
    prev = first
    if first.chain_id != chain_id:
        raise SetChainRefused(f"header {first.height} is for chain {first.chain_id!r}")
    for h in rest:
        if h.chain_id != chain_id:
            raise SetChainRefused(f"header {h.height} is for chain {h.chain_id!r}")
        if h.height != prev.height + 1 or h.parent != prev.hash:
            raise SetChainRefused(f"header {h.height} does not follow header {prev.height}")
        prev = h


def apply_entries(
    records: Sequence[validators.Record],
    entries: Sequence[validators.ScheduleEntry],
    height: int,
) -> tuple[validators.Record, ...]:
    """The set with the entries that activate at or below height applied (§10.2)."""
    by_id = {r.id: r for r in records}
    for e in sorted(entries, key=lambda x: x.sequence):
        if e.activation_height > height:
            continue
        if e.kind == "remove":
            if e.id not in by_id:
                raise SetChainRefused(f"entry {e.sequence} removes {e.id}, not a member")
            del by_id[e.id]
        elif e.kind == "rotate":
            if e.id not in by_id:
                raise SetChainRefused(f"entry {e.sequence} rotates {e.id}, not a member")
            by_id[e.id] = replace(by_id[e.id], public_key=e.public_key, sae_id=e.sae_id)
        elif e.kind == "add":
            if e.id in by_id:
                raise SetChainRefused(f"entry {e.sequence} adds {e.id}, a member already")
            by_id[e.id] = validators.Record(e.id, e.public_key, e.sae_id, e.operator)
        else:
            raise SetChainRefused(f"entry {e.sequence} has kind {e.kind!r}")
    return tuple(by_id[i] for i in sorted(by_id))


def _read_set(raw: bytes, what: str) -> validators.ValidatorSet:
    try:
        return validators.ValidatorSet.decode(raw)
    except CodecError as e:
        raise SetChainRefused(f"{what}: {e.message}") from None


def _read_schedule(raw: bytes, what: str) -> validators.Schedule:
    try:
        return validators.Schedule.decode(raw)
    except CodecError as e:
        raise SetChainRefused(f"{what}: {e.message}") from None


def _read_q(raw: bytes, what: str) -> int:
    try:
        q = decode_value(raw)
    except CodecError as e:
        raise SetChainRefused(f"{what}: {e.message}") from None
    if type(q) is not int or q < 0:
        raise SetChainRefused(f"{what}: not a sequence number")
    return q


@dataclass(frozen=True)
class ProvenSet:
    """What `prove_set` settles once the certificate of h′ passes under `records`."""

    height: int
    records: tuple[validators.Record, ...]
    header: BlockHeader | None
    """Header h′ (the tail's last), which the certificate of h′ must name; None when no
    change can have activated by h′ from a genesis start (h′ ≤ D, no link): then no
    header t exists and the start's set is `V(h′)`."""


def prove_set(
    chain: SetChain, *, chain_id: str, start: Start, delay: int, height: int
) -> ProvenSet:
    """`V(height)` from start by chain (§10.5), or `SetChainRefused` / `SetUnproven`.

    The caller checks the certificate of `height` under the returned set and that it
    names the returned header; until it does, nothing of the tail is settled."""
    if not 2 <= delay <= 16:
        raise SetChainRefused(f"reconfig_delay {delay} outside [2, 16]")
    if height <= start.height:
        raise SetUnproven(f"height {height} is not above the verifier's start {start.height}")
    if len(chain.links) > MAX_LINKS:
        raise SetChainRefused(f"{len(chain.links)} links; at most {MAX_LINKS}")
    records, entries, q, r_prev = start.records, start.entries, start.next_sequence, start.height
    for i, link in enumerate(chain.links):
        where = f"link {i} (block {link.header.height})"
        r = link.header.height
        if r <= r_prev:
            raise SetChainRefused(f"{where}: scheduling blocks must ascend above {r_prev}")
        if r > height:
            raise SetChainRefused(f"{where}: above height {height}")
        _check_headers(chain_id, link.header, link.headers)
        last = link.headers[-1] if link.headers else link.header
        # the certificate first, under V(r) computed from what came before
        v_r = apply_entries(records, entries, r)
        cert = link.certificate
        if cert.height != last.height or cert.block_hash != last.hash:
            raise SetChainRefused(
                f"{where}: the certificate is of height {cert.height}, not of the link's "
                f"last header {last.height}"
            )
        try:
            verify_certificate_by_id(cert, chain_id, v_r)
        except BadSignature as e:
            raise SetChainRefused(f"{where}: {e.message} (checked under V({r}))") from None
        # then the proof at r, read only now that header r is settled
        values = link.proof.open(link.header.app_hash)
        if set(values) != set(SET_STATE_KEYS):
            raise SetChainRefused(f"{where}: the proof must hold set, schedule and q")
        vset = _read_set(values[validators.SET_KEY], f"{where} set")
        sched = _read_schedule(values[validators.SCHEDULE_KEY], f"{where} schedule")
        q_r = _read_q(values[validators.NEXT_SEQ_KEY], f"{where} q")
        if vset.encode() != validators.ValidatorSet(v_r).encode():
            raise SetChainRefused(f"{where}: its set is not V({r}) computed from its start")
        if any(e.activation_height <= last.height for e in sched.entries):
            raise SetChainRefused(
                f"{where}: a scheduled change activates at or below its certificate's "
                f"height {last.height}"
            )
        _check_consecutive(where, sched.entries, entries, q, q_r, r, delay)
        records, entries, q, r_prev = v_r, sched.entries, q_r, r
    return _tail(chain.tail, chain_id, records, entries, q, r_prev, start, delay, height)


def _check_consecutive(
    where: str,
    got: Sequence[validators.ScheduleEntry],
    before: Sequence[validators.ScheduleEntry],
    q_prev: int,
    q_r: int,
    r: int,
    delay: int,
) -> None:
    """The proof at r holds the entries still due from before, unchanged, then the
    entries numbered q_prev..q_r−1, each scheduled at r (one link per scheduling block)."""
    due = [e for e in before if e.activation_height > r]
    old = [e for e in got if e.sequence < q_prev]
    new = [e for e in got if e.sequence >= q_prev]
    if [e.encode() for e in old] != [e.encode() for e in due]:
        raise SetChainRefused(f"{where}: its schedule does not continue the last one")
    if q_r <= q_prev:
        raise SetChainRefused(
            f"{where}: q {q_r} after q {q_prev}: block {r} scheduled no change (a link is "
            "one scheduling block)"
        )
    if [e.sequence for e in new] != list(range(q_prev, q_r)):
        raise SetChainRefused(
            f"{where}: not consecutive: it must hold the entries numbered {q_prev}..{q_r - 1}"
        )
    for e in new:
        if e.activation_height - delay != r:
            raise SetChainRefused(
                f"{where}: entry {e.sequence} was scheduled at block "
                f"{e.activation_height - delay}, not {r}: a change was skipped or reordered"
            )


def _tail(
    tail: SetChainTail | None,
    chain_id: str,
    records: tuple[validators.Record, ...],
    entries: Sequence[validators.ScheduleEntry],
    q: int,
    r_k: int,
    start: Start,
    delay: int,
    height: int,
) -> ProvenSet:
    t = max(height - delay, r_k)
    if t == 0 and start.height == 0:
        if tail is not None:
            raise SetChainRefused("a tail cannot start at genesis, which has no header")
        return ProvenSet(height, apply_entries(records, entries, height), None)
    if tail is None:
        raise SetUnproven(
            f"set of {height} unproven: a set chain without a tail proves no set "
            f"(it needs header {t}, the proof of q there and the headers up to {height})"
        )
    if tail.header.height != t:
        raise SetChainRefused(
            f"the tail starts at header {tail.header.height}, not at t = max(h′ − D, r_k) = {t}"
        )
    _check_headers(chain_id, tail.header, tail.headers)
    last = tail.headers[-1] if tail.headers else tail.header
    if last.height != height:
        raise SetChainRefused(f"the tail ends at header {last.height}, not at {height}")
    values = tail.proof.open(tail.header.app_hash)
    if set(values) != {validators.NEXT_SEQ_KEY}:
        raise SetChainRefused("a tail's proof is of q only")
    q_t = _read_q(values[validators.NEXT_SEQ_KEY], "tail q")
    if q_t < q:
        raise SetChainRefused(f"q {q_t} at the tail's block {t} is below the last link's {q}")
    if q_t > q:
        raise SetUnproven(
            f"set of {height} unproven: q at {t} is {q_t}, the last link's {q}: a change "
            "scheduled after the last link is not in the chain"
        )
    return ProvenSet(height, apply_entries(records, entries, height), last)


# --- receipts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainedReceipt(Struct):
    """A receipt proof with the set chain that proves the set of its height (§10.5:
    receipts follow the rule of state sync)."""

    proof: ReceiptProof
    set_chain: SetChain


def decode_chained_receipt(raw: bytes) -> ChainedReceipt:
    if len(raw) > MAX_SETCHAIN_BYTES:
        raise CodecError(
            f"a receipt with its set chain of {len(raw)} bytes exceeds {MAX_SETCHAIN_BYTES}"
        )
    return ChainedReceipt.decode(raw, _LIMITS)


def verify_receipt(
    proof: ReceiptProof, chain: SetChain, *, chain_id: str, start: Start, delay: int
) -> tuple[validators.Record, ...]:
    """Check a receipt of a chain with validator-set changes: it is in its block, the set
    of its height is proven by chain from start, the chain's tail ends at its header, and
    q of that set signed the block. Returns that set; raises `BadSignature` (its
    subclasses `SetChainRefused`, `SetUnproven` for the set chain) otherwise."""
    proof.verify_inclusion(chain_id)
    height = proof.header.height
    proven = prove_set(chain, chain_id=chain_id, start=start, delay=delay, height=height)
    if proven.header is not None and proven.header.hash != proof.header.hash:
        raise SetChainRefused(
            f"the set chain's tail ends at another block of height {height} than the receipt's"
        )
    verify_certificate_by_id(proof.certificate, chain_id, proven.records)
    return proven.records
