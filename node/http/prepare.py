"""`POST /v1/txs/prepare`: the exact bytes a partner signs, for a transaction it gives in
its JSON form without a signature (docs/TRANSACTIONS.md, section 10).

A partner whose system does not encode canonical MessagePack sends the JSON form and gets
back the body, the 32 bytes its key signs and the complete JSON form to submit once the
signature is in it. Nothing on the node changes. The answer is a convenience, not a
trust anchor: the node that receives the signed transaction rebuilds the body from what
it receives and verifies the signature over that, so a signature over anything else
(another field, another argument, another chain) is refused there.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node.http.context import SERVICE, json_response
from node.http.params import media_type
from qchain.errors import BadParameter, CodecError, TooLarge, UnsupportedMediaType, WrongChain
from qchain.jsonform import hex_field, parse_json, tx_from_json, tx_to_json
from qchain.keys import PUBLIC_KEY_LEN, SIGNATURE_LEN, address_of, parse_scheme
from qchain.types import MAX_TX_SIZE, Transaction, bin_size


def unsigned_tx_from_json(doc: object) -> Transaction:
    """The transaction of a JSON form without a signature; `sender` may be left out when
    `public_key` is given (it is then the key's address)."""
    if not isinstance(doc, dict):
        raise CodecError("transaction: expected a JSON object")
    if doc.get("signature", "") != "":
        raise BadParameter(
            "transaction.signature", "must be absent or empty: prepare takes an unsigned one"
        )
    fields = {k: v for k, v in doc.items() if k != "signature"}
    if "sender" not in fields and "scheme" in fields and fields.get("public_key"):
        scheme = parse_scheme(str(fields["scheme"]))
        key = hex_field(fields["public_key"], "transaction.public_key")
        fields["sender"] = address_of(scheme, key).hex()
    return tx_from_json(fields)


def check_unsigned(tx: Transaction, chain_id: str) -> None:
    """Refuse what no signature could make acceptable on this chain: an unknown scheme,
    another chain, a public key of the wrong length or of another address, a transaction
    too large once signed."""
    scheme = parse_scheme(tx.scheme)
    if tx.chain_id != chain_id:
        raise WrongChain(chain_id, tx.chain_id)
    if tx.public_key:
        if len(tx.public_key) != PUBLIC_KEY_LEN[scheme]:
            raise BadParameter(
                "transaction.public_key",
                f"a {scheme} public key is {PUBLIC_KEY_LEN[scheme]} bytes, "
                f"not {len(tx.public_key)}",
            )
        address = address_of(scheme, tx.public_key)
        if tx.sender != address:
            raise BadParameter(
                "transaction.sender",
                f"is not the address of this {scheme} public key, which is {address.hex()}",
            )
    size = len(tx.body_bytes()) + bin_size(SIGNATURE_LEN[scheme])
    if size > MAX_TX_SIZE:
        raise TooLarge(size, MAX_TX_SIZE)


def prepared_json(tx: Transaction) -> dict[str, Any]:
    """The answer of prepare for an unsigned transaction."""
    body = tx.body_bytes()
    return {
        "transaction": tx_to_json(tx),
        "sender": tx.sender.hex(),
        "body": body.hex(),
        "sign_bytes": tx.signing_digest().hex(),
        "signed_prefix": (b"\x9a" + body[1:]).hex(),
    }


async def post_prepare(request: web.Request) -> web.Response:
    ctype = media_type(request)
    if ctype != "application/json":
        raise UnsupportedMediaType(ctype, ["application/json"])
    tx = unsigned_tx_from_json(parse_json(await request.read(), "body"))
    check_unsigned(tx, request.app[SERVICE].chain_id)
    return json_response(prepared_json(tx))
