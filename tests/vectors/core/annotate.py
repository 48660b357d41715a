"""Annotated hex dumps of the transaction vectors, for docs/TRANSACTIONS.md.

    .venv/bin/python tests/vectors/core/annotate.py NAME PART
    .venv/bin/python tests/vectors/core/annotate.py --rewrite docs/TRANSACTIONS.md

prints the fenced block's text for vector NAME of transactions.json (PART one of `PARTS`),
or rewrites every block of the document. tests/qchain/test_transactions_doc.py rebuilds
every block's bytes with `PARTS` and compares: after a deliberate change of bytes (a
regenerated vector), rewrite the document with this script and review the diff.

A block's first line names it (`# vector NAME: PART`); on the other lines the text after
`#` is a comment, and `.. N bytes ..` stands for N bytes not shown (long keys and
signatures show their first and last 16 bytes).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes

from qchain.hashing import Domain
from qchain.jsonform import tx_from_json, tx_to_json_fields
from qchain.keys import address_of
from qchain.types import Transaction

HERE = Path(__file__).parent
WIDTH = 24
"""Bytes per dump line."""
ELIDE_OVER = 100
"""Byte strings longer than this show their first and last 16 bytes."""

SM2_ID = b"1234567812345678"
"""The SM2 user ID qchain signs with, the standard's default (GM/T 0009-2012)."""
SM2_CURVE = {
    "a": "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC",
    "b": "28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93",
    "xG": "32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7",
    "yG": "BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0",
}
"""The sm2p256v1 constants of GB/T 32918.5-2017 that Z hashes."""

Line = tuple[bytes, str] | int
"""Bytes shown with a comment, or a count of bytes not shown."""


def vectors() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in json.loads((HERE / "transactions.json").read_text())}


def _tagged(domain: Domain, data: bytes) -> bytes:
    return bytes([len(domain.value)]) + domain.value + data


def sm3(data: bytes) -> bytes:
    h = hashes.Hash(hashes.SM3())
    h.update(data)
    return h.finalize()


def sm2_z_preimage(public_key: bytes) -> bytes:
    """ENTL || ID || a || b || xG || yG || xA || yA."""
    consts = b"".join(bytes.fromhex(SM2_CURVE[k]) for k in ("a", "b", "xG", "yG"))
    return (len(SM2_ID) * 8).to_bytes(2, "big") + SM2_ID + consts + public_key[1:]


PARTS: dict[str, Callable[[Transaction], bytes]] = {
    "encoded": lambda tx: tx.encode(),
    "body": lambda tx: tx.body_bytes(),
    "sign-preimage": lambda tx: _tagged(Domain.TX_SIGN, tx.body_bytes()),
    "signing-digest": lambda tx: tx.signing_digest(),
    "hash-preimage": lambda tx: _tagged(Domain.TX, tx.encode()),
    "hash": lambda tx: tx.hash,
    "address-preimage": lambda tx: _tagged(
        Domain.ADDRESS, tx.scheme.encode() + b"\x00" + tx.public_key
    ),
    "address": lambda tx: address_of(tx.scheme, tx.public_key),
    "sm2-z-preimage": lambda tx: sm2_z_preimage(tx.public_key),
    "sm2-z": lambda tx: sm3(sm2_z_preimage(tx.public_key)),
    "sm2-e": lambda tx: sm3(sm3(sm2_z_preimage(tx.public_key)) + tx.signing_digest()),
}
"""What each part of a vector is, from the transaction alone (SM2's Z and e with the SM3
of `cryptography`, not the SM2 implementation's)."""


def _raw(data: bytes, note: str) -> list[Line]:
    if len(data) > ELIDE_OVER:
        return [
            (data[:16], f"{note}: first 16 bytes"),
            len(data) - 32,
            (data[-16:], "last 16 bytes"),
        ]
    lines: list[Line] = [(data[:WIDTH], note)]
    return lines + [(data[j : j + WIDTH], "") for j in range(WIDTH, len(data), WIDTH)]


def _item(data: bytes, i: int, label: str) -> tuple[list[Line], int]:
    """The annotated lines of the msgpack item at data[i:], and where the next begins."""
    b = data[i]
    if b <= 0x7F:
        return [(data[i : i + 1], f"{label}: positive fixint {b}")], i + 1
    if b >= 0xE0:
        return [(data[i : i + 1], f"{label}: negative fixint {b - 256}")], i + 1
    simple = {0xC0: "nil", 0xC2: "false", 0xC3: "true"}
    if b in simple:
        return [(data[i : i + 1], f"{label}: {simple[b]}")], i + 1
    sizes = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}
    if b in sizes:
        n = sizes[b]
        v = int.from_bytes(data[i + 1 : i + 1 + n], "big", signed=b >= 0xD0)
        kind = f"{'int' if b >= 0xD0 else 'uint'}{8 * n} ({b:#04x})"
        return [(data[i : i + 1 + n], f"{label}: {kind} {v}")], i + 1 + n
    if 0xA0 <= b <= 0xBF or b in (0xD9, 0xDA, 0xDB):
        h, n, kind = _header(data, i, 0xA0, 0x1F, "fixstr", {0xD9: 1, 0xDA: 2, 0xDB: 4}, "str")
        text = data[i + h : i + h + n]
        lines: list[Line] = [(data[i : i + h], f"{label}: {kind}")]
        return [*lines, (text, f"  UTF-8 {text.decode()!r}")], i + h + n
    if b in (0xC4, 0xC5, 0xC6):
        h, n, kind = _header(data, i, 0, 0, "", {0xC4: 1, 0xC5: 2, 0xC6: 4}, "bin")
        lines = [(data[i : i + h], f"{label}: {kind}")]
        return [*lines, *(_raw(data[i + h : i + h + n], "  bytes") if n else [])], i + h + n
    if 0x90 <= b <= 0x9F or b in (0xDC, 0xDD):
        h, n, kind = _header(data, i, 0x90, 0x0F, "fixarray", {0xDC: 2, 0xDD: 4}, "array")
        lines = [(data[i : i + h], f"{label}: {kind}")]
        at = i + h
        for j in range(n):
            more, at = _item(data, at, f"  {label}[{j}]")
            lines += more
        return lines, at
    raise ValueError(f"byte {b:#04x} at {i} is not used by the canonical codec")


def _header(
    data: bytes, i: int, fix: int, mask: int, fixname: str, wide: dict[int, int], name: str
) -> tuple[int, int, str]:
    """(header size, length, description) of a str, bin or array header at data[i]."""
    b = data[i]
    if b in wide:
        k = wide[b]
        n = int.from_bytes(data[i + 1 : i + 1 + k], "big")
        return 1 + k, n, f"{name}{8 * k} ({b:#04x}) length {n}"
    return 1, b & mask, f"{fixname} ({b:#04x} = {fix:#04x}|{b & mask})"


def _struct(data: bytes) -> list[Line]:
    n = data[0] & 0x0F
    lines: list[Line] = [(data[:1], f"fixarray ({data[0]:#04x} = 0x90|{n}): {n} fields")]
    at = 1
    for name in tx_to_json_fields()[:n]:
        more, at = _item(data, at, name)
        lines += more
    if at != len(data):
        raise ValueError("trailing bytes")
    return lines


def _tag(domain: Domain, rest: list[Line]) -> list[Line]:
    tag = domain.value
    return [
        (bytes([len(tag)]), f"length of the domain tag: {len(tag)}"),
        (tag, f"domain tag {tag.decode()!r}"),
        *rest,
    ]


def annotated(tx: Transaction, part: str) -> list[Line]:
    """The lines of one part of tx (for a struct, every item)."""
    sign = f"sign_bytes = SHA-256(0e || 'qchain/tx-sign' || body): what the {tx.scheme} key signs"
    if part in ("encoded", "body"):
        return _struct(PARTS[part](tx))
    if part == "sign-preimage":
        return _tag(Domain.TX_SIGN, [len(tx.body_bytes())])
    if part == "hash-preimage":
        return _tag(Domain.TX, [len(tx.encoded)])
    if part == "address-preimage":
        head: list[Line] = [
            (tx.scheme.encode(), f"scheme {tx.scheme!r} as UTF-8"),
            (b"\x00", "separator"),
        ]
        return _tag(Domain.ADDRESS, head + _raw(tx.public_key, "public key"))
    if part == "sm2-z-preimage":
        pk = tx.public_key
        return [
            (
                (len(SM2_ID) * 8).to_bytes(2, "big"),
                f"ENTL: the ID's length in bits, {8 * len(SM2_ID)}",
            ),
            (SM2_ID, f"ID: {SM2_ID.decode()!r}"),
            *[(bytes.fromhex(SM2_CURVE[k]), f"{k} of sm2p256v1") for k in ("a", "b", "xG", "yG")],
            (pk[1:33], "xA: the public key's x (its bytes 1..32)"),
            (pk[33:], "yA: the public key's y (its bytes 33..64)"),
        ]
    notes = {
        "signing-digest": sign,
        "hash": "tx hash = SHA-256(09 || 'qchain/tx' || encoded)",
        "address": "address: first 20 bytes of SHA-256 of the address preimage",
        "sm2-z": "Z = SM3(the Z preimage)",
        "sm2-e": "e = SM3(Z || sign_bytes): the value SM2 signs",
    }
    return [(PARTS[part](tx), notes[part])]


def block(name: str, part: str) -> str:
    """The text of the fenced block for one part of a vector."""
    tx = tx_from_json(vectors()[name]["json"])
    out = [f"# vector {name}: {part}"]
    for line in annotated(tx, part):
        if isinstance(line, int):
            out.append(f".. {line} bytes ..")
            continue
        data, note = line
        out.append(f"{data.hex():<{2 * WIDTH}}  # {note}" if note else data.hex())
    return "\n".join(out)


_FENCED_HEX = re.compile(r"^```hex\n# vector (\S+): (\S+)\n.*?^```$", re.DOTALL | re.MULTILINE)


def rewrite(doc: Path) -> None:
    """Rebuild every fenced hex block of doc whose vector transactions.json holds."""
    known = vectors()

    def fresh(m: re.Match[str]) -> str:
        name, part = m.group(1), m.group(2)
        return f"```hex\n{block(name, part)}\n```" if name in known else m.group(0)

    doc.write_text(_FENCED_HEX.sub(fresh, doc.read_text()))


def main() -> None:
    if sys.argv[1] == "--rewrite":
        rewrite(Path(sys.argv[2]))
    else:
        print(block(sys.argv[1], sys.argv[2]))


if __name__ == "__main__":
    main()
