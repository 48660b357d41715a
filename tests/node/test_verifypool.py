"""Signature checks in worker processes (`node.verifypool`): the same decisions as the
inline check for every scheme, a worker that dies is replaced and its chunk checked again,
and closing leaves no process behind."""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

import pytest

from devnet.network import account_key
from devnet.testing import die_once_then_verify
from node.mempool import Mempool, MempoolLimits
from node.sigcache import SignatureCache
from node.verifypool import VerifyPool, chunks, default_workers
from qchain.errors import QChainError
from qchain.types import Transaction

from .test_mempool import CHAIN, Accounts, tx

SCHEMES = ("ed25519", "ml-dsa-65", "sm2")


def _signed(role: str, scheme: str, nonce: int) -> Transaction:
    from qchain.types import new_transaction

    return new_transaction(
        account_key(role, scheme),
        chain_id=CHAIN,
        nonce=nonce,
        contract="notary",
        method="anchor",
        args=[bytes([nonce]) * 32, "sha256", "t", "c", b""],
    )


def _resigned(t: Transaction, signature: bytes) -> Transaction:
    """t with another signature, encoded again."""
    return dataclasses.replace(t, signature=signature)


def _cases(accounts: Accounts) -> list[Transaction]:
    """Per scheme: valid, forged (a bit flipped), malformed (truncated, and empty), and
    signed by a key other than the sender's registered one."""
    out: list[Transaction] = []
    for scheme in SCHEMES:
        role = f"pool-{scheme}"
        key = account_key(role, scheme)
        accounts.keys[key.address] = (scheme, key.public_key)
        valid = _signed(role, scheme, 0)
        sig = valid.signature
        forged = _resigned(_signed(role, scheme, 1), bytes([sig[0] ^ 1]) + sig[1:])
        truncated = _resigned(_signed(role, scheme, 2), sig[:-1])
        empty = _resigned(_signed(role, scheme, 3), b"")
        other = account_key(f"other-{scheme}", scheme)
        stranger = _signed(f"other-{scheme}", scheme, 4)
        impostor = dataclasses.replace(stranger, sender=key.address)
        out += [valid, forged, truncated, empty, impostor.signed_by(other)]
    return out


def _inline_ok(t: Transaction, public_key: bytes) -> bool:
    try:
        t.verify_signature(public_key)
    except QChainError:
        return False
    return True


async def test_the_pool_confirms_exactly_what_the_inline_check_accepts() -> None:
    accounts = Accounts()
    txs = _cases(accounts)
    cache = SignatureCache()
    pool = VerifyPool(2, cache, accounts)
    try:
        await pool.prefetch(txs)
    finally:
        await pool.close()
    for t in txs:
        key = accounts.keys[t.sender][1]
        assert cache.known(t, key) == _inline_ok(t, key), (t.scheme, t.nonce)
    assert pool.verified == len(SCHEMES), "one valid transaction per scheme"


async def test_admission_decisions_are_the_same_with_and_without_the_pool() -> None:
    accounts = Accounts()
    txs = _cases(accounts)

    def decisions(mempool: Mempool) -> list[str]:
        out = []
        for t in txs:
            try:
                mempool.add(t, height=0, now=0.0)
                out.append("ok")
            except QChainError as e:
                out.append(e.code)
        return out

    limits = MempoolLimits(max_txs=100, max_per_sender=50)
    inline = decisions(Mempool(CHAIN, limits, accounts, SignatureCache()))
    cache = SignatureCache()
    pool = VerifyPool(1, cache, accounts)
    try:
        await pool.prefetch(txs)
    finally:
        await pool.close()
    pooled = decisions(Mempool(CHAIN, limits, accounts, cache))
    assert pooled == inline
    assert inline.count("ok") == len(SCHEMES)


async def test_a_worker_that_dies_is_replaced_and_its_chunk_checked_again(
    tmp_path: Path,
) -> None:
    accounts = Accounts()
    key = account_key("partner1", "ed25519")
    accounts.keys[key.address] = ("ed25519", key.public_key)
    txs = [tx("partner1", n) for n in range(40)]
    forged = _resigned(tx("partner1", 40), bytes(64))
    marker = tmp_path / "died"
    cache = SignatureCache()
    task = functools.partial(die_once_then_verify, str(marker))
    pool = VerifyPool(1, cache, accounts, task=task)
    try:
        await pool.prefetch([*txs, forged])
        assert marker.exists(), "the first worker died"
        assert pool.replaced == 1
        assert all(cache.known(t, key.public_key) for t in txs), "checked again, none lost"
        assert not cache.known(forged, key.public_key), "nothing accepted unverified"
    finally:
        await pool.close()


async def test_a_chunk_whose_worker_dies_twice_is_left_to_the_inline_check(
    tmp_path: Path,
) -> None:
    accounts = Accounts()
    key = account_key("partner1", "ed25519")
    accounts.keys[key.address] = ("ed25519", key.public_key)
    cache = SignatureCache()
    # The marker's directory does not exist: the task never creates it, every run dies.
    task = functools.partial(die_once_then_verify, str(tmp_path / "missing" / "m"))
    pool = VerifyPool(1, cache, accounts, task=task)
    t = tx("partner1", 0)
    try:
        await pool.prefetch([t])
        assert pool.replaced == 2
        assert not cache.known(t, key.public_key)
    finally:
        await pool.close()
    mempool = Mempool(CHAIN, MempoolLimits(), accounts, cache)
    assert mempool.add(t, height=0, now=0.0), "the inline check admits it"
    assert cache.known(t, key.public_key)


async def test_close_leaves_no_process_behind() -> None:
    accounts = Accounts()
    key = account_key("partner1", "ed25519")
    accounts.keys[key.address] = ("ed25519", key.public_key)
    cache = SignatureCache()
    pool = VerifyPool(2, cache, accounts)
    await pool.prefetch([tx("partner1", n) for n in range(80)])
    pids = pool.worker_pids()
    assert pids
    await pool.close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    await pool.prefetch([tx("partner1", 99)])
    assert not pool.worker_pids(), "a closed pool starts no worker"


def test_default_workers_and_chunks() -> None:
    assert default_workers(1) == 0
    assert default_workers(2) == 0, "one worker would fight the event loop for two cores"
    assert default_workers(8) == 7
    items = [(i.to_bytes(2, "big"), b"k") for i in range(1000)]
    parts = chunks(items, 3)
    assert [len(p) for p in parts] == [334, 334, 332]
    assert [len(p) for p in chunks(items[:10], 4)] == [10], "at least CHUNK_MIN per task"
    assert max(len(p) for p in chunks(items * 3, 1)) == 512
    assert sum(len(p) for p in chunks(items * 3, 1)) == 3000
