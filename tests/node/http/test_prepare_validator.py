"""A partner without the SDK against a real validator (started in process, serving its real
API on 127.0.0.1): it builds a notary anchor as JSON, asks `POST /v1/txs/prepare` what to
sign, signs with `cryptography`'s Ed25519 alone, submits the JSON form and sees it commit,
with the hash it computed itself; a signature over anything else is refused. A second
partner signs with the `openssl` command-line tool, outside Python altogether."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from devnet.network import account_key
from devnet.spawn import qchain_argv
from devnet.testing import inproc_network
from node.runtime import Validator
from qchain.cli_client import user_language
from qchain.client import AsyncClient
from qchain.errors import ApiError
from qchain.qkd.testing import wait_until

PROBLEMS = "https://qchain.dev/problems/"


class Partner:
    """The partner's side: JSON over HTTP, Ed25519 from `cryptography`, hashlib."""

    def __init__(self, session: aiohttp.ClientSession, url: str, chain_id: str) -> None:
        dev = account_key("partner1", "ed25519")  # the devnet's published dev account
        self.private = Ed25519PrivateKey.from_private_bytes(dev.seed)
        self.public_key = dev.public_key.hex()
        self.session = session
        self.url = url
        self.chain_id = chain_id

    async def call(self, method: str, path: str, doc: object = None) -> tuple[int, Any]:
        async with self.session.request(method, self.url + path, json=doc) as r:
            return r.status, await r.json(content_type=None)

    def anchor(self, nonce: int, digest: bytes, **fields: Any) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "nonce": nonce,
            "contract": "notary",
            "method": "anchor",
            "args": [{"hex": digest.hex()}, "sha256", "contract 2026-117", "report", {"hex": ""}],
            "scheme": "ed25519",
            "public_key": self.public_key,
            **fields,
        }

    def sign_for_chain(self, body_hex: str, chain_id: str) -> str:
        """A body prepared for this chain, signed as if for another: its chain id (field
        0, a fixstr: docs/TRANSACTIONS.md, section 3) replaced by hand."""
        old, new = self.chain_id.encode(), chain_id.encode()
        assert len(old) < 32 and len(new) < 32
        body = bytes.fromhex(body_hex)
        assert body[: 2 + len(old)] == b"\x99" + bytes([0xA0 | len(old)]) + old
        other = b"\x99" + bytes([0xA0 | len(new)]) + new + body[2 + len(old) :]
        digest = hashlib.sha256(b"\x0eqchain/tx-sign" + other).digest()
        return self.private.sign(digest).hex()

    async def prepare_and_sign(self, unsigned: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
        """The JSON form signed, its hash, and the body prepare answered."""
        status, prepared = await self.call("POST", "/v1/txs/prepare", unsigned)
        assert status == 200, prepared
        body = bytes.fromhex(prepared["body"])
        assert hashlib.sha256(b"\x0eqchain/tx-sign" + body).hexdigest() == prepared["sign_bytes"]
        signature = self.private.sign(bytes.fromhex(prepared["sign_bytes"])).hex()
        doc = dict(prepared["transaction"], signature=signature)
        encoded = bytes.fromhex(prepared["signed_prefix"]) + b"\xc4\x40" + bytes.fromhex(signature)
        return doc, hashlib.sha256(b"\x09qchain/tx" + encoded).hexdigest(), prepared["body"]


@pytest.fixture
async def validator(tmp_path: Path) -> AsyncIterator[Validator]:
    async with inproc_network(tmp_path, heartbeat_ms=200, validators=1) as nodes:
        await wait_until(lambda: nodes[0].chain.height() >= 1, timeout=30)
        yield nodes[0]


async def test_a_partner_signs_outside_and_the_validator_commits(validator: Validator) -> None:
    async with aiohttp.ClientSession() as session:
        partner = Partner(session, f"http://{validator.cfg.api.listen}", validator.chain_id)
        status, account = await partner.call(
            "GET", f"/v1/accounts/{account_key('partner1', 'ed25519').address.hex()}"
        )
        assert status == 200, account
        nonce = account.get("pending_nonce", account["nonce"])
        digest = hashlib.sha256(b"the signed contract").digest()

        doc, tx_hash, _ = await partner.prepare_and_sign(partner.anchor(nonce, digest))
        status, answer = await partner.call("POST", "/v1/txs?wait=commit&timeout=60", doc)
        assert status == 200, answer
        assert answer["status"] == "committed"
        assert answer["tx_hash"] == tx_hash
        assert answer["receipt"]["ok"], answer["receipt"]
        status, found = await partner.call(
            "GET", f"/v1/contracts/notary/get?digest=%7B%22hex%22%3A%22{digest.hex()}%22%7D"
        )
        assert status == 200, found

        # The next one, signed, then changed: refused, nothing admitted.
        other = hashlib.sha256(b"another contract").digest()
        doc, _, body = await partner.prepare_and_sign(partner.anchor(nonce + 1, other))
        tampered = [
            ({"args": [{"hex": digest.hex()}, *doc["args"][1:]]}, "bad-signature"),
            ({"method": "anchor_many"}, "bad-signature"),
            ({"expiry_height": 1_000_000}, "bad-signature"),
            ({"chain_id": "qchain-devnet-elsewhere"}, "wrong-chain"),
        ]
        for change, expected in tampered:
            status, problem = await partner.call("POST", "/v1/txs", {**doc, **change})
            assert (status, problem["type"]) == (422, PROBLEMS + expected), (change, problem)

        # A signature over the same transaction for another chain, submitted here.
        status, problem = await partner.call(
            "POST", "/v1/txs", {**doc, "signature": partner.sign_for_chain(body, "qchain-x")}
        )
        assert (status, problem["type"]) == (422, PROBLEMS + "bad-signature"), problem

        # The untampered one commits.
        status, answer = await partner.call("POST", "/v1/txs?wait=commit&timeout=60", doc)
        assert (status, answer["status"]) == (200, "committed"), answer


async def test_a_signature_made_by_the_openssl_tool_commits(
    validator: Validator, tmp_path: Path
) -> None:
    """The bytes `prepare` answers, signed by `openssl pkeyutl` (no Python in the signing
    path), submitted as JSON: committed; the same signature on a changed title: refused."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    async with aiohttp.ClientSession() as session:
        partner = Partner(session, f"http://{validator.cfg.api.listen}", validator.chain_id)
        key_pem = tmp_path / "partner1.pem"
        key_pem.write_bytes(
            partner.private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_pem.chmod(0o600)
        address = account_key("partner1", "ed25519").address.hex()
        status, account = await partner.call("GET", f"/v1/accounts/{address}")
        assert status == 200, account
        nonce = account.get("pending_nonce", account["nonce"])
        digest = hashlib.sha256(b"signed by openssl").digest()
        status, prepared = await partner.call(
            "POST", "/v1/txs/prepare", partner.anchor(nonce, digest)
        )
        assert status == 200, prepared
        message = tmp_path / "sign_bytes"
        message.write_bytes(bytes.fromhex(prepared["sign_bytes"]))
        signed = subprocess.run(
            [openssl, "pkeyutl", "-sign", "-rawin", "-inkey", str(key_pem), "-in", str(message)],
            capture_output=True,
            check=True,
        )
        assert len(signed.stdout) == 64, signed.stderr
        doc = dict(prepared["transaction"], signature=signed.stdout.hex())
        changed = {**doc, "args": [*doc["args"][:2], "another title", *doc["args"][3:]]}
        status, problem = await partner.call("POST", "/v1/txs", changed)
        assert (status, problem["type"]) == (422, PROBLEMS + "bad-signature"), problem
        status, answer = await partner.call("POST", "/v1/txs?wait=commit&timeout=60", doc)
        assert (status, answer["status"]) == (200, "committed"), answer


async def test_problem_titles_come_in_the_users_language(
    validator: Validator, tmp_path: Path
) -> None:
    """The SDK sends its `language`, the CLI the user's locale: the node's problem titles
    come back in Chinese for a zh_CN user, in English otherwise."""
    url = f"http://{validator.cfg.api.listen}"
    for language, title in ((None, "Not found"), ("zh-CN", "未找到")):
        async with AsyncClient(url, language=language) as client:
            with pytest.raises(ApiError) as caught:
                await client.receipt_bytes("00" * 32)
        assert (caught.value.code, caught.value.title) == ("not-found", title)
    for lang, title in (("zh_CN.UTF-8", "未找到"), ("en_US.UTF-8", "Not found")):
        env = {**os.environ, "LANG": lang, "LC_ALL": "", "LC_MESSAGES": ""}
        proc = await asyncio.create_subprocess_exec(
            *qchain_argv(),
            "receipt",
            "get",
            "00" * 32,
            "--node",
            url,
            "--out",
            str(tmp_path / "r.bin"),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 1
        assert err.decode().startswith(f"error: {title}"), err.decode()


def test_the_cli_reads_the_users_language_from_the_locale() -> None:
    assert user_language({"LANG": "zh_CN.UTF-8"}) == "zh-CN"
    assert user_language({"LANG": "zh_CN.UTF-8", "LC_ALL": "en_GB.UTF-8"}) is None
    assert user_language({"QCHAIN_LANG": "zh-Hans", "LANG": "C"}) == "zh-CN"
    assert user_language({"LANG": "zh_TW.UTF-8"}) is None
    assert user_language({"LC_MESSAGES": "zh_SG.GB2312@euro"}) == "zh-CN"
    assert user_language({}) is None
