"""The explorer page in a real browser against a live 4-process devnet.

Headless Chromium and a font with Chinese glyphs come from Debian's packages
(`devnet/scripts/install-browser.sh` installs them when missing; a test skips, saying why,
if it cannot) and Chromium is driven by Playwright for Python through `executable_path`;
Playwright's own browser download is never used. The tests check what a person would see:
the page loads without console errors, a transaction submitted during the test shows up
within 2 s, searching its hash opens its detail, its receipt verifies in the browser,
every QKD link has a chart with a pool level, and a notary digest can be searched; and the
page speaks the browser's language (Simplified Chinese for a zh-CN browser, English for
en-US), switches with the control in its header and keeps the choice across a reload.
Screenshots go to `test-artifacts/`, those of the home page in both languages among them
(explorer-zh-CN.png, explorer-en.png); with `QCHAIN_REGEN_SCREENSHOTS=1` the latter are
written to `docs/screenshots/`, where the committed ones live.
"""

from __future__ import annotations

import json
import os
import re
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
SCREENSHOTS = (
    ROOT / "docs" / "screenshots"
    if os.environ.get("QCHAIN_REGEN_SCREENSHOTS") == "1"
    else ROOT / "test-artifacts"
)
APPEAR_WITHIN_MS = 2000


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path is not None:
            return path
    return None


def chinese_font() -> str | None:
    """A font family fontconfig knows that covers Simplified Chinese, if any."""
    if shutil.which("fc-list") is None:
        return None
    done = subprocess.run(
        ["fc-list", ":lang=zh-cn", "family"], capture_output=True, text=True, check=False
    )
    families = done.stdout.strip().splitlines()
    return families[0] if families else None


def run_install_script() -> str:
    """Run the install script; what it said last, for a skip message."""
    try:
        done = subprocess.run([str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=840)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{INSTALL_SCRIPT.name} could not run: {e}"
    tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
    return f"{INSTALL_SCRIPT.name} exited {done.returncode}: " + " / ".join(tail)


@pytest.fixture(scope="module")
def chromium() -> str:
    """The system Chromium (and a Chinese font), installed from Debian packages on first
    use."""
    said = ""
    if find_chromium() is None or chinese_font() is None:
        said = run_install_script()
    path = find_chromium()
    if path is None:
        pytest.skip(f"no chromium: {said}")
    return path


@pytest.fixture(scope="module")
def chinese(chromium: str) -> str:
    """The font the Chinese page renders with; without one its glyphs would be boxes."""
    font = chinese_font()
    if font is None:
        pytest.skip(f"no font with Chinese glyphs (fonts-noto-cjk); see {INSTALL_SCRIPT.name}")
    return font


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
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-US")
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
            deep_hash = deepest["receipt"]["tx_hash"]
            page.goto(f"{node.api_url}/#/receipt/{deep_hash}")
            # the same page: wait for the new receipt, not the one still shown
            page.wait_for_selector(f'#receipt-detail a[href="#/tx/{deep_hash}"]', timeout=5000)
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


# --- the page in Simplified Chinese and in English -----------------------------------------

HOME_LABELS = {
    "zh-CN": {
        "#blocks h2": "最新区块",
        "#txs h2": "最新交易",
        "#validators h2": "验证者",
        "#qkd h2": "量子密钥分发 (QKD) 链路",
        "#search button": "搜索",
        "#live": "实时",
    },
    "en": {
        "#blocks h2": "Latest blocks",
        "#txs h2": "Latest transactions",
        "#validators h2": "Validators",
        "#qkd h2": "QKD links",
        "#search button": "Search",
        "#live": "live",
    },
}
TX_LABELS = {
    "zh-CN": {"#tx-detail h2": "交易", "#tx-detail .pill.ok": "已上链 · 成功"},
    "en": {"#tx-detail h2": "Transaction", "#tx-detail .pill.ok": "committed · ok"},
}
SHOWS = """([selector, text]) => {
    const node = document.querySelector(selector);
    return node !== null && node.innerText.includes(text);
}"""
DATE_SHAPES = {"zh-CN": r"^\d{4}年\d{1,2}月\d{1,2}日", "en": r"^[A-Z][a-z]{2} \d{1,2}, \d{4}, "}


def assert_speaks(page: Page, locale: str, labels: dict[str, dict[str, str]]) -> None:
    """The page is in `locale`: <html lang>, the switch and the given labels say so (a view
    re-rendered for a new language shows it once its data is fetched again)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.wait_for_function(f"() => document.documentElement.lang === {locale!r}", timeout=5000)
    assert page.input_value("#locale") == locale
    for selector, text in labels[locale].items():
        try:
            page.wait_for_function(SHOWS, arg=[selector, text], timeout=5000)
        except PlaywrightTimeout:
            shown = page.inner_text(selector) if page.query_selector(selector) else None
            raise AssertionError(f"{locale}: {selector} shows {shown!r}, not {text!r}") from None


def open_home(page: Page, url: str, locale: str) -> None:
    page.goto(url, wait_until="load")
    page.wait_for_selector("#blocks tbody tr[data-height]", timeout=10_000)
    page.wait_for_selector("#live.on", timeout=10_000)
    page.wait_for_function(
        "() => document.querySelectorAll('#validators tr[data-validator]').length === 4"
        " && document.querySelectorAll('#qkd-links canvas').length === 3",
        timeout=5000,
    )
    # every link's chart has something drawn before the screenshot
    page.wait_for_function(
        "() => [...document.querySelectorAll('#qkd-links canvas')]"
        f".every((c) => ({CANVAS_INK})(c) > 100)",
        timeout=5000,
    )
    assert_speaks(page, locale, HOME_LABELS)
    title = page.get_attribute("#blocks tbody tr[data-height] td[title]", "title") or ""
    assert re.match(DATE_SHAPES[locale], title), (locale, title)


def look_up(page: Page, tx_hash: str, locale: str) -> None:
    page.fill("#search-input", tx_hash)
    page.press("#search-input", "Enter")
    page.wait_for_selector(f'#tx-detail[data-tx="{tx_hash}"]', timeout=5000)
    assert page.inner_text("#tx-hash") == tx_hash
    assert_speaks(page, locale, TX_LABELS)


def test_explorer_in_chinese_and_in_english(
    chromium: str, chinese: str, devnet: LocalNetwork
) -> None:
    from playwright.sync_api import sync_playwright

    node = devnet.plan.nodes[0]
    tx = new_transaction(
        account_key("partner2", "ed25519"),
        chain_id=devnet.plan.chain_id,
        nonce=0,
        contract="notary",
        method="anchor",
        args=[bytes.fromhex("7a" * 32), "sha256", "双语测试文件 bilingual", "test", b""],
    )
    tx_hash = tx.hash.hex()
    submit(node.api_url, tx)
    wait_receipt(node.api_url, tx_hash)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            for browser_locale, locale, other in (
                ("zh-CN", "zh-CN", "en"),
                ("en-US", "en", "zh-CN"),
            ):
                context = browser.new_context(
                    locale=browser_locale, viewport={"width": 1400, "height": 1000}
                )
                page = context.new_page()
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                page.on(
                    "console",
                    lambda m: problems.append(m.text) if m.type == "error" else None,
                )

                # The browser's language decides at first; the screenshot is of that page.
                open_home(page, f"{node.api_url}/", locale)
                name = "explorer-zh-CN.png" if locale == "zh-CN" else "explorer-en.png"
                page.screenshot(path=str(SCREENSHOTS / name), full_page=True)

                # A transaction looked up in that language.
                look_up(page, tx_hash, locale)
                page.fill("#search-input", "not a hash")
                page.press("#search-input", "Enter")
                page.wait_for_selector("#view-error", timeout=5000)
                help_text = page.inner_text("#view-error")
                assert ("请输入交易哈希" in help_text) == (locale == "zh-CN"), help_text

                # The switch changes the page at once, and the choice outlives a reload.
                look_up(page, tx_hash, locale)
                page.select_option("#locale", other)
                assert_speaks(page, other, TX_LABELS)
                page.reload(wait_until="load")
                page.wait_for_selector(f'#tx-detail[data-tx="{tx_hash}"]', timeout=10_000)
                assert_speaks(page, other, TX_LABELS)
                stored = page.evaluate("localStorage.getItem('qchain.explorer.locale')")
                assert stored == other
                page.screenshot(
                    path=str(ARTIFACTS / f"explorer-tx-{other}-after-switch.png"), full_page=True
                )
                context.close()
        finally:
            browser.close()
    assert problems == [], problems
