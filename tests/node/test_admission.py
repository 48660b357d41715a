"""`Admission` with the admission bound: a client's transaction beyond the bound is
refused before its signature is checked, a peer's forwarded one is not, and the measured
rate comes from the node's own commits (a clock the test sets)."""

from __future__ import annotations

from typing import Any

import pytest

from devnet.network import account_key
from node.accounts import Admission
from node.backlog import Backlog
from node.mempool import Mempool, MempoolLimits
from node.metrics import NodeMetrics
from qchain.errors import Overloaded
from qchain.types import Transaction

from .test_mempool import CHAIN, Accounts, tx


class _Pacer:
    pending = None


class _CountingVerifier:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, t: Transaction, public_key: bytes) -> None:
        self.calls += 1
        t.verify_signature(public_key)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup() -> tuple[Admission, Accounts, _CountingVerifier, _Clock]:
    accounts = Accounts()
    for role in ("partner1", "partner2"):
        key = account_key(role, "ed25519")
        accounts.keys[key.address] = (key.scheme.value, key.public_key)
    verifier = _CountingVerifier()
    mempool = Mempool(CHAIN, MempoolLimits(max_txs=100, max_per_sender=50), accounts, verifier)
    clock = _Clock()
    events: list[Any] = []
    admission = Admission(
        mempool,
        accounts,  # type: ignore[arg-type]
        lambda: 0,
        False,
        _Pacer(),  # type: ignore[arg-type]
        NodeMetrics("admission-test"),
        events.append,
        Backlog(2000, 4),
        clock,
    )
    return admission, accounts, verifier, clock


def test_without_commit_history_the_static_limits_apply(setup: Any) -> None:
    admission, _, _, _ = setup
    for n in range(20):
        assert admission.admit(tx("partner1", n), local=True)
    assert admission.room() > 1_000_000


def test_beyond_the_bound_a_client_tx_is_refused_before_its_signature_is_checked(
    setup: Any,
) -> None:
    admission, _, verifier, clock = setup
    admission.backlog.committed(0.0, 16, 4)  # 2 local/s (and a fair share of 16/4/2 = 2/s)
    clock.now = 1.0
    assert admission.admit(tx("partner1", 0), local=True)
    clock.now = 2.0  # the oldest waited 1 s, half the bound: the node no longer keeps up
    assert admission.room() == 3
    for n in range(1, 4):
        assert admission.admit(tx("partner1", n), local=True)
    checked = verifier.calls
    with pytest.raises(Overloaded) as refused:
        admission.admit(tx("partner1", 4), local=True)
    assert verifier.calls == checked, "refused before the signature check"
    assert refused.value.retry_after_s == 1
    assert tx("partner1", 4).hash not in admission.mempool
    assert admission.room() == 0
    assert admission.overloaded().retry_after_s == 1
    # The same bytes again are no new transaction: answered as known, not refused.
    assert admission.admit(tx("partner1", 3), local=True) is False


def test_a_node_that_keeps_up_admits_within_the_static_limits(setup: Any) -> None:
    admission, _, _, clock = setup
    admission.backlog.committed(0.0, 4, 1)
    clock.now = 1.0
    for n in range(20):
        assert admission.admit(tx("partner1", n), local=True), "the oldest waited 0 s"


def test_forwarded_transactions_are_not_bounded(setup: Any) -> None:
    """A peer accepted them and keeps them until they commit: the static limits only."""
    admission, _, _, clock = setup
    admission.backlog.committed(0.0, 8, 2)
    clock.now = 1.0
    assert admission.admit(tx("partner1", 0), local=True)
    clock.now = 2.0
    assert admission.admit(tx("partner1", 1), local=True)
    with pytest.raises(Overloaded):
        admission.admit(tx("partner1", 2), local=True)
    for n in range(10):
        assert admission.admit(tx("partner2", n))


def test_commits_drain_the_backlog_and_feed_the_rate(setup: Any) -> None:
    admission, accounts, _, clock = setup
    admission.backlog.committed(0.0, 8, 2)
    clock.now = 1.0
    sent = [tx("partner1", n) for n in range(3)]
    admission.admit(sent[0], local=True)
    clock.now = 2.0
    admission.admit(sent[1], local=True)
    with pytest.raises(Overloaded):
        admission.admit(sent[2], local=True)
    accounts.nonces[sent[0].sender] = 2
    admission.on_commit(sent[:2], 1)
    assert len(admission.mempool) == 0
    # 4 local transactions committed in 2 s: 2/s; the pool is empty, nothing waits.
    assert admission.backlog.rates(2.0).local == pytest.approx(2.0)
    assert admission.room() > 1000
    assert admission.admit(sent[2], local=True)
    clock.now = 3.0  # the oldest has waited 1 s: the bound again (4 local in 3 s)
    assert admission.room() == 1
