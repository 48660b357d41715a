"""The explorer's files as the API serves them (no browser): the page, its script, style
sheet and two message catalogues, nothing else under /explorer/, nothing loaded from
another origin; and every word a person reads comes from the catalogues, which hold the
same keys in English and Simplified Chinese.

The scan of `app.js` is a small JavaScript lexer (strings, template literals, comments,
regular expressions) and a list of the places where text reaches the page: children of
`el(...)`, the visible attributes `text`, `title`, `placeholder` and `aria-label`, link
texts, `kv` labels, `replaceChildren`/`append`, `textContent`/`title` assignments, canvas
`fillText`, and `Error(...)` messages (which the page shows). A string literal with a
Latin letter in one of those places is hard-coded text; text passed through `t(...)` (or
any other call) is not a literal there.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

import aiohttp
import pytest

from node import explorer
from node.http.api import make_api_app
from node.http.testing import start_api

from .conftest import FakeNode

LOCALES = ("en", "zh-CN")
HAN = re.compile(r"[\u4e00-\u9fff]")
LETTER = re.compile(r"[A-Za-z]")
PLACEHOLDER = re.compile(r"\{(\w+)\}")
KEY = re.compile(r"[a-z]+\.[a-z_.]+")


def catalogue(locale: str) -> dict[str, str]:
    doc: dict[str, str] = json.loads(explorer.asset(f"messages.{locale}.json"))
    return doc


async def test_page_and_assets_are_served_and_nothing_else(fake_node: FakeNode) -> None:
    app = make_api_app(fake_node, max_body_bytes=4096, rate_limit_per_s=0)
    runner, port = await start_api(app, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/") as r:
                assert r.status == 200
                assert r.content_type == "text/html"
                assert "default-src 'self'" in r.headers["Content-Security-Policy"]
                page = await r.text()
            for src in re.findall(r'(?:src|href)="(/explorer/[^"]+)"', page):
                async with s.get(f"{base}{src}") as r:
                    assert r.status == 200, src
            async with s.get(f"{base}/explorer/app.js") as r:
                assert r.content_type == "text/javascript"
            async with s.get(f"{base}/explorer/style.css") as r:
                assert r.content_type == "text/css"
            for locale in LOCALES:
                async with s.get(f"{base}/explorer/messages.{locale}.json") as r:
                    assert (r.content_type, r.charset) == ("application/json", "utf-8")
                    assert await r.json() == catalogue(locale)
            for bad in (
                "/explorer/__init__.py",
                "/explorer/..%2Fapi.py",
                "/explorer/nope.js",
                "/explorer/messages.fr.json",
            ):
                async with s.get(f"{base}{bad}") as r:
                    assert r.status == 404, bad
                    assert r.content_type == "application/problem+json"
    finally:
        await runner.cleanup()


def test_no_external_urls_and_no_inline_code() -> None:
    """Everything is served by the node itself (the page's policy allows only 'self')."""
    for name in explorer.ASSETS:
        text = explorer.asset(name).decode()
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), name
    page = explorer.asset("index.html").decode()
    assert "<script>" not in page and "style=" not in page
    assert not re.search(r"\son[a-z]+\s*=", page, re.I)
    script = explorer.asset("app.js").decode()
    assert "style=" not in script
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script


# --- the two catalogues ---------------------------------------------------------------------


def test_both_catalogues_have_exactly_the_same_keys_and_placeholders() -> None:
    en, zh = catalogue("en"), catalogue("zh-CN")
    assert sorted(en) == sorted(zh), set(en) ^ set(zh)
    for key in en:
        assert en[key].strip() and zh[key].strip(), key
        assert set(PLACEHOLDER.findall(en[key])) == set(PLACEHOLDER.findall(zh[key])), key


def test_the_chinese_catalogue_is_chinese_and_the_english_one_english() -> None:
    en, zh = catalogue("en"), catalogue("zh-CN")
    for key, text in zh.items():
        words = PLACEHOLDER.sub("", text)
        # Han characters, or punctuation around placeholders ("{title}：{detail}")
        allowed_latin = {"qchain", "QKD", "HTTP", "API", "SAE", "nonce", "msgpack", "Bearer"}
        latin = set(re.findall(r"[A-Za-z][A-Za-z.]*", words)) - allowed_latin
        assert HAN.search(words) or not latin, f"{key}: {text!r}"
        assert not HAN.search(en[key]), key
    assert (en["locale.name"], zh["locale.name"]) == ("English", "简体中文")


@pytest.mark.parametrize(
    ("key", "term"),
    [
        ("home.blocks", "区块"),
        ("home.txs", "交易"),
        ("col.height", "高度"),
        ("col.hash", "哈希"),
        ("home.validators", "验证者"),
        ("receipt.title", "收据"),
        ("anchor.title", "存证"),
        ("home.qkd", "量子密钥分发 (QKD)"),
        ("legend.level", "密钥"),
        ("field.proof", "默克尔证明"),
        ("field.public_key", "公钥"),
    ],
)
def test_chinese_terms_are_the_usual_ones(key: str, term: str) -> None:
    assert term in catalogue("zh-CN")[key]


# --- a small JavaScript lexer -----------------------------------------------------------------


@dataclass
class Tok:
    kind: str
    """`str`, `tmpl`, `ident`, `num`, `regex` or `punct`."""
    text: str
    pos: int
    parts: list[str] = field(default_factory=list)
    """A template literal's static parts."""
    inner: list[list[Tok]] = field(default_factory=list)
    """A template literal's `${...}` expressions, lexed."""


REGEX_AFTER = set("(,=:[!&|?{};") | {"return", "typeof"}
KEYWORDS = {"if", "for", "while", "switch", "return", "typeof", "catch", "in", "of", "await"}


def lex(src: str, i: int = 0, in_braces: bool = False) -> tuple[list[Tok], int]:
    """Tokens of src from i; with in_braces, up to the `}` closing a `${`."""
    toks: list[Tok] = []
    depth = 0
    n = len(src)
    while i < n:
        c = src[i]
        if c.isspace():
            i += 1
        elif src.startswith("//", i):
            i = src.find("\n", i) if "\n" in src[i:] else n
        elif src.startswith("/*", i):
            i = src.index("*/", i) + 2
        elif c in "\"'":
            j = i + 1
            while src[j] != c:
                j += 2 if src[j] == "\\" else 1
            toks.append(Tok("str", src[i + 1 : j], i))
            i = j + 1
        elif c == "`":
            tok = Tok("tmpl", "", i)
            j = i + 1
            part = ""
            while src[j] != "`":
                if src[j] == "\\":
                    part += src[j : j + 2]
                    j += 2
                elif src.startswith("${", j):
                    tok.parts.append(part)
                    part = ""
                    inner, j = lex(src, j + 2, in_braces=True)
                    tok.inner.append(inner)
                else:
                    part += src[j]
                    j += 1
            tok.parts.append(part)
            tok.text = "".join(tok.parts)
            toks.append(tok)
            i = j + 1
        elif c.isalpha() or c in "_$":
            m = re.compile(r"[\w$]+").match(src, i)
            assert m is not None
            toks.append(Tok("ident", m.group(), i))
            i = m.end()
        elif c.isdigit():
            m = re.compile(r"[0-9a-fA-FxX._]+").match(src, i)
            assert m is not None
            toks.append(Tok("num", m.group(), i))
            i = m.end()
        elif c == "/" and (not toks or toks[-1].text in REGEX_AFTER):
            j = i + 1
            in_class = False
            while in_class or src[j] != "/":
                if src[j] == "\\":
                    j += 1
                elif src[j] == "[":
                    in_class = True
                elif src[j] == "]":
                    in_class = False
                j += 1
            m = re.compile(r"[a-z]*").match(src, j + 1)
            assert m is not None
            toks.append(Tok("regex", src[i : m.end()], i))
            i = m.end()
        else:
            if in_braces and c == "{":
                depth += 1
            elif in_braces and c == "}":
                if depth == 0:
                    return toks, i + 1
                depth -= 1
            toks.append(Tok("punct", c, i))
            i += 1
    return toks, i


def closing(toks: list[Tok], k: int) -> int:
    """The index of the bracket closing the one at k."""
    depth = 0
    for j in range(k, len(toks)):
        if toks[j].kind == "punct" and toks[j].text in "([{":
            depth += 1
        elif toks[j].kind == "punct" and toks[j].text in ")]}":
            depth -= 1
            if depth == 0:
                return j
    raise AssertionError(f"unclosed bracket at {toks[k].pos}")


def split_args(toks: list[Tok], k: int) -> list[list[Tok]]:
    """The comma-separated items inside the bracket at k."""
    end = closing(toks, k)
    args: list[list[Tok]] = [[]]
    j = k + 1
    while j < end:
        tok = toks[j]
        if tok.kind == "punct" and tok.text in "([{":
            close = closing(toks, j)
            args[-1].extend(toks[j : close + 1])
            j = close + 1
            continue
        if tok.kind == "punct" and tok.text == ",":
            args.append([])
        else:
            args[-1].append(tok)
        j += 1
    return [a for a in args if a]


def is_call(toks: list[Tok], k: int) -> bool:
    prev = toks[k - 1] if k else None
    if prev is None:
        return False
    if prev.kind == "ident":
        return prev.text not in KEYWORDS
    return prev.kind == "punct" and prev.text in ")]"


def bare_literals(toks: list[Tok]) -> list[str]:
    """The literal texts of an expression that are not inside a call's arguments."""
    out: list[str] = []
    j = 0
    while j < len(toks):
        tok = toks[j]
        if tok.kind == "punct" and tok.text == "(" and is_call(toks, j):
            j = closing(toks, j) + 1
            continue
        if tok.kind == "str":
            out.append(tok.text)
        elif tok.kind == "tmpl":
            out.extend(tok.parts)
            for inner in tok.inner:
                out.extend(bare_literals(inner))
        j += 1
    return out


VISIBLE_ATTRS = {"text", "title", "placeholder", "aria-label", "alt"}
SINK_ARGS: dict[str, slice] = {
    "el": slice(2, None),
    "link": slice(1, 2),
    "kv": slice(0, None),
    "replaceChildren": slice(0, None),
    "append": slice(0, None),
    "fillText": slice(0, 1),
    "Error": slice(0, None),
    "check": slice(1, 2),
    "problemCard": slice(1, 2),
}
ASSIGNED = {"textContent", "innerText", "title", "placeholder", "value"}


def all_tokens(toks: list[Tok]) -> list[list[Tok]]:
    """toks and the token lists of every template expression in them, at any depth."""
    out = [toks]
    for tok in toks:
        for inner in tok.inner:
            out.extend(all_tokens(inner))
    return out


def hard_coded_text(src: str) -> list[str]:
    """Literals with Latin letters that app.js-style code puts on the page."""
    found: list[str] = []
    for toks in all_tokens(lex(src)[0]):
        for k, tok in enumerate(toks):
            nxt = toks[k + 1] if k + 1 < len(toks) else None
            if tok.kind == "ident" and tok.text in SINK_ARGS and nxt and nxt.text == "(":
                args = split_args(toks, k + 1)
                for arg in args[SINK_ARGS[tok.text]]:
                    found.extend(bare_literals(arg))
                if tok.text == "el" and len(args) > 1 and args[1][0].text == "{":
                    for pair in split_args(args[1], 0):
                        if pair[0].text in VISIBLE_ATTRS and len(pair) > 2:
                            found.extend(bare_literals(pair[2:]))
            if tok.kind == "ident" and tok.text == "setAttribute" and nxt and nxt.text == "(":
                args = split_args(toks, k + 1)
                if args[0][0].kind == "str" and args[0][0].text in VISIBLE_ATTRS:
                    found.extend(bare_literals(args[1]))
            if (
                tok.kind == "ident"
                and tok.text in ASSIGNED
                and k > 0
                and toks[k - 1].text == "."
                and nxt is not None
                and nxt.text == "="
                and toks[k + 2].text != "="
            ):
                end = next(j for j in range(k + 2, len(toks)) if toks[j].text == ";")
                found.extend(bare_literals(toks[k + 2 : end]))
    return [text for text in found if LETTER.search(text)]


@pytest.mark.parametrize(
    "snippet",
    [
        'el("p", {}, "no transactions yet");',
        'el("p", { class: "muted" }, t("a.b"), " · leader");',
        'el("span", { title: "sends that waited" }, t("x.y"));',
        'el("td", {}, ok ? "ok" : t("tx.failed"));',
        'el("td", {}, `${n} keys`);',
        "el(\"td\", {}, `${ok ? 'yes' : t('value.no')}`);",
        'node.textContent = "live";',
        "node.title = `${n} frames`;",
        'link("#/", "back", "");',
        'kv([["hash", mono(h)]]);',
        'out.replaceChildren(el("p", {}, t("a.b")), "checking");',
        'throw new Error("truncated msgpack");',
        "g.fillText(`${max} keys`, 2, 10);",
        'node.setAttribute("aria-label", "Search");',
    ],
)
def test_the_scan_finds_hard_coded_text(snippet: str) -> None:
    assert hard_coded_text(snippet), snippet


@pytest.mark.parametrize(
    "snippet",
    [
        'el("p", { class: "pill ok", id: "x" }, t("tx.ok"), " · ", `#${h}`);',
        'el("td", {}, ok ? t("value.yes") : t("value.no"), short(hash, 10));',
        'node.textContent = t("live.on", { n: num(3) });',
        'api(`/v1/txs/${encodeURIComponent(arg)}`, "application/msgpack");',
        'es.addEventListener("block", (e) => render("block"));',
        'if (x === "committed") y = /^0x[a-f]+$/i.test(q) ? 1 : 2;',
    ],
)
def test_the_scan_lets_text_from_the_catalogue_and_code_pass(snippet: str) -> None:
    assert hard_coded_text(snippet) == [], snippet


def test_no_english_is_hard_coded_in_the_script() -> None:
    assert hard_coded_text(explorer.asset("app.js").decode()) == []


def test_every_message_key_the_script_names_exists_and_every_key_is_used() -> None:
    en = catalogue("en")
    toks = [t for ts in all_tokens(lex(explorer.asset("app.js").decode())[0]) for t in ts]
    named = set()
    for k, tok in enumerate(toks[:-2]):
        call = tok.text in {"t", "tn", "th", "problemCard"} and toks[k + 1].text == "("
        if call and toks[k + 2].kind == "str":
            named.add(toks[k + 2].text)
    assert named - set(en) == set(), "keys missing from the catalogues"
    literals = {tok.text for tok in toks if tok.kind == "str" and KEY.fullmatch(tok.text)}
    page = PageScan.of(explorer.asset("index.html").decode())
    used = literals | set(page.keys)
    assert set(page.keys) - set(en) == set(), "index.html names keys the catalogues lack"
    assert set(en) - used == set(), "catalogue keys nothing uses"


# --- index.html ---------------------------------------------------------------------------------


class PageScan(HTMLParser):
    """The text nodes, visible attributes and message keys of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self.visible: list[tuple[str, str]] = []
        self.keys: list[str] = []
        self._skip = 0

    @classmethod
    def of(cls, page: str) -> PageScan:
        scan = cls()
        scan.feed(page)
        scan.close()
        return scan

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        for name, value in attrs:
            if name in VISIBLE_ATTRS or (tag == "input" and name == "value"):
                self.visible.append((name, value or ""))
            if name == "data-i18n" or name.startswith("data-i18n-"):
                self.keys.append(value or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.texts.append(data.strip())


def test_no_english_is_hard_coded_in_the_page() -> None:
    page = PageScan.of(explorer.asset("index.html").decode())
    # the product's name is the only word written in the page itself
    assert [t for t in page.texts if LETTER.search(t) and t != "qchain"] == []
    assert [v for v in page.visible if LETTER.search(v[1])] == []
    assert "page.title" in page.keys and "search.placeholder" in page.keys
