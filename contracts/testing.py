"""Test helpers: a dev genesis from deterministic keys, and `DevChain`, which executes and
commits blocks on a store the way a node does (without consensus). Used by the tests, the
test-vector generator and the execution benchmark. INSECURE keys: tests and devnets only."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from contracts import membership, notary
from contracts.execution import BlockContext, BlockResult, Verifier, execute_block, verify_signature
from contracts.genesis import Genesis, init_state, parse_genesis
from contracts.query import query
from contracts.state import StateReader
from qchain.keys import Scheme, SigningKey, dev_key
from qchain.store import Batch, KVStore
from qchain.types import MAX_TX_SIZE, Receipt, Transaction, new_transaction

CHAIN_ID = "qchain-test"
PILOT_MEMBERS: dict[str, tuple[str, ...]] = {
    "admin": ("admin",),
    "ent": ("partner",),
    "ent2": ("partner",),
    "prov": ("provider",),
    "bureau": ("auditor",),
    "auditor": ("auditor",),
}
"""One member per role; `bureau` becomes an issuer through `voucher_issuers`."""
GENESIS_TIME = 1_767_225_600_000
BLOCK_INTERVAL = 1000


def dev_genesis(
    members: Mapping[str, Sequence[str]],
    *,
    seed: str = "qchain-test",
    scheme: Scheme = Scheme.ED25519,
    schemes: Mapping[str, Scheme] | None = None,
    validators: int = 1,
    chain_id: str = CHAIN_ID,
    voucher_issuers: Sequence[str] = (),
) -> tuple[Genesis, dict[str, SigningKey]]:
    """A genesis whose members are dev keys labelled by the mapping's keys (label ->
    roles), and those keys."""
    keys = {label: dev_key(seed, label, (schemes or {}).get(label, scheme)) for label in members}
    doc = {
        "chain_id": chain_id,
        "genesis_time": GENESIS_TIME,
        "consensus": {"tenure": 64, "first_leader": 0},
        "validators": [
            {
                "index": i,
                "name": f"validator-{i}",
                "public_key": dev_key(seed, f"validator-{i}", Scheme.ML_DSA_65).public_key.hex(),
                "sae_id": f"sae-{i}",
            }
            for i in range(validators)
        ],
        "members": [
            {
                "name": label,
                "scheme": keys[label].scheme.value,
                "public_key": keys[label].public_key.hex(),
                "roles": list(roles),
            }
            for label, roles in members.items()
        ],
        "voucher_issuers": [keys[label].address.hex() for label in voucher_issuers],
    }
    return parse_genesis(doc), keys


def digest(label: str) -> bytes:
    """A SHA-256 document digest for tests."""
    return hashlib.sha256(label.encode()).digest()


def sized_anchor_many(
    key: SigningKey, *, chain_id: str, nonce: int, label: str, size: int = MAX_TX_SIZE
) -> Transaction:
    """A signed `notary.anchor_many` of exactly `size` encoded bytes (by default the
    largest transaction there is), whose digests are unique to label and nonce: full items
    of the largest metadata, and one more whose metadata takes up the rest."""

    def build(metadata: list[int]) -> Transaction:
        items = [
            [digest(f"{label}/{nonce}/{i}"), "sha256", "t", "c", bytes(m)]
            for i, m in enumerate(metadata)
        ]
        return new_transaction(
            key,
            chain_id=chain_id,
            nonce=nonce,
            contract=notary.NAME,
            method="anchor_many",
            args=[items],
        )

    one = len(build([notary.MAX_METADATA]).encoded)
    full = one - len(build([]).encoded)
    metadata = [notary.MAX_METADATA] * ((size - one) // full + 1) + [0]
    for _ in range(4):
        tx = build(metadata)
        gap = size - len(tx.encoded)
        if gap == 0:
            return tx
        metadata[-1] += gap
        if not 0 <= metadata[-1] <= notary.MAX_METADATA:
            break
    raise ValueError(f"no anchor_many of exactly {size} bytes")


def pilot_chain(store: KVStore, *, scheme: Scheme = Scheme.ED25519) -> DevChain:
    """A chain on store with `PILOT_MEMBERS`."""
    genesis, keys = dev_genesis(PILOT_MEMBERS, scheme=scheme, voucher_issuers=["bureau"])
    return DevChain(store, genesis, keys)


@dataclass
class DevChain:
    """A chain on one store: genesis applied, blocks executed and committed in order."""

    store: KVStore
    genesis: Genesis
    keys: dict[str, SigningKey]
    app_hash: bytes = b""
    height: int = 0
    time: int = GENESIS_TIME
    verifier: Verifier = verify_signature
    nonces: dict[bytes, int] = field(default_factory=dict)
    addresses: dict[str, bytes] = field(default_factory=dict)
    """Address per label, fixed when first seen, so a rotated key keeps its address."""
    results: list[BlockResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        state = init_state(self.store, self.genesis)
        batch = Batch()
        for key, value in state.write_set:
            if value is not None:
                batch.put(key, value)
        self.store.write(batch)
        self.app_hash = state.app_hash
        for label in self.keys:
            self.address(label)

    def address(self, label: str) -> bytes:
        return self.addresses.setdefault(label, self.keys[label].address)

    def tx(
        self,
        label: str,
        contract: str,
        method: str,
        args: Sequence[object],
        *,
        nonce: int | None = None,
        expiry_height: int = 0,
    ) -> Transaction:
        """A transaction signed by the labelled key, with the next nonce this helper
        expects for it (counted over transactions it built)."""
        key = self.keys[label]
        sender = self.address(label)
        n = self.nonces.get(sender, 0) if nonce is None else nonce
        self.nonces[sender] = n + 1
        return new_transaction(
            key,
            sender=sender,
            chain_id=self.genesis.chain_id,
            nonce=n,
            contract=contract,
            method=method,
            args=list(args),
            expiry_height=expiry_height,
        )

    def sync_nonces(self) -> None:
        """Take every labelled sender's next nonce from committed state (after transactions
        were built that never got into a block)."""
        state = StateReader(self.store, membership.NAME)
        self.nonces = {a: membership.get_nonce(state, a) for a in self.addresses.values()}

    def context(self) -> BlockContext:
        return BlockContext(
            self.genesis.chain_id,
            self.height + 1,
            self.time + BLOCK_INTERVAL,
            self.app_hash,
            self.genesis.state_root_interval,
        )

    def execute(self, txs: Sequence[Transaction]) -> BlockResult:
        """Execute the next block without committing it."""
        return execute_block(self.store, self.context(), txs, verifier=self.verifier)

    def block(self, txs: Sequence[Transaction] = ()) -> BlockResult:
        """Execute and commit the next block."""
        ctx = self.context()
        result = execute_block(self.store, ctx, txs, verifier=self.verifier)
        batch = Batch()
        result.to_batch(batch)
        self.store.write(batch)
        self.height, self.time, self.app_hash = ctx.height, ctx.time, result.app_hash
        self.results.append(result)
        return result

    def run(self, tx: Transaction) -> Receipt:
        """Commit a block holding only tx; its receipt."""
        return self.block([tx]).receipts[0]

    def query(self, contract: str, method: str, args: Sequence[object]) -> object:
        return query(self.store, contract, method, list(args))
