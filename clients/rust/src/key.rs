//! Ed25519 key files. A key is its 32-byte seed; a file holds it in one of three forms:
//! the 32 raw bytes, their 64 hex digits, or qchain's JSON key file
//! (`{"scheme": "ed25519", "seed": HEX, ...}`, what `qchain keys new` and a devnet's
//! `accounts/ROLE.json` hold). `create` writes the JSON form, readable by its owner only.

use std::fs;
use std::io::Write;
use std::path::Path;

use ed25519_dalek::SigningKey;

use crate::tx::{ed25519_address, ED25519};

pub const SEED_LEN: usize = 32;

/// Reads a key file in any of the three forms.
pub fn load(path: &Path) -> Result<SigningKey, String> {
    let data =
        fs::read(path).map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
    parse(&data).map_err(|e| format!("key file {}: {e}", path.display()))
}

/// A key from the bytes of a key file.
pub fn parse(data: &[u8]) -> Result<SigningKey, String> {
    if data.len() == SEED_LEN {
        return Ok(from_seed(data));
    }
    let text =
        std::str::from_utf8(data).map_err(|_| "neither 32 raw bytes nor text".to_string())?;
    let text = text.trim();
    if text.starts_with('{') {
        return parse_json(text);
    }
    let seed = hex::decode(text).map_err(|e| format!("seed is not hex: {e}"))?;
    if seed.len() != SEED_LEN {
        return Err(format!("seed is {} bytes, expected {SEED_LEN}", seed.len()));
    }
    Ok(from_seed(&seed))
}

fn parse_json(text: &str) -> Result<SigningKey, String> {
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let scheme = doc.get("scheme").and_then(|s| s.as_str()).unwrap_or("");
    if scheme != ED25519 {
        return Err(format!(
            "scheme is {scheme:?}; this client signs with ed25519 only"
        ));
    }
    let seed_hex = doc
        .get("seed")
        .and_then(|s| s.as_str())
        .ok_or("no \"seed\" field")?;
    let seed = hex::decode(seed_hex).map_err(|e| format!("seed: not hex: {e}"))?;
    if seed.len() != SEED_LEN {
        return Err(format!("seed: {} bytes, expected {SEED_LEN}", seed.len()));
    }
    let key = from_seed(&seed);
    if let Some(addr) = doc.get("address").and_then(|a| a.as_str()) {
        if addr != hex::encode(ed25519_address(&key)) {
            return Err("address does not match the seed".to_string());
        }
    }
    Ok(key)
}

fn from_seed(seed: &[u8]) -> SigningKey {
    let mut s = [0u8; SEED_LEN];
    s.copy_from_slice(seed);
    SigningKey::from_bytes(&s)
}

/// The JSON key-file form of `key`.
pub fn to_json(key: &SigningKey) -> String {
    let doc = serde_json::json!({
        "scheme": ED25519,
        "seed": hex::encode(key.to_bytes()),
        "public_key": hex::encode(key.verifying_key().as_bytes()),
        "address": hex::encode(ed25519_address(key)),
    });
    serde_json::to_string_pretty(&doc).expect("a JSON object serialises") + "\n"
}

/// Creates a new random key at `path` (which must not exist), mode 0600 on Unix.
pub fn create(path: &Path) -> Result<SigningKey, String> {
    let mut seed = [0u8; SEED_LEN];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
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
        let key = from_seed(&seed);
        let raw = parse(&seed).unwrap();
        let hexed = parse(format!("{}\n", hex::encode(seed)).as_bytes()).unwrap();
        let json = parse(to_json(&key).as_bytes()).unwrap();
        for k in [raw, hexed, json] {
            assert_eq!(k.to_bytes(), seed);
        }
    }

    #[test]
    fn bad_key_files_say_why() {
        assert!(parse(b"abcd").unwrap_err().contains("2 bytes"));
        assert!(parse(br#"{"scheme": "ml-dsa-65", "seed": "00"}"#)
            .unwrap_err()
            .contains("ed25519 only"));
        let mut doc: serde_json::Value =
            serde_json::from_str(&to_json(&from_seed(&[1; 32]))).unwrap();
        doc["address"] = serde_json::json!("00".repeat(20));
        assert!(parse(doc.to_string().as_bytes())
            .unwrap_err()
            .contains("does not match"));
    }
}
