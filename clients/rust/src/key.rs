//! Signing keys and key files. A key is a scheme and its 32-byte seed, from which both
//! schemes derive their key pair: Ed25519 (RFC 8032: the seed is the private key) and
//! ML-DSA-65 (FIPS 204 `ML-DSA.KeyGen_internal` from the seed ξ).
//!
//! A key file holds the seed in one of three forms: the 32 raw bytes or their 64 hex digits
//! (of the scheme `--scheme` names, Ed25519 by default), or qchain's JSON key file
//! (`{"scheme": ..., "seed": HEX, ...}`, what `qchain keys new` and a devnet's
//! `accounts/ROLE.json` hold). `create` writes the JSON form, readable by its owner only.

use std::fs;
use std::io::Write;
use std::path::Path;

use ml_dsa::signature::Keypair;
use ml_dsa::MlDsa65;

use crate::tx::{address_of, ADDRESS_LEN};

pub const SEED_LEN: usize = 32;
pub const ED25519: &str = "ed25519";
pub const ML_DSA_65: &str = "ml-dsa-65";

enum Pair {
    Ed25519(Box<ed25519_dalek::SigningKey>),
    MlDsa65(Box<ml_dsa::SigningKey<MlDsa65>>),
}

/// A private key: its scheme and seed, and the key pair derived from them.
pub struct Key {
    seed: [u8; SEED_LEN],
    pair: Pair,
}

impl std::fmt::Debug for Key {
    /// Names the scheme and address, never the seed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Key({}, address={})",
            self.scheme(),
            hex::encode(self.address())
        )
    }
}

impl Key {
    /// The key of `scheme` (`ed25519` or `ml-dsa-65`) with this seed.
    pub fn from_seed(scheme: &str, seed: [u8; SEED_LEN]) -> Result<Key, String> {
        let pair = match scheme {
            ED25519 => Pair::Ed25519(Box::new(ed25519_dalek::SigningKey::from_bytes(&seed))),
            ML_DSA_65 => Pair::MlDsa65(Box::new(ml_dsa::SigningKey::<MlDsa65>::from_seed(
                &ml_dsa::Seed::from(seed),
            ))),
            other => return Err(format!("unknown scheme {other:?} (ed25519 or ml-dsa-65)")),
        };
        Ok(Key { seed, pair })
    }

    pub fn scheme(&self) -> &'static str {
        match self.pair {
            Pair::Ed25519(_) => ED25519,
            Pair::MlDsa65(_) => ML_DSA_65,
        }
    }

    pub fn seed(&self) -> [u8; SEED_LEN] {
        self.seed
    }

    /// The public key's bytes: 32 for Ed25519, 1952 for ML-DSA-65.
    pub fn public_key(&self) -> Vec<u8> {
        match &self.pair {
            Pair::Ed25519(k) => k.verifying_key().to_bytes().to_vec(),
            Pair::MlDsa65(k) => k.verifying_key().encode().to_vec(),
        }
    }

    pub fn address(&self) -> [u8; ADDRESS_LEN] {
        address_of(self.scheme(), &self.public_key())
    }

    /// Signs `message` (a transaction's 32 `sign_bytes`): pure Ed25519, or pure ML-DSA-65
    /// with an empty context in FIPS 204's deterministic variant (a verifier accepts it as
    /// it accepts a hedged signature).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match &self.pair {
            Pair::Ed25519(k) => ed25519_dalek::Signer::sign(k.as_ref(), message)
                .to_bytes()
                .to_vec(),
            Pair::MlDsa65(k) => ml_dsa::signature::Signer::sign(k.as_ref(), message)
                .encode()
                .to_vec(),
        }
    }
}

/// Whether `signature` is a valid ML-DSA-65 signature of `message` (empty context) under
/// the encoded `public_key`.
pub fn ml_dsa_65_verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let Ok(pk) = ml_dsa::EncodedVerifyingKey::<MlDsa65>::try_from(public_key) else {
        return false;
    };
    let Ok(sig) = ml_dsa::Signature::<MlDsa65>::try_from(signature) else {
        return false;
    };
    ml_dsa::VerifyingKey::<MlDsa65>::decode(&pk).verify_with_context(message, b"", &sig)
}

/// Reads a key file in any of the three forms; `scheme` is the scheme of a bare seed.
pub fn load(path: &Path, scheme: &str) -> Result<Key, String> {
    let data =
        fs::read(path).map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
    parse(&data, scheme).map_err(|e| format!("key file {}: {e}", path.display()))
}

/// A key from the bytes of a key file; `scheme` is the scheme of a bare seed.
pub fn parse(data: &[u8], scheme: &str) -> Result<Key, String> {
    if data.len() == SEED_LEN {
        return Key::from_seed(scheme, seed_of(data)?);
    }
    let text =
        std::str::from_utf8(data).map_err(|_| "neither 32 raw bytes nor text".to_string())?;
    let text = text.trim();
    if text.starts_with('{') {
        return parse_json(text);
    }
    let seed = hex::decode(text).map_err(|e| format!("seed is not hex: {e}"))?;
    Key::from_seed(scheme, seed_of(&seed)?)
}

fn seed_of(bytes: &[u8]) -> Result<[u8; SEED_LEN], String> {
    bytes
        .try_into()
        .map_err(|_| format!("seed is {} bytes, expected {SEED_LEN}", bytes.len()))
}

fn parse_json(text: &str) -> Result<Key, String> {
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let scheme = doc
        .get("scheme")
        .and_then(|s| s.as_str())
        .ok_or("no \"scheme\" field")?;
    let seed_hex = doc
        .get("seed")
        .and_then(|s| s.as_str())
        .ok_or("no \"seed\" field")?;
    let seed = hex::decode(seed_hex).map_err(|e| format!("seed: not hex: {e}"))?;
    let key = Key::from_seed(scheme, seed_of(&seed)?)?;
    if let Some(addr) = doc.get("address").and_then(|a| a.as_str()) {
        if addr != hex::encode(key.address()) {
            return Err("address does not match the seed".to_string());
        }
    }
    Ok(key)
}

/// The JSON key-file form of `key`.
pub fn to_json(key: &Key) -> String {
    let doc = serde_json::json!({
        "scheme": key.scheme(),
        "seed": hex::encode(key.seed()),
        "public_key": hex::encode(key.public_key()),
        "address": hex::encode(key.address()),
    });
    serde_json::to_string_pretty(&doc).expect("a JSON object serialises") + "\n"
}

/// Creates a new random key of `scheme` at `path` (which must not exist), mode 0600.
pub fn create(path: &Path, scheme: &str) -> Result<Key, String> {
    let mut seed = [0u8; SEED_LEN];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    let key = Key::from_seed(scheme, seed)?;
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .map_err(|e| format!("cannot create key file {}: {e}", path.display()))?;
    f.write_all(to_json(&key).as_bytes())
        .map_err(|e| format!("cannot write key file {}: {e}", path.display()))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms_give_the_same_key() {
        let seed = [7u8; SEED_LEN];
        for scheme in [ED25519, ML_DSA_65] {
            let key = Key::from_seed(scheme, seed).unwrap();
            let raw = parse(&seed, scheme).unwrap();
            let hexed = parse(format!("{}\n", hex::encode(seed)).as_bytes(), scheme).unwrap();
            let json = parse(to_json(&key).as_bytes(), ED25519).unwrap();
            for k in [raw, hexed, json] {
                assert_eq!((k.scheme(), k.seed()), (scheme, seed));
                assert_eq!(k.address(), key.address());
            }
        }
    }

    #[test]
    fn bad_key_files_say_why() {
        assert!(parse(b"abcd", ED25519).unwrap_err().contains("2 bytes"));
        let sm2 = format!(r#"{{"scheme": "sm2", "seed": "{}"}}"#, "00".repeat(32));
        assert!(parse(sm2.as_bytes(), ED25519)
            .unwrap_err()
            .contains("unknown scheme"));
        let key = Key::from_seed(ED25519, [1; 32]).unwrap();
        let mut doc: serde_json::Value = serde_json::from_str(&to_json(&key)).unwrap();
        doc["address"] = serde_json::json!("00".repeat(20));
        let err = parse(doc.to_string().as_bytes(), ED25519).unwrap_err();
        assert!(err.contains("does not match"));
    }

    #[test]
    fn an_ml_dsa_65_signature_verifies_and_a_changed_message_does_not() {
        let key = Key::from_seed(ML_DSA_65, [5; 32]).unwrap();
        let sig = key.sign(b"thirty-two bytes of sign_bytes..");
        assert_eq!((key.public_key().len(), sig.len()), (1952, 3309));
        assert!(ml_dsa_65_verify(
            &key.public_key(),
            b"thirty-two bytes of sign_bytes..",
            &sig
        ));
        assert!(!ml_dsa_65_verify(
            &key.public_key(),
            b"thirty-two bytes of sign_bytes!!",
            &sig
        ));
    }
}
