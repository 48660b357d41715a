//! qchain's transaction vectors, rebuilt from their JSON forms: encoding, signing digest,
//! hash and address byte for byte; the Ed25519 signatures too (Ed25519 is deterministic);
//! the ML-DSA-65 signature (randomized when it was made) verifies under the public key
//! this crate derives from the seed; the SM2 vector (the client does not sign SM2) checks
//! the encoding, signing digest and hash of a transaction signed elsewhere.
//!
//! `transactions.json` is a verbatim copy of `tests/vectors/core/transactions.json` in the
//! qchain repository; `tests/clients/test_rust_client.py` checks that it still is.

use qchain_anchor::codec::Value;
use qchain_anchor::key::{ml_dsa_65_verify, Key, ML_DSA_65};
use qchain_anchor::tx::{hash_domain, Transaction};
use serde_json::Value as Json;

const VECTORS: &str = include_str!("transactions.json");

/// The vectors' keys are qchain dev keys: the seed is
/// `H("qchain/dev-key", seed || 0x00 || scheme || 0x00 || label)`.
fn dev_key(seed: &str, label: &str, scheme: &str) -> Key {
    let material = [
        seed.as_bytes(),
        b"\x00",
        scheme.as_bytes(),
        b"\x00",
        label.as_bytes(),
    ];
    Key::from_seed(scheme, hash_domain(b"qchain/dev-key", &material.concat())).unwrap()
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
fn the_vectors_are_rebuilt_byte_for_byte() {
    let vectors: Vec<Json> = serde_json::from_str(VECTORS).unwrap();
    let schemes: Vec<String> = vectors.iter().map(|v| text(&v["json"], "scheme")).collect();
    assert_eq!(schemes, ["ed25519", "ed25519", "ml-dsa-65", "sm2"]);
    for v in &vectors {
        let name = text(v, "name");
        let j = &v["json"];
        let mut tx = Transaction {
            chain_id: text(j, "chain_id"),
            sender: bytes(j, "sender"),
            nonce: j["nonce"].as_u64().unwrap(),
            contract: text(j, "contract"),
            method: text(j, "method"),
            args: j["args"].as_array().unwrap().iter().map(value).collect(),
            expiry_height: j["expiry_height"].as_u64().unwrap(),
            scheme: text(j, "scheme"),
            public_key: bytes(j, "public_key"),
            signature: bytes(j, "signature"),
        };
        if tx.scheme != "sm2" {
            // The client signs with Ed25519 and ML-DSA-65; an SM2 vector (signed by the
            // partner's own SM2 library) checks the encoding, the digest and the hash.
            let k = &v["dev_key"];
            let key = dev_key(&text(k, "seed"), &text(k, "label"), &text(k, "scheme"));
            tx.sender = key.address().to_vec();
            tx.scheme = String::new();
            tx.public_key = Vec::new();
            tx.signature = Vec::new();
            tx.sign(&key);
            assert_eq!(tx.sender, bytes(j, "sender"), "{name}: address");
            assert_eq!(tx.scheme, text(j, "scheme"), "{name}: scheme");
            assert_eq!(tx.public_key, bytes(j, "public_key"), "{name}: public key");
        }
        let digest = tx.signing_digest();
        assert_eq!(
            hex::encode(digest),
            text(v, "signing_digest"),
            "{name}: digest"
        );
        if tx.scheme == ML_DSA_65 {
            assert!(
                ml_dsa_65_verify(&tx.public_key, &digest, &tx.signature),
                "{name}: ours"
            );
            tx.signature = bytes(j, "signature");
            assert!(
                ml_dsa_65_verify(&tx.public_key, &digest, &tx.signature),
                "{name}: theirs"
            );
        }
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
    let key = Key::from_seed("ed25519", [3; 32]).unwrap();
    let args = qchain_anchor::tx::anchor_args(&[9; 32], "sha256", "t", "c", b"");
    let tx = qchain_anchor::tx::anchor_tx(&key, "qchain-devnet", 1, args, 0);
    let enc = tx.encode();
    let body = tx.body();
    // 0x9a (ten items) becomes 0x99 (nine), and the 64-byte signature (c4 40 + 64) goes.
    assert_eq!(enc[0], 0x9a);
    assert_eq!(body[0], 0x99);
    assert_eq!(&body[1..], &enc[1..enc.len() - 66]);
}
