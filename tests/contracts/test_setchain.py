"""Set chains (docs/CONSENSUS.md §10.5): the set of a height proven from genesis through
two real changes (a rotation, then an add), with real ML-DSA-65 commit certificates, and
every forged history refused with its reason."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import pytest

from contracts import setchain, validators
from contracts.execution import app_hash, execute_block
from contracts.setchain import (
    SetChain,
    SetChainRefused,
    SetUnproven,
    StateLeaf,
    StateProof,
    decode_set_chain,
    prove_set,
    verify_certificate_by_id,
)
from qchain.codec import encode_value
from qchain.errors import BadSignature, CodecError
from qchain.limits import MAX_MESSAGE
from qchain.store.schema import state_prefix

from .setchain_chain import CertifiedChain, certified_chain, schedule_change
from .validators_chain import add_args, governed_chain, new_key, rotate_args


@dataclass(frozen=True)
class History:
    cc: CertifiedChain
    r1: int
    e1: int
    r2: int
    e2: int
    top: int
    """The receipt's height: a block with a transaction, above both activations."""


@pytest.fixture(scope="module")
def history() -> History:
    cc = certified_chain(4, delay=2)
    cc.block()
    r1, e1 = schedule_change(cc, rotate_args(1, 0), key=0)
    while cc.chain.height < e1:
        cc.block()
    r2, e2 = schedule_change(cc, add_args(1, cc.chain.address("outsider")), key=1)
    while cc.chain.height < e2 + 3:
        cc.block()
    cc.block([cc.chain.tx("op3", validators.NAME, "update_endpoint", [3, "v3", "", ""])])
    return History(cc, r1, e1, r2, e2, cc.chain.height)


def _prove(h: History, chain: SetChain, height: int | None = None) -> setchain.ProvenSet:
    cc = h.cc
    return prove_set(
        chain,
        chain_id=cc.chain_id,
        start=cc.start(),
        delay=cc.delay,
        height=h.top if height is None else height,
    )


def _valid(h: History) -> SetChain:
    t = max(h.top - h.cc.delay, h.r2)
    return SetChain((h.cc.link(h.r1), h.cc.link(h.r2)), h.cc.tail(t, h.top))


def test_a_two_change_chain_proves_the_set_in_force_and_its_certificate_passes(
    history: History,
) -> None:
    h, cc = history, history.cc
    proven = _prove(h, _valid(h))
    assert proven.records == cc.set_at(h.top)
    assert [r.id for r in proven.records] == [0, 1, 2, 3, 4]
    assert proven.records[1].public_key == new_key(0).public_key
    assert proven.records[4].public_key == new_key(1).public_key
    assert proven.header == cc.headers[h.top]
    verify_certificate_by_id(cc.certificate(h.top), cc.chain_id, proven.records)
    # the genesis set does not sign for the top height: 0, 2 and 3 are 3 of q(5) = 4
    with pytest.raises(BadSignature, match="3 valid signatures of its set, 4 needed"):
        verify_certificate_by_id(cc.certificate(h.top, cc.set_at(1)), cc.chain_id, proven.records)
    # between the second scheduling block and its activation, the set is the first change's
    mid = h.e2 - 1
    t = max(mid - cc.delay, h.r2)
    proven = _prove(h, SetChain((cc.link(h.r1), cc.link(h.r2)), cc.tail(t, mid)), mid)
    assert proven.records == cc.set_at(mid) == cc.set_at(h.e1)
    # the chain survives its wire form
    raw = _valid(h).encode()
    assert decode_set_chain(raw).encode() == raw


def test_no_chain_is_the_genesis_set_only_where_no_change_can_have_activated(
    history: History,
) -> None:
    h, cc = history, history.cc
    empty = SetChain((), None)
    proven = _prove(h, empty, cc.delay)
    assert (proven.records, proven.header) == (cc.set_at(1), None)
    with pytest.raises(SetUnproven, match="without a tail"):
        _prove(h, empty, cc.delay + 1)
    with pytest.raises(SetUnproven, match="without a tail"):
        _prove(h, empty)
    # a tail at a height with no change yet proves the genesis set
    height = h.r1 - 1
    proven = _prove(h, SetChain((), cc.tail(height - cc.delay, height)), height)
    assert proven.records == cc.set_at(1)


def test_a_change_certified_by_a_set_not_in_force_is_refused(history: History) -> None:
    h, cc = history, history.cc
    # the first link's certificate by the set after its own change, trimmed to q(4) = 3
    # signers (1 with its new key, 2, 3): under V(r1) only 2 and 3 count
    after = [r for r in cc.set_at(h.e1) if r.id in (1, 2, 3)]
    forged = replace(cc.link(h.r1), certificate=cc.certificate(h.r1 + 1, after))
    chain = SetChain((forged, cc.link(h.r2)), _valid(h).tail)
    with pytest.raises(SetChainRefused, match=r"link 0 .*2 valid signatures.*under V\("):
        _prove(h, chain)
    # a set of strangers' keys under the genesis ids
    for i in range(5, 9):
        cc.signers[new_key(i).public_key] = new_key(i)
    strangers = [
        validators.Record(i, new_key(5 + i).public_key, f"x{i}", bytes(20)) for i in range(4)
    ]
    forged = replace(cc.link(h.r1), certificate=cc.certificate(h.r1 + 1, strangers))
    with pytest.raises(SetChainRefused, match="0 valid signatures"):
        _prove(h, SetChain((forged, cc.link(h.r2)), _valid(h).tail))


def test_a_certificate_of_the_wrong_height_is_refused(history: History) -> None:
    h, cc = history, history.cc
    link = cc.link(h.r1)
    wrong = replace(link, certificate=cc.certificate(h.r1))  # of r, the link ends at r + 1
    with pytest.raises(SetChainRefused, match="certificate is of height"):
        _prove(h, SetChain((wrong, cc.link(h.r2)), _valid(h).tail))
    # a certificate signed for another height under the right block hash
    cert = cc.certificate(h.r1 + 1)
    moved = replace(cert, height=h.r1 + 2)
    with pytest.raises(SetChainRefused, match="certificate is of height"):
        _prove(h, SetChain((replace(link, certificate=moved), cc.link(h.r2)), _valid(h).tail))
    # certified above the next activation: a scheduled change activates at or below c
    late = cc.link(h.r1, c=h.e1)
    with pytest.raises(SetChainRefused, match="activates at or below"):
        _prove(h, SetChain((late, cc.link(h.r2)), _valid(h).tail))


def test_a_skipped_change_is_refused(history: History) -> None:
    h, cc = history, history.cc
    with pytest.raises(SetChainRefused, match=rf"link 0 \(block {h.r2}\): its set is not V"):
        _prove(h, SetChain((cc.link(h.r2),), _valid(h).tail))


def test_a_reordered_chain_is_refused(history: History) -> None:
    h, cc = history, history.cc
    with pytest.raises(SetChainRefused, match="link 0"):
        _prove(h, SetChain((cc.link(h.r2), cc.link(h.r1)), _valid(h).tail))
    with pytest.raises(SetChainRefused, match="must ascend"):
        _prove(h, SetChain((cc.link(h.r1), cc.link(h.r1)), _valid(h).tail))


def test_a_block_that_scheduled_nothing_is_no_link(history: History) -> None:
    h, cc = history, history.cc
    # block r1 + 1 has the proof of a genuine state, certified by the set in force, but
    # scheduled nothing: one link is one scheduling block
    with pytest.raises(SetChainRefused, match="scheduled no change"):
        _prove(h, SetChain((cc.link(h.r1), cc.link(h.r1 + 1, c=h.r1 + 1)), _valid(h).tail))


def test_a_truncated_or_misplaced_tail_only_refuses(history: History) -> None:
    h, cc = history, history.cc
    valid = _valid(h)
    assert valid.tail is not None
    cut = replace(valid.tail, headers=valid.tail.headers[:-1])
    with pytest.raises(SetChainRefused, match="tail ends at header"):
        _prove(h, replace(valid, tail=cut))
    with pytest.raises(SetUnproven, match="without a tail"):
        _prove(h, replace(valid, tail=None))
    early = cc.tail(h.top - cc.delay - 1, h.top)
    with pytest.raises(SetChainRefused, match="not at t = max"):
        _prove(h, replace(valid, tail=early))
    # a tail whose proof is of the whole set state: a tail proves q only
    t = valid.tail.header.height
    state = cc.results[t].set_state
    assert state is not None
    with pytest.raises(SetChainRefused, match="of q only"):
        _prove(h, replace(valid, tail=replace(valid.tail, proof=state.prove())))
    # a tail whose headers do not chain to header t
    broken = (valid.tail.headers[1], valid.tail.headers[0], *valid.tail.headers[2:])
    with pytest.raises(SetChainRefused, match="does not follow"):
        _prove(h, replace(valid, tail=replace(valid.tail, headers=broken)))


def test_a_chain_that_ends_before_the_set_of_the_height_is_unproven(history: History) -> None:
    h, cc = history, history.cc
    t = h.top - cc.delay
    with pytest.raises(SetUnproven, match=r"q at \d+ is 2, the last link's 1"):
        _prove(h, SetChain((cc.link(h.r1),), cc.tail(t, h.top)))
    with pytest.raises(SetUnproven, match="the last link's 0"):
        _prove(h, SetChain((), cc.tail(t, h.top)))


def test_a_proof_that_does_not_open_the_header_is_refused(history: History) -> None:
    h, cc = history, history.cc
    link = cc.link(h.r2)
    leaves = list(link.proof.leaves)
    leaves[0] = replace(leaves[0], value=leaves[0].value[:-1] + b"\x00")
    tampered = replace(link, proof=replace(link.proof, leaves=tuple(leaves)))
    with pytest.raises(SetChainRefused, match=r"different roots|app hash"):
        _prove(h, SetChain((cc.link(h.r1), tampered), _valid(h).tail))
    swapped = replace(link, proof=cc.link(h.r1).proof)
    with pytest.raises(SetChainRefused, match="app hash"):
        _prove(h, SetChain((cc.link(h.r1), swapped), _valid(h).tail))


def test_oversize_input_is_refused_at_decoding(history: History) -> None:
    h, cc = history, history.cc
    with pytest.raises(CodecError, match="exceeds"):
        decode_set_chain(bytes(MAX_MESSAGE + 1))
    link = cc.link(h.r1)
    nine = encode_value([[link.to_wire()] * (setchain.MAX_LINKS + 1), None])
    with pytest.raises(CodecError):
        decode_set_chain(nine)
    eight = encode_value([[link.to_wire()] * setchain.MAX_LINKS, None])
    assert len(decode_set_chain(eight).links) == setchain.MAX_LINKS
    wire = link.to_wire()
    wire[1] = [cc.headers[h.r1 + 1].to_wire()] * setchain.MAX_LINK_HEADERS
    with pytest.raises(CodecError):
        decode_set_chain(encode_value([[wire], None]))
    wire[1] = [cc.headers[h.r1 + 1].to_wire()] * (setchain.MAX_LINK_HEADERS - 1)
    assert len(decode_set_chain(encode_value([[wire], None])).links[0].headers) == 63
    # a proof above 256 KB
    path = link.proof.leaves[0].path
    size = setchain.MAX_PROOF_BYTES
    big = StateProof(link.proof.chained, b"", (StateLeaf(validators.SET_KEY, bytes(size), path),))
    with pytest.raises(SetChainRefused, match="more than 262144 bytes"):
        big.open(cc.headers[h.r1].app_hash)
    wire = link.to_wire()
    wire[3] = [link.proof.chained, b"", [[validators.SET_KEY, bytes(size + 1), path.to_wire()]]]
    with pytest.raises(CodecError):
        decode_set_chain(encode_value([[wire], None]))
    with pytest.raises(SetChainRefused, match="outside"):
        prove_set(_valid(h), chain_id=cc.chain_id, start=cc.start(), delay=17, height=h.top)


def test_the_wrong_chain_id_is_refused(history: History) -> None:
    h, cc = history, history.cc
    with pytest.raises(SetChainRefused, match="for chain"):
        prove_set(_valid(h), chain_id="other", start=cc.start(), delay=cc.delay, height=h.top)


def test_the_app_hash_commits_to_set_schedule_and_q_only_with_reconfiguration() -> None:
    cc = certified_chain(4)
    result = cc.block()
    state = result.set_state
    assert state is not None and state.committed == result.app_hash
    prefix = state_prefix(validators.NAME)
    assert tuple(cc.chain.store.get(prefix + k) for k in setchain.SET_STATE_KEYS) == state.values
    assert set(state.prove().open(result.app_hash)) == set(setchain.SET_STATE_KEYS)
    plain = governed_chain(4, enabled=False)
    before = plain.app_hash
    r = plain.block()
    assert r.set_state is None
    assert r.app_hash == app_hash(before, r.write_set)


def test_at_a_checkpoint_height_the_proof_carries_the_state_root() -> None:
    """A chain with changes and checkpoints: the app hash wraps the set-state commitment
    in the checkpoint's, the snapshot's manifest still checks, and the proof opens."""
    cc = certified_chain(4)
    chain = cc.chain
    ctx = replace(chain.context(), state_root_interval=1)
    result = execute_block(chain.store, ctx, [])
    state, checkpoint = result.set_state, result.checkpoint
    assert state is not None and checkpoint is not None
    assert state.state_root == checkpoint.root
    assert checkpoint.chained == state.committed != result.app_hash
    checkpoint.manifest().check(ctx.height, result.app_hash)
    assert set(state.prove().open(result.app_hash)) == set(setchain.SET_STATE_KEYS)
    bare = replace(state.prove(), state_root=b"")
    with pytest.raises(SetChainRefused, match="app hash"):
        bare.open(result.app_hash)


def test_mutated_set_chains_are_refused_with_a_reason(history: History) -> None:
    """Any byte of a valid chain changed: the decoder refuses it, or the verifier does
    (with a reason), or the change left the chain's meaning intact (a signature byte
    of a certificate that still has q good signatures, say)."""
    h = history
    raw = bytearray(_valid(h).encode())
    rng = random.Random(21)
    outcomes = {"codec": 0, "refused": 0, "same": 0}
    for _ in range(60):
        mutated = bytearray(raw)
        i = rng.randrange(len(mutated))
        mutated[i] ^= 1 << rng.randrange(8)
        try:
            chain = decode_set_chain(bytes(mutated))
        except CodecError:
            outcomes["codec"] += 1
            continue
        try:
            proven = _prove(h, chain)
        except BadSignature as e:
            assert e.message
            outcomes["refused"] += 1
            continue
        assert proven.records == h.cc.set_at(h.top)
        outcomes["same"] += 1
    # most bytes are signatures of certificates signed by every member, of which q suffice
    assert outcomes["refused"] > 0 and sum(outcomes.values()) == 60
