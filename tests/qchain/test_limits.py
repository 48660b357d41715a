"""The size chain of `qchain.limits`, measured against the real encodings: the largest
block body makes the largest Propose, which fills one frame body exactly; and a
configuration that breaks the chain is refused, naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from consensus.messages import Block as CBlock
from consensus.messages import BlockResp, Propose, encode_message
from consensus.params import Params
from node.wire import Envelope, Kind, TxBatch, encode_body
from qchain.config import MempoolSection, P2PSection, load_config
from qchain.errors import CodecError, ConfigError
from qchain.keys import dev_key
from qchain.limits import (
    BLOCK_FRAMING,
    BLOCK_RESP_FRAMING,
    FRAME_BODY_MAX,
    MAX_BLOCK_BODY,
    MAX_BLOCK_TX_BYTES,
    MAX_FRAME,
    MAX_MESSAGE,
    PROPOSE_FRAMING,
    TX_BATCH_FRAMING,
    TX_BATCH_MAX_BYTES,
    TX_BATCH_PER_TX,
)
from qchain.qkd.frame import (
    DEFAULT_FRAME_LIMITS,
    FRAME_VERSION,
    MAX_ANNOUNCE,
    FrameHeader,
    decode_frame,
    encode_frame,
)
from qchain.qkd.source import KEY_ID_LEN
from qchain.types import MAX_BLOCK_TXS, MAX_TX_SIZE, Block, BlockHeader, new_transaction

U16 = 2**16 - 1
U32 = 2**32 - 1
U64 = 2**64 - 1
LONGEST = "c" * 64
H = bytes(32)

CONFIG = """
[node]
name = "v0"
index = 0
data_dir = "data"
genesis = "genesis.json"
signing_key = "v0.json"
profile = "test"

[p2p]
listen = "127.0.0.1:7000"

[qkd]
kme_url = "https://kme-a:8443"
sae_id = "sae-0"
"""


def _largest_propose(body_len: int) -> Propose:
    return Propose(LONGEST, U64, U64, CBlock(U64, H, U64, U16, bytes(body_len)))


def test_the_largest_propose_fills_one_frame_body() -> None:
    message = encode_message(_largest_propose(MAX_BLOCK_BODY))
    assert len(message) == MAX_MESSAGE == MAX_BLOCK_BODY + PROPOSE_FRAMING
    body = encode_body([Envelope(Kind.CONSENSUS, message)])
    assert len(body) <= FRAME_BODY_MAX == DEFAULT_FRAME_LIMITS.max_body
    header = FrameHeader(
        FRAME_VERSION,
        LONGEST,
        LONGEST,
        LONGEST,
        U64,
        bytes(KEY_ID_LEN),
        tuple(bytes([i % 256]) * KEY_ID_LEN for i in range(MAX_ANNOUNCE)),
    )
    frame = encode_frame(header, body, bytearray(32))
    assert len(frame) <= MAX_FRAME
    _, _, opened, _ = decode_frame(frame)
    assert bytes(opened) == body
    with pytest.raises(CodecError, match=r"block\.body: length"):
        encode_message(_largest_propose(MAX_BLOCK_BODY + 1))


def test_block_framing_is_what_a_block_adds_to_its_transactions() -> None:
    header = BlockHeader(LONGEST, U64, U32, U64, H, U16, H, H, H)
    tx = new_transaction(
        dev_key("limits", "a", "ed25519"),
        chain_id="c",
        nonce=0,
        contract="notary",
        method="anchor",
        args=[],
    )
    block = Block(header, (tx,) * MAX_BLOCK_TXS)
    assert len(block.encode()) - MAX_BLOCK_TXS * len(tx.encoded) == BLOCK_FRAMING
    assert MAX_BLOCK_TX_BYTES + BLOCK_FRAMING == MAX_BLOCK_BODY


def test_block_resp_and_tx_batch_framing() -> None:
    blocks = tuple(CBlock(U64, H, U64, U16, bytes(i)) for i in range(64))
    encoded = encode_message(BlockResp(LONGEST, blocks))
    assert len(encoded) - sum(len(b.encode()) for b in blocks) == BLOCK_RESP_FRAMING
    txs = (bytes(MAX_TX_SIZE),) * 16
    batch = TxBatch(txs).encode()
    assert len(batch) == TX_BATCH_FRAMING + 16 * (TX_BATCH_PER_TX + MAX_TX_SIZE)
    assert TX_BATCH_FRAMING + TX_BATCH_PER_TX + MAX_TX_SIZE <= TX_BATCH_MAX_BYTES < MAX_MESSAGE


def test_the_default_config_keeps_the_chain(tmp_path: Path) -> None:
    (tmp_path / "node.toml").write_text(CONFIG)
    cfg = load_config(tmp_path / "node.toml")
    assert cfg.mempool == MempoolSection()
    assert cfg.p2p.max_frame_bytes == P2PSection("x").max_frame_bytes
    largest_block = cfg.mempool.max_block_bytes + BLOCK_FRAMING
    assert largest_block <= MAX_BLOCK_BODY == Params(n=4).max_block_bytes
    message = encode_message(_largest_propose(largest_block))
    assert len(encode_body([Envelope(Kind.CONSENSUS, message)])) <= FRAME_BODY_MAX
    assert cfg.p2p.max_frame_bytes >= DEFAULT_FRAME_LIMITS.max_frame
    assert cfg.mempool.max_block_bytes >= MAX_TX_SIZE


@pytest.mark.parametrize(
    ("section", "line", "field"),
    [
        ("mempool", "max_block_bytes = 4194304", "mempool.max_block_bytes"),
        ("mempool", f"max_block_bytes = {MAX_BLOCK_TX_BYTES + 1}", "mempool.max_block_bytes"),
        ("mempool", "max_block_bytes = 0", "mempool.max_block_bytes"),
        ("mempool", f"max_block_txs = {MAX_BLOCK_TXS + 1}", "mempool.max_block_txs"),
        ("p2p", "max_frame_bytes = 4194304", "p2p.max_frame_bytes"),
    ],
)
def test_a_config_that_breaks_the_chain_is_refused(
    tmp_path: Path, section: str, line: str, field: str
) -> None:
    text = CONFIG.replace(f"[{section}]\n", f"[{section}]\n{line}\n")
    if f"[{section}]" not in CONFIG:
        text += f"\n[{section}]\n{line}\n"
    (tmp_path / "node.toml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "node.toml")
    assert info.value.field == field


def test_smaller_blocks_are_a_valid_config(tmp_path: Path) -> None:
    (tmp_path / "node.toml").write_text(CONFIG + "\n[mempool]\nmax_block_bytes = 32768\n")
    assert load_config(tmp_path / "node.toml").mempool.max_block_bytes == 32768


def test_params_refuse_a_block_cap_above_the_codec() -> None:
    with pytest.raises(ConfigError) as info:
        Params(n=4, max_block_bytes=MAX_BLOCK_BODY + 1)
    assert info.value.field == "max_block_bytes"
