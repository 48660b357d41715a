//! A qchain transaction, its signing message, its hash and its sender address, as
//! docs/TRANSACTIONS.md specifies them.
//!
//! - `H(domain, data) = SHA-256(len(domain) || domain || data)`, the domain an ASCII tag
//!   and its length one byte.
//! - The transaction is the canonical array of its ten fields in order: chain id, sender,
//!   nonce, contract, method, args, expiry height, scheme, public key, signature.
//! - The signing body is the array of the first nine (everything but the signature); the
//!   signer signs `H("qchain/tx-sign", body)`, the 32 bytes themselves.
//! - The hash (the transaction's identity) is `H("qchain/tx", encoding)`.
//! - An address is `H("qchain/address", scheme || 0x00 || public key)[..20]`.

use sha2::{Digest, Sha256};

use crate::codec::{encode_into, Value};
use crate::key::Key;

pub const DOMAIN_TX: &[u8] = b"qchain/tx";
pub const DOMAIN_TX_SIGN: &[u8] = b"qchain/tx-sign";
pub const DOMAIN_ADDRESS: &[u8] = b"qchain/address";
pub const ADDRESS_LEN: usize = 20;

/// SHA-256 of `data` under the domain tag `domain`.
pub fn hash_domain(domain: &[u8], data: &[u8]) -> [u8; 32] {
    let tag_len = u8::try_from(domain.len()).expect("a domain tag is at most 255 bytes");
    let mut h = Sha256::new();
    h.update([tag_len]);
    h.update(domain);
    h.update(data);
    h.finalize().into()
}

/// The 20-byte address of `public_key` under `scheme`.
pub fn address_of(scheme: &str, public_key: &[u8]) -> [u8; ADDRESS_LEN] {
    let mut data = Vec::with_capacity(scheme.len() + 1 + public_key.len());
    data.extend_from_slice(scheme.as_bytes());
    data.push(0);
    data.extend_from_slice(public_key);
    let h = hash_domain(DOMAIN_ADDRESS, &data);
    let mut out = [0u8; ADDRESS_LEN];
    out.copy_from_slice(&h[..ADDRESS_LEN]);
    out
}

/// A transaction; `signature` is empty until `sign` fills it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub chain_id: String,
    pub sender: Vec<u8>,
    pub nonce: u64,
    pub contract: String,
    pub method: String,
    /// The method's arguments in the order its schema declares.
    pub args: Vec<Value>,
    /// Last height at which the transaction may be included; 0: never expires.
    pub expiry_height: u64,
    pub scheme: String,
    pub public_key: Vec<u8>,
    pub signature: Vec<u8>,
}

impl Transaction {
    fn fields(&self) -> Vec<Value> {
        vec![
            Value::Text(self.chain_id.clone()),
            Value::Bytes(self.sender.clone()),
            Value::UInt(self.nonce),
            Value::Text(self.contract.clone()),
            Value::Text(self.method.clone()),
            Value::Array(self.args.clone()),
            Value::UInt(self.expiry_height),
            Value::Text(self.scheme.clone()),
            Value::Bytes(self.public_key.clone()),
            Value::Bytes(self.signature.clone()),
        ]
    }

    /// The canonical encoding of the whole transaction (ten fields).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        encode_into(&Value::Array(self.fields()), &mut out);
        out
    }

    /// The signing body: the canonical array of the first nine fields.
    pub fn body(&self) -> Vec<u8> {
        let mut fields = self.fields();
        fields.pop();
        let mut out = Vec::new();
        encode_into(&Value::Array(fields), &mut out);
        out
    }

    /// The message an Ed25519 signer signs: `H("qchain/tx-sign", body)`.
    pub fn signing_digest(&self) -> [u8; 32] {
        hash_domain(DOMAIN_TX_SIGN, &self.body())
    }

    /// The transaction's identity: `H("qchain/tx", encoding)`.
    pub fn hash(&self) -> [u8; 32] {
        hash_domain(DOMAIN_TX, &self.encode())
    }

    /// Sets scheme and public key from `key`, then signs the signing digest.
    pub fn sign(&mut self, key: &Key) {
        self.scheme = key.scheme().to_string();
        self.public_key = key.public_key();
        self.signature = key.sign(&self.signing_digest());
    }
}

/// The arguments of the notary contract's `anchor` method, in schema order.
pub fn anchor_args(
    digest: &[u8; 32],
    algorithm: &str,
    title: &str,
    category: &str,
    metadata: &[u8],
) -> Vec<Value> {
    vec![
        Value::Bytes(digest.to_vec()),
        Value::Text(algorithm.to_string()),
        Value::Text(title.to_string()),
        Value::Text(category.to_string()),
        Value::Bytes(metadata.to_vec()),
    ]
}

/// A signed notary `anchor` transaction from `key`'s address.
pub fn anchor_tx(
    key: &Key,
    chain_id: &str,
    nonce: u64,
    args: Vec<Value>,
    expiry_height: u64,
) -> Transaction {
    let mut tx = Transaction {
        chain_id: chain_id.to_string(),
        sender: key.address().to_vec(),
        nonce,
        contract: "notary".to_string(),
        method: "anchor".to_string(),
        args,
        expiry_height,
        scheme: String::new(),
        public_key: Vec::new(),
        signature: Vec::new(),
    };
    tx.sign(key);
    tx
}
