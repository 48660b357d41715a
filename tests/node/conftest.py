"""A `NodeService` over a memory store with real blocks, for the HTTP API tests.

`FakeNode` admits transactions with the checks the runtime will make (chain id, size,
signature, membership, nonce) and raises the same `qchain.errors` exceptions; a test
commits the pending transactions with `commit_pending()`, which builds a real block with
real receipts and a commit certificate signed by dev validator keys, and publishes the
block's events. `ApiHarness` serves the API on 127.0.0.1 and checks every response
against `node/openapi.yaml`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from contracts import notary
from contracts.query import query as contract_query
from contracts.setchain import SetChain
from node.backlog import Backlog
from node.chainstore import ChainStore
from node.events import EventBus
from node.http.api import make_api_app
from node.http.state import openapi_spec
from node.http.testing import start_api
from node.metrics import NodeMetrics
from node.service import EventStream, TxStatus
from node.setchains import SetChains
from qchain.errors import (
    ArgumentError,
    BadSignature,
    MempoolFull,
    NonceMismatch,
    NotAMember,
    NotGoverned,
    Overloaded,
    UnknownContract,
    UnknownMethod,
    WrongChain,
)
from qchain.hashing import Domain, hash_domain
from qchain.keys import SigningKey, address_of, dev_key
from qchain.store.memory import MemoryStore
from qchain.types import (
    Block,
    BlockHeader,
    CommitCertificate,
    CommitSignature,
    Event,
    Receipt,
    ReceiptProof,
    Transaction,
    ValidatorKey,
    commit_sign_digest,
    decode_transaction,
    new_transaction,
    receipts_root,
    tx_root,
)

CHAIN_ID = "api-test"
VALIDATOR_KEYS = [dev_key("api-test", f"validator-{i}") for i in range(4)]
VALIDATORS = [ValidatorKey(k.scheme.value, k.public_key) for k in VALIDATOR_KEYS]
PARTNERS = [dev_key("api-test", f"partner-{i}", "ed25519") for i in range(3)]
OUTSIDER = dev_key("api-test", "outsider", "ed25519")


class FakeNode:
    """Implements `NodeService` over a `ChainStore` in memory."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self._chain = ChainStore(self.store)
        self._chain.init_meta(CHAIN_ID, bytes(32))
        self.members = {k.address for k in PARTNERS}
        self.nonces: dict[bytes, int] = {a: 0 for a in self.members}
        self.pending: dict[bytes, Transaction] = {}
        self.bus = EventBus(capacity=64, queue_size=16)
        self.metrics = NodeMetrics("api-test")
        self.ready = True
        self.reasons: list[str] = []
        self.waiting = asyncio.Event()
        self._committed = asyncio.Event()
        self.fail_status = False
        self.capacity: int | None = None
        """Pending transactions the fake mempool holds before refusing (None: no limit)."""
        self.now = 0.0
        """The fake's monotonic clock (seconds), for the admission bound."""
        self.preverified: list[Transaction] = []
        """What the API asked to check off the event loop (`preverify`)."""
        self.backlog = Backlog(0, 1)
        """The admission bound, the node's own rule; off (0 ms) unless a test sets one."""
        self.set_chains: SetChains | None = None
        """The set chains of a governed chain's store; None: the set never changes."""

    # NodeService

    @property
    def chain_id(self) -> str:
        return CHAIN_ID

    @property
    def node_name(self) -> str:
        return "fake-0"

    @property
    def chain(self) -> ChainStore:
        return self._chain

    def submit(self, raw: bytes) -> tuple[TxStatus, bool]:
        return self.submit_tx(decode_transaction(raw))

    def submit_tx(self, tx: Transaction) -> tuple[TxStatus, bool]:
        known = self.tx_status(tx.hash)
        if known is not None:
            return known, False
        self.backlog.check(len(self.pending), self.now, len(self.pending))
        if tx.chain_id != CHAIN_ID:
            raise WrongChain(CHAIN_ID, tx.chain_id)
        if tx.sender not in self.members:
            raise NotAMember(tx.sender.hex())
        if address_of(tx.scheme, tx.public_key) != tx.sender:
            raise BadSignature("public key is not the sender's")
        tx.verify_signature(tx.public_key)
        expected = self.next_nonce(tx.sender)
        if tx.nonce != expected:
            raise NonceMismatch(expected, tx.nonce)
        if self.capacity is not None and len(self.pending) >= self.capacity:
            raise MempoolFull("transaction count limit reached")
        self.pending[tx.hash] = tx
        return TxStatus(tx.hash, "pending"), True

    async def preverify(self, txs: Sequence[Transaction]) -> None:
        self.preverified.extend(txs)

    def admission_room(self) -> int:
        return self.backlog.room(len(self.pending), self.now, len(self.pending))

    def overloaded(self) -> Overloaded:
        return self.backlog.refusal(len(self.pending), self.now, len(self.pending))

    def next_nonce(self, sender: bytes) -> int:
        return self.nonces[sender] + sum(1 for t in self.pending.values() if t.sender == sender)

    def tx_status(self, tx_hash: bytes) -> TxStatus | None:
        if tx_hash in self.pending:
            return TxStatus(tx_hash, "pending")
        receipt = self._chain.receipt(tx_hash)
        if receipt is None:
            return None
        return TxStatus(tx_hash, "committed", receipt.height, receipt.index, receipt)

    def transaction(self, tx_hash: bytes) -> Transaction | None:
        if tx_hash in self.pending:
            return self.pending[tx_hash]
        loc = self._chain.tx_location(tx_hash)
        if loc is None:
            return None
        block = self._chain.block(loc.height)
        return None if block is None else block.txs[loc.index]

    async def wait_committed(self, tx_hash: bytes, timeout_s: float) -> TxStatus | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            st = self.tx_status(tx_hash)
            if st is not None and st.state == "committed":
                return st
            committed = self._committed
            self.waiting.set()
            try:
                await asyncio.wait_for(committed.wait(), deadline - loop.time())
            except TimeoutError:
                return None

    def receipt_proof(self, tx_hash: bytes) -> ReceiptProof | None:
        return self._chain.receipt_proof(tx_hash)

    def set_chain(self, height: int) -> SetChain:
        if self.set_chains is None:
            raise NotGoverned()
        return self.set_chains.build(height)

    def account(self, address: bytes) -> Mapping[str, Any] | None:
        if address not in self.members:
            return None
        return {
            "nonce": self.nonces[address],
            "pending_nonce": self.next_nonce(address),
            "roles": ["member"],
            "public_key": None,
        }

    def query(self, contract: str, method: str, args: Mapping[str, Any]) -> object:
        if contract == notary.NAME:
            return contract_query(self.store, contract, method, dict(args))
        if contract != "membership":
            raise UnknownContract(contract)
        if method != "member":
            raise UnknownMethod(contract, method, "query")
        if set(args) != {"address"}:
            raise ArgumentError("address", "exactly one argument, address, is expected")
        address = args["address"]
        if isinstance(address, str):
            try:
                address = bytes.fromhex(address.removeprefix("0x"))
            except ValueError:
                raise ArgumentError("address", "not hex") from None
        if not isinstance(address, bytes) or len(address) != 20:
            raise ArgumentError("address", "expected 20 bytes")
        if address not in self.members:
            return None
        return [address, self.nonces[address], ["member"]]

    def status(self) -> Mapping[str, Any]:
        if self.fail_status:
            raise RuntimeError("status exploded")
        return {
            "node": "fake-0",
            "chain_id": CHAIN_ID,
            "height": self._chain.height(),
            "round": 0,
            "leader": 0,
            "peers": ["fake-1", "fake-2", "fake-3"],
            "syncing": False,
        }

    def qkd_status(self) -> Mapping[str, Any]:
        return {
            "sae_id": "sae-0",
            "links": {"sae-1": {"peer": 1, "pool_keys": 60, "consumed": 4, "waits": 0}},
        }

    def events(self, last_event_id: int | None) -> EventStream:
        return self.bus.subscribe(last_event_id)

    def health(self) -> tuple[bool, Sequence[str]]:
        return self.ready, self.reasons

    def metrics_text(self) -> bytes:
        return self.metrics.exposition()

    # test controls

    def commit_pending(self) -> Block:
        """Commit every pending transaction as the next block, certificate included."""
        txs = tuple(self.pending.values())
        self.pending.clear()
        height = self._chain.height() + 1
        receipts = []
        for i, tx in enumerate(txs):
            ok = tx.method != "fail"
            receipts.append(
                Receipt(
                    tx.hash,
                    height,
                    i,
                    ok,
                    "" if ok else "rule-violation",
                    "" if ok else "the contract said no",
                    [tx.nonce, tx.sender],
                    (Event(tx.contract, "called", [tx.method]),),
                )
            )
            self.nonces[tx.sender] += 1
        parent = self._chain.block_hash(height - 1) or bytes(32)
        header = BlockHeader(
            CHAIN_ID,
            height,
            0,
            1_700_000_000_000 + height * 1000,
            parent,
            0,
            tx_root(txs),
            receipts_root(receipts),
            hash_domain(Domain.TX, f"state-{height}".encode()),
        )
        block = Block(header, txs)
        digest = commit_sign_digest(CHAIN_ID, height, block.hash)
        cert = CommitCertificate(
            height,
            block.hash,
            tuple(CommitSignature(i, VALIDATOR_KEYS[i].sign(digest)) for i in range(3)),
        )
        self.store.write(self._chain.commit_batch(block, receipts, []), sync=True)
        self._chain.put_certificate(cert)
        # The fake's chain is saturated: a bound a test sets applies at once.
        self.backlog.committed(self.now, len(txs), len(txs), True)
        self.metrics.observe_commit(height, len(txs), 1.0)
        self.bus.publish_commit(block, receipts)
        done, self._committed = self._committed, asyncio.Event()
        done.set()
        return block


def make_tx(
    key: SigningKey,
    nonce: int,
    method: str = "register",
    args: Sequence[object] = (),
    chain_id: str = CHAIN_ID,
) -> Transaction:
    return new_transaction(
        key,
        chain_id=chain_id,
        nonce=nonce,
        contract="membership",
        method=method,
        args=list(args),
    )


@pytest.fixture
def fake_node() -> FakeNode:
    """A node with two committed blocks: 3 transactions, then 2 (one failed)."""
    node = FakeNode()
    for k in PARTNERS:
        node.submit(make_tx(k, 0, args=[b"\x01", "x"]).encode())
    node.commit_pending()
    node.submit(make_tx(PARTNERS[0], 1, method="fail").encode())
    node.submit(make_tx(PARTNERS[1], 1).encode())
    node.commit_pending()
    return node


# --- schema checking ---------------------------------------------------------------------

_SPEC_URI = "urn:qchain-api"


def _pointer_escape(s: str) -> str:
    return s.replace("~", "~0").replace("/", "~1")


class SpecChecker:
    """Finds a request's operation in openapi.yaml and validates responses against it."""

    def __init__(self) -> None:
        self.spec = openapi_spec()
        doc = {**self.spec, "$id": _SPEC_URI}
        self.registry: Registry[Any] = Registry().with_resource(
            _SPEC_URI, Resource.from_contents(doc, default_specification=DRAFT202012)
        )
        self.checked: set[tuple[str, str, str]] = set()

    def route(self, path: str) -> str:
        """The spec path template matching a concrete path (literal segments first)."""
        parts = path.split("/")
        best: tuple[int, str] | None = None
        for template in self.spec["paths"]:
            tparts = template.split("/")
            if len(tparts) != len(parts):
                continue
            params = 0
            for t, p in zip(tparts, parts, strict=True):
                if t.startswith("{") and t.endswith("}"):
                    params += 1
                elif t != p:
                    break
            else:
                if best is None or params < best[0]:
                    best = (params, template)
        if best is None:
            raise AssertionError(f"no spec path matches {path}")
        return best[1]

    def check(self, method: str, path: str, status: int, ctype: str, body: bytes) -> None:
        template = self.route(path)
        op = self.spec["paths"][template].get(method.lower())
        assert op is not None, f"{method} {template} is not in the spec"
        responses = op["responses"]
        key = str(status) if str(status) in responses else "default"
        assert key in responses, f"{method} {template}: status {status} not in the spec"
        response = responses[key]
        ptr_base = f"/paths/{_pointer_escape(template)}/{method.lower()}/responses/{key}"
        if "$ref" in response:
            ptr_base = response["$ref"].removeprefix("#")
            response = self.spec["components"]["responses"][response["$ref"].split("/")[-1]]
        content = response.get("content", {})
        media = ctype.split(";")[0].strip()
        assert media in content, f"{method} {template} {status}: {media} not in the spec"
        self.checked.add((method.upper(), template, str(status)))
        if media.endswith("json"):
            ref = f"{_SPEC_URI}#{ptr_base}/content/{_pointer_escape(media)}/schema"
            validator = Draft202012Validator({"$ref": ref}, registry=self.registry)
            errors = list(validator.iter_errors(json.loads(body)))
            assert not errors, f"{method} {path} {status}: {errors[0].message}"


@pytest.fixture(scope="session")
def spec_checker() -> SpecChecker:
    return SpecChecker()


@dataclass
class Resp:
    status: int
    headers: Mapping[str, str]
    body: bytes
    content_type: str

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class ApiHarness:
    """A running API over a FakeNode, with a session whose answers are spec-checked."""

    node: FakeNode
    url: str
    session: aiohttp.ClientSession
    checker: SpecChecker
    extra: dict[str, Any] = field(default_factory=dict)

    async def request(self, method: str, path: str, *, check: bool = True, **kw: Any) -> Resp:
        async with self.session.request(method, self.url + path, **kw) as r:
            body = await r.read()
            resp = Resp(r.status, dict(r.headers), body, r.headers.get("Content-Type", ""))
        if check:
            self.checker.check(method, path.split("?")[0], resp.status, resp.content_type, body)
        if resp.status >= 400:
            assert resp.content_type == "application/problem+json", resp.body
        return resp


async def serve(node: FakeNode, checker: SpecChecker, **options: Any) -> tuple[ApiHarness, Any]:
    opts = {"max_body_bytes": 256 * 1024, "rate_limit_per_s": 0, "metrics": node.metrics}
    opts.update(options)
    app = make_api_app(node, **opts)
    runner, port = await start_api(app, "127.0.0.1", 0)
    session = aiohttp.ClientSession()
    return ApiHarness(node, f"http://127.0.0.1:{port}", session, checker), runner


@pytest.fixture
async def api(fake_node: FakeNode, spec_checker: SpecChecker) -> AsyncIterator[ApiHarness]:
    harness, runner = await serve(fake_node, spec_checker)
    try:
        yield harness
    finally:
        await harness.session.close()
        await runner.cleanup()
