"""The node reads the set of every height from the chain (`node.validatorsets`): the
engine's `StartHeight` and `Start` carry the sets of the `validators` contract's
executed state, certificates are checked by the set of their height, and an approved
add is linked before it counts (`node.setlinks`)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from consensus.sets import VSet
from contracts import validators
from contracts.testing import DevChain
from node.validatorsets import ChainSets
from qchain.errors import BadSignature, ConfigError, RotationNotSupported
from qchain.keys import Scheme, dev_key
from qchain.store import MemoryStore, schema
from qchain.types import CommitCertificate, CommitSignature, commit_sign_digest
from tests.contracts.validators_chain import (
    SEED,
    add_args,
    governed_chain,
    new_key,
    ready_signature,
    remove_args,
    rotate_args,
    send,
)


def sets_of(chain: DevChain) -> ChainSets:
    return ChainSets(chain.genesis, lambda: chain.store, lambda: chain.height)


def test_a_chain_without_changes_passes_no_set() -> None:
    chain = governed_chain(4, enabled=False)
    sets = sets_of(chain)
    start = sets.start_height(1, b"\x00" * 32, 0)
    assert (start.members, start.next_members) == (None, None)
    assert sets.history(0) == ()


def test_the_sets_of_each_height_follow_an_add_then_a_remove() -> None:
    chain = governed_chain(4, delay=2)
    sets = sets_of(chain)
    sizes: list[int] = []
    sets.sized = sizes.append  # the mempool's share follows it (Mempool.share_among)
    genesis = VSet((0, 1, 2, 3))
    assert sets.history(0) == ((1, genesis),)
    cid = cast(bytes, send(chain, "op0", "propose", add_args(0, chain.address("op0"))).result)
    for op in ("op0", "op1", "op2"):
        assert send(chain, op, "approve", [cid]).ok
    # approved, not ready: linked from approval, not a member of any set
    assert [m.id for m in sets.joiners()] == [4]
    assert sets.joiners()[0].public_key == new_key(0).public_key
    assert send(chain, "op1", "ready", [cid, ready_signature(chain, cid, 0), []]).ok
    e = chain.height + 2
    # StartHeight(e - 1) after block e - 2: V(e - 1) is the genesis set, V(e) has 4
    while chain.height < e - 2:
        chain.block()
    start = sets.start_height(e - 1, b"\x00" * 32, 0)
    assert (start.members, start.next_members) == (genesis, VSet((0, 1, 2, 3, 4)))
    assert sizes == [5]  # the larger of V(e - 1) and V(e): the joiner's share is kept
    assert sets.history(chain.height) == ((1, genesis), (e, VSet((0, 1, 2, 3, 4))))
    assert not sets.member_of(e - 1, 4, new_key(0).public_key, "sae-new-0")
    assert sets.member_of(e, 4, new_key(0).public_key, "sae-new-0")
    assert not sets.member_of(e, 4, new_key(1).public_key, "sae-new-0")  # by key too
    assert (sets.quorum(e - 1), sets.quorum(e)) == (3, 4)
    while chain.height < e:
        chain.block()
    assert sets.joiners() == ()
    rid = cast(bytes, send(chain, "op0", "propose", remove_args(1)).result)
    for op in ("op0", "op1", "op2"):  # op0 operates 0 and 4: four of five
        assert send(chain, op, "approve", [rid]).ok
    e2 = chain.height + 2
    while chain.height < e2 - 2:
        chain.block()
    start = sets.start_height(e2 - 1, b"\x00" * 32, 0)
    assert start.next_members == VSet((0, 2, 3, 4))
    sets.start_height(e2, b"\x00" * 32, 0)
    assert sizes == [5, 5, 4]
    assert [x for x, _ in sets.history(chain.height)] == [1, e, e2]


def test_certificates_are_checked_by_the_set_of_their_height() -> None:
    chain = governed_chain(4, delay=2)
    sets = sets_of(chain)
    cid = cast(bytes, send(chain, "op0", "propose", add_args(0, chain.address("op0"))).result)
    for op in ("op0", "op1", "op2"):
        assert send(chain, op, "approve", [cid]).ok
    assert send(chain, "op1", "ready", [cid, ready_signature(chain, cid, 0), []]).ok
    e = chain.height + 2
    while chain.height < e:
        chain.block()
    chain_id, block = chain.genesis.chain_id, b"\x11" * 32
    keys = {i: dev_key(SEED, f"validator-{i}", Scheme.ML_DSA_65) for i in range(4)}
    keys[4] = new_key(0)

    def cert(h: int, signers: list[int]) -> CommitCertificate:
        digest = commit_sign_digest(chain_id, h, block)
        return CommitCertificate(
            h, block, tuple(CommitSignature(i, keys[i].sign(digest)) for i in signers)
        )

    sets.check_certificate(cert(e - 1, [0, 1, 2]), chain_id)  # q(4) = 3 of V(e - 1)
    with pytest.raises(BadSignature):
        sets.check_certificate(cert(e, [0, 1, 2]), chain_id)  # q(5) = 4
    sets.check_certificate(cert(e, [0, 1, 2, 4]), chain_id)
    with pytest.raises(BadSignature):
        sets.check_certificate(cert(e - 1, [0, 1, 4]), chain_id)  # 4 not a member yet


def test_a_restored_store_and_an_unknown_id_are_refused_where_the_set_changes(
    tmp_path: Path,
) -> None:
    """§10.9's guard across a change is not built: a store with the amnesia mark is
    refused on a chain whose set changes (only there). An id the genesis does not hold
    may run only there (an added validator), with any key; a genesis id needs its key."""
    changing, fixed = sets_of(governed_chain(4)), sets_of(governed_chain(4, enabled=False))
    store = MemoryStore()
    store.put(schema.META_AMNESIA, b"")
    fixed.refuse_amnesia(store)
    with pytest.raises(ConfigError, match=r"§10\.9"):
        changing.refuse_amnesia(store)
    changing.refuse_amnesia(MemoryStore())
    path = tmp_path / "validator.key"
    new_key(3).save(path)
    assert changing.signing_key(4, path).public_key == new_key(3).public_key
    with pytest.raises(ConfigError, match=r"node\.index"):
        fixed.signing_key(4, path)
    with pytest.raises(ConfigError, match=r"node\.signing_key"):
        changing.signing_key(0, path)


def test_an_approved_rotation_stops_the_node_before_it_can_activate() -> None:
    """Rotation is not built (one id on two machines needs 10.6's per-end ranges): the
    first height started after its approval halts the node, D ≥ 2 heights before the
    rotation could activate."""
    chain = governed_chain(4, delay=2)
    sets = sets_of(chain)
    halted: list[str] = []
    sets.halt = halted.append
    rid = cast(bytes, send(chain, "op0", "propose", rotate_args(2, 5)).result)
    for op in ("op0", "op1"):
        assert send(chain, op, "approve", [rid]).ok
        sets.start_height(chain.height + 1, b"\x00" * 32, 0)
    assert halted == []
    assert send(chain, "op2", "approve", [rid]).ok
    sets.start_height(chain.height + 1, b"\x00" * 32, 0)
    assert len(halted) == 1 and "rotation of validator 2" in halted[0]
    assert sets.rotations() == [2]


def test_a_rotate_is_refused_before_it_can_be_approved() -> None:
    """The node's rule (`refuse_rotation`): a proposal of a rotate, and an approval of a
    rotate the state holds, are refused; other changes, and a cancel, are not; a chain
    without changes has no such rule."""
    chain = governed_chain(4, delay=2)
    sets = sets_of(chain)

    def probe(label: str, method: str, args: list[object]) -> None:
        sets.refuse_rotation(chain.tx(label, validators.NAME, method, args, nonce=99))

    # A rotate proposed before the rule (the contract takes it), and an add.
    rid = cast(bytes, send(chain, "op0", "propose", rotate_args(2, 5)).result)
    cid = cast(bytes, send(chain, "op0", "propose", add_args(0, chain.address("op0"))).result)
    with pytest.raises(RotationNotSupported, match="does not build rotation") as e:
        probe("op0", "propose", rotate_args(2, 6))
    assert e.value.code == "rotation-not-supported"
    assert e.value.fields() == {"method": "propose", "validator": 2}
    with pytest.raises(RotationNotSupported) as e:
        probe("op1", "approve", [rid])
    assert e.value.fields() == {"method": "approve", "validator": 2}
    probe("op1", "approve_cancel", [rid])
    probe("op1", "approve", [cid])
    probe("op1", "propose", remove_args(3))
    # Arguments that do not parse are the contract's to refuse.
    probe("op1", "approve", [b"short"])
    probe("op1", "propose", ["rotate"])
    plain = governed_chain(4, enabled=False)
    sets_of(plain).refuse_rotation(
        plain.tx("op0", validators.NAME, "propose", rotate_args(2, 5), nonce=99)
    )
