//! The Ed25519 transaction vectors of qchain, rebuilt byte for byte: encoding, signing
//! digest, signature (Ed25519 is deterministic) and hash.
//!
//! `transactions_ed25519.json` is a copy of the Ed25519 entries of
//! `tests/vectors/core/transactions.json` in the qchain repository; the Python test
//! `tests/clients/test_rust_client.py` checks that the copy still equals the source.

use ed25519_dalek::SigningKey;
use qchain_anchor::codec::Value;
use qchain_anchor::tx::{address_of, hash_domain, Transaction};
use serde_json::Value as Json;

const VECTORS: &str = include_str!("transactions_ed25519.json");

/// The vectors' keys are qchain dev keys: the seed is
/// `H("qchain/dev-key", seed || 0x00 || scheme || 0x00 || label)`.
fn dev_key(seed: &str, label: &str, scheme: &str) -> SigningKey {
    let material = [
        seed.as_bytes(),
        b"\x00",
        scheme.as_bytes(),
        b"\x00",
        label.as_bytes(),
    ]
    .concat();
    SigningKey::from_bytes(&hash_domain(b"qchain/dev-key", &material))
}

/// A canonical value from its JSON form: byte strings are `{"hex": ...}`.
fn value(j: &Json) -> Value {
    match j {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_u64() {
            Some(u) => Value::UInt(u),
            None => Value::Int(n.as_i64().expect("an integer in the 64-bit range")),
        },
        Json::String(s) => Value::Text(s.clone()),
        Json::Array(items) => Value::Array(items.iter().map(value).collect()),
        Json::Object(o) => Value::Bytes(hex::decode(o["hex"].as_str().unwrap()).unwrap()),
    }
}

fn text(j: &Json, k: &str) -> String {
    j[k].as_str().unwrap().to_string()
}

fn bytes(j: &Json, k: &str) -> Vec<u8> {
    hex::decode(j[k].as_str().unwrap()).unwrap()
}

#[test]
fn ed25519_vectors_are_rebuilt_byte_for_byte() {
    let doc: Json = serde_json::from_str(VECTORS).unwrap();
    let vectors = doc["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 2);
    for v in vectors {
        let name = text(v, "name");
        let k = &v["dev_key"];
        let key = dev_key(&text(k, "seed"), &text(k, "label"), &text(k, "scheme"));
        let j = &v["json"];
        let mut tx = Transaction {
            chain_id: text(j, "chain_id"),
            sender: bytes(j, "sender"),
            nonce: j["nonce"].as_u64().unwrap(),
            contract: text(j, "contract"),
            method: text(j, "method"),
            args: j["args"].as_array().unwrap().iter().map(value).collect(),
            expiry_height: j["expiry_height"].as_u64().unwrap(),
            scheme: String::new(),
            public_key: Vec::new(),
            signature: Vec::new(),
        };
        tx.sign(&key);
        assert_eq!(tx.scheme, text(j, "scheme"), "{name}: scheme");
        assert_eq!(tx.public_key, bytes(j, "public_key"), "{name}: public key");
        assert_eq!(
            tx.sender,
            address_of("ed25519", &tx.public_key).to_vec(),
            "{name}: address"
        );
        assert_eq!(
            hex::encode(tx.signing_digest()),
            text(v, "signing_digest"),
            "{name}: digest"
        );
        assert_eq!(tx.signature, bytes(j, "signature"), "{name}: signature");
        assert_eq!(
            hex::encode(tx.encode()),
            text(v, "encoded"),
            "{name}: encoding"
        );
        assert_eq!(hex::encode(tx.hash()), text(v, "hash"), "{name}: hash");
    }
}

#[test]
fn the_signing_body_is_the_encoding_without_the_signature() {
    let key = SigningKey::from_bytes(&[3; 32]);
    let args = qchain_anchor::tx::anchor_args(&[9; 32], "sha256", "t", "c", b"");
    let tx = qchain_anchor::tx::anchor_tx(&key, "qchain-devnet", 1, args, 0);
    let enc = tx.encode();
    let body = tx.body();
    // 0x9a (ten items) becomes 0x99 (nine), and the 64-byte signature (c4 40 + 64) goes.
    assert_eq!(enc[0], 0x9a);
    assert_eq!(body[0], 0x99);
    assert_eq!(&body[1..], &enc[1..enc.len() - 66]);
}
