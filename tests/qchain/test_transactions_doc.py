"""docs/TRANSACTIONS.md cannot drift from the codec: every fenced `hex` block in it is
rebuilt here from the vectors of tests/vectors/core/transactions.json and compared byte for
byte, and every full JSON form shown in it is a vector's. After a deliberate change of
bytes, `tests/vectors/core/annotate.py --rewrite docs/TRANSACTIONS.md` rewrites the blocks.

A hex block's first line names it (`# vector NAME: PART`); on the other lines the text
after `#` is a comment, and a line `.. N bytes ..` stands for N bytes not shown."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from qchain.codec import encode_value
from qchain.errors import CodecError
from qchain.jsonform import tx_from_json
from qchain.keys import Scheme
from qchain.types import decode_transaction

ROOT = Path(__file__).parents[2]
DOC = ROOT / "docs" / "TRANSACTIONS.md"


def _annotate() -> ModuleType:
    path = ROOT / "tests" / "vectors" / "core" / "annotate.py"
    spec = importlib.util.spec_from_file_location("core_vectors_annotate", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ANNOTATE = _annotate()
VECTORS: dict[str, dict[str, Any]] = ANNOTATE.vectors()

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.DOTALL | re.MULTILINE)
_TITLE = re.compile(r"# vector (\S+): (\S+)$")
_ELIDED = re.compile(r"\.\. (\d+) bytes \.\.$")


def _blocks(lang: str) -> list[str]:
    return [body for kind, body in _FENCE.findall(DOC.read_text()) if kind == lang]


HEX_BLOCKS = _blocks("hex")


def _scheme_missing(name: str) -> bool:
    """Whether a vector the document shows is of a scheme this tree does not have yet
    (the SM2 section is written alongside the scheme's own branch)."""
    return name.startswith("sm2-") and "sm2" not in {s.value for s in Scheme}


def _segments(lines: list[str]) -> list[bytes | int]:
    """The block's bytes as shown (bytes) and elided (a count), in order."""
    out: list[bytes | int] = []
    for line in lines:
        elided = _ELIDED.match(line.split("#", 1)[0].strip())
        if elided:
            out.append(int(elided.group(1)))
            continue
        text = "".join(line.split("#", 1)[0].split())
        if text:
            out.append(bytes.fromhex(text))
    return out


def _matches(segments: list[bytes | int], expected: bytes) -> bool:
    at = 0
    for seg in segments:
        if isinstance(seg, int):
            at += seg
        else:
            if expected[at : at + len(seg)] != seg:
                return False
            at += len(seg)
    return at == len(expected)


def test_the_doc_has_hex_blocks_for_every_vector_and_part() -> None:
    titles = [_TITLE.match(b.splitlines()[0]) for b in HEX_BLOCKS]
    assert all(titles), "every hex block starts with '# vector NAME: PART'"
    named = {(t.group(1), t.group(2)) for t in titles if t}
    names = {name for name, _ in named}
    assert set(VECTORS) <= names, "a vector the document does not show"
    assert all(n in VECTORS or _scheme_missing(n) for n in names), "an unknown vector"
    assert {part for _, part in named} == set(ANNOTATE.PARTS)


@pytest.mark.parametrize("block", HEX_BLOCKS, ids=[b.splitlines()[0][9:] for b in HEX_BLOCKS])
def test_hex_block_is_what_the_codec_gives(block: str) -> None:
    first, *lines = block.splitlines()
    title = _TITLE.match(first)
    assert title is not None
    name, part = title.groups()
    if name not in VECTORS and _scheme_missing(name):
        pytest.skip(f"{name}: this tree has no SM2 scheme and no SM2 vector yet")
    vec = VECTORS[name]
    tx = tx_from_json(vec["json"])
    # The vector file and the codec agree (test_vectors_core checks this too).
    assert tx.encode().hex() == vec["encoded"]
    assert tx.signing_digest().hex() == vec["signing_digest"]
    assert tx.hash.hex() == vec["hash"]
    if "sm2" in vec:  # Z and e as the SM2 implementation computed them
        assert ANNOTATE.PARTS["sm2-z"](tx).hex() == vec["sm2"]["z"]
        assert ANNOTATE.PARTS["sm2-e"](tx).hex() == vec["sm2"]["e"]
    expected = ANNOTATE.PARTS[part](tx)
    segments = _segments(lines)
    assert segments, "an empty block"
    assert _matches(segments, expected), f"{first}: expected {expected.hex()}"


def test_full_json_forms_in_the_doc_are_the_vectors() -> None:
    shown: list[dict[str, Any]] = []
    for text in _blocks("json"):
        doc = json.loads(text)
        if "signature" in doc and "..." not in doc["signature"]:
            shown.append(doc)
    assert len(shown) >= 3
    vectors = [v["json"] for v in VECTORS.values()]
    for doc in shown:
        assert doc in vectors or (doc["scheme"] == "sm2" and _scheme_missing("sm2-")), doc


def test_rewriting_the_doc_changes_nothing(tmp_path: Path) -> None:
    copy = tmp_path / "TRANSACTIONS.md"
    copy.write_text(DOC.read_text())
    ANNOTATE.rewrite(copy)
    assert copy.read_text() == DOC.read_text()


def test_the_elision_check_catches_a_wrong_byte() -> None:
    data = bytes(range(40))
    assert _matches([data[:4], 32, data[-4:]], data)
    assert not _matches([data[:4], 31, data[-4:]], data)
    assert not _matches([data[:4], 32, b"\x00" + data[-3:]], data)
    assert not _matches([data[:39]], data)


def _section(number: int) -> str:
    text = DOC.read_text()
    return text.split(f"\n## {number}. ", 1)[1].split("\n## ", 1)[0]


def test_the_integer_table_and_examples_of_section_3_are_the_codecs() -> None:
    rules = _section(3)
    examples = re.findall(r"(-?\d+) is `([0-9a-f ]+)`", rules)
    assert len(examples) == 4
    for value, shown in examples:
        assert encode_value(int(value)).hex() == shown.replace(" ", "")
    assert encode_value("ab").hex() == "a26162" and encode_value(b"ab").hex() == "c4026162"
    assert encode_value(b"").hex() == "c400"
    assert len("memo: café".encode()) == 11
    rows = re.findall(r"^  \| (-?[\d^.-]+) \| (.+) \|$", rules, re.MULTILINE)
    assert len(rows) == 10
    for span, encoding in rows:
        lo, hi = (_int(x) for x in span.split(".."))
        first = re.search(r"`0x([0-9a-f]{2})`", encoding)
        assert first is not None
        for v in (lo, hi):
            enc = encode_value(v)
            if "fixint" in encoding:
                assert len(enc) == 1
            else:
                assert enc[0] == int(first.group(1), 16), (v, encoding)
                assert f"+ {len(enc) - 1} byte" in encoding, (v, encoding)


def _int(text: str) -> int:
    """An integer of the table: `-2^31-1`, `2^64-1`, `65536`."""
    m = re.fullmatch(r"(-?)(?:2\^(\d+)|(\d+))(-1)?", text)
    assert m is not None, text
    sign, power, plain, minus_one = m.groups()
    v = 2 ** int(power) if power else int(plain)
    v = -v if sign else v
    return v - 1 if minus_one else v


def test_args_nest_16_arrays_deep_and_no_deeper() -> None:
    """Section 2 and 3: `args` is level 0, arrays inside it reach level 16 at most, in the
    canonical bytes and in the JSON form alike."""
    good: list[object] = []
    for _ in range(16):
        good = [good]
    doc = {**VECTORS["ed25519-register"]["json"], "args": good, "signature": ""}
    tx = tx_from_json(doc)
    assert decode_transaction(tx.encode()) == tx
    with pytest.raises(CodecError, match="nested too deeply"):
        tx_from_json({**doc, "args": [good]})
    run = b"\x91" * 16 + b"\x90"
    assert tx.encode().count(run) == 1
    with pytest.raises(CodecError, match="nesting deeper than 16"):
        decode_transaction(tx.encode().replace(run, b"\x91" + run))
