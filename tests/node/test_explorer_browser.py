"""The explorer page in a real browser against a live 4-process devnet.

Headless Chromium comes from Debian's packages (`devnet/scripts/install-browser.sh`
installs it when missing; the test skips, saying why, if it cannot) and is driven by
Playwright for Python through `executable_path`; Playwright's own browser download is
never used. The test checks what a person would see: the page loads without console
errors, a transaction submitted during the test shows up within 2 s, searching its hash
opens its detail, its receipt verifies in the browser, every QKD link has a chart with a
pool level, and a notary digest can be searched. Screenshots go to `test-artifacts/`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from devnet.local import LocalNetwork, running_network
from devnet.network import account_key, plan_network
from devnet.nodeapi import http_json
from qchain.types import Transaction, new_transaction

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = ROOT / "devnet" / "scripts" / "install-browser.sh"
ARTIFACTS = ROOT / "test-artifacts"
APPEAR_WITHIN_MS = 2000


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path is not None:
            return path
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    """The system Chromium, installed from Debian packages on first use."""
    path = find_chromium()
    if path is None:
        try:
            done = subprocess.run(
                [str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=840
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            pytest.skip(f"no chromium and {INSTALL_SCRIPT.name} could not run: {e}")
        path = find_chromium()
        if path is None:
            tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
            pytest.skip(
                f"no chromium: {INSTALL_SCRIPT.name} exited {done.returncode}: " + " / ".join(tail)
            )
    return path


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    directory = tmp_path_factory.mktemp("explorer-devnet")
    with running_network(
        directory, plan_network(base_port=None, scheme="ed25519", heartbeat_ms=500)
    ) as net:
        yield net


def notary_tx(net: LocalNetwork, nonce: int, digest: bytes) -> Transaction:
    return new_transaction(
        account_key("partner1", "ed25519"),
        chain_id=net.plan.chain_id,
        nonce=nonce,
        contract="notary",
        method="anchor",
        args=[digest, "sha256", f"explorer test document {nonce}", "test", b""],
    )


def submit(api_url: str, tx: Transaction) -> dict[str, Any]:
    req = urllib.request.Request(
        f"{api_url}/v1/txs",
        data=json.dumps(tx.encoded.hex()).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
    return doc


def submit_batch(api_url: str, txs: list[Transaction]) -> None:
    req = urllib.request.Request(
        f"{api_url}/v1/txs/batch",
        data=json.dumps([t.encoded.hex() for t in txs]).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        results = json.loads(resp.read())["results"]
    assert all("problem" not in r for r in results), results


def wait_receipt(api_url: str, tx_hash: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """The receipt proof of a transaction, once committed (polled with a deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            doc: dict[str, Any] = http_json(f"{api_url}/v1/receipts/{tx_hash}")
            return doc
        except urllib.error.HTTPError as e:
            if e.code != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def assert_verifies(page: Page) -> None:
    """Click "verify" on a receipt page: every check passes, at least a quorum signed."""
    page.click("#verify")
    verdict = page.wait_for_selector("[data-verdict]", timeout=5000)
    assert verdict is not None
    assert verdict.get_attribute("data-verdict") == "pass", page.inner_text("#verify-result")
    assert int(verdict.get_attribute("data-signers") or 0) >= 3
    assert page.locator("#verify-result li.fail").count() == 0


CANVAS_INK = """(canvas) => {
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let ink = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] > 0) ink++;
    return ink;
}"""


def test_explorer_in_chromium(chromium: str, devnet: LocalNetwork) -> None:
    from playwright.sync_api import ConsoleMessage, sync_playwright

    node = devnet.plan.nodes[0]
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            problems.append(f"console: {msg.text}")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", on_console)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.goto(f"{node.api_url}/", wait_until="load")
            page.wait_for_selector("#blocks tbody tr[data-height]", timeout=10_000)
            page.wait_for_selector("#live.on", timeout=10_000)

            # A transaction submitted now shows up in the live list within 2 s.
            digest = bytes.fromhex("5e" * 32)
            tx = notary_tx(devnet, 0, digest)
            tx_hash = tx.hash.hex()
            started = time.monotonic()
            assert submit(node.api_url, tx)["status"] in ("pending", "committed")
            page.wait_for_selector(f'#txs tr[data-tx="{tx_hash}"]', timeout=APPEAR_WITHIN_MS)
            appeared_ms = (time.monotonic() - started) * 1000
            assert appeared_ms <= APPEAR_WITHIN_MS, f"appeared after {appeared_ms:.0f} ms"

            # Every QKD link of the node has a chart with a pool level drawn.
            links = http_json(f"{node.api_url}/v1/qkd")["links"]
            assert len(links) == len(devnet.plan.nodes) - 1
            for sae in links:
                card = page.locator(f'[data-link="{sae}"]')
                card.wait_for(timeout=5000)
                level = card.get_attribute("data-level")
                assert level is not None and int(level) >= 0, f"{sae} shows no level"
                assert card.locator(".level").inner_text() == level
                page.wait_for_function(
                    f"() => ({CANVAS_INK})(document.querySelector('[data-link=\"{sae}\"] canvas'))"
                    " > 100",
                    timeout=5000,
                )
            page.wait_for_function(
                "() => document.querySelectorAll('#validators tr[data-validator]').length === 4"
                " && document.querySelector('#validators .pill.leader') !== null",
                timeout=5000,
            )
            page.screenshot(path=str(ARTIFACTS / "explorer-home.png"), full_page=True)

            # Searching the hash opens the transaction's detail.
            page.fill("#search-input", tx_hash)
            page.press("#search-input", "Enter")
            page.wait_for_selector(f'#tx-detail[data-tx="{tx_hash}"]', timeout=5000)
            assert page.inner_text("#tx-hash") == tx_hash
            page.wait_for_selector("#tx-detail .pill.ok", timeout=5000)
            page.screenshot(path=str(ARTIFACTS / "explorer-tx.png"), full_page=True)

            # Its receipt verifies in the browser: Merkle path, header hash, signer count.
            page.click("text=receipt, Merkle proof and certificate")
            page.wait_for_selector("#receipt-detail", timeout=5000)
            assert_verifies(page)

            # So does one with a real Merkle path: a batch of anchors in one block.
            batch = [notary_tx(devnet, i, bytes([i]) * 32) for i in range(1, 6)]
            submit_batch(node.api_url, batch)
            proofs = [wait_receipt(node.api_url, t.hash.hex()) for t in batch]
            # the longest path, and leaf 1 if there is one: its siblings lie on both sides
            deepest = max(proofs, key=lambda p: (len(p["proof"]["path"]), p["proof"]["index"] == 1))
            assert len(deepest["proof"]["path"]) >= 2, "the batch did not share a block"
            page.goto(f"{node.api_url}/#/receipt/{deepest['receipt']['tx_hash']}")
            page.wait_for_selector("#receipt-detail", timeout=5000)
            assert_verifies(page)
            page.screenshot(path=str(ARTIFACTS / "explorer-receipt.png"), full_page=True)

            # A block height opens the block, with the transaction in it.
            height = http_json(f"{node.api_url}/v1/txs/{tx_hash}")["height"]
            page.fill("#search-input", str(height))
            page.press("#search-input", "Enter")
            page.wait_for_selector(f'#block-detail >> text="Block #{height}"', timeout=5000)
            assert page.locator(f'a[href="#/tx/{tx_hash}"]').count() == 1

            assert problems == [], problems

            # A notary digest finds its anchor (the page first asks for a transaction of
            # that hash; the browser logs that 404, and nothing else).
            page.fill("#search-input", digest.hex())
            page.press("#search-input", "Enter")
            page.wait_for_selector("#anchor-detail", timeout=5000)
            assert "explorer test document 0" in page.inner_text("#anchor-detail")
            unexpected = [p for p in problems if "404" not in p]
            assert unexpected == [], unexpected
        finally:
            browser.close()
